"""The Hugging Face adapter: a causal LM or a sequence classifier, LoRA (peft) or full fine-tuning.

The trainer sees it like any other model (privbench/models/adapter.py): the trainable parameters
(LoRA's adapters and the classifier head, or every weight), a functional per-example loss and the
logits. A batch is `{"ids": (B, T), "weights": (B, T-1), "labels": (B,)}`: right-padded token ids,
the weights of the predicted positions (privbench/lm/tokens.py) and class labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from torch.func import functional_call

from privbench.errors import PrivbenchError
from privbench.lm.tokens import attention_mask
from privbench.models.adapter import Batch, Params
from privbench.spec import LMSpec

TASKS = ("causal_lm", "sequence_classification")


def prepare_for_finetuning(model: nn.Module, lm: LMSpec, task: str) -> nn.Module:
    """Wrap `model` with LoRA adapters (peft) or leave every parameter trainable; eval mode.

    Attention runs eagerly: transformers' SDPA path checks masks with data-dependent Python
    control flow, which vmap cannot trace.

    Args:
        model: a causal LM or sequence classifier; lm: the fine-tuning options;
        task: "causal_lm" or "sequence_classification".
    Returns:
        The model to train (the peft wrapper under LoRA).
    """
    model.set_attn_implementation("eager")
    if lm.finetune == "lora":
        config = LoraConfig(
            r=lm.lora_r, lora_alpha=lm.lora_alpha, lora_dropout=0.0,
            fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # Conv1D layout
            target_modules=list(lm.lora_targets) or None,
            task_type=TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS)
        try:
            model = get_peft_model(model, config)
        except ValueError as e:  # peft found no target (or no default for this architecture)
            raise PrivbenchError(
                f"lm.lora_targets = {list(lm.lora_targets)}: LoRA cannot attach to this model "
                f"({str(e).splitlines()[0][:120]}); name some of its linear layers, e.g. "
                f"{linear_layer_names(model)[:6]}") from None
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()  # no dropout: per-example gradients are exact and training is deterministic
    return model


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (nn.Linear, transformers' Conv1D)."""
    names: list[str] = []
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if type(module).__name__ in ("Linear", "Conv1D") and last not in names:
            names.append(last)
    return names


class HFAdapter:
    """A prepared Hugging Face model: mean next-token NLL (causal LM) or cross-entropy (classifier).

    Args:
        module: the model as `prepare_for_finetuning` returns it.
        task: "causal_lm" or "sequence_classification".
    """

    def __init__(self, module: nn.Module, task: str) -> None:
        if task not in TASKS:
            raise ValueError(f"task = {task!r}: a Hugging Face adapter takes one of {TASKS}")
        self.module = module.eval()
        self.task = task

    def init_params(self) -> Params:
        """Detached copies of the trainable parameters (tied weights appear once)."""
        return {n: p.detach().clone() for n, p in self.module.named_parameters()
                if p.requires_grad}

    def outputs(self, params: Params, batch: Batch) -> torch.Tensor:
        """Logits: (B, T, V) for a causal LM, (B, C) for a classifier."""
        out = functional_call(self.module, params, (batch["ids"],),
                              {"attention_mask": attention_mask(batch["weights"])}, strict=False)
        return out.logits

    def per_example_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Each sequence's mean next-token NLL over its real targets, or its class CE: (B,)."""
        logits = self.outputs(params, batch)
        if self.task == "causal_lm":
            ids, weights = batch["ids"], batch["weights"]
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            return (nll * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.cross_entropy(logits, batch["labels"], reduction="none")

    def accuracy(self, params: Params, batch: Batch) -> float:
        """Next-token accuracy over the real targets (causal LM) or class accuracy."""
        logits = self.outputs(params, batch)
        if self.task == "causal_lm":
            w = batch["weights"]
            right = (logits[:, :-1].argmax(-1) == batch["ids"][:, 1:]).float() * w
            return float(right.sum() / w.sum().clamp(min=1.0))
        return float((logits.argmax(-1) == batch["labels"]).float().mean())

    def release(self, params: Params) -> nn.Module:
        """Write `params` into the module and return it (eval mode)."""
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name in params:
                    p.copy_(params[name])
        return self.module
