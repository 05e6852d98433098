"""Tiny Hugging Face models of several architectures for tests, beside `tiny_lm.py` (GPT-2).

Each is built from a tiny random config (2 blocks, width 16, nothing downloaded) and saved with
`save_pretrained`, with the project's byte-level BPE tokenizer (`privbench.models.pretrained_lm.
train_tokenizer`, trained on the public corpus), into a folder that loads offline with
`from_pretrained(folder, local_files_only=True)`: exactly as a user's own model folder does.

    folder = tiny_model_folder("llama", "causal_lm")          # cached for the test session
    build_tiny_model("bert", "sequence_classification", path)  # or into a folder of your own

Architectures: causal LMs `CAUSAL_LMS` (decoders), sequence classifiers `CLASSIFIERS` (encoders
and a decoder), none of them GPT-2; "gpt2" builds too (its Conv1D layers and tied embeddings).
Classifiers have `N_LABELS` labels.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from privbench.data.text_corpus import public_corpus
from privbench.models.pretrained_lm import train_tokenizer

CAUSAL_LMS = ("llama", "qwen2", "opt")
CLASSIFIERS = ("bert", "distilbert", "llama")
N_LABELS = 3
WIDTH, LAYERS, HEADS, POSITIONS, VOCAB = 16, 2, 2, 64, 320


@cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The project's byte-level BPE, trained on 200 public sentences (same every time)."""
    return train_tokenizer(public_corpus(200, 0), VOCAB)


def tiny_config(arch: str, tok: PreTrainedTokenizerFast) -> PretrainedConfig:
    """A 2-block, width-16 config of `arch` with the tokenizer's vocabulary and special ids, no
    dropout (per-example gradients are compared exactly)."""
    ids = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
           "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "num_labels": N_LABELS}
    if arch in ("llama", "qwen2"):
        cls = LlamaConfig if arch == "llama" else Qwen2Config
        return cls(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                   num_attention_heads=HEADS, num_key_value_heads=1,
                   max_position_embeddings=POSITIONS, tie_word_embeddings=False, **ids)
    if arch == "gpt2":  # tiny_lm.py trains one; this one is random, for the engine tests
        return GPT2Config(n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          tie_word_embeddings=True, **ids)
    if arch == "opt":
        return OPTConfig(hidden_size=WIDTH, ffn_dim=2 * WIDTH, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, word_embed_proj_dim=WIDTH,
                         max_position_embeddings=POSITIONS, dropout=0.0, attention_dropout=0.0,
                         **ids)
    if arch == "bert":
        return BertConfig(hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          max_position_embeddings=POSITIONS, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, classifier_dropout=0.0, **ids)
    if arch == "distilbert":
        return DistilBertConfig(dim=WIDTH, hidden_dim=2 * WIDTH, n_layers=LAYERS, n_heads=HEADS,
                                max_position_embeddings=POSITIONS, dropout=0.0,
                                attention_dropout=0.0, seq_classif_dropout=0.0, **ids)
    raise ValueError(f"no tiny config for {arch!r}; use one of "
                     f"{sorted({*CAUSAL_LMS, *CLASSIFIERS, 'gpt2'})}")


def build_tiny_model(arch: str, task: str, path: Path, seed: int = 0) -> Path:
    """Build a tiny random `arch` model for `task` ("causal_lm" or "sequence_classification")
    and save it with its tokenizer into `path` (save_pretrained: safetensors and JSON)."""
    tok = tiny_tokenizer()
    config = tiny_config(arch, tok)
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, attn_implementation="eager")
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


_ROOT: list[Path] = []


@cache
def tiny_model_folder(arch: str, task: str) -> Path:
    """The tiny `arch` model for `task`, built once per test session into a temporary folder."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="privbench-tiny-models-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return build_tiny_model(arch, task, _ROOT[0] / f"{arch}-{task}")
