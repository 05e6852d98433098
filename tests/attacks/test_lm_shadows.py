"""LiRA and RMIA on language models with shadow LMs trained by the one trainer (`runs=K`)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2LMHeadModel

import privbench.attacks.membership.lm_shadows as shadows_mod
from privbench.attacks.membership.lm_shadow_attack import lm_shadow_attack_scorer
from privbench.attacks.membership.lm_shadows import train_lm_runs
from privbench.data.text_corpus import public_corpus
from privbench.errors import SpecError
from privbench.models.pretrained_lm import tiny_gpt2_config, train_tokenizer
from privbench.run.tasks import build_task
from privbench.spec.lm_schema import LMSpec
from privbench.spec.shadow_cells import trains_shadows
from privbench.spec.suite import load_suite
from privbench.trainers.client_data import from_examples
from privbench.trainers.fedavg import train_fedavg

TINY = LMSpec(layers=1, width=32, heads=2, vocab_size=600, pretrain_docs=1000,
              pretrain_steps=5, pretrain_batch=8, max_length=32, messages_per_client=8)

SUITE = """
name = "lm-shadows"
seed = 3
task = "causal_lm"
[data]
name = "support_messages"
clients = 6
[model]
path = "{path}"
[lm]
max_length = 32
messages_per_client = 8
optimizer = "adam"
server_optimizer = "adam"
finetune = "full"
[lm.canaries]
count = 2
digits = 2
repetitions = [2]
[train]
rounds = 12
cohort = 3
batch_size = 8
lr = 0.02
server_lr = 0.05
[privacy]
clip = 1.0
[attacks.shadows]
models = 8
[attacks.lira]
enabled = true
[attacks.rmia]
enabled = true
"""


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    """A small causal LM saved with save_pretrained, and a suite fine-tuning it."""
    folder = tmp_path_factory.mktemp("lm")
    tok = train_tokenizer(public_corpus(1000, 5), TINY.vocab_size)
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config(TINY, tok)).save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    path = folder / "suite.toml"
    path.write_text(SUITE.format(path=folder / "model"))
    return path


def _trained(path, overrides, run_dir):
    """The cell's task, trained by the one trainer as privbench/run/cell.py trains it."""
    cell = load_suite(str(path), overrides).cells[0]
    task = build_task(cell, run_dir)
    trained = train_fedavg(task.adapter, task.clients, task.public, task.train,
                           cell.spec.privacy, cell.spec.seed, optimizer=task.optimizer,
                           server_optimizer=task.server_optimizer, engine=cell.spec.model.engine,
                           microbatch=task.microbatch, **task.hooks)
    return cell, trained, task.context(trained)


@pytest.mark.parametrize("overrides", [
    ["privacy.epsilon=inf"],
    ["privacy.epsilon=4.0", "privacy.unit=client"],  # central DP-FedAvg
    ["privacy.epsilon=4.0", "privacy.unit=example"],  # DP-SGD inside the clients
])
def test_a_shadow_given_the_targets_clients_and_seed_replays_the_target(suite_file, tmp_path,
                                                                         overrides):
    """The shadows' trainer path (adapter, Adam in the clients and at the server, clip, noise)
    is the target's: one run on the target's data and seed gives its weights."""
    cell, trained, ctx = _trained(suite_file, ["train.rounds=4", *overrides], tmp_path)
    inputs = ctx.inputs
    assert trained.claim.is_private == ("privacy.epsilon=inf" not in overrides)
    ex = inputs.examples
    data = from_examples(ex.batch(), ex.clients, inputs.n_clients)
    params = train_lm_runs(inputs, trained.observations.initial_params, data, trained.claim,
                           cell.spec.seed, runs=1)
    for name, p in trained.observations.final_params.items():
        torch.testing.assert_close(params[name][0], p, rtol=1e-5, atol=1e-6)


def test_lira_and_rmia_beat_loss_at_low_fpr_on_a_memorising_lm(suite_file, tmp_path,
                                                                monkeypatch):
    """Per-message calibration against shadow LMs finds members LOSS cannot at the smallest FPR
    the pooled counts resolve; the shadows are `train_runs` calls (runs = LM_CHUNK each, K runs
    in all) with the target's adapter and optimizers, cached by content."""
    calls = []
    real = shadows_mod.train_runs

    def spy(adapter, init, data, train, **kw):
        calls.append((adapter, kw["runs"], kw["optimizer"], kw["server_optimizer"]))
        return real(adapter, init, data, train, **kw)

    monkeypatch.setattr(shadows_mod, "train_runs", spy)
    _, _, ctx = _trained(suite_file, ["privacy.epsilon=inf", "train.rounds=30",
                                      "train.local_epochs=2"], tmp_path)
    rows = {(r.scorer, r.metric): r for r in lm_shadow_attack_scorer(ctx)}
    chunk = shadows_mod.LM_CHUNK
    assert calls == [(ctx.inputs.adapter, chunk, "adam", "adam")] * (8 // chunk)
    # 9 models: the target (6 clients x 6 trained messages, 2 held out and 4 fresh ones of the
    # same client: 72 candidates) and 8 shadows, each holding 6 of every client's 12, so every
    # candidate is IN 4 shadows: 324 pooled members and non-members, which resolve FPR 1e-2
    # (three false positives) and 1 / 324 below it
    fpr = "tpr@1e-02"
    loss = rows[("pooled_loss", fpr)]
    assert (loss.details["n_members"], loss.details["n_nonmembers"]) == (324, 324)
    # LiRA offline and RMIA; online LiRA (on sequences and per token) is reported too, but with
    # three IN and three OUT references per message its IN/OUT fit is too noisy to beat LOSS here
    for attack in ("lira_offline", "rmia"):
        row = rows[(f"pooled_{attack}", fpr)]
        assert row.details["resolvable"] and row.details["achieved_fpr"] <= 1e-2
        assert row.ci_low > loss.value, (attack, row.value, row.ci_low, loss.value)
    lira = rows[("pooled_lira_offline", fpr)]
    # beside the blind baseline on the same pooled splits: members and non-members are random
    # splits of the same texts, so a text-only classifier finds nothing
    blind = rows[("pooled_blind", "auc")]
    assert blind.value < 0.6 and rows[("pooled_blind", fpr)].value < lira.ci_low
    assert rows[("lira_offline", "auc")].value > blind.value
    # the shadows are cached by content: a second scoring trains nothing, same numbers
    calls.clear()
    again = {(r.scorer, r.metric): r.value for r in lm_shadow_attack_scorer(ctx)}
    assert calls == [] and again[("pooled_lira_offline", fpr)] == lira.value


def test_shadow_problems_are_refused_before_training(suite_file):
    with pytest.raises(SpecError, match=r"attacks.shadows.models = 3: .*raise"):
        load_suite(str(suite_file), ["attacks.shadows.models=3"])
    with pytest.raises(SpecError, match=r"attacks.lira.enabled = true: .*task = 'causal_lm'"):
        load_suite(str(suite_file), ["task=sequence_classification"])


def test_only_the_cells_attacks_shadows_cells_names_train_shadows():
    """The llm suite trains shadow LMs in its example-level cell without DP only (whose Dirac
    canary records are not candidates); a cell whose canary clients the shadows cannot replay is
    refused before training, naming the fix."""
    shadows = ["attacks.lira.enabled=true", "attacks.rmia.enabled=true"]
    cells = load_suite("llm", shadows).cells
    chosen = [(c.spec.privacy.unit, c.spec.privacy.epsilon) for c in cells
              if trains_shadows(c.spec)]
    assert chosen == [("example", math.inf)]
    with pytest.raises(SpecError, match=r"canary clients .*attacks.shadows.cells"):
        load_suite("llm", [*shadows, "attacks.shadows.cells=all"])
