"""Text to tensors: right-padded token ids and the weights of the positions that are predicted.

Each sequence starts with the begin-of-text token, so every real token is predicted. Padding is on
the right and causal attention never looks ahead, so pads change no real token's logits and no
attention mask or position-id shift is needed: positions are 0..T-1 as in the unpadded sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

BOS = "<|endoftext|>"
PAD = "<pad>"


def sequence_tensors(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                     max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (N, T) and target weights (N, T-1): weight 1 where token t+1 is real, else 0.

    Each text starts with BOS and is cut to `max_length` tokens; rows are padded with the pad id.

    Args:
        tokenizer: the model's tokenizer; texts: the texts; max_length: tokens per row.
    """
    bos = tokenizer.bos_token_id
    rows = [[bos, *tokenizer.encode(t, add_special_tokens=False)][:max_length] for t in texts]
    width = max(2, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    real = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        real[i, : len(r)] = True
    return ids, real[:, 1:].float()


def attention_mask(weights: torch.Tensor) -> torch.Tensor:
    """The real-token mask (B, T) from target weights (B, T-1): the first token is always real.

    Passing it explicitly keeps transformers from guessing padding from the pad id (a data-
    dependent check that vmap cannot run, and wrong when the pad id is also the begin token).
    """
    return torch.cat([torch.ones_like(weights[:, :1]), weights], dim=1).long()


@dataclass(frozen=True)
class Examples:
    """Tokenised examples: ids (N, T), target weights (N, T-1), labels (N,) and clients (N,)."""

    ids: torch.Tensor
    weights: torch.Tensor
    labels: torch.Tensor
    clients: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batch(self) -> dict[str, torch.Tensor]:
        """The examples as the Hugging Face adapter's Batch (privbench/models/hf.py)."""
        return {"ids": self.ids, "weights": self.weights, "labels": self.labels}

    def subset(self, idx: torch.Tensor) -> Examples:
        """The examples at `idx`: ids, weights, labels and clients indexed alike."""
        return Examples(self.ids[idx], self.weights[idx], self.labels[idx], self.clients[idx])


def examples(tokenizer: PreTrainedTokenizerBase, texts: list[str], labels, clients,
             max_length: int) -> Examples:
    """Tokenise `texts` (with their labels and client ids) into Examples.

    Args:
        tokenizer: the model's tokenizer; texts: the texts; labels, clients: one per text (N,);
        max_length: tokens per row.
    """
    ids, weights = sequence_tensors(tokenizer, texts, max_length)
    return Examples(ids, weights, torch.as_tensor(labels, dtype=torch.long),
                    torch.as_tensor(clients, dtype=torch.long))
