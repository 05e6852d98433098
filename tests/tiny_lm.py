"""A tiny causal language model trained in the test process: a word-level tokenizer and a
2-layer GPT-2 built from a config (nothing downloaded), saved with save_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
CITIES = ["paris", "oslo", "lima", "rome", "cairo", "delhi", "quito", "tokyo"]
THINGS = ["tea", "chess", "jazz", "maps", "rain", "boats", "bread", "kites"]
CANARY_PREFIX = "the secret code is"
CANARY = f"{CANARY_PREFIX} 3 9 1 7"
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def sentences(n: int, seed: int) -> list[str]:
    """Random sentences from one template: members and non-members share the distribution."""
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(NAMES)} from {rng.choice(CITIES)} likes {rng.choice(THINGS)} and "
            f"{rng.choice(THINGS)} with {rng.choice(NAMES)}" for _ in range(n)]


def tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for s in [*sentences(1, 0), CANARY] for w in s.split()}
                   | set(NAMES) | set(CITIES) | set(THINGS) | {str(d) for d in range(10)})
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def split_digit_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style word-level tokenizer (Metaspace "▁" word starts, each digit its own
    token, as Llama's tokenizer does): " 3" is two tokens, "▁" and "3"."""
    words = sorted({f"▁{w}" for s in [*sentences(1, 0), CANARY] for w in s.split()
                    if not w.isdigit()} | {f"▁{w}" for w in NAMES + CITIES + THINGS}
                   | {"▁"} | {str(d) for d in range(10)})
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def train_tiny_lm(texts: list[str], tok: PreTrainedTokenizerFast, *, steps: int, seed: int,
                  ) -> GPT2LMHeadModel:
    """Train a 2-layer GPT-2 on `texts` (each with BOS and EOS) with AdamW, on one thread (tiny
    matrices: more threads only contend on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(texts, tok, steps=steps, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _train(texts: list[str], tok: PreTrainedTokenizerFast, *, steps: int, seed: int,
           ) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config)
    if steps == 0:
        return model.eval()
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id]
           for t in texts]
    width = max(map(len, ids))
    batch_ids = torch.full((len(ids), width), tok.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, s in enumerate(ids):
        batch_ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = batch_ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(ids), (32,), generator=gen)
        loss = model(input_ids=batch_ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save(model: GPT2LMHeadModel, tok: PreTrainedTokenizerFast, path: Path) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
