"""Causal LMs and sequence classifiers of architectures other than GPT-2 (tiny random configs
saved with save_pretrained, tests/tiny_models.py) fine-tune through the one trainer with DP LoRA
and full fine-tuning, at client and example level."""

from __future__ import annotations

import logging
import math

import pytest
from safetensors.torch import load_file
from tiny_models import tiny_model_folder

from privbench.data.text_corpus import TOPICS
from privbench.models.hf import prepare_for_finetuning
from privbench.models.pretrained_lm import load_model
from privbench.run.cell import run_cell
from privbench.run.cell_paths import cell_dir
from privbench.spec.lm_schema import LMSpec
from privbench.spec.load import validate_suite
from privbench.spec.suite import expand

MODELS = [("llama", "causal_lm"), ("opt", "causal_lm"), ("llama", "sequence_classification"),
          ("bert", "sequence_classification"), ("distilbert", "sequence_classification")]


def _cell(folder, task: str, finetune: str, unit: str):
    raw = {"name": "arch", "seed": 0, "task": task,
           "data": {"name": "support_messages", "clients": 4},
           "model": {"path": str(folder)},
           "lm": {"finetune": finetune, "lora_r": 2, "max_length": 24,
                  "messages_per_client": 4, "optimizer": "sgd",
                  "canaries": {"count": 0}},  # the tiny tokenizer splits digits
           "train": {"rounds": 2, "cohort": 2, "batch_size": 4, "lr": 0.05},
           "privacy": {"epsilon": 4.0, "clip": 1.0, "unit": unit},
           "attacks": {"loss": {"enabled": True}}}
    return expand(validate_suite(raw, "test"), "test")[0]


# Every architecture, both fine-tunings, both units: encoders' (BERT, DistilBERT) full
# fine-tuning at example level runs on the hooks engine (vmap cannot trace their mask code).
CASES = [(arch, task, finetune, unit) for arch, task in MODELS for finetune in ("lora", "full")
         for unit in ("client", "example")]


@pytest.mark.parametrize("arch, task, finetune, unit", CASES,
                         ids=["-".join(c) for c in CASES])
def test_architecture_fine_tunes_privately(arch, task, finetune, unit, tmp_path, caplog):
    folder = tiny_model_folder(arch, task)
    cell = _cell(folder, task, finetune, unit)
    with caplog.at_level(logging.INFO, logger="privbench.trainers"):
        result = run_cell(cell, tmp_path)
    if unit == "example" and finetune == "full" and arch in ("bert", "distilbert"):
        # vmap cannot trace the encoders and ghost norms have no rule for LayerNorm: the
        # per-example gradients come from the fallback engine
        assert "per-example gradient engine: hooks" in caplog.text
    assert result.status == "ok", result.error
    assert not [h for h in result.history if "scorer_error" in h], result.history
    assert result.claim["unit"] == unit and 0 < result.claim["epsilon"] <= 4.0 + 1e-9
    utility = result.metric("utility", "perplexity" if task == "causal_lm" else "accuracy")
    assert utility is not None and math.isfinite(utility.value)
    # The trainable parameters moved from the saved model's (LoRA's B starts at zero); a
    # classifier head for the data's 4 labels is new (the saved one has 3), so it is left out.
    trained = load_file(str(cell_dir(tmp_path, cell.key) / "weights.safetensors"))
    start = prepare_for_finetuning(load_model(folder, task, len(TOPICS)),
                                   LMSpec(finetune=finetune, lora_r=2), task)
    before = {n: p.detach() for n, p in start.named_parameters() if p.requires_grad}
    assert trained.keys() == before.keys()
    if finetune == "lora":
        assert all("lora_" in n or "score" in n or "classifier" in n for n in trained)
    body = [n for n in trained if "classifier" not in n and "score" not in n]  # not the new head
    assert body and any(not bool((trained[n] == before[n]).all()) for n in body)


def test_loading_a_model_prints_no_progress_bar_and_keeps_the_callers_setting(saved_model,
                                                                               capfd):
    """A suite loads the model once per cell: transformers' "Loading weights" bar is silenced
    for privbench's load only, and a caller who turned the bars on or off keeps that."""
    from transformers.utils import logging as hf_logging

    for enabled in (True, False):
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        capfd.readouterr()
        load_model(saved_model, "causal_lm", 1)
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() == enabled
    hf_logging.enable_progress_bar()
