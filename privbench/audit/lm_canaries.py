"""Black-box one-run audit of a language model: secret canaries in a fixed template.

`audit.n_canaries` random d-digit secrets (d = `lm.canaries.digits`) are written into one fixed
template ("the audit code is 4 8 2 9."); each is included with probability 1/2, independently
(Steinke, Nasr, Jagielski 2023). Including a canary is exactly the add/remove-one change that the
claim bounds:
- example level: the canary is one training record, added to a client drawn at random;
- client level: the canary is a client of its own, holding `max(lm.canaries.repetitions)` copies of
  its sentence, and the expected cohort grows so that each real client keeps its sampling rate
  (`privbench.audit.canaries.audited_cohort`, as the tabular canary clients do).

The released model (`final_model`) scores every canary by the log-likelihood of its secret after
the template, one batched pass over all 10^d candidates (`privbench.attacks.exposure_lm`); every
canary
shares the template, so the scores compare directly (their order is the exposure order). The
scores and bits go to the project's one-run estimator and verdict (privbench/audit/estimators.py,
verdict.py) unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from privbench.audit.canaries import audited_cohort
from privbench.audit.designed_secrets import rare_secret_text, rare_token_secrets
from privbench.audit.one_run_bound import one_run_bound
from privbench.audit.verdict import audit_rows
from privbench.data.text_clients import TextData
from privbench.data.text_corpus import canary_text, public_corpus
from privbench.run.results import MetricRow
from privbench.spec.schema import CellSpec, TrainSpec

# The fixed template of every audit canary (none of the exposure canaries' templates).
AUDIT_TEMPLATE = "the audit code is"
# Public texts whose token counts rank the words of rare-token secrets.
PUBLIC_COUNT_TEXTS = 2000


@dataclass(frozen=True)
class SecretCanaries:
    """The audit's secrets, their inclusion bits and (if included) the client holding them."""

    secrets: list[str]
    bits: np.ndarray  # (m,) bool: True = trained on
    clients: np.ndarray  # (m,) client id of each included canary, -1 if excluded
    copies: int  # copies of an included canary's sentence in its client
    template: str = AUDIT_TEMPLATE
    design: str = "digits"  # audit.secret: "digits" or "rare-tokens"
    tokens: tuple[tuple[int, ...], ...] = ()  # rare-tokens: each secret's token ids

    @property
    def m(self) -> int:
        return len(self.bits)


def plants_secret_canaries(spec: CellSpec) -> bool:
    """Whether the cell's training data carry the black-box audit's secret canaries."""
    return spec.task == "causal_lm" and spec.audit.enabled and spec.audit.canary == "secret"


def draw_secret_canaries(spec: CellSpec, n_clients: int,
                         tokenizer: PreTrainedTokenizerBase | None = None) -> SecretCanaries:
    """Distinct random secrets with Bernoulli(1/2) bits; their clients (real or new).

    Args:
        spec: the cell's spec (audit.n_canaries, audit.secret, the unit, the seed).
        n_clients: the real clients; tokenizer: the model's, for audit.secret = "rare-tokens"
            (privbench.audit.designed_secrets).
    """
    rng = np.random.default_rng([spec.seed, 0xA5EC])
    m, digits = spec.audit.n_canaries, spec.lm.canaries.digits
    tokens: tuple[tuple[int, ...], ...] = ()
    if spec.audit.secret == "rare-tokens":
        if tokenizer is None:
            raise ValueError("rare-token secrets are drawn from the model's tokenizer")
        tokens = tuple(rare_token_secrets(tokenizer, AUDIT_TEMPLATE,
                                          public_corpus(PUBLIC_COUNT_TEXTS, spec.seed + 1), m,
                                          spec.audit.secret_tokens, rng))
        secrets = [rare_secret_text(tokenizer, "", t).strip() for t in tokens]
    else:
        values = rng.choice(10**digits, size=m, replace=False)
        secrets = [str(int(v)).zfill(digits) for v in values]
    bits = rng.random(m) < 0.5
    clients = np.full(m, -1, dtype=np.int64)
    if spec.privacy.unit == "example":  # one record in a random real client
        clients[bits] = rng.integers(n_clients, size=int(bits.sum()))
        copies = 1
    else:  # a client of its own
        clients[bits] = n_clients + np.arange(int(bits.sum()))
        copies = max(spec.lm.canaries.repetitions)
    return SecretCanaries(secrets, bits, clients, copies, design=spec.audit.secret,
                          tokens=tokens)


def plant_secret_canaries(spec: CellSpec, data: TextData,
                          tokenizer: PreTrainedTokenizerBase | None = None
                          ) -> tuple[TextData, SecretCanaries, TrainSpec]:
    """The cell's text with the included canaries added, the canaries, and the training plan
    (client level: the expected cohort scaled to keep real clients' sampling rate).

    Args:
        spec: the cell's spec; data: its text; tokenizer: the model's (rare-token secrets).
    """
    canaries = draw_secret_canaries(spec, data.n_clients, tokenizer)
    texts, clients = [], []
    for i, (bit, client) in enumerate(zip(canaries.bits, canaries.clients, strict=True)):
        if bit:
            texts += [canary_sentence(canaries, i, tokenizer)] * canaries.copies
            clients += [int(client)] * canaries.copies
    n_new = int(canaries.bits.sum()) if spec.privacy.unit == "client" else 0
    planted = dataclasses.replace(
        data, train_texts=[*data.train_texts, *texts],
        train_clients=np.concatenate([data.train_clients, np.array(clients, dtype=np.int64)]),
        train_labels=np.concatenate([data.train_labels, np.zeros(len(texts), dtype=np.int64)]),
        train_is_canary=np.concatenate([data.train_is_canary, np.ones(len(texts), dtype=bool)]),
        n_clients=data.n_clients + n_new)
    train = spec.train
    if n_new:
        cohort = audited_cohort(train.cohort, data.n_clients, canaries.m)
        train = train.model_copy(update={"cohort": min(cohort, float(planted.n_clients))})
    return planted, canaries, train


def canary_sentence(canaries: SecretCanaries, i: int,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The training sentence of canary i: its template and secret."""
    if canaries.design == "rare-tokens":
        assert tokenizer is not None
        return rare_secret_text(tokenizer, canaries.template, canaries.tokens[i])
    return canary_text(canaries.template, canaries.secrets[i])


def secret_scores(log_likelihoods: np.ndarray, canaries: SecretCanaries) -> np.ndarray:
    """Each canary's score (higher = 'in'): log p(secret | template) under the released model,
    from the log-likelihoods of every candidate secret indexed by its integer value."""
    return np.array([log_likelihoods[int(s)] for s in canaries.secrets], dtype=np.float64)


def secret_audit_rows(key: str, spec: CellSpec, scores: np.ndarray, canaries: SecretCanaries,
                      claimed: float, delta: float) -> list[MetricRow]:
    """eps_lb and eps_ceiling rows of the one-run bound on the secret canaries' scores."""
    a = spec.audit
    rng = np.random.default_rng([spec.seed, 0xA0D1])
    bound = one_run_bound(scores, canaries.bits, delta=delta, alpha=a.alpha,
                          selection=a.selection, rng=rng)
    if canaries.design == "rare-tokens":
        design = (f"secret canaries in {canaries.template!r}, {len(canaries.tokens[0])} rare "
                  "word tokens each (none shared), scored by log-likelihood (black box)")
    else:
        design = (f"secret canaries in {canaries.template!r}, {len(canaries.secrets[0])} "
                  "digits, scored by log-likelihood (black box)")
    extra = {"canary": a.canary, "design": design, "secret": canaries.design,
             "n_canaries": canaries.m, "included": int(canaries.bits.sum()),
             "copies": canaries.copies, "unit": spec.privacy.unit}
    return audit_rows(key, bound, claimed, "final_model", a.mode, extra)
