"""Limits checked before any cell starts: a plan whose memory estimate exceeds the machine.

A suite that cannot fit is refused up front, in one line with the estimate and the field to lower,
instead of a worker being killed by the operating system mid-run (which the process pool reports
as `BrokenProcessPool`, after minutes of work). The estimate counts float32 tensors the trainer
and the scorers hold at their peak: the global model after every round (`iterates`, kept for the
white-box surfaces), the cohort's stacked parameters, optimiser state and updates, per-example
gradients of DP-SGD, shadow models and multi-run audit runs. Parameter counts come from the cell's
real model built on PyTorch's `meta` device (no memory, no weights read).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from privbench.errors import PrivbenchError
from privbench.spec.schema import CellSpec

BYTES = 4  # float32
# Copies of the parameters per trained row: the row's parameters, its start, its gradient and
# its update (SGD); Adam adds two moments.
ROW_COPIES = 4


@dataclass(frozen=True)
class MemoryPart:
    """One term of a cell's memory estimate, with the spec field that scales it."""

    what: str
    field: str
    bytes: float


def parameter_counts(spec: CellSpec) -> tuple[int, int]:
    """(all parameters, trainable parameters) of the cell's model, built on the meta device."""
    with torch.device("meta"):
        if spec.task == "tabular":
            from privbench.data.splits import data_shape
            from privbench.models import build_model

            shape = data_shape(spec.data)
            model = build_model(spec.model, shape.n_features, shape.n_classes, spec.seed)
            n = sum(p.numel() for p in model.parameters())
            return n, n
        return _language_model_counts(spec)


def parameter_names(spec: CellSpec) -> list[str]:
    """The trainable parameter names of a tabular cell's model, in order (built on the meta
    device: nothing is allocated)."""
    from privbench.data.splits import data_shape
    from privbench.models import build_model

    shape = data_shape(spec.data)
    with torch.device("meta"):
        model = build_model(spec.model, shape.n_features, shape.n_classes, spec.seed)
        return [n for n, p in model.named_parameters() if p.requires_grad]


def _language_model_counts(spec: CellSpec) -> tuple[int, int]:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        GPT2Config,
    )

    lm = spec.lm
    if spec.model.path:
        config = AutoConfig.from_pretrained(spec.model.path, local_files_only=True)
    else:  # the default tiny GPT-2 (privbench.models.pretrained_lm)
        config = GPT2Config(vocab_size=lm.vocab_size, n_positions=max(lm.max_length, 64),
                            n_embd=lm.width, n_layer=lm.layers, n_head=lm.heads,
                            bos_token_id=None, eos_token_id=None)
    causal = spec.task == "causal_lm"
    build = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    model = build.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if lm.finetune == "full":
        return total, total
    peft_config = LoraConfig(
        r=lm.lora_r, lora_alpha=lm.lora_alpha, target_modules=list(lm.lora_targets) or None,
        fan_in_fan_out=getattr(config, "model_type", "") == "gpt2",
        task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQ_CLS)
    model = get_peft_model(model, peft_config)
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def memory_parts(spec: CellSpec, counts: tuple[int, int] | None = None) -> list[MemoryPart]:
    """The terms of one cell's peak memory estimate, in bytes.

    Args:
        spec: the cell.
        counts: (all, trainable) parameter counts, when already known.

    Returns:
        One MemoryPart per term; their sum is the estimate.
    """
    total, trainable = counts or parameter_counts(spec)
    train, privacy = spec.train, spec.privacy
    rows = max(1.0, float(train.cohort))
    parts = [
        MemoryPart("the model", "model", total * BYTES),
        MemoryPart(f"the global model after each of {train.rounds:,} rounds", "train.rounds",
                   train.rounds * trainable * BYTES),
        MemoryPart(f"{rows:g} clients trained at once", "train.cohort",
                   rows * ROW_COPIES * trainable * BYTES),
    ]
    if privacy.unit == "example" and math.isfinite(privacy.epsilon):
        parts.append(MemoryPart(
            f"per-example gradients of {rows:g} clients x {train.batch_size} records",
            "train.batch_size", rows * train.batch_size * trainable * BYTES))
    shadows = spec.attacks.shadows.models if (spec.attacks.lira.enabled
                                              or spec.attacks.rmia.enabled) else 0
    if shadows:
        parts.append(MemoryPart(f"{shadows} shadow models", "attacks.shadows.models",
                                shadows * ROW_COPIES * trainable * BYTES))
    if spec.audit.enabled and spec.audit.mode == "multi-run":
        runs = 2 * spec.audit.runs
        parts.append(MemoryPart(f"{runs} audit runs", "audit.runs",
                                runs * (ROW_COPIES + train.batch_size) * trainable * BYTES))
    return parts


def available_memory() -> float:
    """Bytes of memory available to new work (MemAvailable), or the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(cells: list, workers: int, available: float | None = None,
                 max_bytes: float | None = None) -> None:
    """Refuse, before any cell starts, a suite whose cells cannot fit in memory side by side,
    or a cell whose estimate exceeds the user's limit (`max_memory_gb`).

    Args:
        cells: the suite's cells still to run (privbench.spec.suite.Cell).
        workers: how many cells run at once; each gets an equal share.
        available: bytes available (default: `available_memory()`).
        max_bytes: the most one cell may need (`--max-memory-gb` / `max_memory_gb`), or None.

    Raises:
        PrivbenchError: one line naming the cell, the estimate, its largest term and its field.
    """
    if not cells:
        return
    share = (available if available is not None else available_memory()) / max(1, workers)
    for cell in cells:
        parts = memory_parts(cell.spec)
        need = sum(p.bytes for p in parts)
        top = max(parts, key=lambda p: p.bytes)
        if max_bytes is not None and need > max_bytes:
            raise PrivbenchError(
                f"max_memory_gb = {max_bytes / 1e9:g}: cell {cell.label} needs about "
                f"{_gb(need)} of memory, mostly {top.what} ({_gb(top.bytes)}); lower "
                f"{top.field} or raise max_memory_gb (--max-memory-gb)")
        if need <= share:
            continue
        per = "" if workers == 1 else f" per worker ({workers} cells at once; try --workers 1)"
        raise PrivbenchError(
            f"{top.field}: cell {cell.label} needs about {_gb(need)} of memory, mostly "
            f"{top.what} ({_gb(top.bytes)}), but {_gb(share)} is available{per}; lower "
            f"{top.field}")


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"
