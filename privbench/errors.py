"""User-facing errors: one line naming the field, the bad value and the fix."""

from __future__ import annotations


class PrivbenchError(Exception):
    """An error caused by the user's input; the CLI prints it as lines and exits with code 2."""

    exit_code = 2

    def lines(self) -> list[str]:
        """The lines the CLI prints for this error: here its one message."""
        return [str(self)]


class SpecError(PrivbenchError):
    """One or more problems in a suite spec, each a one-line message."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, each prefixed with the spec's source."""
        return [f"{self.source}: {p}" for p in self.problems]


class BudgetExceeded(PrivbenchError):
    """A planned round would push the spent epsilon past the allowed maximum."""


def os_error_line(e: OSError) -> str:
    """An OSError (a path that cannot be read or written) as one line: the path, what went
    wrong, and what to check."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}; check that the path exists and that you may write there"
