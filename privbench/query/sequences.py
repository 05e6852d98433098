"""Per-sequence signals of a language model: summed NLL, token counts, correct next tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from privbench.data.tokens import attention_mask


@torch.no_grad()
def sequence_stats(model: nn.Module, ids: torch.Tensor, weights: torch.Tensor,
                   batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sequence: summed next-token NLL, number of predicted tokens, number predicted right.

    Args:
        model: the causal LM; ids, weights: the sequences (N, T) and target weights (N, T-1);
        batch_size: sequences per forward.
    Returns:
        (nll, count, correct), each (N,) float64.
    """
    model.eval()
    nll, count, correct = [], [], []
    for i in range(0, len(ids), batch_size):
        x, w = ids[i:i + batch_size], weights[i:i + batch_size]
        logits = model(x, attention_mask=attention_mask(w)).logits[:, :-1]
        loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        nll.append((loss * w).sum(dim=1).double())
        count.append(w.sum(dim=1).double())
        correct.append(((logits.argmax(dim=-1) == x[:, 1:]).float() * w).sum(dim=1).double())
    return torch.cat(nll), torch.cat(count), torch.cat(correct)


@torch.no_grad()
def classifier_logits(model: nn.Module, ids: torch.Tensor, weights: torch.Tensor,
                      batch_size: int = 128) -> torch.Tensor:
    """Class logits (B, C) of a sequence classifier.

    Args:
        model: the classifier; ids, weights: the sequences (N, T) and target weights (N, T-1);
        batch_size: sequences per forward.
    """
    model.eval()
    return torch.cat([model(ids[i:i + batch_size],
                            attention_mask=attention_mask(weights[i:i + batch_size])).logits
                      for i in range(0, len(ids), batch_size)])


def model_at(model: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` in eval mode with the named parameters set to `params` (a round's
    global model, or where training started); the others keep the released values.

    Args:
        model: the released model.
        params: parameter name -> value (names as `model.named_parameters()`).
    Returns:
        The copy (the released model is untouched).
    """
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in params:
                p.copy_(params[name])
    return out.eval()
