"""Designed secret canaries for the black-box LM audit: secrets of the tokenizer's rarest words.

A digit secret ("the audit code is 4 8 2 9.") is a weak canary: every digit is common in the
private text (phone numbers, account ids), so one included secret barely moves the model's
probability of its digits, and the 10^d secrets share one context the model cannot memorise many
continuations of. Panda et al. (ICLR 2025, "Privacy auditing of large language models") design
canaries from tokens the model has (almost) never seen: training on such a token is the only
gradient its output row receives, so an included canary raises its own tokens' probability far
above where an excluded one's stays.

Here each canary's secret is `audit.secret_tokens` whole-word tokens (a leading space, letters
only) that occur least often in the public corpus, and no two canaries share a token, so one
canary's inclusion moves no other canary's score through a shared row. A token is used only if the
template followed by it tokenises back to the template's tokens and that token, so the text
planted in training is exactly the tokens scored. The secrets read no private text and no
inclusion bit: every canary still certifies (privbench.audit.one_run_bound).

Scored by `secret_token_scores`: the secret's log-likelihood after the template under the
released model. (Subtracting the log-likelihood under the model before fine-tuning, a reference
ratio, lowered the AUC of in against out canaries on the llm suite's example-level cell without DP,
0.78 -> 0.63 (0.65 -> 0.59 for digit secrets): fine-tuning moves every rare token by far more
than their prior differences.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from privbench.errors import PrivbenchError


def rare_word_tokens(tokenizer: PreTrainedTokenizerBase, template: str,
                     public_texts: Sequence[str], rng: np.random.Generator) -> list[int]:
    """Whole-word tokens that follow `template` unchanged, rarest on the public text first (ties
    in a random order).

    Args:
        tokenizer: the model's tokenizer; template: the canaries' fixed prefix;
        public_texts: public text whose token counts rank the words; rng: the tie order's draws.

    Returns:
        Token ids, rarest first.
    """
    counts: Counter[int] = Counter()
    for text in public_texts:
        counts.update(tokenizer.encode(text, add_special_tokens=False))
    head = tokenizer.encode(template, add_special_tokens=False)
    special = set(tokenizer.all_special_ids)
    prefix = tokenizer.decode(head)  # decoded once, not once per token of the vocabulary
    words = []
    for token in range(len(tokenizer)):
        word = _after(tokenizer, head, [token], prefix)
        if token in special or len(word) < 3 or word[0] != " " or not word[1:].isalpha():
            continue
        if tokenizer.encode(template + word, add_special_tokens=False) == [*head, token]:
            words.append(token)
    ties = rng.random(len(words))
    return [words[i] for i in np.lexsort((ties, [counts[t] for t in words]))]


def rare_token_secrets(tokenizer: PreTrainedTokenizerBase, template: str,
                       public_texts: Sequence[str], m: int, length: int,
                       rng: np.random.Generator) -> list[tuple[int, ...]]:
    """m secrets of `length` distinct rare word tokens each, no token in two secrets.

    Args:
        tokenizer, template, public_texts, rng: as for `rare_word_tokens`.
        m: the canary count (audit.n_canaries); length: tokens per secret (audit.secret_tokens).

    Returns:
        m token-id tuples, in a random order.

    Raises:
        PrivbenchError: the tokenizer has fewer than m * length usable words (checked before
            training), or a secret does not tokenise back to its tokens.
    """
    words = rare_word_tokens(tokenizer, template, public_texts, rng)
    if len(words) < m * length:
        raise PrivbenchError(
            f"audit.n_canaries = {m}: rare-token secrets of audit.secret_tokens = {length} need "
            f"{m * length} distinct whole-word tokens and this tokenizer has {len(words)}; lower "
            "audit.n_canaries or audit.secret_tokens, or use audit.secret = 'digits'")
    chosen = np.asarray(words[: m * length])[rng.permutation(m * length)].reshape(m, length)
    secrets = [tuple(int(t) for t in row) for row in chosen]
    head = tokenizer.encode(template, add_special_tokens=False)
    for secret in secrets:
        text = rare_secret_text(tokenizer, template, secret)
        if tokenizer.encode(text, add_special_tokens=False) != [*head, *secret]:
            raise PrivbenchError(f"audit.secret = 'rare-tokens': {text!r} does not tokenise "
                                 "back to its secret's tokens; use audit.secret = 'digits'")
    return secrets


def rare_secret_text(tokenizer: PreTrainedTokenizerBase, template: str,
                     secret: Sequence[int]) -> str:
    """The canary sentence: the template and the secret's words (no full stop, which a
    word-level tokenizer would join to the last word).

    Args:
        tokenizer: the model's tokenizer; template: the prefix; secret: the secret's token ids.
    """
    head = tokenizer.encode(template, add_special_tokens=False)
    return f"{template}{_after(tokenizer, head, secret)}"


def _after(tokenizer: PreTrainedTokenizerBase, head: list[int], tokens: Sequence[int],
           prefix: str | None = None) -> str:
    """The text `tokens` add after `head` when decoded together (a word's leading space, which
    a SentencePiece decoder drops at the start of a text, is kept); `prefix`: head decoded."""
    prefix = tokenizer.decode(head) if prefix is None else prefix
    return tokenizer.decode([*head, *tokens])[len(prefix):]


@torch.no_grad()
def secret_token_scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                        template: str, secrets: Sequence[Sequence[int]]) -> np.ndarray:
    """Each secret's log p(secret | template) under the released model: higher = more likely
    trained on.

    Args:
        model: the released causal LM; tokenizer: the tokenizer training used;
        template: the canaries' prefix; secrets: each canary's secret token ids.

    Returns:
        A float64 array, one score per secret.
    """
    from privbench.query.causal_lm import encode, sequence_logprobs

    head = encode(tokenizer, template)  # BOS (when the tokenizer has one) and the template
    model.eval()
    logprobs = sequence_logprobs(model, [[*head, *s] for s in secrets])
    return np.array([lp[len(head) - 1:].sum() for lp in logprobs], dtype=np.float64)
