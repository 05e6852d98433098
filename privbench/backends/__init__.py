"""Where suite cells run: one small interface, a local process pool or a Ray cluster behind it.

The runner (privbench.run.runner) loads finished cells, holds the run lock and writes the manifests
and the results store; a backend only runs the remaining cells through `run_cell` (one path for
every backend) and reports back. Its cells' folders end up under `run_dir/cells/<key>/` exactly
as the local backend writes them, so a run on either backend resumes on the other and their
results are equal at the same seeds.
"""

from __future__ import annotations

from privbench.backends.base import BACKENDS, Backend
from privbench.errors import PrivbenchError


def make_backend(name: str, workers: int, address: str | None = None) -> Backend:
    """The backend called `name`.

    Args:
        name: "local" (a process pool on this machine) or "ray".
        workers: parallel cells for the local backend; a local Ray instance gets this many CPUs.
        address: a Ray cluster's HOST:PORT (Ray backend only; default RAY_ADDRESS, else a local
            Ray instance started and stopped with the run).

    Returns:
        The backend, not yet started.

    Raises:
        PrivbenchError: an unknown name, an address without Ray, or Ray not installed.
    """
    if name == "local":
        if address:
            raise PrivbenchError(f"--address {address}: only the Ray backend takes an address; "
                                 "add --backend ray or drop --address")
        from privbench.backends.local import LocalBackend

        return LocalBackend(workers)
    if name == "ray":
        from privbench.backends.ray import RayBackend

        return RayBackend(workers, address)
    raise PrivbenchError(f"--backend {name}: unknown backend; use one of {', '.join(BACKENDS)}")
