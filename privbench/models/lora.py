"""LoRA targets for any Hugging Face architecture, found from the module tree when the user names
none (`lm.lora_targets = []`).

peft only knows default targets for the model types in its own table; for any other architecture
it fails. The attention and MLP projections of a transformer are the linear layers inside its
repeated blocks (a `ModuleList` of layers: `model.layers.3.self_attn.q_proj`,
`transformer.h.0.attn.c_attn`, `encoder.layer.1.intermediate.dense`), so that is what is found:
every `nn.Linear` or transformers `Conv1D` whose path runs through a numbered entry of a
`ModuleList`, never the
output head or a classifier (the model's output embeddings, `lm_head`, `score`, `classifier`,
`pooler`), which live outside the blocks.
"""

from __future__ import annotations

from torch import nn

from privbench.errors import PrivbenchError

# Heads that must never get LoRA adapters, whatever their path (a classifier head is trained
# fully under peft's SEQ_CLS task, an LM head is tied to or as large as the embeddings).
HEAD_NAMES = ("lm_head", "score", "classifier", "pooler", "pre_classifier", "qa_outputs")


def _is_conv1d(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def _in_block(model: nn.Module, path: str) -> bool:
    """Whether `path` runs through a numbered entry of a ModuleList (a transformer block)."""
    module = model
    for part in path.split("."):
        if part.isdigit() and isinstance(module, nn.ModuleList):
            return True
        module = getattr(module, part)
    return False


def find_lora_targets(model: nn.Module) -> list[str]:
    """The full module paths of the linear layers of the model's attention and MLP blocks.

    Args:
        model: a Hugging Face causal LM or sequence classifier (before peft wraps it).

    Returns:
        Module paths, in module order, to pass as peft's `target_modules`.

    Raises:
        PrivbenchError: one line naming `lm.lora_targets` when there is none.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    targets = []
    for path, module in model.named_modules():
        if not (isinstance(module, nn.Linear) or _is_conv1d(module)) or module is head:
            continue
        if any(part in HEAD_NAMES for part in path.split(".")) or not _in_block(model, path):
            continue
        targets.append(path)
    if not targets:
        kind = type(model).__name__
        raise PrivbenchError(f"lm.lora_targets = []: found no linear layers in the attention or "
                             f"MLP blocks of this {kind}; name its projection layers, e.g. "
                             "lm.lora_targets = [\"q_proj\", \"v_proj\"]")
    return targets


def needs_fan_in_fan_out(model: nn.Module, targets: list[str]) -> bool:
    """Whether LoRA must treat the targets' weights as (in, out): GPT-2-style `Conv1D` layers.

    Args:
        model: the model the targets are in.
        targets: module paths or peft-style name suffixes.

    Returns:
        True when the targeted layers are Conv1D (peft's `fan_in_fan_out`), False for nn.Linear.

    Raises:
        PrivbenchError: when the targets mix Conv1D and Linear layers (one LoRA config cannot
            serve both layouts).
    """
    kinds = set()
    for path, module in model.named_modules():
        if any(path == t or path.endswith("." + t) for t in targets):
            if _is_conv1d(module):
                kinds.add("Conv1D")
            elif isinstance(module, nn.Linear):
                kinds.add("Linear")
    if len(kinds) > 1:
        raise PrivbenchError(f"lm.lora_targets = {targets}: mixes Conv1D and Linear layers; "
                             "name layers of one kind")
    return kinds == {"Conv1D"}
