"""Text gradient inversion for GPT-2-style decoders: the bag of words from the input-embedding
gradient, and DAGER-style exact sequence recovery (Petrov et al. 2024).

DAGER: the gradient of a linear layer's weight is X^T Delta, so while the batch holds fewer
tokens than the hidden size, its column space is exactly the span of that layer's inputs. A
candidate input lies in the span only if it occurred in the batch. Layer 0's input depends only
on (token, position), which filters the vocabulary per position; layer 1's input depends on the
whole prefix (causal attention), which assembles the filtered tokens into sequences.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from privbench.models.adapter import Params


def embedding_rows(embedding_grad: torch.Tensor, noise_std: float = 0.0,
                   rel_tol: float = 1e-7) -> set[int]:
    """The bag of words: rows of the input-embedding gradient that are not zero.

    With untied embeddings only the batch's tokens get a gradient. Under Gaussian noise of std
    `noise_std`, a row counts when its norm exceeds what noise alone reaches (sqrt(d) + 5 std).

    Args:
        embedding_grad: the input-embedding gradient (V, d); noise_std: the noise on it;
        rel_tol: rows below this fraction of the largest norm are zero.
    """
    norms = embedding_grad.double().norm(dim=1)
    d = embedding_grad.shape[1]
    floor = max(rel_tol * float(norms.max()), noise_std * (math.sqrt(d) + 5.0))
    return set(torch.nonzero(norms > floor).flatten().tolist())


def span_basis(weight_grad: torch.Tensor, noise_std: float = 0.0,
               rel_tol: float = 1e-5) -> torch.Tensor:
    """Orthonormal basis (d, r) of the input span of a Conv1D/Linear weight gradient (d_in first).

    Singular values above `rel_tol` of the largest (and above the top singular value that
    Gaussian noise of std `noise_std` reaches) are kept.

    Args:
        weight_grad: (d_in, d_out); noise_std: the noise on it; rel_tol: as above.
    """
    g = weight_grad.double()
    eigenvalues, vectors = torch.linalg.eigh(g @ g.T)  # singular values squared, ascending
    s = eigenvalues.clamp(min=0).sqrt()
    noise_top = noise_std * (math.sqrt(g.shape[0]) + math.sqrt(g.shape[1]))
    keep = (s > rel_tol * s[-1]) & (s > 1.5 * noise_top)
    return vectors[:, keep]


def span_residual(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Relative distance of each row of `vectors` (n, d) to the span of `basis` (d, r).

    Args:
        vectors: (n, d); basis: orthonormal (d, r).
    """
    v = vectors.double()
    proj = (v @ basis) @ basis.T
    return (v - proj).norm(dim=-1) / v.norm(dim=-1).clamp(min=1e-30)


def layer_input(model: nn.Module, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The input to block `layer`'s attention projection (after its ln_1), for every position:
    embeddings, then blocks 0..layer-1 (causal attention), then that block's ln_1.

    Args:
        model: a GPT-2 LM; ids: token ids (N, T); layer: the block.
    Returns:
        (N, T, d).
    """
    t = model.transformer
    with torch.no_grad():
        h = t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))
        for block in t.h[:layer]:
            out = block(h)
            h = out[0] if isinstance(out, tuple) else out
        return t.h[layer].ln_1(h)


def dager(model: nn.Module, grads: Params, *, max_len: int, noise_std: float = 0.0,
          tol: float = 1e-3, max_branches: int = 256) -> list[list[int]]:
    """Recover the batch's sequences exactly from one step's gradient of a GPT-2 model.

    grads: gradient per parameter name (as model.named_parameters()). Returns the recovered token
    sequences (each a maximal prefix that passes both span checks); none when more tokens pass
    the first check at one position than the span has dimensions (the batch is too large: at
    initialisation LayerNorm is scale-invariant, so mixed (token, position) pairs of the batch
    also pass the first check and only the second removes them). Needs the model without
    dropout (the attack replays the forward pass) and at least two blocks.

    Args:
        model: the GPT-2 the gradient was taken on; grads: as above; max_len: positions tried.
        noise_std: the noise on the gradients; tol: the span residual that passes;
        max_branches: the most partial sequences kept per position.
    """
    t = model.transformer
    basis0 = span_basis(grads["transformer.h.0.attn.c_attn.weight"], noise_std)
    basis1 = span_basis(grads["transformer.h.1.attn.c_attn.weight"], noise_std)
    if basis0.shape[1] in (0, basis0.shape[0]) or basis1.shape[1] in (0, basis1.shape[0]):
        return []  # no signal, or a full-rank span that every candidate passes
    with torch.no_grad():
        per_position = []
        x0 = t.h[0].ln_1(t.wte.weight[None] + t.wpe.weight[:max_len, None])  # (P, V, d)
        for p in range(max_len):
            per_position.append(torch.nonzero(span_residual(x0[p], basis0) < tol).flatten())
    if max(t.numel() for t in per_position) > basis0.shape[1]:
        return []  # more tokens pass at one position than the span has dimensions: not separable
    active = [[]]
    finished: list[list[int]] = []
    for p in range(max_len):
        tokens = per_position[p]
        if not active:
            break
        if tokens.numel() == 0:
            break
        trials = torch.tensor([[*a, v] for a in active for v in tokens.tolist()], dtype=torch.long)
        x1 = layer_input(model, trials, 1)[:, p]
        ok = (span_residual(x1, basis1) < tol).view(len(active), tokens.numel())
        extended = []
        for i, a in enumerate(active):
            passing = tokens[ok[i]].tolist()
            if passing:
                extended += [[*a, v] for v in passing]
            elif a:
                finished.append(a)
        active = extended[:max_branches]
    return finished + [a for a in active if a]
