"""Which inversion signals a language model's client update carries, LoRA or full fine-tuning.

Bag of words needs the gradient of the input embeddings (the rows of the batch's tokens are the
only non-zero ones when the embeddings are untied; with tied embeddings the output layer's
gradient touches every row and the batch's rows stand out by their norm). DAGER needs the
full-rank weight gradients of the first two blocks' attention input projections (GPT-2's
`transformer.h.{0,1}.attn.c_attn`), whose column space is the span of the batch's layer inputs.
Under LoRA both are frozen: the update holds only the adapters' low-rank factors, whose
gradients have rank at most r (and at the first round, with B = 0, A's gradient is exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Params = dict[str, torch.Tensor]
DAGER_LAYERS = ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight")


@dataclass
class UpdateSignals:
    """What one model's client updates expose to the two text inversion attacks.

    Attributes:
        embedding: the input embedding's parameter name in the update, or None (frozen).
        tied: whether the input embedding is also the output layer (GPT-2's default).
        dager: the first two blocks' attention weight names, or None when not in the update.
        width: the hidden size d (DAGER separates at most d - 1 tokens per batch).
        bow_reason, dager_reason: why an attack is unavailable (None: available).
        tensors: each trainable tensor family's name, shape and rank in one update.
    """

    embedding: str | None
    tied: bool
    dager: tuple[str, str] | None
    width: int
    bow_reason: str | None
    dager_reason: str | None
    tensors: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """One row per attack: whether it runs, the signal it needs and why it does not."""
        return [
            {"attack": "bag of words", "needs": "input-embedding gradient (one row per token)",
             "available": self.bow_reason is None, "reason": self.bow_reason
             or ("tied embeddings: batch rows found by norm (the output layer touches every "
                 "row)" if self.tied else "untied embeddings: exact non-zero rows")},
            {"attack": "DAGER", "needs": "full-rank gradient of the first two blocks' "
             "attention input weights", "available": self.dager_reason is None,
             "reason": self.dager_reason or f"exact while the batch holds fewer than "
             f"d = {self.width} tokens"},
        ]


def update_signals(model: nn.Module, update: Params, finetune: str) -> UpdateSignals:
    """Inspect one recorded client update of `model` (names as its trainable parameters).

    Args:
        model: the released model (a transformers causal LM, or a peft model under LoRA).
        update: one client's update as the server recorded it.
        finetune: the spec's lm.finetune ("full" or "lora").
    Returns:
        The signals present, each attack's availability and the reason when it is absent.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    embedding = names.get(id(emb))
    embedding = embedding if embedding in update else None
    width = int(emb.shape[1])
    lora = finetune == "lora"
    bow_reason = None
    if embedding is None:
        bow_reason = ("input embeddings frozen under LoRA: no embedding gradient in the update"
                      if lora else "the input embeddings are not trained: no embedding gradient")
    dager_names = DAGER_LAYERS if all(n in update for n in DAGER_LAYERS) else None
    dager_reason = None
    if dager_names is None:
        dager_reason = ("first-layer weights frozen under LoRA: the update holds only rank-"
                        f"{_lora_rank(update)} adapter factors, not the full-rank gradient "
                        "whose span DAGER tests" if lora else
                        "no gradient of GPT-2's transformer.h.0/1.attn.c_attn weights "
                        "(DAGER is implemented for GPT-2 blocks, at least two)")
    return UpdateSignals(embedding, tied, dager_names, width, bow_reason, dager_reason,
                         _tensor_table(update))


def _lora_rank(update: Params) -> int | str:
    ranks = {int(t.shape[0]) for n, t in update.items() if "lora_A" in n and t.ndim == 2}
    return ranks.pop() if len(ranks) == 1 else "r"


def _tensor_table(update: Params) -> list[dict[str, Any]]:
    """Each trainable tensor family (the name with block numbers dropped): how many tensors,
    one's shape and the numerical rank of the first one's update (matrices only)."""
    groups: dict[str, dict[str, Any]] = {}
    for name, t in update.items():
        family = ".".join("*" if part.isdigit() else part for part in name.split("."))
        if family in groups:
            groups[family]["count"] += 1
            continue
        rank = None
        if t.ndim == 2:
            rank = int(torch.linalg.matrix_rank(t.double(), rtol=1e-6)) if t.abs().max() > 0 \
                else 0
        groups[family] = {"tensor": family, "count": 1, "shape": list(t.shape), "rank": rank,
                          "zero": bool(t.abs().max() == 0)}
    return list(groups.values())
