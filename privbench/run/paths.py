"""Safe names and paths: user text never becomes a path outside the folder it is meant for.

A suite's name is free text (`"../../x"`, `"/etc"`, `"a b/c"`); it becomes a folder name only
through `safe_folder_name`. A relative path read from a file the user can edit (a manifest's
file names, a cell key) is joined to its root only through `inside`, which refuses any path that
would leave the root.
"""

from __future__ import annotations

import re
from pathlib import Path

from privbench.errors import PrivbenchError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 64


def safe_folder_name(name: str, fallback: str = "suite") -> str:
    """`name` as one folder name: only letters, digits, '.', '_' and '-', no leading dot.

    Args:
        name: free text, e.g. a suite's `name` field.
        fallback: the name used when nothing safe is left (e.g. for `"../.."`).

    Returns:
        A non-empty name of at most 64 characters that cannot be `.`, `..` or contain a separator.
    """
    text = _UNSAFE.sub("-", name).strip(".-")
    text = re.sub(r"-{2,}", "-", text)[:_MAX_NAME].strip(".-")
    return text or fallback


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing a path that is absolute or climbs out of `root`.

    Args:
        root: the folder the path must stay in.
        relative: a relative path as read from a file (forward slashes).

    Returns:
        The joined path.

    Raises:
        PrivbenchError: the path is absolute, empty, or has a `..` or empty part.
    """
    parts = relative.split("/")
    if (not relative or relative.startswith("/") or "\\" in relative
            or any(p in ("", ".", "..") for p in parts)):
        raise PrivbenchError(f"{root}: the path {relative!r} would leave the folder; the "
                             "manifest naming it was edited")
    return Path(root).joinpath(*parts)
