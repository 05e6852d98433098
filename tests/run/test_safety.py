"""Safe names, paths and locks, and no tracebacks: every CLI error is one line with exit code 2
(bad input), and 1 only when a check ran and said no (a gate FAIL)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_SUITE, write_suite

from privbench.cli.main import main
from privbench.errors import PrivbenchError
from privbench.gates.pytest_plugin import run_cache_dir
from privbench.run.paths import inside, safe_folder_name
from privbench.run.runlock import LOCK_FILE, RunLocked, run_lock
from privbench.run.runner import default_run_dir
from privbench.spec.suite import load_suite


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", ["../../x", "/etc/cron.d/x", "..", ".", "a/../../b", " ",
                                  "x\\..\\..\\y", "ünï cödé", "-", "~root", "a" * 300])
def test_a_suite_name_becomes_a_folder_name_inside_reports(tmp_path, name):
    text = TINY_SUITE.replace('name = "tiny"', f"name = {json.dumps(name)}")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", text)))
    root = tmp_path / "reports"
    for folder in (default_run_dir(suite, root), run_cache_dir(suite, root)):
        assert folder.parent == root, folder
        assert folder.resolve().parent == root.resolve(), folder
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", folder.name), folder.name
        assert len(folder.name) <= 64 + 17
    assert safe_folder_name(name) not in ("", ".", "..")


def test_a_path_read_from_a_manifest_cannot_leave_its_folder(tmp_path):
    assert inside(tmp_path, "cells/abc/claim.json") == tmp_path / "cells" / "abc" / "claim.json"
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "a//b", "a\\..\\b", "."):
        with pytest.raises(PrivbenchError, match="would leave the folder"):
            inside(tmp_path, bad)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom privbench.run.runlock import run_lock\n"
            f"with run_lock({str(run_dir)!r}):\n    print('locked', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_locked_folder_refuses_and_a_crashed_holder_does_not_block(
        tmp_path, capsys):
    run_dir = tmp_path / "out"
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    holder = _hold_lock(run_dir)
    try:
        code, out, err = _cli(capsys, "suite", str(suite), "--out", str(run_dir), "--quiet")
        assert code == 2 and out == ""
        line = _one_line(err)
        assert f"another privbench process (pid {holder.pid}) is writing into this run folder" \
            in line
        assert not (run_dir / "cells").exists()  # nothing trained
        policy = write_suite(tmp_path / "p.toml", "")
        code, out, err = _cli(capsys, "gate", "--policy", str(policy), str(run_dir))
        assert code == 2 and out == "" and f"(pid {holder.pid})" in _one_line(err)
        with pytest.raises(RunLocked), run_lock(run_dir):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the lock file stays behind
        holder.wait()
    assert (run_dir / LOCK_FILE).exists()
    deadline = time.time() + 10
    while True:  # the OS released the lock with the process
        try:
            with run_lock(run_dir):
                break
        except RunLocked:
            assert time.time() < deadline, "a dead process's lock must not block"
            time.sleep(0.05)
    with run_lock(run_dir):  # and the lock is released on leaving the block
        pass


def test_an_out_that_cannot_be_written_is_one_line_before_training(tmp_path, capsys,
                                                                   monkeypatch):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _cli(capsys, "suite", str(suite), "--out", str(blocker / "run"), "--quiet")
    assert code == 2
    assert _one_line(err).startswith(f"--out {blocker / 'run'}: cannot write there (")

    read_only = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):  # as a read-only file system answers, even for root
        if str(self).startswith(str(read_only)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = _cli(capsys, "suite", str(suite), "--out", str(read_only / "run"), "--quiet")
    assert code == 2
    assert _one_line(err) == (f"--out {read_only / 'run'}: cannot write there (Permission "
                              "denied); choose a folder you can write to")


def test_a_write_that_fails_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    suite = write_suite(tmp_path / "tiny.toml", TINY_SUITE.replace(
        '"privacy.epsilon" = [2.0, 8.0, inf]', '"privacy.epsilon" = [inf]'))
    import privbench.run.runner

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(privbench.run.runner, "write_json", disk_full)
    code, _, err = _cli(capsys, "suite", str(suite), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2
    assert _one_line(err) == (f"suite: {tmp_path / 'run' / 'suite.json'}: No space left on "
                              "device; check that the path exists and that you may write there")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from privbench.run.runner import run_suite

    root = tmp_path_factory.mktemp("safety")
    text = TINY_SUITE.replace("rounds = 12", "rounds = 2").replace(
        '"privacy.epsilon" = [2.0, 8.0, inf]', '"privacy.epsilon" = [8.0, inf]')
    suite = load_suite(str(write_suite(root / "tiny.toml", text)))
    run_suite(suite, root / "run", workers=1)
    return root / "run"


def test_gate_on_a_folder_it_cannot_write_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    policy = write_suite(tmp_path / "p.toml", "[privacy]\nmax_epsilon = 4.0\n")
    real_write = Path.write_text

    def read_only(self, *args, **kwargs):
        if self.parent == run:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    code, out, err = _cli(capsys, "gate", "--policy", str(policy), str(run))
    assert code == 2 and out == ""  # not 1: nothing was gated
    assert _one_line(err) == (f"gate: cannot record the verdict in {run}: {run / 'gates.json'}: "
                              "Permission denied; check that the path exists and that you may "
                              "write there")
    monkeypatch.undo()
    assert _cli(capsys, "verify", str(run))[0] == 0  # a failed gate left the run intact


@pytest.mark.parametrize("policy,field", [
    ("[utility]\nmin = 2.0\n", "utility.min = 2: utility.accuracy lies in [0, 1]"),
    ("[utility]\nmin = -0.5\n", "utility.min = -0.5: utility.accuracy lies in [0, 1]"),
    ("[utility]\nmin = nan\n", "utility.min = nan: must be a finite number"),
    ("[privacy]\nmax_epsilon = \"8\"\n", "privacy.max_epsilon = '8': must be a valid number"),
    ('[attacks]\n"max_tpr_at_fpr_1e-3" = 1.5\n', "attacks.max_tpr_at_fpr_1e-3 = 1.5: must be"),
    ("[audit]\neps_lb_not_above_claim = 1\n", "audit.eps_lb_not_above_claim = 1: must be a "
                                              "valid boolean"),
])
def test_a_gate_value_outside_its_interval_or_type_is_bad_input_not_a_fail(
        tiny_run, tmp_path, capsys, policy, field):
    path = write_suite(tmp_path / "p.toml", policy)
    code, out, err = _cli(capsys, "gate", "--policy", str(path), str(tiny_run))
    assert code == 2 and out == ""
    assert _one_line(err).startswith(f"{path}: {field}")


@pytest.mark.parametrize("args,message", [
    (["gate", "--policy", "p.toml"], "privbench gate: the following arguments are required"),
    (["suite", "--workers", "many"], "privbench suite: argument --workers: invalid int value"),
    (["nonsense"], "privbench: argument command: invalid choice"),
    (["verify", "{tmp}/nowhere"], "{tmp}/nowhere: no such file or folder"),
    (["gate", "--policy", "{tmp}/p.toml", "{tmp}/nowhere"], "{tmp}/nowhere: no such run folder"),
    (["gate", "--policy", "{tmp}/p.toml", "{tmp}"], "the run does not verify: manifest.json is "
                                                    "missing"),
    (["compare", "{tmp}/a", "{tmp}/b"], "{tmp}/a: no results.json"),
    (["card", "{tmp}/nowhere"], "{tmp}/nowhere: no card.json found"),
    (["suite", "{tmp}/missing.toml"], "missing.toml: file not found"),
    (["suite", "quick", "--set", "train.rounds"], "--set: 'train.rounds': expected FIELD=VALUE"),
    (["attack", "--members", "{tmp}/m.txt", "--nonmembers", "{tmp}/n.txt"],
     "--members = {tmp}/m.txt: file not found"),
])
def test_every_cli_error_path_is_one_line_with_exit_code_2(tmp_path, capsys, args, message):
    (tmp_path / "p.toml").write_text("")
    code, out, err = _cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, out + err
    assert message.replace("{tmp}", str(tmp_path)) in _one_line(err)
