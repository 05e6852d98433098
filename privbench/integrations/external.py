"""Audit a model trained elsewhere: a local Hugging Face causal LM, or a user's own signals.

Member and non-member files hold one record per line (`.txt`), JSON lines with a "text" field
(`.jsonl`), or, without a model, one per-example loss per line (`.txt`/`.csv`) or a 1-D `.npy`
array (loaded without pickle). Every language-model attack is reported next to the blind,
text-only baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from privbench.attacks.membership.lm import (
    blind_scores,
    loss_score,
    min_k_score,
    reference_ratio_score,
    zlib_ratio_score,
)
from privbench.attacks.membership.metrics import membership_rows
from privbench.errors import PrivbenchError
from privbench.run.results import MetricRow

SURFACE = "final_model"


def read_texts(path: Path, option: str) -> list[str]:
    """Records of a text file: one per line, or the "text" field of each JSON line.

    Args:
        path: a .txt or .jsonl file; option: the command-line option, named in errors.
    Raises:
        PrivbenchError: a missing file, not UTF-8, a bad JSON line, or fewer than 2 records.
    """
    if not path.exists():
        raise PrivbenchError(f"{option} = {path}: file not found")
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise PrivbenchError(f"{option} = {path}: not UTF-8 text; with --model give one text "
                             "per line (.txt) or JSON lines with a \"text\" field (.jsonl)"
                             ) from None
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(lines, 1):
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise PrivbenchError(f"{option} = {path}: line {n} is not a JSON object with a "
                                     "\"text\" field") from None
    else:
        texts = lines
    if len(texts) < 2:
        raise PrivbenchError(f"{option} = {path}: needs at least 2 records, found {len(texts)}")
    return texts


def read_losses(path: Path, option: str) -> np.ndarray:
    """Per-example losses from a .npy array (no pickle) or a text/CSV file, one per line.

    Args:
        path: a .npy, .csv or text file; option: the command-line option, named in errors.
    Returns:
        The losses as float64 (N,).
    Raises:
        PrivbenchError: a missing file, not numbers, or fewer than 2 finite losses.
    """
    if not path.exists():
        raise PrivbenchError(f"{option} = {path}: file not found")
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except ValueError as e:
        raise PrivbenchError(f"{option} = {path}: not a list of numbers ({e}); without --model "
                             "give one per-example loss per line or a 1-D .npy array") from None
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) < 2 or not np.all(np.isfinite(values)):
        raise PrivbenchError(f"{option} = {path}: needs at least 2 finite losses")
    return values


def audit_language_model(model_dir: Path, members: list[str], nonmembers: list[str], *,
                         reference_dir: Path | None = None, k: float = 0.2,
                         experiment: str = "external") -> list[MetricRow]:
    """LOSS, Min-K%, zlib ratio (and reference ratio) on a local causal LM, plus the blind
    baseline; rows in the shared membership schema.

    Args:
        model_dir: the LM's save_pretrained folder; members, nonmembers: the texts.
        reference_dir: a reference LM for the ratio attack (None: no ref_ratio rows);
        k: Min-K%'s fraction of tokens; experiment: the rows' key.
    Returns:
        The membership rows of every attack (AUC rows name the model, Min-K% rows their k).
    """
    from privbench.query.causal_lm import load_causal_lm, text_logprobs

    model, tokenizer = load_causal_lm(model_dir)
    lp_in, lp_out = text_logprobs(model, tokenizer, members), text_logprobs(model, tokenizer,
                                                                           nonmembers)
    scores = {
        "loss": (loss_score(lp_in), loss_score(lp_out)),
        "min_k": (min_k_score(lp_in, k), min_k_score(lp_out, k)),
        "zlib": (zlib_ratio_score(lp_in, members), zlib_ratio_score(lp_out, nonmembers)),
    }
    if reference_dir is not None:
        ref, ref_tok = load_causal_lm(reference_dir, "--reference")
        scores["ref_ratio"] = (reference_ratio_score(lp_in, text_logprobs(ref, ref_tok, members)),
                               reference_ratio_score(lp_out,
                                                     text_logprobs(ref, ref_tok, nonmembers)))
    scores["blind"] = blind_scores(members, nonmembers)
    rows = []
    for name, (s_in, s_out) in scores.items():
        rows += membership_rows(experiment, name, "text only" if name == "blind" else SURFACE,
                                s_in, s_out)
    for row in rows:
        if row.metric == "auc":
            row.details["model"] = str(model_dir)
            if row.scorer == "min_k":
                row.details["k"] = k
    return rows


def audit_losses(members: np.ndarray, nonmembers: np.ndarray,
                 experiment: str = "external") -> list[MetricRow]:
    """The LOSS attack on per-example losses a user computed with their own model.

    Args:
        members, nonmembers: the per-example losses (N,); experiment: the rows' key.
    Returns:
        The membership rows of "loss" (score: minus the loss).
    """
    return membership_rows(experiment, "loss", SURFACE, -members, -nonmembers)
