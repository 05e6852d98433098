"""`privbench list`: the built-in suites and every registry (data sets, tasks, mechanisms, scorers,
attacks)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def list_command(console: Console) -> int:
    """Run `privbench list`: print every built-in suite, data set, task, model, mechanism,
    scorer and attack with its description, so a user can see what a spec may name; returns 0.
    """
    from rich.markup import escape

    from privbench.attacks import ATTACKS
    from privbench.attacks.inversion import INVERSION_ATTACKS
    from privbench.data.registry import DATA_SETS
    from privbench.models import MODELS
    from privbench.run.tasks import TASKS
    from privbench.scoring import SCORERS
    from privbench.spec.load import read_toml
    from privbench.spec.suite import builtin_suites
    from privbench.trainers.mechanisms import MECHANISMS

    table = Table(title="privbench: what is built in")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("description")

    def row(*cells: str) -> None:  # "[tabular]" is text, not rich markup
        table.add_row(*map(escape, cells))

    for name, path in sorted(builtin_suites().items()):
        row("suite", name, str(read_toml(path).get("description", "")))
    for name, info in DATA_SETS.items():
        row("data set", name, f"{info.description} [{info.kind}]")
    for name in TASKS.names():
        row("task", name, TASKS.get(name).description)
    for name, (_, desc) in MODELS.items():
        row("model", name, desc)
    for name, entry in MECHANISMS.items():
        how = (f"privacy.setting = {entry.setting!r}" if entry.setting else
               f"privacy.unit = {entry.unit!r}" if entry.unit else entry.enabled_by or
               "privacy.epsilon = inf")
        row(entry.kind, name, f"{entry.description} [{how}"
            f"{', secagg.distributed_dp' if entry.secure_sum else ''}]")
    for name, scorer in SCORERS.items():
        row("scorer", name, f"{scorer.description} [{scorer.kind}; rows: "
            f"{', '.join(scorer.writes)}; {', '.join(scorer.contexts) or 'added by governance'}]")
    for name, cls in ATTACKS.items():
        row("attack", name, f"{cls.description} [surface: {cls.surface}]")
    for name, (desc, surface) in INVERSION_ATTACKS.items():
        row("inversion", name, f"{desc} [surface: {surface}]")
    console.print(table)
    return 0
