"""A user's bad text files or model folder are reported once, in one line, before any cell starts
(issue 15 item 4): not inside every worker after set-up, and never as a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from privbench.data.text_clients import _cached_problem


def _good_folder(folder: Path) -> Path:
    folder.mkdir()
    for c in range(2):
        lines = [json.dumps({"text": f"client {c} note {i}"}) for i in range(4)]
        (folder / f"c{c}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _suite(tmp_path: Path, data: Path, model: str = 'name = "tiny_gpt2"') -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'task = "causal_lm"\n[data]\nname = "jsonl"\npath = "{data}"\nclients = 2\n'
                    f"[model]\n{model}\n[train]\ncohort = 2\n[lm.canaries]\ndigits = 2\n"
                    '[sweep]\n"privacy.epsilon" = [1.0, 8.0, inf]\n')
    return path


def _bad_line(folder: Path) -> None:
    (folder / "c1.jsonl").write_text('{"text": "fine"}\nnot json\n')


def _no_text(folder: Path) -> None:
    (folder / "c1.jsonl").write_text('{"text": "fine"}\n{"body": "x"}\n')


def _not_utf8(folder: Path) -> None:
    (folder / "c1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n{"text": "x"}\n')


def _too_few(folder: Path) -> None:
    (folder / "c1.jsonl").write_text("\n")


def _no_files(folder: Path) -> None:
    for f in folder.glob("*.jsonl"):
        f.unlink()


@pytest.mark.parametrize("break_it, message", [
    (_bad_line, "data.path: c1.jsonl line 2: not JSON"),
    (_no_text, 'data.path: c1.jsonl line 2: needs a string "text" field'),
    (_not_utf8, "data.path: c1.jsonl: not UTF-8 text (byte 13)"),
    (_too_few, "data.path: c1.jsonl has 0 message(s)"),
    (_no_files, "no .jsonl files there"),
])
def test_a_bad_jsonl_folder_fails_once_in_one_line_before_any_cell(tmp_path, break_it, message):
    folder = _good_folder(tmp_path / "texts")
    break_it(folder)
    out = tmp_path / "run"
    proc = run_cli("suite", str(_suite(tmp_path, folder)), "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert message in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())  # no cell started


def test_a_model_folder_without_tokenizer_fails_once_before_any_cell(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model_dir = tmp_path / "model"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=64,
                               n_positions=32)).save_pretrained(model_dir)
    folder = _good_folder(tmp_path / "texts")
    out = tmp_path / "run"
    proc = run_cli("suite", str(_suite(tmp_path, folder, f'path = "{model_dir}"')),
                   "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "no tokenizer files there" in lines[0] and "model.path" in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_the_folder_is_read_once_for_all_cells_of_a_suite(tmp_path):
    """Checking three cells of one folder reads it once; editing a file reads it again."""
    from privbench.spec.suite import load_suite

    folder = _good_folder(tmp_path / "texts")
    _cached_problem.cache_clear()
    load_suite(str(_suite(tmp_path, folder)))
    info = _cached_problem.cache_info()
    assert info.misses == 1 and info.hits >= 2, info
    (folder / "c0.jsonl").write_text('{"text": "a"}\n{"text": "bb"}\n{"text": "ccc"}\n')
    load_suite(str(_suite(tmp_path, folder)))
    assert _cached_problem.cache_info().misses == 2
