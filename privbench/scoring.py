"""Scorers: functions that read a trained cell and return metric rows, and their registry.

Each scorer sees its task's context (`CellContext` for classifiers, `lm.scorers.LMContext` for
language models) and decides from the cell's spec whether it applies. Every scorer is one entry
of `SCORERS`, which declares its kind (utility, privacy, membership, audit, ...), the contexts
it reads and the `MetricRow.scorer` names its rows carry: the cell runs `scorers_for(context)`,
`privbench list` shows the table, and the gates and the report tell membership attacks from
other rows by `is_membership` (one truth, not a list in each). `get_scorer(name)` finds one
(did-you-mean on a typo, like scikit-learn's `get_scorer`).

This module imports nothing heavy (each entry names its function's module, loaded on first use),
so the gates and the spec checks read it without loading torch. A new scorer is one function and
one entry here; a scorer outside the package (a team's own attack) is one file whose function is
decorated with `register_scorer`, imported before the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from privbench.registry import Registry, load_object

if TYPE_CHECKING:
    from privbench.audit.canaries import CanarySet
    from privbench.data.partition import ClientShard
    from privbench.data.splits import SplitData
    from privbench.run.observations import TrainedModel
    from privbench.run.results import MetricRow
    from privbench.spec.suite import Cell


@dataclass
class CellContext:
    """Everything a classifier's scorer may read about one trained cell."""

    cell: Cell
    data: SplitData
    shards: list[ClientShard]
    trained: TrainedModel
    canaries: CanarySet | None = None  # planted by the audit (privbench.audit.canaries)
    run_dir: Path | None = None  # where cached work (e.g. shadow models) may be stored

    @property
    def key(self) -> str:
        return self.cell.key

    @property
    def n_train_records(self) -> int:
        """The real training records (the DP-SGD plan's shard size of a one-client run)."""
        return len(self.data.y_train)


Scorer = Callable[[Any], "list[MetricRow]"]
ScorerKind = Literal["utility", "privacy", "membership", "baseline", "audit", "exposure",
                     "inversion", "cost"]
Context = Literal["classifier", "language"]


@dataclass(frozen=True)
class ScorerEntry:
    """One registered scorer.

    Attributes:
        name: its registry name (a failed run's error row carries it).
        kind: what its rows measure; "membership" rows are membership inference attacks.
        contexts: the contexts it reads ("classifier": CellContext, "language": LMContext).
        writes: the `MetricRow.scorer` names of its rows; a name ending in "*" is a prefix.
        description: one line for `privbench list`.
        function: "module:function" of the implementation.
    """

    name: str
    kind: ScorerKind
    contexts: tuple[Context, ...]
    writes: tuple[str, ...]
    description: str
    function: str

    def load(self) -> Scorer:
        """The scorer function (its module is imported on first use)."""
        return load_object(self.function)

    def names_row(self, scorer: str) -> bool:
        """Whether a row with `MetricRow.scorer == scorer` is one of this scorer's."""
        return any(scorer.startswith(w[:-1]) if w.endswith("*") else scorer == w
                   for w in self.writes)


SCORERS: Registry[ScorerEntry] = Registry("scorer", "scorer")
for _entry in (  # in the order a cell runs them
    ScorerEntry("utility", "utility", ("classifier",), ("utility",),
                "test accuracy and loss with intervals, and a collapse check",
                "privbench.attacks.classifier_scorers:utility_scorer"),
    ScorerEntry("lm_utility", "utility", ("language",), ("utility",),
                "held-out perplexity and next-token accuracy (causal LM) or accuracy "
                "(classifier)", "privbench.attacks.language_scorers:lm_utility_scorer"),
    ScorerEntry("loss_attack", "membership", ("classifier",), ("loss",),
                "LOSS membership attack on the audit pool (Yeom et al. 2018)",
                "privbench.attacks.classifier_scorers:loss_attack_scorer"),
    ScorerEntry("lm_loss_attack", "membership", ("language",), ("loss",),
                "LOSS membership attack on whole sequences",
                "privbench.attacks.language_scorers:lm_loss_attack_scorer"),
    ScorerEntry("lm_text_attacks", "membership", ("language",), ("min_k", "zlib", "ref_ratio"),
                "Min-K%, zlib ratio and reference ratio (the model before fine-tuning) on "
                "sequences, each with the blind baseline's AUC",
                "privbench.attacks.language_scorers:lm_text_attacks_scorer"),
    ScorerEntry("lm_blind_baseline", "baseline", ("language",), ("blind",),
                "text-only classifier of the same members and non-members (no model queried)",
                "privbench.attacks.language_scorers:lm_blind_baseline_scorer"),
    ScorerEntry("shadow_attack", "membership", ("classifier",), ("lira", "rmia"),
                "LiRA and RMIA with shadow models trained by the trainer",
                "privbench.attacks.membership.shadow_attacks:shadow_attack_scorer"),
    ScorerEntry("lm_shadow_attack", "membership", ("language",),
                ("lira_online", "lira_offline", "rmia", "pooled_loss", "pooled_lira_online",
                 "pooled_lira_offline", "pooled_rmia"),
                "LiRA and RMIA on sequences with shadow LMs trained by the trainer (runs=K), "
                "on the released model and pooled over it and every shadow (leave one out)",
                "privbench.attacks.membership.lm_shadow_attack:lm_shadow_attack_scorer"),
    # contexts (): written by lm_shadow_attack; listed so that its blind rows are a baseline
    ScorerEntry("lm_pooled_blind", "baseline", (), ("pooled_blind",),
                "the blind text-only baseline on the pooled shadow-attack splits",
                "privbench.attacks.membership.lm_shadow_attack:lm_shadow_attack_scorer"),
    ScorerEntry("canary_exposure", "exposure", ("language",), ("canary_exposure",),
                "exposure of planted secret canaries (Carlini et al. 2019)",
                "privbench.attacks.canary_scorers:canary_exposure_scorer"),
    ScorerEntry("lm_audit", "audit", ("language",), ("audit",),
                "black-box one-run audit on secret canaries: eps_LB, ceiling, verdict",
                "privbench.attacks.canary_scorers:lm_audit_scorer"),
    ScorerEntry("claim", "privacy", ("classifier", "language"), ("privacy",),
                "the claimed epsilon of what ran, as a metric row",
                "privbench.attacks.classifier_scorers:claim_scorer"),
    ScorerEntry("inversion", "inversion", ("classifier",), ("inversion_*",),
                "gradient inversion of recorded client updates and aggregates",
                "privbench.attacks.inversion.scorer:inversion_scorer"),
    ScorerEntry("lm_inversion", "inversion", ("language",),
                ("inversion_signals", "inversion_bow", "inversion_dager",
                 "inversion_bow_aggregate", "inversion_dager_aggregate"),
                "bag of words and DAGER on the LM's recorded client updates (surface "
                "client_updates) and on each round's sum (aggregates)",
                "privbench.attacks.inversion.lm_updates:lm_inversion_scorer"),
    ScorerEntry("secagg", "cost", ("classifier",), ("secagg",),
                "secure aggregation's bytes, contributors and realised noise",
                "privbench.privacy.secagg_rows:secagg_scorer"),
    ScorerEntry("audit", "audit", ("classifier", "language"), ("audit", "audit_forensics"),
                "empirical epsilon lower bound from canaries vs the claim; noise forensics",
                "privbench.audit.scorer:audit_scorer"),
    # contexts (): not run from this table; privbench.governance.hooks adds it to a cell with
    # personal layers (it is built for them). Listed so that its rows have a declared kind.
    ScorerEntry("personal", "utility", (), ("personal",),
                "[governance] personalised vs global accuracy and MIA AUC of FedPer layers",
                "privbench.governance.personal_scorer:personal_scorer"),
):
    SCORERS.register(_entry.name, _entry)


def register_scorer(name: str, *, kind: ScorerKind, contexts: tuple[Context, ...],
                    writes: tuple[str, ...], description: str) -> Callable[[Scorer], Scorer]:
    """Decorator: register the decorated function as the scorer `name` (see `ScorerEntry`).

    Args:
        name: its registry name (registered once).
        kind: what its rows measure ("membership" rows are gated as attacks).
        contexts: the cell contexts it runs on ("classifier", "language").
        writes: the `MetricRow.scorer` names of its rows.
        description: one line for `privbench list`.

    Returns:
        The decorator; it returns the function unchanged.
    """
    def register(function: Scorer) -> Scorer:
        SCORERS.register(name, ScorerEntry(name, kind, tuple(contexts), tuple(writes),
                                           description,
                                           f"{function.__module__}:{function.__qualname__}"))
        return function
    return register


def get_scorer(name: str) -> Scorer:
    """The scorer function registered as `name`; an unknown name is a one-line error with the
    nearest registered name."""
    return SCORERS.get(name).load()


def scorers_for(context: Context) -> list[Scorer]:
    """The scorers a cell of this context runs, in registry order."""
    return [e.load() for _, e in SCORERS.items() if context in e.contexts]


def row_kind(scorer: str) -> ScorerKind | None:
    """The kind of a metric row's scorer name (None: no registered scorer writes it)."""
    for _, entry in SCORERS.items():
        if entry.names_row(scorer):
            return entry.kind
    return None


def row_scorer_problem(field: str, metric: str) -> str | None:
    """A one-line problem when `metric` ("scorer.metric") names a scorer no entry writes."""
    import difflib

    scorer = metric.partition(".")[0]
    if row_kind(scorer) is not None:
        return None
    known = sorted({w for _, e in SCORERS.items() for w in e.writes if not w.endswith("*")})
    close = difflib.get_close_matches(scorer, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"{field} = {metric!r}: no scorer writes {scorer!r} rows; {hint}use one of "
            f"{', '.join(known)} (`privbench list`)")


def is_membership(scorer: str) -> bool:
    """Whether rows of this `MetricRow.scorer` are a membership attack: every name that no
    registered scorer of another kind writes (an attack scored outside the registry, e.g. by
    `privbench attack`, counts as one, so the TPR gate never skips it)."""
    return row_kind(scorer) in (None, "membership")
