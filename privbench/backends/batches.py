"""Batches of independent runs inside a cell (shadow-model chunks, multi-run audit chunks): run
here one after another, or as Ray tasks when the cell itself runs on the Ray backend.

A batch is a list of work items, each a pure function of its arguments and of the arguments the
items share (its own random streams included), so the results do not depend on where or in which
order the items run: the Ray backend's cell task (privbench/backends/ray.py) turns `ray_batches`
on, and a cell's shadow models and audit runs then come back bit for bit as on the local backend.
The shared arguments (the data, the initial weights) go to the object store once per batch.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

RETRIES = 3  # Ray's reruns of an item whose worker died (an item is pure: same result)
_ON_RAY: contextvars.ContextVar[bool] = contextvars.ContextVar("privbench_ray_batches",
                                                               default=False)
dispatched = 0  # items sent to Ray by this process so far (what the tests count)


@contextmanager
def ray_batches() -> Iterator[None]:
    """Within this block, `map_batches` sends each item to the connected Ray cluster."""
    token = _ON_RAY.set(True)
    try:
        yield
    finally:
        _ON_RAY.reset(token)


def on_ray() -> bool:
    """Whether batches go to Ray here (inside `ray_batches`)."""
    return _ON_RAY.get()


def map_batches(fn: Callable[..., Any], items: Sequence[tuple], shared: dict[str, Any]
                ) -> list[Any]:
    """`fn(*item, **shared)` for every item, results in item order.

    Args:
        fn: a module-level function (Ray ships it by reference).
        items: each item's positional arguments.
        shared: keyword arguments every item takes (put in the object store once on Ray).

    Returns:
        The items' results, in order. On Ray, an item whose worker died is rerun (up to
        `RETRIES` times); an exception the item raises is raised here.
    """
    if not on_ray() or len(items) < 2:
        return [fn(*item, **shared) for item in items]
    import ray

    global dispatched
    ref = ray.put(shared)
    task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_item)
    refs = [task.remote(fn, ref, *item) for item in items]
    dispatched += len(refs)
    return ray.get(refs)


def _item(fn: Callable[..., Any], shared: dict[str, Any], *item: Any) -> Any:
    """One item on a Ray worker, with one torch thread (as every cell runs)."""
    import torch

    torch.set_num_threads(1)
    return fn(*item, **shared)
