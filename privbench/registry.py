"""Registries: one table per kind of thing (data sets, tasks, ...), from which the spec's allowed
values, its checks and `privbench list` derive, so that they cannot disagree.

A registry maps a name to an entry; `get` of an unknown name is a one-line error naming the spec
field, the value and the nearest known name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from privbench.errors import PrivbenchError

T = TypeVar("T")


def load_object(path: str) -> Any:
    """The object a registry entry names as "package.module:attribute" (imported on first use,
    so that a registry itself stays light to import)."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what the entries are, for messages ("data set").
        field: the spec field that names one ("data.name").
    """

    def __init__(self, kind: str, field: str) -> None:
        self.kind, self.field = kind, field
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name` (a name registers once) and return it.

        Args:
            name: the name a spec uses; entry: what it names.
        Raises:
            ValueError: `name` is already registered (a programming error, not a user's).
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """`@registry.decorator("name")` registers the decorated object."""
        return lambda entry: self.register(name, entry)

    def get(self, name: str) -> T:
        """The entry of `name`, or a one-line PrivbenchError with the nearest known name."""
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PrivbenchError(f"{self.field} = {name!r}: no such {self.kind}; {hint}use one of "
                             f"{', '.join(self._entries)}")

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, in registration order."""
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries
