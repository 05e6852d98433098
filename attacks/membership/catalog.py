"""What `privbench list` shows for the membership attacks that work on signal arrays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttackInfo:
    """Name, threat surface and one-line description of an attack."""

    name: str
    surface: str
    description: str


MEMBERSHIP_ATTACKS = [
    AttackInfo("lira_online", "final_model", "LiRA online (Carlini et al. 2022): per-record "
               "Gaussian likelihood ratio over IN and OUT shadow models"),
    AttackInfo("lira_offline", "final_model", "LiRA offline: one-sided test against the OUT "
               "shadow models only"),
    AttackInfo("rmia", "final_model", "RMIA (Zarifzadeh et al. 2024): Pr(x|θ)/Pr(x) against "
               "population records, 1 to K reference models"),
    AttackInfo("min_k", "final_model", "Min-K% probability (Shi et al. 2024), language models"),
    AttackInfo("zlib", "final_model", "log-perplexity / zlib entropy (Carlini et al. 2021)"),
    AttackInfo("ref_ratio", "final_model", "target vs reference model perplexity"),
    AttackInfo("blind", "text only", "text-only classifier: the distribution-shift baseline"),
]
