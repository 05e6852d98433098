"""Gradient inversion: the issue's "done when" figures on small seeded cases, plus the metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.func import functional_call, grad, vmap

from privbench.attacks.inversion.image import (
    dlg,
    first_layer_recovery,
    idlg_labels,
    inverting_gradients,
)
from privbench.attacks.inversion.language import (
    CORPUS,
    EOS,
    encode,
    lm_gradient,
    tiny_gpt2,
    vocabulary,
)
from privbench.attacks.inversion.metrics import (
    hungarian_match,
    image_scores,
    label_accuracy,
    psnr,
    rouge_n,
    ssim,
    summarise,
    text_scores,
    token_precision_recall,
)
from privbench.attacks.inversion.text import dager, embedding_rows, layer_input
from privbench.errors import SpecError
from privbench.models import mlp
from privbench.run.cell import run_cell
from privbench.spec.suite import load_suite

N_BATCHES = 20  # attacked batches per figure: enough for the confidence intervals


@pytest.fixture(scope="module")
def digits_mlp():
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mlp(64, 10, [32])
    params = {k: v.detach() for k, v in model.named_parameters()}

    def batch_gradients(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss(p, xb, yb):
            return F.cross_entropy(functional_call(model, p, (xb,)), yb)
        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x[idx], y[idx])

    return model, params, x, y, batch_gradients


def test_analytic_recovery_is_exact_and_idlg_labels_all_right_at_batch_one(digits_mlp):
    _model, _params, x, y, batch_gradients = digits_mlp
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:N_BATCHES, None]
    g = batch_gradients(idx)
    for i in range(N_BATCHES):
        rec = first_layer_recovery(g["0.weight"][i], g["0.bias"][i], 1)
        assert torch.allclose(rec[0], x[idx[i, 0]], atol=1e-5)
        assert idlg_labels(g["2.bias"][i], 1) == [int(y[idx[i, 0]])]


def test_inverting_gradients_reaches_20_db_at_batch_four(digits_mlp):
    model, params, x, y, batch_gradients = digits_mlp
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))[:N_BATCHES * 4]
    idx = idx.view(N_BATCHES, 4)
    rec = inverting_gradients(model, params, batch_gradients(idx), y[idx], (8, 8),
                              iterations=120, seed=0)
    scores = summarise([image_scores(rec[i].numpy(), x[idx[i]].numpy(), (8, 8))
                        for i in range(N_BATCHES)])
    mean, low, _ = scores["psnr"]
    assert mean >= 20.0 and low >= 15.0, scores
    assert scores["ssim"][0] > 0.8, scores


def test_dlg_recovers_record_and_label_at_batch_one(digits_mlp):
    model, params, x, y, batch_gradients = digits_mlp
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))[:N_BATCHES, None]
    rec, labels = dlg(model, params, batch_gradients(idx), 1, 64, iterations=120, seed=0)
    psnrs = [image_scores(rec[i].numpy(), x[idx[i]].numpy(), (8, 8))["psnr"]
             for i in range(N_BATCHES)]
    assert np.mean(psnrs) >= 20.0, psnrs
    assert (labels == y[idx]).float().mean() >= 0.9


def test_text_bag_of_words_exact_and_dager_recovers_sequences_of_tiny_gpt2():
    vocab = vocabulary()
    eos = vocab.index(EOS)
    model = tiny_gpt2(len(vocab), seed=0)
    assert model.config.n_embd == 128 and not model.config.tie_word_embeddings
    rng = random.Random(0)
    bow, seqs = [], []
    for i in range(N_BATCHES):
        b = 1 + i % 4
        ids, labels = encode(rng.sample(CORPUS, b), vocab)
        assert int((labels != -100).sum()) < model.config.n_embd
        g = lm_gradient(model, ids, labels)
        true = [ids[j][labels[j] != -100].tolist() for j in range(b)]
        found = embedding_rows(g["transformer.wte.weight"]) - {eos}
        bow.append(token_precision_recall(found, {t for s in true for t in s} - {eos}))
        recovered = [[*s, eos] for s in dager(model, g, max_len=ids.shape[1])]
        seqs.append(text_scores(recovered, true)["exact_match"])
    assert all(p == 1.0 and r == 1.0 for p, r in bow), bow
    assert np.mean(seqs) >= 0.9, seqs


def test_noise_hides_the_bag_of_words():
    vocab = vocabulary()
    model = tiny_gpt2(len(vocab), seed=0)
    ids, labels = encode(list(CORPUS[:2]), vocab)
    g = lm_gradient(model, ids, labels)["transformer.wte.weight"]
    norm = float(g.norm())
    noisy = g / norm + torch.randn(g.shape, generator=torch.Generator().manual_seed(0))
    assert embedding_rows(noisy, noise_std=1.0) == set()


INVERSION_SUITE = """
name = "inversion"
seed = 0
[data]
name = "digits"
clients = 898
[model]
hidden = [32]
[train]
rounds = 1
cohort = 40
local_epochs = 1
batch_size = 1
[attacks.loss]
enabled = false
[attacks.inversion]
enabled = true
rounds = [1]
clients = 20
"""


def test_server_recovers_batch_one_updates_of_a_real_federated_round(tmp_path):
    path = tmp_path / "inv.toml"
    path.write_text(INVERSION_SUITE + '[privacy]\nepsilon = inf\n')
    suite = load_suite(str(path), [])
    result = run_cell(suite.cells[0], tmp_path / "run")
    assert result.status == "ok", result.error
    psnr_row = result.metric("inversion_analytic", "psnr")
    assert psnr_row.details["n"] == 20 and psnr_row.surface == "client_updates"
    assert psnr_row.value >= 90.0  # 100 dB is the cap for an exact copy
    assert result.metric("inversion_idlg", "label_accuracy").value == 1.0
    assert psnr_row.details["gallery"] and psnr_row.details["batch_size"].startswith("known")


def test_client_noise_defeats_the_analytic_attack_that_clipping_alone_does_not(tmp_path):
    values = {}
    for noise in ("observed", "client"):
        path = tmp_path / f"{noise}.toml"
        path.write_text(INVERSION_SUITE + f'noise = "{noise}"\n[privacy]\nepsilon = 8\n')
        result = run_cell(load_suite(str(path), []).cells[0], tmp_path / noise)
        assert result.status == "ok", result.error
        values[noise] = result.metric("inversion_analytic", "psnr").value
    assert values["observed"] >= 90.0 > 20.0 > values["client"], values


def test_rounds_after_training_are_a_spec_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(INVERSION_SUITE.replace("rounds = [1]", "rounds = [5]"))
    with pytest.raises(SpecError, match=r"attacks.inversion.rounds = \[5\].*train.rounds"):
        load_suite(str(path), [])


def test_image_metrics():
    rng = np.random.default_rng(0)
    a = rng.random((3, 8, 8))
    assert np.isinf(psnr(a, a)).all()
    assert psnr(a * 0 + 0.1, a * 0)[0] == pytest.approx(20.0)
    assert ssim(a, a) == pytest.approx(np.ones(3))
    assert (ssim(rng.random((3, 8, 8)), a) < 0.5).all()
    perm = np.array([2, 0, 1])
    assert (hungarian_match(a[perm], a) == np.argsort(perm)).all()
    assert image_scores(a[perm].reshape(3, -1), a.reshape(3, -1), (8, 8))["psnr"] == 100.0


def test_label_and_text_metrics():
    assert label_accuracy([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
    assert token_precision_recall({1, 2, 3}, {2, 3, 4, 5}) == (2 / 3, 0.5)
    assert rouge_n([1, 2, 3], [1, 2, 4], 1) == pytest.approx(2 / 3)
    assert rouge_n([1, 2, 3], [1, 2, 4], 2) == pytest.approx(0.5)
    scores = text_scores([[5, 6], [1, 2, 3]], [[1, 2, 3], [5, 6]])
    assert scores == {"exact_match": 1.0, "rouge1": 1.0, "rouge2": 1.0}
    assert text_scores([[1, 2, 3]], [[1, 2, 3], [5, 6]])["exact_match"] == 0.0
    m, lo, hi = summarise([{"exact_match": 1.0}] * 19 + [{"exact_match": 0.0}])["exact_match"]
    assert m == 0.95 and 0.7 < lo < 0.95 and hi < 1.0


def test_dager_fails_once_the_batch_has_more_tokens_than_the_hidden_size():
    vocab = vocabulary()
    eos = vocab.index(EOS)
    model = tiny_gpt2(len(vocab), seed=0, width=32)
    ids, labels = encode(list(CORPUS[:4]), vocab)
    assert int((labels != -100).sum()) > 32  # the span of 37 token inputs fills all 32 dimensions
    recovered = dager(model, lm_gradient(model, ids, labels), max_len=ids.shape[1])
    true = [ids[j][labels[j] != -100].tolist() for j in range(4)]
    assert text_scores([[*s, eos] for s in recovered], true)["exact_match"] == 0.0


def test_dager_replays_the_first_block_exactly():
    model = tiny_gpt2(len(vocabulary()), seed=0)
    ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.transformer(input_ids=ids, output_hidden_states=True).hidden_states[1]
        expected = model.transformer.h[1].ln_1(full)
    assert torch.allclose(layer_input(model, ids, 1), expected, atol=1e-6)


def _value(cell: dict, scorer: str, metric: str) -> float:
    return next(m["value"] for m in cell["metrics"]
                if m["scorer"] == scorer and m["metric"] == metric)


def test_quick_suite_inversion_success_falls_with_epsilon_and_report_shows_it(quick_run,
                                                                             quick_results):
    out, _ = quick_run
    cells = quick_results["cells"]  # epsilon 1, 8, inf
    for scorer, metric in (("inversion_analytic", "psnr"), ("inversion_bow", "token_recall"),
                           ("inversion_dager", "rouge1"), ("inversion_idlg", "label_accuracy")):
        v1, v8, vinf = (_value(c, scorer, metric) for c in cells)
        assert vinf > v1 and vinf >= v8 >= v1 - 0.1, (scorer, metric, v1, v8, vinf)
    assert _value(cells[2], "inversion_dager", "exact_match") >= 0.9
    # secure aggregation: the sum of the cohort's updates gives back much less than each update
    assert (_value(cells[2], "inversion_analytic_aggregate", "psnr")
            < _value(cells[2], "inversion_analytic", "psnr") - 3)
    rows = [m for m in cells[0]["metrics"] if m["scorer"].startswith("inversion_")]
    assert all(m["details"]["n"] >= 20 and m["ci_low"] <= m["value"] <= m["ci_high"]
               for m in rows)
    html = (out / "index.html").read_text()
    section = html[html.index("Gradient inversion by a curious server"):]
    assert "<svg" in section and "data:image/png;base64," in section
    # Recovered text beside the training text is private: shown only when asked for.
    assert "<mark>" not in section and "are not shown" in section
    from privbench.report.render import render_report
    from privbench.run.runner import load_run

    suite, loaded = load_run(out)
    shown = render_report(out, suite, loaded, show_private_text=True)
    assert "<mark>" in shown[shown.index("Gradient inversion by a curious server"):]


def test_an_audited_run_inverts_only_real_clients_not_the_canary_clients(tmp_path):
    """Canary clients (ids past the real shards) are seen by the server but hold no records."""
    from privbench.run.cell import run_cell
    from privbench.spec.load import validate_suite
    from privbench.spec.suite import expand

    spec = {"name": "audited-inversion", "seed": 0,
            "data": {"name": "digits", "clients": 20},
            "model": {"name": "mlp", "hidden": [16]},
            "train": {"rounds": 3, "cohort": 5, "local_epochs": 1, "batch_size": 8},
            "privacy": {"epsilon": 4.0, "clip": 1.0},
            "attacks": {"inversion": {"enabled": True, "rounds": [1, 2], "clients": 20}},
            "audit": {"enabled": True, "surface": "iterates", "canary": "random-unit",
                      "n_canaries": 40, "canary_norm": 10.0}}
    result = run_cell(expand(validate_suite(spec, "test"), "test")[0], tmp_path)
    assert result.status == "ok", result.error
    assert result.metric("audit", "eps_lb") is not None
    assert any(m.scorer.startswith("inversion") for m in result.metrics)
