"""Where privbench's content-addressed caches live: `$PRIVBENCH_CACHE`, else ~/.cache/privbench.

The pretrained language models (privbench/models/pretrained_lm.py) and the accounting results
(privbench/privacy/accounting_cache.py) are cached below it, each file named by the hash of what it
depends on.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder: $PRIVBENCH_CACHE, else ~/.cache/privbench.

    Returns:
        The folder (it may not exist yet).
    """
    return Path(os.environ.get("PRIVBENCH_CACHE", Path.home() / ".cache" / "privbench"))
