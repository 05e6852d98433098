"""One DP LoRA fine-tuning step on the default tiny GPT-2 (privbench's vmap(grad) DP-SGD) against
a non-private LoRA step (the baseline: ordinary forward, backward, Adam) and against Opacus's
per-sample-gradient hooks on the same model, batch and sequence length. Goal: DP <= 1.5x baseline.

Run: .venv/bin/python -m pytest benchmarks/test_bench_lm_dp.py -q
"""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from transformers import GPT2LMHeadModel

from privbench.data.text_corpus import public_corpus
from privbench.data.tokens import Examples, attention_mask, sequence_tensors
from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.models.pretrained_lm import tiny_gpt2_config, train_tokenizer
from privbench.spec.lm_schema import LMSpec
from privbench.trainers.aggregation import gaussian_like
from privbench.trainers.optim import RowOptimizer
from privbench.trainers.per_example import clipped_sum, select_engine

BATCH, CLIP, Z, LR = 32, 1.0, 1.0, 1e-3


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    lm = LMSpec()  # the default model: 2 layers, width 128, LoRA r=8 on c_attn
    texts = public_corpus(2000, 0)
    tokenizer = train_tokenizer(texts, lm.vocab_size)
    ids, weights = sequence_tensors(tokenizer, texts[:BATCH], lm.max_length)
    ex = Examples(ids, weights, torch.zeros(BATCH, dtype=torch.long),
                  torch.zeros(BATCH, dtype=torch.long))

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return prepare_for_finetuning(GPT2LMHeadModel(tiny_gpt2_config(lm, tokenizer)), lm,
                                      "causal_lm")
    return model, ex


def _loss(model, ex):
    logits = model(ex.ids, attention_mask=attention_mask(ex.weights)).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ex.ids[:, 1:],
                                            reduction="none")
    return ((nll * ex.weights).sum(1) / ex.weights.sum(1)).mean()


@pytest.mark.benchmark(group="lm_lora_step")
def test_nonprivate_lora_step_baseline(benchmark, setup):
    """[baseline] forward, backward and Adam on the LoRA parameters."""
    make, ex = setup
    model = make()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)

    def step():
        opt.zero_grad()
        _loss(model, ex).backward()
        opt.step()
    benchmark.name = "test_nonprivate_lora_step[baseline]"
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)


@pytest.mark.benchmark(group="lm_lora_step")
def test_privbench_dp_lora_step(benchmark, setup):
    """privbench: the trainer's DP-SGD step (one client): per-example clipped sum through the
    adapter, Gaussian noise, Adam on the noisy mean."""
    make, ex = setup
    adapter = HFAdapter(make(), "causal_lm")
    params = {n: p[None] for n, p in adapter.init_params().items()}  # one row: one client
    batch = {n: t[None] for n, t in ex.batch().items()}
    weights = torch.ones(1, BATCH)
    opt = RowOptimizer("adam", params, LR, rows=1)
    gen = torch.Generator().manual_seed(0)
    engine = select_engine(adapter, params, batch)  # once, before training, as the trainer does
    benchmark.extra_info["engine"] = engine

    def step():
        sums, _ = clipped_sum(adapter, params, batch, weights, clip=CLIP, engine=engine)
        noise = gaussian_like(sums, Z * CLIP, gen)
        with torch.no_grad():
            opt.step(params, {n: sums[n] + noise[n] for n in sums}, scale=BATCH)
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)


@pytest.mark.benchmark(group="lm_lora_step")
def test_opacus_dp_lora_step(benchmark, setup):
    """Opacus 1.6 hooks (GradSampleModule + DPOptimizer) on the same LoRA model."""
    make, ex = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GradSampleModule(make().train())  # Opacus records activations in train mode
    params = [p for p in model.parameters() if p.requires_grad]
    opt = DPOptimizer(torch.optim.Adam(params, lr=LR), noise_multiplier=Z, max_grad_norm=CLIP,
                      expected_batch_size=BATCH)

    def step():
        opt.zero_grad()
        _loss(model, ex).backward()
        opt.step()
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)
