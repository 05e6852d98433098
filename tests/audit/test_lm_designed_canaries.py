"""Designed secret canaries for the black-box LM audit (audit.secret = "rare-tokens"): secrets of
the tokenizer's rarest whole words on public text, none shared, planted as the tokens scored."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tiny_lm
from test_lm_audit import _cell_spec, load_suite_text

from privbench.audit.designed_secrets import (
    rare_secret_text,
    rare_word_tokens,
    secret_token_scores,
)
from privbench.audit.lm_canaries import (
    AUDIT_TEMPLATE,
    PUBLIC_COUNT_TEXTS,
    canary_sentence,
    draw_secret_canaries,
    plant_secret_canaries,
    secret_audit_rows,
)
from privbench.data.text_clients import load_text_data
from privbench.data.text_corpus import public_corpus
from privbench.errors import PrivbenchError
from privbench.models.pretrained_lm import load_model, load_tokenizer
from privbench.run.runner import run_suite

RARE = ["audit.secret=rare-tokens", "audit.n_canaries=20", "privacy.epsilon=2.0"]


def test_secrets_are_the_rarest_public_words_none_shared_and_planted_as_scored(saved_model):
    spec = _cell_spec(saved_model, [*RARE, "audit.secret_tokens=2", "privacy.unit=example"])
    tok = load_tokenizer(saved_model)
    canaries = draw_secret_canaries(spec, 6, tok)
    used = [t for secret in canaries.tokens for t in secret]
    assert len(canaries.tokens) == 20 and all(len(s) == 2 for s in canaries.tokens)
    assert len(set(used)) == 40  # no token in two secrets
    # the rarest usable words on public text: none left out is rarer than one chosen
    public = public_corpus(PUBLIC_COUNT_TEXTS, spec.seed + 1)
    counts = Counter(t for text in public for t in tok.encode(text, add_special_tokens=False))
    usable = rare_word_tokens(tok, AUDIT_TEMPLATE, public, np.random.default_rng(0))
    assert max(counts[t] for t in used) <= min(counts[t] for t in set(usable) - set(used))
    # the planted sentence is the template and the secret's tokens, exactly
    head = tok.encode(AUDIT_TEMPLATE, add_special_tokens=False)
    for i, secret in enumerate(canaries.tokens):
        ids = tok.encode(canary_sentence(canaries, i, tok), add_special_tokens=False)
        assert ids == [*head, *secret]
    data = load_text_data(spec.data, spec.lm, spec.seed)
    planted, _, _ = plant_secret_canaries(spec, data, tok)
    added = planted.train_texts[len(data.train_texts):]
    assert added == [canary_sentence(canaries, i, tok) for i in np.flatnonzero(canaries.bits)]


def test_a_sentencepiece_style_tokenizer_keeps_the_word_space():
    """A Metaspace decoder drops a text's leading space: words are read after the template, so
    a SentencePiece-style tokenizer gets the same designed canaries."""
    tok = tiny_lm.split_digit_tokenizer()
    public = tiny_lm.sentences(200, 1)
    words = rare_word_tokens(tok, tiny_lm.CANARY_PREFIX, public, np.random.default_rng(0))
    counts = Counter(w for s in public for w in s.split())
    assert words and all(tok.decode([t]).strip().isalpha() for t in words)
    assert counts[tok.decode([words[0]]).strip()] == 0  # never in the public text, first
    text = rare_secret_text(tok, tiny_lm.CANARY_PREFIX, words[:2])
    head = tok.encode(tiny_lm.CANARY_PREFIX, add_special_tokens=False)
    assert tok.encode(text, add_special_tokens=False) == [*head, *words[:2]]


def test_a_tokenizer_with_too_few_words_is_refused_naming_the_field(saved_model):
    spec = _cell_spec(saved_model, ["audit.secret=rare-tokens", "audit.n_canaries=400",
                                    "audit.secret_tokens=4", "privacy.unit=example"])
    with pytest.raises(PrivbenchError, match=r"audit\.n_canaries = 400: rare-token secrets"):
        draw_secret_canaries(spec, 6, load_tokenizer(saved_model))


def test_rare_token_bound_covers_a_model_that_never_saw_the_canaries(saved_model):
    """Coverage at a known epsilon of 0 (a model independent of the bits): over 60 seeded draws
    of secrets and bits, eps_LB is 0 in at least 95%."""
    spec = _cell_spec(saved_model, [*RARE, "audit.selection=union", "privacy.unit=example"])
    tok, model = load_tokenizer(saved_model), load_model(saved_model, "causal_lm", 1)
    pool = rare_word_tokens(tok, AUDIT_TEMPLATE, public_corpus(PUBLIC_COUNT_TEXTS, 2),
                            np.random.default_rng(0))
    scores = dict(zip(pool, secret_token_scores(model, tok, AUDIT_TEMPLATE,
                                                [(t,) for t in pool]), strict=True))
    covered = 0
    for seed in range(60):
        s = spec.model_copy(update={"seed": seed})
        canaries = draw_secret_canaries(s, 6, tok)
        x = np.array([scores[secret[0]] for secret in canaries.tokens])
        covered += secret_audit_rows("x", s, x, canaries, 2.0, 1e-5)[0].value <= 0.0
    assert covered >= 57


def test_every_lm_cell_gets_a_designed_canary_audit(saved_model, tmp_path):
    suite = load_suite_text(saved_model, ["audit.secret=rare-tokens", "audit.n_canaries=20"])
    run = run_suite(suite, tmp_path / "run", workers=1)
    for cell in run.cells:
        assert cell.status == "ok", cell.error
        row = cell.metric("audit", "eps_lb")
        assert row is not None and "rare word tokens" in row.details["design"]
        assert row.details["secret"] == "rare-tokens" and row.details["n_canaries"] == 20
        assert 0.0 <= row.value <= cell.metric("audit", "eps_ceiling").value
        if cell.claim["epsilon"] == float("inf"):
            assert row.details["verdict"] == "TOO_SMALL"
        else:  # a correct trainer
            assert row.details["verdict"] != "FAIL", row.details["note"]
