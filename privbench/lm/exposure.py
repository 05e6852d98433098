"""Canary exposure (Secret Sharer, Carlini et al. 2019), by rank over the whole secret space.

exposure(s) = log2 |R| - log2 rank(s), where rank 1 is the most likely secret. With d-digit
secrets, |R| = 10^d and the log-likelihood of every candidate comes from one batched forward pass
of the 10^(d-1) prefixes "template + first d-1 digits": position j's next-token distribution
scores digit j+1 for every candidate sharing those digits.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from privbench.attacks.exposure import canary_rank, exposure_by_rank
from privbench.errors import PrivbenchError


def digit_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The single token of " 0" ... " 9" (a secret's digits follow spaces)."""
    ids = [tokenizer.encode(f" {d}", add_special_tokens=False) for d in range(10)]
    if any(len(i) != 1 for i in ids):
        raise PrivbenchError("lm.canaries: this tokenizer splits ' 0'..' 9' into several tokens, "
                             "so exposure cannot be ranked; set lm.canaries.count = 0")
    return [i[0] for i in ids]


@torch.no_grad()
def secret_log_likelihoods(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                           prefix: str, digits: int, batch_size: int = 512) -> torch.Tensor:
    """log p(secret | prefix) for all 10^digits secrets, indexed by the secret's integer value."""
    model.eval()
    digit_ids = torch.tensor(digit_token_ids(tokenizer))
    head = [tokenizer.bos_token_id, *tokenizer.encode(prefix, add_special_tokens=False)]
    n_prefix = 10 ** (digits - 1)
    # all (digits-1)-digit prefixes, most significant digit first
    values = torch.arange(n_prefix)
    places = 10 ** torch.arange(digits - 2, -1, -1) if digits > 1 else torch.zeros(0, dtype=int)
    known = (values.unsqueeze(1) // places) % 10  # (n_prefix, digits-1)
    seqs = torch.cat([torch.tensor(head).expand(n_prefix, -1), digit_ids[known]], dim=1)
    start = len(head) - 1
    logps = []
    for i in range(0, n_prefix, batch_size):
        batch = seqs[i:i + batch_size]
        logits = model(batch, attention_mask=torch.ones_like(batch)).logits[:, start:start + digits]
        logps.append(torch.log_softmax(logits.double(), dim=-1)[..., digit_ids])  # (b, d, 10)
    lp = torch.cat(logps)  # lp[p, j, v]: log p(digit j = v | prefix digits of p)
    total = torch.zeros(n_prefix, 10, dtype=torch.float64)
    for j in range(digits - 1):
        total += lp[torch.arange(n_prefix), j, known[:, j]].unsqueeze(1)
    total += lp[:, digits - 1, :]
    return total.flatten()  # index p * 10 + last digit == the secret's value


def exposure(log_likelihoods: torch.Tensor, secret: str) -> tuple[float, int]:
    """(exposure in bits, rank) of `secret`; ties are broken in the secret's favour."""
    nll = (-log_likelihoods).numpy()
    target = float(nll[int(secret)])
    return exposure_by_rank(target, nll), canary_rank(target, nll)
