"""Inversion of a fine-tuned LM's real client updates (attacks/inversion/lm_updates.py): DAGER and
bag of words on the updates the one trainer recorded, with the cell's own model and tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2LMHeadModel

from privbench.data.text_corpus import public_corpus
from privbench.errors import SpecError
from privbench.models.pretrained_lm import tiny_gpt2_config, train_tokenizer
from privbench.report.render import render_report
from privbench.run.cell import run_cell
from privbench.run.results import CellResult
from privbench.scoring import SCORERS
from privbench.spec.lm_schema import LMSpec
from privbench.spec.load import validate_suite
from privbench.spec.suite import Suite, expand

# Two blocks (DAGER's second span check) and a width above every client's token count.
LM = LMSpec(layers=2, width=128, heads=4, vocab_size=600, max_length=32)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny GPT-2 (tied embeddings, as the default model) and its BPE, saved as a user would."""
    folder = tmp_path_factory.mktemp("lm")
    tokenizer = train_tokenizer(public_corpus(1000, 5), 600)
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config(LM, tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def spec(folder, *, lm=None, train=None, privacy=None, inversion=None, **top) -> dict:
    """One federated round of 4 clients with one training message each (24 tokens)."""
    return {"name": "lminv", "seed": 0, "task": "causal_lm",
            "data": {"name": "support_messages", "clients": 4, "test_fraction": 0.25},
            "model": {"path": str(folder)},
            "lm": {"finetune": "full", "optimizer": "sgd", "max_length": 24,
                   "messages_per_client": 2, "canaries": {"count": 0}, **(lm or {})},
            "train": {"rounds": 1, "cohort": 4, "batch_size": 8, "lr": 0.05, **(train or {})},
            "privacy": {"epsilon": math.inf, "clip": 1.0, "delta": 1e-5, **(privacy or {})},
            "attacks": {"loss": {"enabled": False}, "canary_exposure": {"enabled": False},
                        "inversion": {"enabled": True, "rounds": [1], **(inversion or {})}},
            **top}


def run(s: dict, tmp_path) -> CellResult:
    result = run_cell(expand(validate_suite(s, "test"), "test")[0], tmp_path)
    assert result.status == "ok", result.error
    assert not [m for m in result.metrics if m.metric == "error"]
    return result


def inversion_rows(s: dict, tmp_path) -> dict:
    return {(m.scorer, m.metric): m for m in run(s, tmp_path).metrics
            if m.scorer.startswith("inversion")}


@pytest.fixture(scope="module")
def one_step_cell(model_folder, tmp_path_factory):
    return run(spec(model_folder), tmp_path_factory.mktemp("one_step"))


@pytest.fixture(scope="module")
def one_step(one_step_cell):
    return {(m.scorer, m.metric): m for m in one_step_cell.metrics
            if m.scorer.startswith("inversion")}


def test_one_local_step_of_full_fine_tuning_gives_each_clients_text_back(one_step):
    rows = one_step
    dager, bow = rows[("inversion_dager", "exact_match")], rows[("inversion_bow", "token_recall")]
    assert dager.surface == bow.surface == "client_updates"
    assert dager.details["n"] == 4 and dager.details["local_steps"] == [1]
    assert dager.value == 1.0 and rows[("inversion_dager", "rouge1")].value == 1.0
    assert dager.ci_low < 1.0 == dager.ci_high  # Clopper-Pearson over the 4 attacked clients
    for batch in dager.details["examples"]:  # the real tokenizer's tokens, original = recovered
        assert all(p["recovered"] == p["original"] and len(p["original"]) > 10 for p in batch)
    # tied embeddings: the batch's rows stand out of the output layer's gradient by their norm
    assert bow.value >= 0.8 and rows[("inversion_bow", "token_precision")].value >= 0.9
    assert rows[("inversion_signals", "bow_available")].value == 1.0
    assert rows[("inversion_signals", "dager_available")].value == 1.0
    # the round's sum (what secure aggregation shows) holds 4 x 24 tokens, under d = 128:
    # DAGER separates the whole cohort's sequences from it too
    total = rows[("inversion_dager_aggregate", "rouge1")]
    assert total.surface == "aggregates" and total.value >= 0.5
    assert rows[("inversion_dager_aggregate", "exact_match")].details["n"] == 4


def test_several_local_steps_degrade_dager(model_folder, tmp_path, one_step):
    # 3 messages a client, batches of one: the update sums 3 gradients at moving parameters
    rows = inversion_rows(spec(model_folder, lm={"messages_per_client": 4},
                               train={"batch_size": 1}), tmp_path)
    dager = rows[("inversion_dager", "rouge1")]
    assert dager.details["local_steps"] == [3]
    assert rows[("inversion_dager", "exact_match")].value < 1.0
    assert dager.value < 0.5 <= one_step[("inversion_dager", "rouge1")].value


@pytest.mark.parametrize("privacy, inversion", [
    ({"epsilon": 8.0, "unit": "example"}, {}),  # DP-SGD noise inside each client's update
    ({"epsilon": 8.0}, {"noise": "client"}),  # client-level noise added before it leaves
])
def test_dp_noise_in_the_update_hides_the_text(model_folder, tmp_path, privacy, inversion):
    rows = inversion_rows(spec(model_folder, privacy=privacy, inversion=inversion), tmp_path)
    assert rows[("inversion_bow", "token_recall")].value <= 0.2
    assert rows[("inversion_dager", "rouge1")].value <= 0.2
    assert "noise" in rows[("inversion_dager", "rouge1")].details["view"]


def test_central_dp_does_not_hide_the_update_from_the_server(model_folder, tmp_path):
    rows = inversion_rows(spec(model_folder, privacy={"epsilon": 8.0}), tmp_path)
    assert rows[("inversion_dager", "exact_match")].value == 1.0
    assert "central DP does not hide it" in rows[("inversion_dager", "exact_match")].details["view"]


def test_lora_reports_which_signals_are_unavailable(model_folder, tmp_path):
    rows = inversion_rows(spec(model_folder, lm={"finetune": "lora"}), tmp_path)
    assert set(rows) == {("inversion_signals", "bow_available"),
                         ("inversion_signals", "dager_available")}
    bow, dager = rows[("inversion_signals", "bow_available")], rows[
        ("inversion_signals", "dager_available")]
    assert bow.value == dager.value == 0.0
    assert "frozen under LoRA" in bow.details["reason"]
    assert "rank-8 adapter factors" in dager.details["reason"]
    tensors = {t["tensor"]: t for t in bow.details["tensors"]}
    assert all("lora_" in name for name in tensors)
    a = next(t for name, t in tensors.items() if "lora_A" in name)
    assert a["zero"]  # round 1: B = 0, so A's gradient is exactly zero
    assert [r["available"] for r in bow.details["recoverable"]] == [False, False]


def test_secure_aggregation_leaves_only_the_sum(model_folder, tmp_path):
    rows = inversion_rows(spec(model_folder, secagg={"enabled": True}), tmp_path)
    assert not [k for k, m in rows.items() if m.surface == "client_updates"
                and k[0] != "inversion_signals"]
    recall = rows[("inversion_bow_aggregate", "token_recall")]
    assert recall.details["source"] == "the secure-aggregation sum the server decoded"
    assert 0.0 <= recall.value <= 1.0 and recall.ci_low <= recall.value <= recall.ci_high


def test_inversion_is_registered_for_language_cells_and_checked_before_training(model_folder):
    entry = SCORERS.get("lm_inversion")
    assert entry.kind == "inversion" and entry.contexts == ("language",)
    assert entry.names_row("inversion_dager") and entry.names_row("inversion_bow_aggregate")
    for bad, message in (({"task": "sequence_classification"}, "task = 'causal_lm'"),
                         ({"text": True}, "attacks.inversion.text = true"),
                         ({"rounds": [3]}, "attacks.inversion.rounds = [3]")):
        s = spec(model_folder, inversion={k: v for k, v in bad.items() if k != "task"})
        s.update({k: v for k, v in bad.items() if k == "task"})
        with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate_suite(s, "test")


def test_the_lm_report_shows_what_inversion_recovered(model_folder, one_step_cell, tmp_path):
    suite_spec = validate_suite(spec(model_folder), "test")
    suite = Suite(spec=suite_spec, source="test", cells=expand(suite_spec, "test"))
    html = render_report(tmp_path, suite, [one_step_cell])
    assert 'id="lm-recoverable"' in html and "What the server recovers" in html
    assert "bag-of-words recall (client updates)" in html and "DAGER ROUGE-1 on the sum" in html
    assert "exact while the batch holds fewer than d = 128 tokens" in html
