"""The default language model: a byte-level BPE tokenizer and a tiny GPT-2, both trained locally
on the generated public corpus, once, and cached in a folder named by their content hash.

The cached folder is an ordinary Hugging Face model folder (save_pretrained: safetensors weights,
JSON config and tokenizer), so it loads through exactly the same code as a user's own model
folder: `from_pretrained(path, local_files_only=True)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from privbench.data.text_corpus import CORPUS_VERSION, public_corpus
from privbench.data.tokens import BOS, PAD, attention_mask, sequence_tensors
from privbench.errors import PrivbenchError
from privbench.run.cache_dir import cache_root as cache_root  # where pretrained models live
from privbench.spec.lm_schema import LMSpec

log = logging.getLogger("privbench.lm")

PRETRAIN_VERSION = "1"


def pretrain_recipe(lm: LMSpec, seed: int) -> dict:
    """Everything the pretrained model depends on; its hash names the cache folder.

    Args:
        lm: the spec's LM section (size, vocabulary, pretraining plan); seed: the spec's seed.
    Returns:
        The recipe dict, with the public corpus's sha256 and the torch/transformers versions.
    """
    corpus = json.dumps(public_corpus(lm.pretrain_docs, seed)).encode()
    return {
        "corpus_version": CORPUS_VERSION, "pretrain_version": PRETRAIN_VERSION,
        "corpus_sha256": hashlib.sha256(corpus).hexdigest(),
        "seed": seed, "layers": lm.layers, "width": lm.width, "heads": lm.heads,
        "vocab_size": lm.vocab_size, "max_length": lm.max_length, "docs": lm.pretrain_docs,
        "steps": lm.pretrain_steps, "batch": lm.pretrain_batch, "lr": lm.pretrain_lr,
        "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
    }


def default_model_folder(lm: LMSpec, seed: int) -> Path:
    """The cached tiny GPT-2 for this recipe, pretraining it first if it is not cached yet.

    Pretraining is locked across processes and written aside, then renamed once finished.

    Args:
        lm: the spec's LM section; seed: the spec's seed.
    Returns:
        `<cache>/lm/tiny_gpt2-<16 hex digits of the recipe's hash>`.
    """
    recipe = pretrain_recipe(lm, seed)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / "lm" / f"tiny_gpt2-{key}"
    if (folder / "recipe.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_suffix(".lock")):
        if (folder / "recipe.json").exists():  # another process finished it while we waited
            return folder
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        _pretrain_into(tmp, lm, seed)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2))  # last: marks it finished
        os.replace(tmp, folder)
    return folder


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, wrapped as a transformers fast tokenizer.

    Args:
        texts: the public corpus; vocab_size: the BPE's target vocabulary.
    """
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=[BOS, PAD], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=BOS, eos_token=BOS,
                                   pad_token=PAD, model_max_length=4096)


def tiny_gpt2_config(lm: LMSpec, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    """The tiny LM's GPT-2 config: the spec's size, the tokenizer's ids, no dropout, tied weights.

    Args:
        lm: the spec's LM section (layers, width, heads, max_length); tokenizer: the trained BPE.
    """
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=max(lm.max_length, 64), n_embd=lm.width,
        n_layer=lm.layers, n_head=lm.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )


def _pretrain_into(folder: Path, lm: LMSpec, seed: int) -> None:
    """Train the tokenizer and pretrain a tiny GPT-2 on the public corpus; save both."""
    texts = public_corpus(lm.pretrain_docs, seed)
    tokenizer = train_tokenizer(texts, lm.vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt2_config(lm, tokenizer))
    ids, weights = sequence_tensors(tokenizer, texts, lm.max_length)
    opt = torch.optim.Adam(model.parameters(), lr=lm.pretrain_lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(lm.pretrain_steps):
        idx = torch.randint(len(ids), (lm.pretrain_batch,), generator=gen)
        logits = model(ids[idx], attention_mask=attention_mask(weights[idx])).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[idx, 1:],
                                                reduction="none")
        loss = (nll * weights[idx]).sum() / weights[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(folder)  # safetensors by default
    tokenizer.save_pretrained(folder)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The folder's fast tokenizer; a missing pad token falls back to the end-of-text token."""
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise PrivbenchError(f"model.path = {str(folder)!r}: needs a fast tokenizer "
                             "(tokenizer.json); save one with the model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.bos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token or tok.pad_token
    return tok


def load_model(folder: Path, task: str, n_labels: int) -> PreTrainedModel:
    """A causal LM or a sequence classifier from a local folder, in eval mode, no download.

    Args:
        folder: a save_pretrained folder; task: "causal_lm" or a sequence classifier;
        n_labels: the classifier's label count (a head of another size is replaced).
    Raises:
        PrivbenchError: the folder cannot be loaded (model.path named).
    """
    try:
        if task == "causal_lm":
            with quiet_loading():
                model = AutoModelForCausalLM.from_pretrained(
                    folder, local_files_only=True, attn_implementation="eager")
        else:  # a head for another label count is replaced by a new one (seeded by the caller)
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            fresh = config.num_labels != n_labels
            if fresh:
                log.warning("model.path = %r: its classifier head has %d labels, the data %d; "
                            "a new head is initialised", str(folder), config.num_labels, n_labels)
            with quiet_loading():
                model = AutoModelForSequenceClassification.from_pretrained(
                    folder, local_files_only=True, num_labels=n_labels,
                    attn_implementation="eager", ignore_mismatched_sizes=fresh)
    except (OSError, ValueError) as e:
        raise PrivbenchError(f"model.path = {str(folder)!r}: cannot load ({str(e)[:160]}); "
                             "give a folder written by save_pretrained") from None
    model.eval()  # no dropout: training is deterministic and per-example gradients are exact
    return model


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Without transformers' per-load "Loading weights" progress bar (a suite loads the model
    once per cell; its own progress display says where it is), restoring the caller's setting."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
