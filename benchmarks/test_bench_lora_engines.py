"""One DP LoRA gradient step on the llm suite's default tiny GPT-2 (2 layers, width 128, LoRA r=8
on c_attn; batch 32 of the public corpus) through the per-example engines of
trainers/per_example.py (ghost norms, vmap of grad, Opacus hooks) against a non-private LoRA
gradient step (the baseline: one ordinary forward and backward of the mean loss) on the same
model and batch. Each step ends with the summed gradient (clipped and noised for DP); the
optimizer is left out, being the same for all.

Goal: DP LoRA at most 1.2x the non-private step (dp-transformers reports 1.12x).
Run: .venv/bin/python -m pytest benchmarks/test_bench_lora_engines.py -q -p no:randomly
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from privbench.data.text_corpus import public_corpus
from privbench.data.tokens import sequence_tensors
from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.models.pretrained_lm import tiny_gpt2_config, train_tokenizer
from privbench.spec.lm_schema import LMSpec
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.per_example import clipped_sum

BATCH, CLIP, Z = 32, 1.0, 1.0


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    lm = LMSpec()
    texts = public_corpus(2000, 0)
    tokenizer = train_tokenizer(texts, lm.vocab_size)
    ids, weights = sequence_tensors(tokenizer, texts[:BATCH], lm.max_length)
    torch.manual_seed(0)
    model = prepare_for_finetuning(GPT2LMHeadModel(tiny_gpt2_config(lm, tokenizer)), lm,
                                   "causal_lm")
    adapter = HFAdapter(model, "causal_lm")
    batch = {"ids": ids.unsqueeze(0), "weights": weights.unsqueeze(0),
             "labels": torch.zeros(1, BATCH, dtype=torch.long)}
    return adapter, batch


def _non_private(adapter, batch):
    params = {n: p.unsqueeze(0) for n, p in adapter.init_params().items()}
    leaves = {n: p[0].requires_grad_(True) for n, p in params.items()}
    loss = adapter.per_example_loss(leaves, {k: v[0] for k, v in batch.items()}).mean()
    return torch.autograd.grad(loss, list(leaves.values()))


def _dp(adapter, batch, engine):
    params = {n: p.unsqueeze(0) for n, p in adapter.init_params().items()}
    weights = torch.ones(1, BATCH)
    sums, _ = clipped_sum(adapter, params, batch, weights, clip=CLIP, engine=engine)
    noise = gaussian_like(sums, Z * CLIP, torch.Generator().manual_seed(0))
    return {n: (s + noise[n]) / BATCH for n, s in sums.items()}


VARIANTS = {
    "baseline: non-private LoRA step": _non_private,
    "privbench: ghost engine": lambda a, b: _dp(a, b, "ghost"),
    "privbench: vmap(grad) engine": lambda a, b: _dp(a, b, "vmap"),
    "privbench: hooks engine (Opacus GradSampleModule)": lambda a, b: _dp(a, b, "hooks"),
}


@pytest.mark.benchmark(group="dp lora step, tiny gpt2 128x2, r=8, batch 32")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lora_step(benchmark, setup, variant):
    benchmark.pedantic(VARIANTS[variant], args=setup, rounds=10, warmup_rounds=2)
