"""Canary exposure (Secret Sharer, Carlini et al. 2019), by rank over the whole secret space.

exposure(s) = log2 |R| - log2 rank(s), where rank 1 is the most likely secret, and |R| = 10^d for
d-digit secrets. Every candidate is ranked by the model's log-likelihood of its digits after the
template, computed one of two ways:
- when the tokenizer has one token for each of " 0" ... " 9" (GPT-2's byte-level BPE), from one
  batched forward pass over the 10^(d-1) prefixes "template + first d-1 digits": position j's
  next-token distribution scores digit j+1 for every candidate sharing those digits;
- otherwise (tokenizers that split a digit from its space, as SentencePiece's "▁" + "3" does, or
  merge digits), each candidate's whole text "template 3 9 1 7" is tokenised as training
  tokenised it, and its tokens after the template are scored as one sequence (10^d sequences,
  batched). Both give log p(secret tokens | template) for every secret.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from privbench.attacks.exposure import canary_rank, exposure_by_rank
from privbench.data.text_corpus import secret_text
from privbench.errors import PrivbenchError

# The most candidates scored one sequence each (tokenizers without single-token digits).
MAX_WHOLE_CANDIDATES = 100_000


def digit_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """The single token of " 0" ... " 9" (a secret's digits follow spaces), or None when the
    tokenizer splits or merges them (then every candidate is scored whole)."""
    ids = [tokenizer.encode(f" {d}", add_special_tokens=False) for d in range(10)]
    if any(len(i) != 1 for i in ids):
        return None
    return [i[0] for i in ids]


def exposure_problem(tokenizer: PreTrainedTokenizerBase, digits: int) -> str | None:
    """Why exposure cannot rank `digits`-digit secrets with this tokenizer, in one line (checked
    before training), or None.

    Args:
        tokenizer: the LM's tokenizer; digits: lm.canaries.digits.
    """
    if digit_token_ids(tokenizer) is None and 10 ** digits > MAX_WHOLE_CANDIDATES:
        return (f"lm.canaries.digits = {digits}: this tokenizer has no single token per digit, "
                f"so each of the 10^{digits} secrets is scored whole (at most "
                f"{MAX_WHOLE_CANDIDATES:,}); lower lm.canaries.digits")
    return None


@torch.no_grad()
def secret_log_likelihoods(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                           prefix: str, digits: int, batch_size: int = 512) -> torch.Tensor:
    """log p(secret | prefix) for all 10^digits secrets, indexed by the secret's integer value.

    Args:
        model: a causal LM (called with ids and an attention mask).
        tokenizer: the tokenizer training used.
        prefix: the canary template's prefix ("my PIN is").
        digits: the number of digits in a secret.
        batch_size: sequences per forward pass.

    Returns:
        A float64 tensor of 10^digits log-likelihoods.
    """
    model.eval()
    digit_ids = digit_token_ids(tokenizer)
    if digit_ids is None:
        if (problem := exposure_problem(tokenizer, digits)) is not None:
            raise PrivbenchError(problem)
        return _whole_candidates(model, tokenizer, prefix, digits, max(1, batch_size // 4))
    ids = torch.tensor(digit_ids)
    head = [tokenizer.bos_token_id, *tokenizer.encode(prefix, add_special_tokens=False)]
    n_prefix = 10 ** (digits - 1)
    # all (digits-1)-digit prefixes, most significant digit first
    values = torch.arange(n_prefix)
    places = 10 ** torch.arange(digits - 2, -1, -1) if digits > 1 else torch.zeros(0, dtype=int)
    known = (values.unsqueeze(1) // places) % 10  # (n_prefix, digits-1)
    seqs = torch.cat([torch.tensor(head).expand(n_prefix, -1), ids[known]], dim=1)
    start = len(head) - 1
    logps = []
    for i in range(0, n_prefix, batch_size):
        batch = seqs[i:i + batch_size]
        logits = model(batch, attention_mask=torch.ones_like(batch)).logits[:, start:start + digits]
        logps.append(torch.log_softmax(logits.double(), dim=-1)[..., ids])  # (b, d, 10)
    lp = torch.cat(logps)  # lp[p, j, v]: log p(digit j = v | prefix digits of p)
    total = torch.zeros(n_prefix, 10, dtype=torch.float64)
    for j in range(digits - 1):
        total += lp[torch.arange(n_prefix), j, known[:, j]].unsqueeze(1)
    total += lp[:, digits - 1, :]
    return total.flatten()  # index p * 10 + last digit == the secret's value


def _whole_candidates(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prefix: str,
                      digits: int, batch_size: int) -> torch.Tensor:
    """Every candidate's text tokenised whole; its tokens after the template's, scored.

    The template's tokens are those every candidate shares with the template tokenised alone
    (a tokenizer may merge the last template token with what follows; the merged tokens are
    then part of the scored continuation), so all candidates are scored from the same context.
    """
    from privbench.query.causal_lm import encode, sequence_logprobs

    head = encode(tokenizer, prefix)
    rows = [encode(tokenizer, secret_text(prefix, f"{v:0{digits}d}")) for v in range(10**digits)]
    shared = min(_common(r, head) for r in rows)  # >= 1: the BOS token, or the first word
    logps = sequence_logprobs(model, rows, batch_size=batch_size)  # token t+1 given tokens <= t
    return torch.tensor([float(lp[shared - 1:].sum()) for lp in logps], dtype=torch.float64)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def exposure(log_likelihoods: torch.Tensor, secret: str) -> tuple[float, int]:
    """(exposure in bits, rank) of `secret`; ties are broken in the secret's favour.

    Args:
        log_likelihoods: the log-likelihood of every candidate secret, indexed by its value
            (10^digits,); secret: the canary's digits.
    """
    nll = (-log_likelihoods).numpy()
    target = float(nll[int(secret)])
    return exposure_by_rank(target, nll), canary_rank(target, nll)
