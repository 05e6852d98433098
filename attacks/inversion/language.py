"""The tiny GPT-2 and word-level corpus that the text inversion attacks run on (built locally,
nothing downloaded): untied input embeddings, no dropout, a whitespace vocabulary."""

from __future__ import annotations

import torch
from torch import nn

# Short synthetic client messages; the vocabulary is built from them.
CORPUS = (
    "please move my appointment to friday morning",
    "the test results came back negative again",
    "send the invoice to the billing address on file",
    "my account number ends in four two seven",
    "remind me to call the pharmacy at noon",
    "the meeting with the lawyer is on tuesday",
    "our new office opens next month downtown",
    "i lost my card while travelling last week",
    "transfer fifty dollars to my savings account",
    "the doctor changed my dose to ten milligrams",
    "can you book a table for two tonight",
    "the package will arrive before the weekend",
    "my password reset link has expired",
    "we moved to a smaller flat near the river",
    "the bank declined the payment this morning",
    "please cancel the order i placed yesterday",
    "the nurse said the scan looked normal",
    "my daughter starts school in september",
    "add milk eggs and bread to the shopping list",
    "the insurance claim was approved on monday",
    "i will be late for the interview today",
    "call my brother when the flight lands",
    "the landlord raised the rent again this year",
    "my blood pressure was high at the clinic",
    "forward the contract to the new manager",
    "the salary payment is due on the first",
    "book a taxi to the airport at six",
    "the therapist moved our session to thursday",
    "i need a copy of my medical records",
    "the loan application needs two more documents",
)
EOS, PAD = "<eos>", "<pad>"


def vocabulary() -> list[str]:
    """Every corpus word, sorted, then the end-of-sequence and padding tokens."""
    return [*sorted({w for line in CORPUS for w in line.split()}), EOS, PAD]


def encode(lines: list[str], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of each line plus <eos>, right-padded; labels are -100 on padding.

    Args:
        lines: space-separated words; vocab: the word list (with <eos> and the pad token).
    Returns:
        (ids, labels), each (N, longest + 1).
    """
    index = {w: i for i, w in enumerate(vocab)}
    seqs = [[index[w] for w in line.split()] + [index[EOS]] for line in lines]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), index[PAD], dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


def tiny_gpt2(vocab_size: int, seed: int, width: int = 128, layers: int = 2,
              context: int = 32) -> nn.Module:
    """A 2-block GPT-2 (transformers GPT2LMHeadModel) with untied embeddings and no dropout.

    Args:
        vocab_size: the vocabulary; seed: the initialisation's seed (the global RNG is forked);
        width, layers, context: the embedding width, blocks and positions.
    Returns:
        The model, in eval mode.
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the config's warnings about GPT-2's default token ids
    config = GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=width,
                        n_layer=layers, n_head=4, tie_word_embeddings=False, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=vocab_size - 2,
                        eos_token_id=vocab_size - 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # next-token cross-entropy, named: no guessing, no warning
    logging.set_verbosity(verbosity)
    return model.eval()


def lm_gradient(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """One client's gradient of the mean next-token loss on a batch (one local step).

    Args:
        model: the LM (its .grad fields are cleared before and after); ids, labels: the batch.
    Returns:
        name -> the gradient, for every parameter that got one.
    """
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=labels).loss.backward()
    out = {name: p.grad.detach().clone() for name, p in model.named_parameters()
           if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out
