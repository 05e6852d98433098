"""Language-model cells end to end: a user's saved model folder, the cached default model, JSONL
folders, canary exposure against brute force, and spec errors."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console
from saved_lm import SUITE, TINY_LM

from privbench.attacks.exposure_lm import exposure, secret_log_likelihoods
from privbench.cli.suite import print_summary
from privbench.data.text_clients import load_text_data
from privbench.errors import PrivbenchError, SpecError
from privbench.models.pretrained_lm import (
    default_model_folder,
    load_model,
    load_tokenizer,
)
from privbench.privacy.budget_monitor import read_rounds
from privbench.report.context import rounds_context
from privbench.report.render import _frontier_value
from privbench.run.runner import run_suite
from privbench.spec.lm_schema import LMSpec
from privbench.spec.schema import DataSpec
from privbench.spec.suite import load_suite


def test_suite_fine_tunes_and_scores_a_saved_model_folder(saved_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(path=saved_model))
    suite = load_suite(str(path))
    before = {p.name: p.stat().st_mtime for p in saved_model.iterdir()}
    result = run_suite(suite, tmp_path / "run", workers=1)
    assert [c.status for c in result.cells] == ["ok"] * 4, [c.error for c in result.cells]
    for cell in result.cells:
        unit = cell.axes["privacy.unit"]
        assert cell.claim["unit"] == unit
        private = math.isfinite(cell.axes["privacy.epsilon"])
        eps = cell.claim["epsilon"]
        assert (eps <= 2.0 + 1e-9) if private else eps == math.inf
        ppl = cell.metric("utility", "perplexity")
        assert 1.0 < ppl.value < 2 * 600 and ppl.ci_low <= ppl.value <= ppl.ci_high
        assert 0.0 <= cell.metric("utility", "next_token_accuracy").value <= 1.0
        assert 0.0 <= cell.metric("loss", "auc").value <= 1.0
        # Min-K%, zlib and the reference ratio, each beside the blind text-only baseline
        blind = cell.metric("blind", "auc")
        assert blind is not None and blind.surface == "text only"
        for attack in ("loss", "min_k", "zlib", "ref_ratio"):
            row = cell.metric(attack, "auc")
            assert 0.0 <= row.value <= 1.0 and row.details["blind_auc"] == blind.value, attack
        exp = cell.metric("canary_exposure", "mean_exposure")
        assert 0.0 <= exp.value <= 2 * math.log2(10) + 1e-9
        assert exp.details["n_planted"] + exp.details["n_not_planted"] == 4
        assert (tmp_path / "run" / "cells" / cell.key / "weights.safetensors").exists()
    # The user's folder is read, never written.
    assert {p.name: p.stat().st_mtime for p in saved_model.iterdir()} == before
    html = (tmp_path / "run" / "index.html").read_text()
    assert "Language model" in html and "canary exposure" in html
    assert "blind baseline AUC (text only)" in html and "Min-K% AUC" in html
    # The summary table's accuracy column shows each LM cell's next-token accuracy.
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result)
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    assert len(rows) == 4 and all("(next token)" in line for line in rows), out.getvalue()
    # The report's budget chart and the frontier's utility panel have every LM cell in them.
    assert 'id="rounds"' in html and "Budget and training over rounds" in html
    rounds = rounds_context(tmp_path / "run", result.cells)
    assert {"epsilon_spent", "epsilon_planned"} <= set(rounds["figures"])
    for cell in result.cells:
        assert _frontier_value(cell, "utility").metric == "next_token_accuracy"
        if math.isfinite(cell.claim["epsilon"]):
            spent = read_rounds(tmp_path / "run" / "cells" / cell.key / "rounds.jsonl")
            # spent (the monitor's coarse grid) is the claim, at both units
            assert spent[-1]["epsilon_spent"] == pytest.approx(cell.claim["epsilon"], rel=2e-3)
    # Same spec and seed, same numbers.
    one = load_suite(str(path), ["privacy.unit=example", "privacy.epsilon=2.0"])
    again = run_suite(one, tmp_path / "again", workers=1).cells[0]
    first = next(c for c in result.cells if c.key == again.key)
    assert [m.value for m in again.metrics] == [m.value for m in first.metrics]


def test_default_model_is_pretrained_once_and_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_CACHE", str(tmp_path))
    folder = default_model_folder(TINY_LM, seed=0)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pkl"))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert default_model_folder(TINY_LM, seed=0) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    assert default_model_folder(TINY_LM.model_copy(update={"pretrain_steps": 6}), 0) != folder
    tokenizer = load_tokenizer(folder)
    assert all(len(tokenizer.encode(f" {d}", add_special_tokens=False)) == 1 for d in range(10))
    model = load_model(folder, "causal_lm", 0)
    assert model.config.n_embd == 16 and model.config.vocab_size == len(tokenizer)


def test_exposure_ranks_match_brute_force_over_every_secret(saved_model):
    tokenizer = load_tokenizer(saved_model)
    model = load_model(saved_model, "causal_lm", 0)
    prefix, digits = "my PIN is", 2
    fast = secret_log_likelihoods(model, tokenizer, prefix, digits)
    head = [tokenizer.bos_token_id, *tokenizer.encode(prefix, add_special_tokens=False)]
    tails = [[tokenizer.encode(f" {c}", add_special_tokens=False)[0] for c in f"{s:02d}"]
             for s in range(100)]
    x = torch.tensor([head + tail for tail in tails])  # every full candidate sequence
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[:, :-1].double(), dim=-1)
    brute = torch.stack([sum(logp[s, len(head) - 1 + j, t] for j, t in enumerate(tail))
                         for s, tail in enumerate(tails)])
    torch.testing.assert_close(fast, brute, rtol=1e-6, atol=1e-6)
    best = int(fast.argmax())
    assert exposure(fast, f"{best:02d}") == (pytest.approx(math.log2(100)), 1)


def test_jsonl_folder_loads_one_client_per_file_and_rejects_bad_lines(tmp_path):
    for c in range(3):
        lines = [json.dumps({"text": f"client {c} note {i}", "label": "a" if i % 2 else "b"})
                 for i in range(5)]
        (tmp_path / f"c{c}.jsonl").write_text("\n".join(lines) + "\n")
    lm = LMSpec(canaries={"count": 2, "digits": 2, "repetitions": [3], "inclusion": 1.0})
    data = load_text_data(DataSpec(name="jsonl", path=str(tmp_path), clients=10), lm, seed=0)
    assert data.n_clients == 3 and data.label_names == ["a", "b"]
    assert len(data.train_texts) + len(data.test_texts) == 15 + 2 * 3
    assert int(data.train_is_canary.sum()) == 6
    assert set(data.train_clients.tolist()) == {0, 1, 2}
    (tmp_path / "c1.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(PrivbenchError, match=r"c1.jsonl line 2"):
        load_text_data(DataSpec(name="jsonl", path=str(tmp_path)), lm, seed=0)


@pytest.mark.parametrize("override, message", [
    (["data.name=digits"], "data.name = 'digits': task causal_lm needs a text data set"),
    (["data.name=jsonl"], "data.path: missing"),
    (["model.path=/nonexistent/model"], "model.path = '/nonexistent/model': no config.json"),
    (["lm.canaries.count=60"], "lm.canaries.count = 60"),
])
def test_lm_spec_errors_name_the_field(tmp_path, override, message):
    path = tmp_path / "s.toml"
    path.write_text('task = "causal_lm"\n[data]\nname = "support_messages"\n'
                    '[model]\nname = "tiny_gpt2"\n[lm.canaries]\ndigits = 2\n')
    with pytest.raises(SpecError) as err:
        load_suite(str(path), override)
    assert any(message in line for line in err.value.lines()), err.value.lines()


def test_sequence_classification_trains_and_reports_accuracy(saved_model, tmp_path):
    path = tmp_path / "suite.toml"
    text = SUITE.format(path=saved_model).replace('task = "causal_lm"',
                                                  'task = "sequence_classification"')
    path.write_text(text)
    suite = load_suite(str(path), ["privacy.unit=example", "privacy.epsilon=2.0",
                                   "lm.finetune=full"])
    cell = run_suite(suite, tmp_path / "run", workers=1).cells[0]
    assert cell.status == "ok", cell.error
    acc = cell.metric("utility", "accuracy")
    assert 0.0 <= acc.ci_low <= acc.value <= acc.ci_high <= 1.0
    assert cell.metric("loss", "auc") is not None
    assert cell.metric("canary_exposure", "mean_exposure") is None
    assert cell.claim["unit"] == "example" and cell.claim["epsilon"] <= 2.0 + 1e-9
