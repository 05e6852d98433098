"""LiRA and RMIA on a fine-tuned language model, with shadow LMs (attacks/membership/lm_shadows.py).

The candidates are the target's non-canary training messages (members), its held-out messages
and, for generated clients, fresh messages of the same clients (non-members; as many non-members
as members, so that each candidate is IN half of the shadows: attacks/membership/lm_shadows.py).
Every model (the released one, then each shadow) is attacked in turn with the other shadows as
its reference models (Carlini et al. 2022's leave-one-model-out evaluation; each candidate's
references balanced so that they never depend on the attacked model's bit,
`balanced_references`), and the scores are pooled, so a TPR at a low FPR is read on (K + 1) x
the non-members, not on a few dozen. The membership bits only evaluate; no attack is fitted on
them.

Rows (scorer names), each with n, Clopper-Pearson intervals, and the smallest FPR the counts
resolve:
- `lira_online`, `lira_offline`, `rmia`: the released model alone, attacked with the shadows.
- `pooled_loss`, `pooled_lira_online`, `pooled_lira_offline`, `pooled_rmia`, and
  `pooled_blind` (the text-only baseline on the same pooled splits).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from privbench.attacks.language_scorers import LMContext
from privbench.attacks.membership.lm import blind_scores
from privbench.attacks.membership.lm_lira import (
    balanced_references,
    lira_offline,
    lira_online,
    lm_rmia,
    sequence_logp,
)
from privbench.attacks.membership.lm_shadows import candidate_pool, lm_shadows, token_logprobs
from privbench.attacks.membership.metrics import membership_rows
from privbench.attacks.membership.roc import DEFAULT_FPRS
from privbench.data.shadow_inclusion import inclusion_problem, shadow_inclusion
from privbench.rng import derived_seed
from privbench.run.results import MetricRow
from privbench.spec.attack_schema import AttacksSpec
from privbench.spec.shadow_cells import trains_shadows

SURFACE = "final_model"
REFERENCE_DRAWS = 0x5AE  # the salt of the references' random drops
DRAWS = 16  # balanced reference sets per attacked model; its scores are their mean
# attack(the attacked model's phi (N,), the shadows' phi (K, N), their inclusion (K, N), the
# references each candidate uses (K, N)) -> scores (N,)
Attack = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def sequence_attacks(attacks: AttacksSpec) -> dict[str, Attack]:
    """The enabled shadow attacks, by the scorer name their rows carry.

    Args:
        attacks: the cell's attacks spec (RMIA's gamma, mode and offline a).
    Returns:
        name -> attack.
    """
    out: dict[str, Attack] = {}
    if attacks.lira.enabled:
        out["lira_online"] = lira_online
        out["lira_offline"] = lira_offline
    if attacks.rmia.enabled:
        spec = attacks.rmia
        a = spec.offline_a if spec.mode == "offline" else None

        def rmia_scores(t: np.ndarray, s: np.ndarray, inc: np.ndarray,
                        use: np.ndarray) -> np.ndarray:
            use = use.copy()
            use[spec.references or len(use):] = False  # the first `references` shadows
            return lm_rmia(t, s, inc, use, gamma=spec.gamma, offline_a=a)

        out["rmia"] = rmia_scores
    return out


def lm_shadow_attack_scorer(ctx: LMContext) -> list[MetricRow]:
    """LiRA and RMIA (as enabled) on a causal LM with its shadow LMs; [] when neither runs here.

    Args:
        ctx: the trained cell.
    Returns:
        The rows described in the module docstring.
    """
    spec = ctx.cell.spec
    attacks = spec.attacks
    if ctx.task != "causal_lm" or ctx.inputs is None or not (
            attacks.lira.enabled or attacks.rmia.enabled) or not trains_shadows(spec):
        return []
    pool = candidate_pool(ctx)
    k = attacks.shadows.models
    inclusion = shadow_inclusion(pool.client, pool.member, k, spec.seed)
    if (problem := inclusion_problem(inclusion)) is not None:
        raise ValueError(problem)
    start = time.perf_counter()
    shadows = lm_shadows(ctx, pool, inclusion)
    seconds = time.perf_counter() - start
    final = ctx.trained.observations.final_params
    models = {n: torch.cat([final[n].detach().unsqueeze(0), shadows[n]]) for n in final}
    logp = token_logprobs(ctx.inputs.adapter, models, pool.examples)  # (K + 1, N, T)
    phi = sequence_logp(logp, pool.examples.weights.double().numpy())  # (K + 1, N)
    texts = np.array(pool.texts, dtype=object)
    design = {"shadow_models": k, "shadow_seconds": round(seconds, 2),
              "signal": "the mean token log-likelihood of each sequence",
              "design": "candidates = the cell's non-canary training messages (members) and "
                        "held-out messages and fresh messages of the same clients where the "
                        "data are generated (non-members, as many as the members); each "
                        "shadow's client holds its other records and as many candidates as "
                        "the target trained on (so each candidate is IN half of the shadows); "
                        "pooled: every model attacked with the shadows other than itself, "
                        "each candidate's references balanced (all but one IN, all but one OUT)"}
    fns = sequence_attacks(attacks)
    rows: list[MetricRow] = []
    member = pool.member
    draws = derived_seed(spec.seed, REFERENCE_DRAWS)
    uses = [[balanced_references(inclusion, None if i == 0 else i - 1,
                                 np.random.default_rng([draws, i, d])) for d in range(DRAWS)]
            for i in range(k + 1)]
    for name, attack in fns.items():
        scores = _mean_score(attack, phi[0], phi[1:], inclusion, uses[0])
        rows += _rows(ctx.key, name, scores[member], scores[~member], design)
    pooled = pooled_scores(fns, phi, inclusion, uses, member, texts, spec.seed,
                           pool.client)
    for name, (s_in, s_out) in pooled.items():
        rows += _rows(ctx.key, f"pooled_{name}", s_in, s_out, design)
    return rows


def pooled_scores(fns: dict[str, Attack], phi: np.ndarray, inclusion: np.ndarray,
                  uses: list[list[np.ndarray]], member: np.ndarray, texts: np.ndarray, seed: int,
                  clients: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every model attacked with the shadows other than itself; member and non-member scores
    pooled over the models, for LOSS, each attack in `fns` and the blind baseline.

    Args:
        fns: the shadow attacks; phi: (K + 1, N) the models' signals, model 0 the target;
        inclusion: (K, N); uses: each model's reference draws (`balanced_references`);
        member: the target's bits (N,); texts: the candidates' texts; seed: the blind
        baseline's fold seed; clients: the candidates' clients (the blind baseline's folds
        keep a client's texts together: `blind_scores`), None for plain folds.
    Returns:
        name -> (member scores, non-member scores).
    """
    bits = np.vstack([member[None], inclusion])
    names = ["loss", *fns, "blind"]
    pooled: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for i in range(len(bits)):
        scores = {"loss": phi[i], **{n: _mean_score(f, phi[i], phi[1:], inclusion, uses[i])
                                     for n, f in fns.items()}}
        groups = None if clients is None else np.r_[clients[bits[i]], clients[~bits[i]]]
        b_in, b_out = blind_scores(list(texts[bits[i]]), list(texts[~bits[i]]), seed=seed + i,
                                   groups=groups)
        for n, sc in scores.items():
            pooled[n][0].append(sc[bits[i]])
            pooled[n][1].append(sc[~bits[i]])
        pooled["blind"][0].append(b_in)
        pooled["blind"][1].append(b_out)
    return {n: (np.concatenate(a), np.concatenate(b)) for n, (a, b) in pooled.items()}


def _mean_score(attack: Attack, phi: np.ndarray, phi_s: np.ndarray, inclusion: np.ndarray,
                uses: list[np.ndarray]) -> np.ndarray:
    """The attack's scores averaged over the balanced reference draws (less noise than one)."""
    return np.mean([attack(phi, phi_s, inclusion, use) for use in uses], axis=0)


def _rows(key: str, scorer: str, s_in: np.ndarray, s_out: np.ndarray,
          design: dict) -> list[MetricRow]:
    """Membership rows, with TPR also at the smallest FPR the counts resolve (1 / n_out) when
    that is above 1e-3."""
    lowest = 1.0 / max(len(s_out), 1)
    fprs = DEFAULT_FPRS if lowest <= 1e-3 else (*DEFAULT_FPRS, lowest)
    rows = membership_rows(key, scorer, SURFACE, s_in, s_out, fprs)
    rows[0].details.update({**design, "smallest_resolvable_fpr": lowest})
    return rows
