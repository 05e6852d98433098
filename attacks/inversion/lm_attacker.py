"""The attacker of one LM cell's recorded updates: for a round, the global model the server sent,
the next-token prior from public text, the update as the attacker sees it (with the client's own
noise where the mechanism adds it locally), and bag-of-words plus DAGER run on a round's
gradients."""

from __future__ import annotations

import math

import torch

from privbench.attacks.inversion.client_noise import with_client_noise
from privbench.attacks.inversion.lm_signals import UpdateSignals
from privbench.attacks.inversion.lm_text import (
    bag_of_words,
    next_token_prior,
    robust_std,
    rounding_std,
)
from privbench.attacks.inversion.text import dager
from privbench.attacks.language_scorers import LMContext
from privbench.models.adapter import Params
from privbench.query.sequences import model_at
from privbench.rng import generator


def noise_seen(ctx: LMContext) -> tuple[float, bool]:
    """(std of the noise this scorer adds to each update, whether the update already carries
    the DP noise: example-level DP-SGD and local DP noise inside the client)."""
    claim = ctx.trained.claim
    private = claim.noise_multiplier > 0
    inside = private and (claim.unit == "example" or claim.setting == "local")
    added = (claim.noise_multiplier * (claim.clip or 0.0)
             if ctx.cell.spec.attacks.inversion.noise == "client" and private and not inside
             else 0.0)
    return added, inside


class UpdateAttacker:
    """The server's side: the round's model, the noise it must reckon with, and the attacks."""

    def __init__(self, ctx: LMContext, signals: UpdateSignals, seed_offset: int) -> None:
        self.ctx, self.signals = ctx, signals
        self.added, self.inside = noise_seen(ctx)
        self.gen = generator(ctx.cell.spec.seed, seed_offset)
        self.models: dict[int, torch.nn.Module] = {}
        self.priors: dict[int, torch.Tensor] = {}
        self.special = {t for t in (ctx.tokenizer.bos_token_id, ctx.tokenizer.pad_token_id)
                        if t is not None}

    def model(self, r: int) -> torch.nn.Module:
        """The global model the server sent in round `r` (built once, from its recorded params)."""
        if r not in self.models:
            self.models[r] = model_at(self.ctx.trained.model,
                                      self.ctx.trained.observations.round_params[r])
        return self.models[r]

    def prior(self, r: int) -> torch.Tensor:
        """The round model's next-token prior on the public corpus (the monitor's texts)."""
        if r not in self.priors:
            from privbench.data.text_corpus import public_corpus
            from privbench.models.lm_task import PUBLIC_TEXTS

            spec = self.ctx.cell.spec
            self.priors[r] = next_token_prior(self.model(r), self.ctx.tokenizer,
                                              public_corpus(PUBLIC_TEXTS, spec.seed + 1),
                                              spec.lm.max_length)
        return self.priors[r]

    def _std(self, r: int, name: str, grad: torch.Tensor, copies: int) -> float:
        """The noise level an attack's threshold must clear: the added noise, or (noise inside
        the update) its robust estimate, and at least the float32 rounding of the recorded
        difference of parameters."""
        start = self.ctx.trained.observations.round_params[r][name]
        level = self.added * math.sqrt(copies) or (robust_std(grad) if self.inside else 0.0)
        return max(level, rounding_std(start))

    def view(self, update: Params, copies: int = 1) -> Params:
        """The pseudo-gradient the server inverts: minus the update, with the noise added (a
        sum of `copies` updates carries the noise of each: std sqrt(copies) times).

        Args:
            update: a client's update (or a sum of them) as recorded; copies: how many it sums.
        """
        noised = with_client_noise(update, self.added * math.sqrt(copies), self.gen)
        return {n: -u for n, u in noised.items()}

    def attack(self, r: int, grads: Params, width: int, copies: int = 1
               ) -> tuple[set[int] | None, list[list[int]] | None]:
        """(bag of words or None, DAGER's sequences or None) on one pseudo-gradient (a sum of
        `copies` client updates).
        Either is None when the signals say it cannot run on this cell.

        Args:
            r: the round; grads: the pseudo-gradient (`view`); width: DAGER's longest sequence;
            copies: the updates summed in it.
        """
        s = self.signals
        bow = dag = None
        if s.bow_reason is None:
            g = grads[s.embedding]
            bow = bag_of_words(g, s.tied, self._std(r, s.embedding, g, copies),
                               self.prior(r) if s.tied else None) - self.special
        if s.dager_reason is None:
            std = max(self._std(r, n, grads[n], copies) for n in s.dager)
            dag = dager(self.model(r), {n: grads[n] for n in s.dager}, max_len=width,
                        noise_std=std)
        return bow, dag
