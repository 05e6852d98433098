"""Training-data extraction by generation (Carlini et al. 2021), counting verbatim canaries.

Continuations of each prefix are sampled from the model (top-k sampling, plus the greedy one),
then ranked two ways: by the model's perplexity and by the zlib ratio (log-perplexity over zlib
entropy, which demotes merely repetitive text). A canary is extracted when its full text occurs
verbatim in a generation; `top` says how many of the best-ranked generations an attacker keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from privbench.attacks.membership.lm import mean_nll, zlib_entropy
from privbench.query.causal_lm import encode, sequence_logprobs


@dataclass
class Extraction:
    """What came out: every generation, and for each canary its best rank under each ordering
    (None: never generated verbatim)."""

    generations: list[str]
    rank_by_perplexity: dict[str, int | None] = field(default_factory=dict)
    rank_by_zlib: dict[str, int | None] = field(default_factory=dict)

    def extracted(self, top: int | None = None) -> list[str]:
        """Canaries found verbatim among the `top` best generations by either ordering."""
        limit = top if top is not None else len(self.generations)
        return [c for c in self.rank_by_perplexity
                if any(r is not None and r <= limit
                       for r in (self.rank_by_perplexity[c], self.rank_by_zlib[c]))]


@torch.no_grad()
def sample_continuations(model: Any, tokenizer: Any, prefixes: Sequence[str], *,
                         samples: int = 16, max_new_tokens: int = 24, top_k: int = 40,
                         seed: int = 0) -> list[list[int]]:
    """Token ids of prefix + continuation: the greedy one and `samples` top-k samples each.

    Args:
        model, tokenizer: the causal LM; prefixes: the prompts.
        samples, max_new_tokens, top_k, seed: the sampling plan (the global torch RNG is forked).
    Returns:
        (1 + samples) sequences per prefix, padding stripped.
    """
    out: list[list[int]] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prefix in prefixes:
            ids = torch.tensor([encode(tokenizer, prefix)])
            common = {"max_new_tokens": max_new_tokens, "pad_token_id": pad,
                      "attention_mask": torch.ones_like(ids)}
            greedy = model.generate(ids, do_sample=False, **common)
            sampled = model.generate(ids, do_sample=True, top_k=top_k,
                                     num_return_sequences=samples, **common)
            for row in [*greedy, *sampled]:
                out.append(_strip_padding(row.tolist(), pad, ids.shape[1]))
    return out


def _strip_padding(ids: list[int], pad: int | None, keep: int) -> list[int]:
    end = len(ids)
    while end > keep and pad is not None and ids[end - 1] == pad:
        end -= 1
    return ids[:end]


def extract_canaries(model: Any, tokenizer: Any, prefixes: Sequence[str],
                     canaries: Sequence[str], **sampling: Any) -> Extraction:
    """Generate from `prefixes`, rank the generations, and locate each canary's text in them.

    Args:
        model, tokenizer: the causal LM; prefixes: the prompts; canaries: the texts to find;
        sampling: `sample_continuations`' options.
    Returns:
        The Extraction: the generations and each canary's best rank by perplexity and by
        zlib ratio (None when it was never generated).
    """
    sequences = sample_continuations(model, tokenizer, prefixes, **sampling)
    skip = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    texts = [tokenizer.decode([t for t in s if t not in skip]) for s in sequences]
    nll = mean_nll(sequence_logprobs(model, sequences))
    by_ppl = np.argsort(nll, kind="stable")
    by_zlib = np.argsort(nll / zlib_entropy(texts), kind="stable")
    result = Extraction(generations=texts)
    for canary in canaries:
        hit = np.array([_normalise(canary) in _normalise(t) for t in texts])
        result.rank_by_perplexity[canary] = _best_rank(hit, by_ppl)
        result.rank_by_zlib[canary] = _best_rank(hit, by_zlib)
    return result


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _best_rank(hit: np.ndarray, order: np.ndarray) -> int | None:
    ranks = np.flatnonzero(hit[order])
    return int(ranks[0]) + 1 if len(ranks) else None
