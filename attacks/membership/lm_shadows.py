"""Shadow LMs for LiRA and RMIA on a fine-tuned language model, trained by the one trainer.

The candidates are the cell's real messages, the target's non-canary training messages (members)
and its held-out ones (non-members), and, for generated clients, fresh messages of each client
(`population_messages`; non-members too) until its non-members are as many as its members. Shadow
k's client c trains on the target's other records of c (the planted canaries) and on c's
candidates that `shadow_inclusion` gives it: as many as the target trained on, so each shadow's
data are drawn as the target's were, and with the population each candidate is IN exactly half
of the shadows.

The shadows train through `train_runs` (trainers/runs.py) with the target's adapter, initial
weights, plan, local and server optimizers, per-example engine, clip and executed noise
multiplier, `LM_CHUNK` shadows a call: every (shadow, sampled client) pair of a round of a call is
one row of a single vmapped call (one shadow a call on CPU, where stacking more is slower).
Trained shadows are cached by content hash (`cached_params`) in the run's shadow cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

import privbench
from privbench.attacks.membership.lm_inputs import TrainerInputs
from privbench.attacks.membership.shadows import cached_params
from privbench.data.shadow_inclusion import population_count
from privbench.data.text_clients import population_messages
from privbench.data.tokens import Examples, examples
from privbench.models.adapter import ModelAdapter, Params
from privbench.rng import STREAM_STRIDE, derived_seed, rng_streams
from privbench.trainers.client_data import ClientData, from_examples
from privbench.trainers.privacy_plan import example_sampling
from privbench.trainers.runs import train_runs

if TYPE_CHECKING:
    from privbench.attacks.language_scorers import LMContext
    from privbench.privacy.claim import Claim

SHADOW_STREAMS = 0x5AD  # the salt of the shadows' own streams (below SALT_STRIDE)
LM_CHUNK = 1  # shadow LMs a `train_runs` call trains side by side. Batching more costs more per
# shadow on CPU (4 rounds of the llm suite's example-level cell, one call of K runs: 2.4 s a
# run at K = 1, 3.4 at 2, 4.0 at 4, 4.6 at 8), the stacked activations outgrowing the caches; each
# chunk has its own streams (`derived_seed(seed, first shadow)`), so the shadows never depend on
# how many are trained.


@dataclass(frozen=True)
class CandidatePool:
    """The membership candidates: the target's non-canary training messages, then the held-out.

    Attributes:
        examples: the candidates' tokens (one width); client: each one's client;
        member: whether the target trained on it (used to evaluate, never to fit an attack);
        texts: the candidates' text; rows: each member's row in the trainer's examples (-1:
        held out or population).
    """

    examples: Examples
    client: np.ndarray
    member: np.ndarray
    texts: list[str]
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def candidate_pool(ctx: LMContext) -> CandidatePool:
    """The cell's candidates (see `CandidatePool`), from its text data and examples.

    Args:
        ctx: the trained cell.
    Returns:
        The candidate pool.
    """
    data = ctx.data
    if data.test_clients is None:
        raise ValueError("the held-out messages carry no client ids; load the text data with "
                         "privbench.data.text_clients.load_text_data")
    rows = np.flatnonzero(~data.train_is_canary[: len(ctx.train)])
    spec = ctx.cell.spec
    members = np.bincount(data.train_clients[rows], minlength=data.n_clients)
    held = np.bincount(data.test_clients, minlength=data.n_clients)
    counts = np.array([population_count(int(m), int(h)) for m, h in zip(members, held,
                                                                          strict=True)])
    fresh = population_messages(spec.data, spec.lm, spec.seed, counts)
    parts = [ctx.train.subset(torch.from_numpy(rows)), ctx.test]
    texts = [data.train_texts[int(i)] for i in rows] + list(data.test_texts)
    clients = [data.train_clients[rows], data.test_clients]
    if fresh is not None and len(fresh[0]):
        parts.append(examples(ctx.tokenizer, fresh[0], fresh[2], fresh[1], spec.lm.max_length))
        texts += fresh[0]
        clients.append(fresh[1])
    width = max(p.ids.shape[1] for p in parts)
    pad = int(ctx.tokenizer.pad_token_id)
    parts = [padded(p, width, pad) for p in parts]
    n_out = sum(len(p) for p in parts[1:])
    pool_examples = Examples(torch.cat([p.ids for p in parts]),
                             torch.cat([p.weights for p in parts]),
                             torch.cat([p.labels for p in parts]),
                             torch.from_numpy(np.concatenate(clients)))
    return CandidatePool(
        examples=pool_examples, client=pool_examples.clients.numpy().copy(),
        member=np.r_[np.ones(len(rows), bool), np.zeros(n_out, bool)],
        texts=texts, rows=np.r_[rows, np.full(n_out, -1)])


def shadow_data(inputs: TrainerInputs, pool: CandidatePool, inclusion: np.ndarray,
                pad: int) -> ClientData:
    """The K shadows' clients, run-major (shadow k owns clients k * n .. k * n + n - 1): the
    target's non-candidate examples and the candidates `inclusion[k]` selects (`pad`: the
    tokenizer's padding id, to bring both to one width)."""
    ex, n = inputs.examples, inputs.n_clients
    width = max(ex.ids.shape[1], pool.examples.ids.shape[1])
    base, cand = padded(ex, width, pad), padded(pool.examples, width, pad)
    keep = torch.from_numpy(np.setdiff1d(np.arange(len(ex)), pool.rows[pool.rows >= 0]))
    parts: list[Examples] = []
    for k in range(inclusion.shape[0]):
        for part in (base.subset(keep), cand.subset(torch.from_numpy(
                np.flatnonzero(inclusion[k])))):
            parts.append(Examples(part.ids, part.weights, part.labels, part.clients + k * n))
    batch = {"ids": torch.cat([p.ids for p in parts]),
             "weights": torch.cat([p.weights for p in parts]),
             "labels": torch.cat([p.labels for p in parts])}
    return from_examples(batch, torch.cat([p.clients for p in parts]), inclusion.shape[0] * n)


def lm_shadows(ctx: LMContext, pool: CandidatePool, inclusion: np.ndarray) -> Params:
    """Train (or load from the run's shadow cache) the K shadows; their parameters, (K, ...).

    Args:
        ctx: the trained cell (its `inputs` are what the trainer was given).
        pool: the candidates; inclusion: (K, N) which candidates each shadow holds.
    Returns:
        The shadows' trainable parameters stacked, each (K, ...).
    """
    inputs, claim = ctx.inputs, ctx.trained.claim
    if inputs is None:
        raise ValueError("shadow LMs need the trainer's inputs (LMContext.inputs)")
    # The audit's Dirac canaries are not candidates: the shadows train the candidates only, as
    # the target trained its real records (the canaries' gradients lie on the coordinates real
    # records move least). Canary clients replace whole updates, which shadows cannot mirror.
    if inputs.hooks.get("client_update_hook") is not None:
        raise ValueError("shadow LMs do not replay canary clients; audit with audit.canary = "
                         "'secret' or 'dirac', or turn attacks.lira and attacks.rmia off")
    init = ctx.trained.observations.initial_params
    seed = derived_seed(ctx.cell.spec.seed, SHADOW_STREAMS)
    pad = int(ctx.tokenizer.pad_token_id)
    starts = range(0, inclusion.shape[0], LM_CHUNK)
    chunks = [shadow_data(inputs, pool, inclusion[a:a + LM_CHUNK], pad) for a in starts]
    plan = {"train": inputs.train.model_dump(), "claim": [claim.is_private,
            claim.noise_multiplier, claim.clip, claim.unit], "seed": seed,
            "optimizer": inputs.optimizer, "server_optimizer": inputs.server_optimizer,
            "engine": inputs.engine, "n_clients": inputs.n_clients, "chunk": LM_CHUNK,
            "code": privbench.__version__}
    key = _fingerprint(plan, init, chunks)
    manifest = {"fingerprint": key, "shadows": int(inclusion.shape[0]),
                "candidates": int(inclusion.shape[1]), "kind": "language model", **plan,
                "inclusion_sha256": hashlib.sha256(np.packbits(inclusion).tobytes()).hexdigest()}
    cache = ctx.run_dir / "shadows" if ctx.run_dir is not None else None

    def train() -> Params:
        runs = [train_lm_runs(inputs, init, data, claim, derived_seed(seed, a, STREAM_STRIDE),
                              runs=len(inclusion[a:a + LM_CHUNK]))
                for a, data in zip(starts, chunks, strict=True)]
        return {n: torch.cat([r[n] for r in runs]) for n in runs[0]}

    return cached_params(cache, key, manifest, train)


def train_lm_runs(inputs: TrainerInputs, init: Params, data: ClientData, claim: Claim,
                  seed: int, runs: int) -> Params:
    """`runs` fine-tunings side by side, as the target's ran (`train_runs`).

    Args:
        inputs: the target's trainer inputs (adapter, plan, optimizers, engine).
        init: the target's initial trainable parameters.
        data: the runs' clients, run-major (`shadow_data`).
        claim: the target's Claim: its executed noise multiplier, clip and unit.
        seed: the seed of the runs' random streams.
        runs: K.
    Returns:
        The K runs' final trainable parameters, each (K, ...).
    """
    private = claim.is_private
    z = float(claim.noise_multiplier) if private else 0.0
    record_rate, local_steps = example_sampling(inputs.train, float(data.counts.float().mean()))
    glob = {n: p.detach().unsqueeze(0).repeat(runs, *([1] * p.dim())) for n, p in init.items()}
    return train_runs(inputs.adapter, glob, data, inputs.train, runs=runs,
                      clip=float(claim.clip) if private else None,
                      noise_multiplier=lambda _r: z, gens=rng_streams(seed), seed=seed,
                      example_level=private and claim.unit == "example",
                      local_steps=local_steps, record_rate=record_rate,
                      optimizer=inputs.optimizer, server_optimizer=inputs.server_optimizer,
                      engine=inputs.engine, microbatch=inputs.microbatch)


@torch.no_grad()
def token_logprobs(adapter: ModelAdapter, stacked: Params, ex: Examples,
                   chunk: int = 64) -> np.ndarray:
    """Log-probability of every predicted token under every stacked model: (M, N, T - 1),
    0 at padding (`ex.weights` marks the real positions)."""
    models = next(iter(stacked.values())).shape[0]
    out = np.zeros((models, len(ex), ex.ids.shape[1] - 1))
    for m in range(models):
        params = {n: p[m] for n, p in stacked.items()}
        for i in range(0, len(ex), chunk):
            batch = {"ids": ex.ids[i:i + chunk], "weights": ex.weights[i:i + chunk]}
            logp = torch.log_softmax(adapter.outputs(params, batch)[:, :-1].double(), dim=-1)
            tok = logp.gather(-1, batch["ids"][:, 1:, None])[..., 0]
            out[m, i:i + chunk] = (tok * batch["weights"]).numpy()
    return out


def padded(ex: Examples, width: int, pad: int) -> Examples:
    """`ex` right-padded with `pad` (weight 0) to `width` tokens."""
    extra = width - ex.ids.shape[1]
    if extra <= 0:
        return ex
    ids = torch.cat([ex.ids, torch.full((len(ex), extra), pad, dtype=ex.ids.dtype)], dim=1)
    weights = torch.cat([ex.weights, torch.zeros((len(ex), extra), dtype=ex.weights.dtype)], 1)
    return Examples(ids, weights, ex.labels, ex.clients)


def _fingerprint(plan: dict, init: Params, chunks: list[ClientData]) -> str:
    """Content hash of the plan, the initial weights and every chunk's clients, in order."""
    h = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode())
    for name in sorted(init):
        h.update(name.encode())
        h.update(init[name].detach().contiguous().numpy().tobytes())
    for data in chunks:
        for name in sorted(data.batch):
            h.update(data.batch[name].contiguous().numpy().tobytes())
        h.update(data.counts.numpy().tobytes())
    return h.hexdigest()[:24]
