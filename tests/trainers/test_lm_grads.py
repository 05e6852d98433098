"""Per-example gradients of GPT-2 (LoRA and full fine-tuning) equal a loop over single examples.

The loop runs the ordinary module forward and backward on each example alone and unpadded, so it
checks everything the vectorised path relies on: Conv1D layers, the tied input/output embedding
(one parameter, two uses), position ids under right padding, and the masked target weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from privbench.models.hf import HFAdapter, prepare_for_finetuning
from privbench.spec.lm_schema import LMSpec
from privbench.trainers.per_example import per_example_grads

PAD, VOCAB = 1, 50


def tiny_config() -> GPT2Config:
    return GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                      bos_token_id=0, eos_token_id=0, pad_token_id=PAD, tie_word_embeddings=True,
                      attn_implementation="eager", resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, num_labels=3)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    gen = torch.Generator().manual_seed(0)
    lengths = [9, 5, 7, 3]
    ids = torch.full((len(lengths), 9), PAD)
    weights = torch.zeros(len(lengths), 8)
    for i, n in enumerate(lengths):
        ids[i, 0] = 0
        ids[i, 1:n] = torch.randint(2, VOCAB, (n - 1,), generator=gen)
        weights[i, : n - 1] = 1.0
    return ids, weights, lengths


def loop_grads(model: torch.nn.Module, ids: torch.Tensor, lengths: list[int], labels: torch.Tensor,
               classify: bool) -> list[dict[str, torch.Tensor]]:
    """Each example alone, unpadded, through the module's own forward and backward."""
    out = []
    for i, n in enumerate(lengths):
        model.zero_grad()
        x = ids[i:i + 1, :n]
        logits = model(x).logits
        if classify:
            loss = F.cross_entropy(logits, labels[i:i + 1])
        else:
            loss = F.cross_entropy(logits[0, :-1], x[0, 1:])
        loss.backward()
        out.append({name: p.grad.clone() for name, p in model.named_parameters()
                    if p.requires_grad})
    return out


def build(finetune: str, classify: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = GPT2ForSequenceClassification if classify else GPT2LMHeadModel
    model = prepare_for_finetuning(cls(tiny_config()), LMSpec(finetune=finetune, lora_r=2),
                                   "sequence_classification" if classify else "causal_lm")
    with torch.no_grad():  # LoRA's B starts at zero, which would zero A's gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("finetune", ["lora", "full"])
@pytest.mark.parametrize("classify", [False, True], ids=["causal_lm", "classifier"])
def test_per_example_grads_equal_single_example_loop(finetune, classify):
    model = build(finetune, classify)
    ids, weights, lengths = padded_batch()
    labels = torch.tensor([0, 2, 1, 2])
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if finetune == "full" and not classify:
        assert "transformer.wte.weight" in params and "lm_head.weight" not in params  # tied
        assert model.lm_head.weight is model.transformer.wte.weight
    if finetune == "lora":
        assert params and all("lora_" in n or "score" in n for n in params)
        assert any("c_attn" in n for n in params)  # LoRA on GPT-2's Conv1D
    task = "sequence_classification" if classify else "causal_lm"
    batch = {"ids": ids[None], "weights": weights[None], "labels": labels[None]}  # one client
    stacked = {n: p[None] for n, p in params.items()}
    grads = per_example_grads(HFAdapter(model, task), stacked, batch, engine="vmap")
    batched = {n: g[0] for n, g in grads.items()}
    reference = loop_grads(model, ids, lengths, labels, classify)
    for i, ref in enumerate(reference):
        assert set(ref) == set(batched)
        for name, g in ref.items():
            assert g.abs().sum() > 0 or "wpe" in name, name
            torch.testing.assert_close(batched[name][i], g, rtol=1e-4, atol=1e-6, msg=name)
    # The examples differ, so a mix-up of rows would not pass unnoticed.
    name = next(iter(batched))
    assert not torch.allclose(batched[name][0], batched[name][1])
