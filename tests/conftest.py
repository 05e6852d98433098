"""Shared fixtures: offline mode, a CLI runner, and one run of the quick suite for e2e tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m privbench ARGS` in a fresh process and capture its output."""
    return subprocess.run([sys.executable, "-m", "privbench", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def audit_row(spec: dict, run_dir: Path):
    """Run the one-cell suite `spec` in-process and return its audit eps_lb row."""
    from privbench.run.cell import run_cell
    from privbench.spec.load import validate_suite
    from privbench.spec.suite import expand

    result = run_cell(expand(validate_suite(spec, "test"), "test")[0], run_dir)
    assert result.status == "ok", result.error
    row = result.metric("audit", "eps_lb")
    assert row is not None
    return row


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# A suite small enough for tests: three cells of a few rounds each.
TINY_SUITE = """
name = "tiny"
seed = 3
[data]
name = "digits"
clients = 40
[model]
hidden = [16]
[train]
rounds = 12
cohort = 8
local_epochs = 1
batch_size = 8
lr = 0.1
[privacy]
delta = 1e-5
clip = 1.0
[sweep]
"privacy.epsilon" = [2.0, 8.0, inf]
"""


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The built-in quick suite, run once through the CLI exactly as a user would."""
    out = tmp_path_factory.mktemp("quick") / "run"
    proc = run_cli("suite", "quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def quick_results(quick_run) -> dict:
    out, _ = quick_run
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small causal LM and its tokenizer written with save_pretrained, as a user would."""
    import torch
    from saved_lm import TINY_LM
    from transformers import GPT2LMHeadModel

    from privbench.data.text_corpus import public_corpus
    from privbench.models.pretrained_lm import tiny_gpt2_config, train_tokenizer

    folder = tmp_path_factory.mktemp("user_model")
    tokenizer = train_tokenizer(public_corpus(1000, 5), 600)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(TINY_LM, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
