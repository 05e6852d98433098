"""The Hugging Face adapter: any causal LM or sequence classifier, LoRA (peft) or full.

A batch is `{"ids": (B, T), "weights": (B, T-1), "labels": (B,)}`: right-padded token ids, the
weights of the predicted positions (1 where token t+1 is real) and, for classifiers, the labels.
The causal LM's loss of an example is its mean next-token negative log-likelihood over the real
targets; the classifier's is cross-entropy. The real-token attention mask is passed explicitly
(`privbench.data.tokens.attention_mask`), so transformers never guesses padding from the pad id.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from privbench.data.tokens import attention_mask
from privbench.errors import PrivbenchError
from privbench.models.adapter import Batch, ClassifierAdapter, Params
from privbench.models.lora import find_lora_targets, needs_fan_in_fan_out
from privbench.spec.lm_schema import LMSpec

TASKS = ("causal_lm", "sequence_classification")


def prepare_for_finetuning(model: nn.Module, lm: LMSpec, task: str) -> nn.Module:
    """Wrap `model` with LoRA adapters (peft) or make every parameter trainable; eval mode.

    LoRA targets are `lm.lora_targets`, or, when it is empty, the linear layers of the model's
    attention and MLP blocks (`find_lora_targets`, any architecture). Attention runs eagerly:
    transformers' SDPA path checks masks with data-dependent Python control flow.

    Args:
        model: a transformers causal LM or sequence classifier.
        lm: the spec's language-model table (finetune, lora_r, lora_alpha, lora_targets).
        task: "causal_lm" or "sequence_classification".

    Returns:
        The model to train (a peft model under LoRA), in eval mode (no dropout).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    model.set_attn_implementation("eager")
    if lm.finetune == "lora":
        targets = list(lm.lora_targets) or find_lora_targets(model)
        config = LoraConfig(
            r=lm.lora_r, lora_alpha=lm.lora_alpha, lora_dropout=0.0,
            fan_in_fan_out=needs_fan_in_fan_out(model, targets), target_modules=targets,
            task_type=TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS)
        try:
            model = get_peft_model(model, config)
        except ValueError as e:  # a named target the model does not have
            raise PrivbenchError(
                f"lm.lora_targets = {targets}: LoRA cannot attach to this model "
                f"({str(e).splitlines()[0][:120]}); name some of its linear layers, e.g. "
                f"{linear_layer_names(model)[:6]}") from None
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model.eval()


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (nn.Linear, transformers' Conv1D)."""
    names: list[str] = []
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if type(module).__name__ in ("Linear", "Conv1D") and last not in names:
            names.append(last)
    return names


class HFAdapter:
    """A prepared Hugging Face model behind the `ModelAdapter` contract.

    Args:
        module: the model from `prepare_for_finetuning` (its trainable parameters are the
            LoRA adapters and head under LoRA, every parameter under full fine-tuning).
        task: "causal_lm" or "sequence_classification".
    """

    def __init__(self, module: nn.Module, task: str) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        self.module = module.eval()
        self.task = task

    # The trainable parameters (tied weights appear once) and their release into the module are
    # the classifier's: any nn.Module's.
    init_params = ClassifierAdapter.init_params
    release = ClassifierAdapter.release

    def outputs(self, params: Params, batch: Batch) -> torch.Tensor:
        """Next-token logits (B, T, V) of a causal LM, class logits (B, C) of a classifier.

        Args:
            params: the trainable parameters; batch: "ids" (B, T) and "weights" (B, T-1).
        """
        out = functional_call(self.module, params, (batch["ids"],),
                              {"attention_mask": attention_mask(batch["weights"])},
                              strict=False)
        return out.logits

    def per_example_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean next-token NLL over each example's real targets, or cross-entropy: (B,).

        Args:
            params: the trainable parameters; batch: "ids" and "weights", and "labels" for a
                classifier.
        """
        logits = self.outputs(params, batch)
        if self.task == "causal_lm":
            ids, weights = batch["ids"], batch["weights"]
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            return (nll * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return F.cross_entropy(logits, batch["labels"], reduction="none")

    def accuracy(self, params: Params, batch: Batch) -> float:
        """Next-token accuracy over the real targets (causal LM) or class accuracy; the round
        monitor watches it on public text (trainers/monitor.py).

        Args:
            params: the trainable parameters; batch: as in `per_example_loss`.
        Returns:
            The fraction right, in [0, 1].
        """
        logits = self.outputs(params, batch)
        if self.task == "causal_lm":
            w = batch["weights"]
            right = (logits[:, :-1].argmax(-1) == batch["ids"][:, 1:]).float() * w
            return float(right.sum() / w.sum().clamp(min=1.0))
        return float((logits.argmax(-1) == batch["labels"]).float().mean())

