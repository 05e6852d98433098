"""The README's runnable examples: each ```python block whose first line names it."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(name: str) -> str:
    """The code of the README block that starts with `# privbench example: NAME`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    for block in blocks:
        if block.startswith(f"# privbench example: {name}\n"):
            return block
    raise LookupError(f"README.md has no python block '# privbench example: {name}'")
