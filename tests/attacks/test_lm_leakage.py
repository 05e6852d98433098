"""Language-model leakage: exposure on constructed ranks, a canary extracted verbatim from a tiny
causal LM trained here, and `privbench attack` on that model saved to a local folder."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli
from tiny_lm import (
    CANARY,
    CANARY_PREFIX,
    save,
    sentences,
    split_digit_tokenizer,
    tokenizer,
    train_tiny_lm,
)

from privbench.attacks.exposure import canary_rank, exposure_by_rank, exposure_extrapolated
from privbench.attacks.exposure_lm import exposure, exposure_problem, secret_log_likelihoods
from privbench.attacks.extraction import extract_canaries
from privbench.attacks.membership.lm import (
    blind_scores,
    min_k_score,
    reference_ratio_score,
    zlib_entropy,
    zlib_ratio_score,
)
from privbench.attacks.membership.roc import auc
from privbench.data.text_clients import load_text_data
from privbench.query.causal_lm import encode, sequence_logprobs
from privbench.spec.lm_schema import LMSpec
from privbench.spec.schema import DataSpec

MEMBERS = sentences(64, 1)
NONMEMBERS = sentences(64, 2)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """Trained on 64 sentences plus the canary repeated 10 times, and saved; plus a reference
    model trained on other sentences of the same distribution."""
    tok = tokenizer()
    root = tmp_path_factory.mktemp("lm")
    model = train_tiny_lm(MEMBERS + [CANARY] * 10, tok, steps=200, seed=0)
    reference = train_tiny_lm(sentences(64, 3), tok, steps=100, seed=1)
    return model, tok, save(model, tok, root / "target"), save(reference, tok, root / "ref")


def test_exposure_by_rank_on_a_constructed_candidate_space():
    nll = np.random.default_rng(0).permutation(1024).astype(float)  # 2^10 distinct candidates
    assert canary_rank(0.0, nll) == 1 and exposure_by_rank(0.0, nll) == 10.0
    assert canary_rank(3.0, nll) == 4 and exposure_by_rank(3.0, nll) == pytest.approx(8.0)
    assert exposure_by_rank(1023.0, nll) == 0.0  # the least likely candidate: no exposure


def test_extrapolated_exposure_matches_the_true_tail_probability():
    rng = np.random.default_rng(1)
    sample = rng.normal(10.0, 2.0, 20000)
    # a canary 2.5 sd below the mean: Pr[NLL <= canary] = Phi(-2.5) = 0.00621 -> 7.33 bits
    assert exposure_extrapolated(5.0, sample) == pytest.approx(-math.log2(0.0062097), abs=0.3)
    assert exposure_extrapolated(10.0, sample) == pytest.approx(1.0, abs=0.1)


def test_min_k_zlib_and_reference_ratio_on_constructed_log_probabilities():
    logprobs = [np.array([-0.1, -5.0, -0.2, -0.3, -4.0]), np.array([-1.0, -1.0])]
    np.testing.assert_allclose(min_k_score(logprobs, 0.4), [-4.5, -1.0])
    np.testing.assert_allclose(min_k_score(logprobs, 1.0), [-1.92, -1.0])
    texts = ["aaaaaaaaaaaaaaaa", "the quick brown fox"]
    ent = zlib_entropy(texts)
    assert ent[0] < ent[1]
    np.testing.assert_allclose(zlib_ratio_score(logprobs, texts), [-1.92 / ent[0], -1.0 / ent[1]])
    reference = [np.array([-2.0, -2.0]), np.array([-1.0])]
    np.testing.assert_allclose(reference_ratio_score(logprobs, reference), [2.0 - 1.92, 0.0])


def test_blind_baseline_sees_distribution_shift_and_nothing_else():
    rng = np.random.default_rng(2)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    same_a = [" ".join(rng.choice(words, 6)) for _ in range(80)]
    same_b = [" ".join(rng.choice(words, 6)) for _ in range(80)]
    s_in, s_out = blind_scores(same_a, same_b)
    assert abs(auc(s_in, s_out) - 0.5) < 0.12
    shifted = [t + " 2024" for t in same_b]  # e.g. members collected later than non-members
    s_in, s_out = blind_scores(shifted, same_a)
    assert auc(s_in, s_out) > 0.95


def test_blind_baseline_grouped_by_client_is_at_chance_on_random_splits_of_each_client():
    """Each client's messages split at random into members and non-members: a text-only
    classifier can find nothing, and with folds that keep a client's texts together it does
    not; plain folds read the client's words against the member/non-member balance its other
    texts leave in training and score below chance (why the suite's blind rows group)."""
    plain, grouped = [], []
    for seed in range(4):
        data = load_text_data(DataSpec(name="support_messages", clients=20),
                              LMSpec(messages_per_client=12), seed)
        keep = np.r_[~data.train_is_canary, np.ones(len(data.test_texts), bool)]
        texts = np.array(data.train_texts + data.test_texts, dtype=object)[keep]
        clients = np.r_[data.train_clients, data.test_clients][keep]
        rng = np.random.default_rng(seed)
        bits = np.zeros(len(texts), bool)
        for c in np.unique(clients):
            idx = np.flatnonzero(clients == c)
            bits[rng.choice(idx, len(idx) // 2, replace=False)] = True
        ins, outs = list(texts[bits]), list(texts[~bits])
        plain.append(auc(*blind_scores(ins, outs, seed=seed)))
        grouped.append(auc(*blind_scores(ins, outs, seed=seed,
                                         groups=np.r_[clients[bits], clients[~bits]])))
    assert all(abs(a - 0.5) < 0.1 for a in grouped), grouped
    assert np.mean(plain) < 0.45 < np.mean(grouped), (plain, grouped)


def test_a_canary_repeated_10_times_is_extracted_verbatim_and_fully_exposed(tiny_lm):
    model, tok, _, _ = tiny_lm
    found = extract_canaries(model, tok, [CANARY_PREFIX], [CANARY], samples=8,
                             max_new_tokens=6, seed=0)
    assert found.extracted() == [CANARY]
    assert found.rank_by_perplexity[CANARY] == 1
    # exposure over all 10^4 four-digit secrets of the canary's format
    candidates = [f"{CANARY_PREFIX} {' '.join(d)}" for d in itertools.product("0123456789",
                                                                             repeat=4)]
    nll = np.array([-lp.sum() for lp in
                    sequence_logprobs(model, [encode(tok, c) for c in candidates],
                                      batch_size=1000)])
    canary = candidates.index(CANARY)
    assert exposure_by_rank(nll[canary], nll) == pytest.approx(math.log2(10_000))
    control = candidates.index(f"{CANARY_PREFIX} 2 8 4 6")  # never inserted
    assert exposure_by_rank(nll[control], nll) < 8


def test_privbench_attack_audits_a_local_hugging_face_model(tiny_lm, tmp_path):
    _, _, target_dir, ref_dir = tiny_lm
    members = tmp_path / "members.txt"
    members.write_text("\n".join(MEMBERS) + "\n")
    nonmembers = tmp_path / "nonmembers.jsonl"
    nonmembers.write_text("\n".join(json.dumps({"text": t}) for t in NONMEMBERS) + "\n")
    out = tmp_path / "rows.json"
    proc = run_cli("attack", "--model", str(target_dir), "--members", str(members),
                   "--nonmembers", str(nonmembers), "--reference", str(ref_dir),
                   "--out", str(out), timeout=300, env={"HF_HUB_OFFLINE": "1",
                                                        "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    rows = {(r["scorer"], r["metric"]): r for r in json.loads(out.read_text())}
    for scorer in ("loss", "min_k", "zlib", "ref_ratio", "blind"):
        assert ("auc" in proc.stdout) and (scorer, "tpr@1e-02") in rows
        assert scorer in proc.stdout
    assert rows[("loss", "auc")]["value"] > 0.6  # the model memorised its 64 sentences
    assert rows[("loss", "auc")]["ci_low"] > 0.5
    assert abs(rows[("blind", "auc")]["value"] - 0.5) < 0.15  # same distribution: blind is blind
    assert rows[("blind", "auc")]["surface"] == "text only"


def test_privbench_attack_on_user_losses_and_bad_input(tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "in.npy", rng.exponential(0.5, 300))
    (tmp_path / "out.txt").write_text("\n".join(map(str, rng.exponential(1.0, 300))))
    proc = run_cli("attack", "--members", str(tmp_path / "in.npy"),
                   "--nonmembers", str(tmp_path / "out.txt"), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    rows = {(r["scorer"], r["metric"]): r for r in json.loads((tmp_path / "r.json").read_text())}
    assert 0.6 < rows[("loss", "auc")]["value"] < 0.75  # exponential rates 2 vs 1: AUC 2/3
    for model, members, option in ((tmp_path, "out.txt", "--model"),
                                   (tmp_path, "in.npy", "--members")):
        bad = run_cli("attack", "--model", str(model), "--members", str(tmp_path / members),
                      "--nonmembers", str(tmp_path / "out.txt"))
        assert bad.returncode == 2
        assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith(option)
        assert "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def split_digit_lm():
    """The canary repeated 10 times, under a tokenizer that splits " 3" into "▁" and "3"."""
    tok = split_digit_tokenizer()
    assert all(len(tok.encode(f" {d}", add_special_tokens=False)) == 2 for d in range(10))
    return train_tiny_lm(MEMBERS + [CANARY] * 10, tok, steps=200, seed=0), tok


def test_exposure_ranks_every_secret_whole_when_the_tokenizer_splits_digits(split_digit_lm):
    model, tok = split_digit_lm
    digits, secret = 4, CANARY[len(CANARY_PREFIX):].replace(" ", "")
    lls = secret_log_likelihoods(model, tok, CANARY_PREFIX, digits)
    # brute force: each candidate's full text through the model, its tokens after the prefix
    for v in (0, 1234, int(secret), 9999):
        text = f"{CANARY_PREFIX} {' '.join(f'{v:04d}')}"
        ids = encode(tok, text)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        start = len(encode(tok, CANARY_PREFIX))
        want = sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
        assert float(lls[v]) == pytest.approx(want, abs=1e-5)
    assert exposure(lls, secret) == (pytest.approx(math.log2(10_000)), 1)  # rank 1: extracted
    assert exposure(lls, "2846")[0] < 8  # never inserted
    found = extract_canaries(model, tok, [CANARY_PREFIX], [CANARY], samples=8,
                             max_new_tokens=10, seed=0)
    assert found.extracted() == [CANARY]


def test_a_secret_space_too_large_to_score_whole_is_refused_before_training():
    split, single = split_digit_tokenizer(), tokenizer()
    assert exposure_problem(split, 4) is None and exposure_problem(single, 8) is None
    problem = exposure_problem(split, 6)
    assert problem.startswith("lm.canaries.digits = 6:") and "\n" not in problem
