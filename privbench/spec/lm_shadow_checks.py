"""Checks, before training, of LiRA and RMIA with shadow LMs on a language-model cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privbench.spec.schema import CellSpec


def lm_shadow_problems(spec: CellSpec) -> list[str]:
    """One line per problem (the field and the fix) of attacks.lira / attacks.rmia on an LM.

    Args:
        spec: a language-model cell's spec with LiRA or RMIA enabled.
    Returns:
        The problems; [] when the shadows can run (or this cell trains none).
    """
    from privbench.spec.shadow_cells import trains_shadows

    name = "attacks.lira.enabled" if spec.attacks.lira.enabled else "attacks.rmia.enabled"
    if spec.task != "causal_lm":
        return [f"{name} = true: the shadow-LM attacks score sequences of a causal LM "
                f"(task = {spec.task!r}); use task = 'causal_lm' or turn it off"]
    if not trains_shadows(spec):
        return []
    if spec.audit.enabled and spec.audit.canary == "random-unit":  # Dirac records are not
        # candidates: shadows train the candidates only (attacks/membership/lm_shadows.py)
        return [f"{name} = true: shadow LMs do not replay canary clients "
                f"(audit.canary = {spec.audit.canary!r}); use audit.canary = 'secret' or "
                "'dirac', or set attacks.shadows.cells to skip this cell"]
    if spec.data.name != "support_messages":
        return []  # a user's folder is counted when it loads (the scorer checks it then)
    from privbench.data.shadow_inclusion import generated_inclusion_problem

    n = spec.lm.messages_per_client
    held = min(n - 1, max(1, round(spec.data.test_fraction * n)))
    problem = generated_inclusion_problem(spec.data.clients, n, held,
                                          spec.attacks.shadows.models, spec.seed)
    return [problem] if problem is not None else []
