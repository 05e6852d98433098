"""Per-example gradients of tiny Hugging Face models of several architectures (decoders and
encoders, LoRA and full fine-tuning) equal a loop over single examples, on every engine that
applies; LoRA targets are found for every architecture.

The loop runs each example alone and unpadded through the module's own forward and backward, with
one row's parameters written into the module: it checks the attention masks, position ids under
right padding, the masked target weights and the engines' bookkeeping at once. Tolerance: float32,
rtol 1e-4, atol 1e-5 (attention softmax sums in a different order than alone).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import CAUSAL_LMS, CLASSIFIERS, N_LABELS, tiny_model_folder, tiny_tokenizer

from privbench.data.text_corpus import public_corpus
from privbench.data.tokens import sequence_tensors
from privbench.errors import PrivbenchError
from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.models.lora import find_lora_targets
from privbench.models.pretrained_lm import load_model, load_tokenizer
from privbench.spec.lm_schema import LMSpec
from privbench.trainers import ghost
from privbench.trainers.per_example import EngineError, per_example_grads, select_engine

TOL = {"rtol": 1e-4, "atol": 1e-5}
K, B = 2, 3
MODELS = [(a, "causal_lm") for a in (*CAUSAL_LMS, "gpt2")] + [
    (a, "sequence_classification") for a in (*CLASSIFIERS, "gpt2")]
# Engines that run on each model: ghost needs every trainable layer to be a Linear or Embedding
# (LoRA's adapters and heads are; full fine-tuning trains norm layers too); vmap cannot trace
# BERT's and DistilBERT's mask creation (data-dependent control flow); Opacus's hooks need one
# input row per example, which OPT's MLP (flattened to (B*T, d)) does not give.
ENCODERS, FLATTENS = ("bert", "distilbert"), ("opt",)


def engines_for(arch: str, finetune: str) -> set[str]:
    engines = {"ghost", "vmap", "hooks"} if finetune == "lora" else {"vmap", "hooks"}
    return engines - ({"vmap"} if arch in ENCODERS else set()) - (
        {"hooks"} if arch in FLATTENS else set())


def adapter_for(arch: str, task: str, finetune: str) -> HFAdapter:
    model = load_model(tiny_model_folder(arch, task), task, N_LABELS)
    torch.manual_seed(0)
    model = prepare_for_finetuning(model, LMSpec(finetune=finetune, lora_r=2), task)
    with torch.no_grad():  # LoRA's B starts at zero, which would zero A's gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return HFAdapter(model, task)


def batch_of_rows() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """K rows of B right-padded sentences of different lengths, with labels; lengths (K, B)."""
    texts = public_corpus(K * B, seed=3)
    texts = [" ".join(t.split()[: 3 + 2 * i]) for i, t in enumerate(texts)]
    ids, weights = sequence_tensors(tiny_tokenizer(), texts, max_length=24)
    labels = torch.arange(K * B) % N_LABELS
    lengths = (weights.sum(dim=1) + 1).long()
    batch = {"ids": ids, "weights": weights, "labels": labels}
    return {n: v.reshape(K, B, *v.shape[1:]) for n, v in batch.items()}, lengths.reshape(K, B)


def rows_of(adapter: HFAdapter) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {n: p.unsqueeze(0) + 0.05 * torch.randn((K, *p.shape), generator=gen)
            for n, p in adapter.init_params().items()}


def loop_grads(adapter: HFAdapter, params, batch, lengths) -> dict[str, torch.Tensor]:
    """Each example alone, unpadded, through the module's own forward and backward."""
    model = adapter.module
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rows = []
    for k in range(K):
        adapter.release({n: v[k] for n, v in params.items()})
        row = []
        for i in range(B):
            x = batch["ids"][k, i:i + 1, : int(lengths[k, i])]
            logits = model(input_ids=x).logits
            if adapter.task == "causal_lm":
                loss = F.cross_entropy(logits[0, :-1], x[0, 1:])
            else:
                loss = F.cross_entropy(logits, batch["labels"][k, i:i + 1])
            grads = torch.autograd.grad(loss, list(trainable.values()), allow_unused=True)
            row.append({n: torch.zeros_like(p) if g is None else g
                        for (n, p), g in zip(trainable.items(), grads, strict=True)})
        rows.append({n: torch.stack([g[n] for g in row]) for n in trainable})
    return {n: torch.stack([r[n] for r in rows]) for n in trainable}


CASES = [(arch, task, finetune, engine) for arch, task in MODELS for finetune in ("lora", "full")
         for engine in sorted(engines_for(arch, finetune))]


@pytest.mark.parametrize(("arch", "task", "finetune", "engine"), CASES)
def test_per_example_grads_equal_single_example_loop(arch, task, finetune, engine):
    adapter = adapter_for(arch, task, finetune)
    params = rows_of(adapter)
    batch, lengths = batch_of_rows()
    assert select_engine(adapter, params, batch, engine) == engine
    got = per_example_grads(adapter, params, batch, engine=engine)
    if engine == "ghost":  # rows in one vectorised call where torch.func traces the model
        assert ghost.rows_vectorised(adapter) == (arch not in ENCODERS)
    reference = loop_grads(adapter, params, batch, lengths)
    assert set(got) == set(reference)
    if finetune == "lora":
        assert all("lora_" in n or task != "causal_lm" for n in reference)
    for name, g in reference.items():
        torch.testing.assert_close(got[name], g, **TOL, msg=name)
    some = next(n for n in reference if "lora_A" in n or finetune == "full")
    assert not torch.allclose(reference[some][0, 0], reference[some][0, 1])
    assert not torch.allclose(reference[some][0, 0], reference[some][1, 0])


@pytest.mark.parametrize("finetune", ["lora", "full"])
@pytest.mark.parametrize(("arch", "task"), MODELS)
def test_auto_engine_picks_the_fastest_that_runs_and_others_are_one_line_errors(arch, task,
                                                                               finetune):
    batch, _ = batch_of_rows()
    adapter = adapter_for(arch, task, finetune)
    params = rows_of(adapter)
    runs = engines_for(arch, finetune)
    expected = next(e for e in ("ghost", "vmap", "hooks") if e in runs)
    assert select_engine(adapter, params, batch) == expected
    for engine in {"ghost", "vmap", "hooks"} - runs:
        with pytest.raises(EngineError, match=f"^model.engine = '{engine}' cannot run") as err:
            select_engine(adapter, params, batch, engine)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("arch", "task"), MODELS)
def test_lora_targets_are_the_block_linears_and_never_the_head(arch, task):
    model = load_model(tiny_model_folder(arch, task), task, N_LABELS)
    targets = find_lora_targets(model)
    per_block = len(targets) // 2
    assert per_block >= 4  # at least the attention projections of each of the 2 blocks
    assert all(any(p.isdigit() for p in t.split(".")) for t in targets)
    head = model.get_output_embeddings() if task == "causal_lm" else None
    modules = dict(model.named_modules())
    assert all(modules[t] is not head for t in targets)
    assert not any(w in t for t in targets for w in ("lm_head", "score", "classifier", "pooler"))


def test_no_lora_target_is_a_one_line_error_naming_the_field():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    with pytest.raises(PrivbenchError, match=r"^lm.lora_targets = \[\]: found no linear") as err:
        find_lora_targets(model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("arch", "task"), MODELS)
def test_tiny_folders_load_offline_with_their_tokenizer(arch, task):
    folder = tiny_model_folder(arch, task)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    tok = load_tokenizer(folder)
    text = public_corpus(1, seed=5)[0]
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    model = load_model(folder, task, N_LABELS)
    assert model.config.model_type == arch and model.config.vocab_size == len(tok)
