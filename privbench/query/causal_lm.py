"""Per-token signals of a local Hugging Face causal language model (never downloaded).

Loading uses `local_files_only=True`: a folder written by `save_pretrained` (config, weights,
tokenizer) is all that is needed, so a user's own model is audited offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from privbench.errors import PrivbenchError


def load_causal_lm(path: Path, option: str = "--model") -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder, in eval mode.

    Args:
        path: a save_pretrained folder (read offline); option: the option named in errors.
    Returns:
        (model, tokenizer).
    Raises:
        PrivbenchError: no config.json, or the folder cannot be loaded offline.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from privbench.models.pretrained_lm import quiet_loading

    if not (Path(path) / "config.json").exists():
        raise PrivbenchError(f"{option} = {path}: not a Hugging Face model folder (no "
                             "config.json); give a folder written by save_pretrained")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise PrivbenchError(f"{option} = {path}: cannot load a causal LM and its tokenizer "
                             f"offline ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, tokenizer


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text`, with the BOS token in front when the tokenizer has one, so that the
    first real token is predicted too.

    Args:
        tokenizer: the model's tokenizer; text: the text.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(ids)


@torch.no_grad()
def sequence_logprobs(model: Any, sequences: Sequence[Sequence[int]], *,
                      batch_size: int = 32) -> list[np.ndarray]:
    """Log-probability of every token after the first, for each token-id sequence.

    Args:
        model: the causal LM; sequences: token-id sequences; batch_size: sequences per forward.
    Returns:
        One float64 array of len(sequence) - 1 log-probabilities per sequence.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(sequences), batch_size):
        batch = [list(s) for s in sequences[start:start + batch_size]]
        width = max(len(s) for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        for i, s in enumerate(batch):
            out.append(logp[i, : len(s) - 1].double().numpy())
    return out


def text_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], *,
                  batch_size: int = 32) -> list[np.ndarray]:
    """Per-token log-probabilities of each text under the model.

    Args:
        model, tokenizer: the causal LM and its tokenizer; texts: the texts (BOS prepended);
        batch_size: texts per forward.
    Returns:
        As `sequence_logprobs`.
    """
    return sequence_logprobs(model, [encode(tokenizer, t) for t in texts], batch_size=batch_size)
