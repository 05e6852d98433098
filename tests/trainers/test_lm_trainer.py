"""Language models through the one trainer: the `llm` suite with secure aggregation, local DP,
adaptive clipping and a noise schedule, and an LM cell killed mid-run resuming to the same weights.
"""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from privbench.run.cell import run_cell
from privbench.run.cell_paths import cell_dir
from privbench.spec.suite import load_suite

# The built-in llm suite, shrunk to seconds: the saved tiny GPT-2, 6 clients, 3 rounds.
SMALL = ["data.clients=6", "lm.max_length=32", "lm.messages_per_client=4",
         "lm.canaries.count=4", "lm.canaries.digits=2", "lm.canaries.repetitions=[2]",
         "train.rounds=3", "train.cohort=3", "train.batch_size=4", "privacy.unit=client",
         "privacy.epsilon=4.0", "audit.n_canaries=8"]


def _llm_cell(model_folder, *overrides: str):
    suite = load_suite("llm", [f"model.path={model_folder}", *SMALL, *overrides])
    assert len(suite.cells) == 1
    return suite.cells[0]


def _run(model_folder, tmp_path, *overrides: str):
    result = run_cell(_llm_cell(model_folder, *overrides), tmp_path)
    assert result.status == "ok", result.error
    assert not [h for h in result.history if "scorer_error" in h], result.history
    assert 1.0 < result.metric("utility", "perplexity").value < math.inf
    assert result.claim["epsilon"] <= 4.0 + 1e-9
    return result


def test_llm_suite_runs_under_secure_aggregation(saved_model, tmp_path):
    result = _run(saved_model, tmp_path, "secagg.enabled=true", "secagg.bits=20")
    rounds = [h for h in result.history if "secagg_upload_bytes" in h]
    assert rounds and all(h["secagg_contributors"] == h["cohort"] for h in rounds)
    exposed = (cell_dir(tmp_path, result.key) / "observations.json").read_text()
    assert "aggregates" in exposed and "client_updates" not in exposed


def test_llm_suite_runs_with_local_dp(saved_model, tmp_path):
    result = _run(saved_model, tmp_path, "privacy.setting=local",
                  "privacy.neighbouring=replace_one")
    assert result.claim["setting"] == "local"
    assert any("server" in g for g in result.claim["guarantee_against"])


def test_llm_suite_runs_with_adaptive_clipping(saved_model, tmp_path):
    result = _run(saved_model, tmp_path, "privacy.adaptive_clip=true")
    clips = [h["clip"] for h in result.history if "clip" in h]
    assert len(clips) == 3 and clips[0] == 1.0 and len(set(clips)) > 1  # the clip adapts
    assert result.claim["count_noise_multiplier"] == 10.0


def test_llm_suite_runs_with_a_noise_schedule(saved_model, tmp_path):
    result = _run(saved_model, tmp_path, "privacy.noise_schedule=[2.0, 1.0]")
    assert any("noise schedule" in note for note in result.claim["notes"])
    constant = _run(saved_model, tmp_path / "constant")
    assert result.claim["noise_multiplier"] != constant.claim["noise_multiplier"]


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("unit", ["client", "example"])
def test_an_lm_cell_killed_mid_run_resumes_to_identical_weights(saved_model, tmp_path,
                                                                unit):
    cell = _llm_cell(saved_model, f"privacy.unit={unit}", "train.rounds=4")
    straight = run_cell(cell, tmp_path / "straight")
    assert straight.status == "ok", straight.error

    def crash_after_2(done: int, total: int) -> None:
        if done == 2:
            raise Crash("killed")

    killed = run_cell(cell, tmp_path / "killed", on_round=crash_after_2)
    assert killed.status == "error" and "Crash" in killed.error
    resumed = run_cell(cell, tmp_path / "killed")
    assert resumed.status == "ok", resumed.error
    want = load_file(str(cell_dir(tmp_path / "straight", cell.key) / "weights.safetensors"))
    got = load_file(str(cell_dir(tmp_path / "killed", cell.key) / "weights.safetensors"))
    assert want.keys() == got.keys()
    assert all(bool((want[n] == got[n]).all()) for n in want)
    assert resumed.claim["epsilon"] == straight.claim["epsilon"]
    assert [m.value for m in resumed.metrics] == [m.value for m in straight.metrics]


def test_lora_targets_the_model_lacks_fail_before_training_in_one_line(saved_model,
                                                                      tmp_path):
    cell = _llm_cell(saved_model, "lm.finetune=lora", 'lm.lora_targets=["no_such_layer"]')
    result = run_cell(cell, tmp_path)
    assert result.status == "error"
    assert "lm.lora_targets = ['no_such_layer']: LoRA cannot attach" in result.error
    assert "c_attn" in result.error and "\n" not in result.error  # names layers that exist
    assert not (tmp_path / "work" / cell.key).exists()  # nothing trained, nothing checkpointed


def test_a_scorer_failing_after_training_keeps_the_model_and_other_metrics(saved_model,
                                                                          tmp_path, monkeypatch):
    import privbench.models.lm_task as lm_task

    def broken_scorer(ctx):
        raise RuntimeError("scorer bug")

    registered = lm_task.scorers_for
    monkeypatch.setattr(lm_task, "scorers_for", lambda context: [broken_scorer,
                                                                  *registered(context)])
    result = run_cell(_llm_cell(saved_model), tmp_path)
    assert result.status == "ok", result.error
    row = result.metric("broken", "error")
    assert row is not None and "RuntimeError: scorer bug" in row.details["error"]
    assert result.metric("utility", "perplexity") is not None
    assert result.metric("privacy", "epsilon").value == result.claim["epsilon"]
    assert (cell_dir(tmp_path, result.key) / "weights.safetensors").exists()
    assert any(h.get("scorer_error") == "broken" for h in result.history)
