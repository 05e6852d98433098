"""A throwaway local Ray cluster for tests: a head and worker nodes on 127.0.0.1, each a
`ray start --block` child of the test process, in a temp folder of its own, on ports picked free
(every port a node opens, so nothing collides with another Ray on this machine, or with another
engineer's tests). Starting waits for the nodes with a generous deadline and starts again on
fresh ports when an attempt fails; stopping ends exactly the processes this cluster started
(the `ray start` children and their descendants), never a machine-wide `ray stop`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
# The ports one node opens besides the workers' (--min/--max-worker-port, below).
NODE_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port",
              "runtime-env-agent-port", "dashboard-agent-grpc-port",
              "dashboard-agent-listen-port")
WORKER_PORTS = 60  # a range of this many free-looking ports per node for its worker processes
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # a small store: the tests pass small objects


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on loopback now (held open together while they are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _worker_range() -> tuple[int, int]:
    """A range of WORKER_PORTS ports that are free now, above the ephemeral ones picked above."""
    for _ in range(50):
        low = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
        ok = True
        for port in range(low, low + WORKER_PORTS):
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, port)) == 0:
                    ok = False
                    break
        if ok:
            return low, low + WORKER_PORTS - 1
    raise RuntimeError("no free range of ports for Ray's workers")


def descendants(roots: list[int]) -> list[int]:
    """Every living process below `roots` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop(0)
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot): with its pid, it names one process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_title(pid: int) -> str:
    """A process's command line as `ps` shows it ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


@dataclass
class LocalCluster:
    """A head without CPUs and `workers` nodes of one CPU each; `address` once started."""

    workers: int = 2
    deadline_s: float = 240.0  # per attempt: a loaded machine starts Ray slowly
    attempts: int = 3
    address: str = ""
    temp_dir: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    _seen: dict[int, int | None] = field(default_factory=dict)  # pid -> start time
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    def start_in_background(self, warm: str = "") -> None:
        """`start` in a thread (the test does other work meanwhile; `ready` waits for it),
        then, with `warm`, import that module on every worker node, so the first tasks do
        not pay for starting and importing in their worker processes."""
        def work() -> None:
            try:
                self.start()
                if warm:
                    import ray

                    def load(module: str) -> bool:  # nested: shipped by value to the workers
                        importlib.import_module(module)
                        return True

                    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(load)
                    ray.get([task.remote(warm) for _ in range(self.workers)])
            except BaseException as e:  # re-raised by ready()
                self._error.append(e)

        self._thread = threading.Thread(target=work, name="ray-cluster-start", daemon=True)
        self._thread.start()

    def ready(self) -> str:
        """Wait for `start_in_background`; the head's HOST:PORT.

        Raises:
            RuntimeError: the cluster did not start (the reason of each attempt).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error:
            raise RuntimeError(f"the local Ray cluster did not start: {self._error[0]}")
        return self.address

    def _start_node(self, *args: str) -> subprocess.Popen:
        ports = free_ports(len(NODE_PORTS))
        low, high = _worker_range()
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--block",
               f"--node-ip-address={LOOPBACK}", f"--temp-dir={self.temp_dir}",
               "--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--min-worker-port={low}", f"--max-worker-port={high}",
               *(f"--{name}={port}" for name, port in zip(NODE_PORTS, ports, strict=True)), *args]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
        env.pop("RAY_ADDRESS", None)
        log = Path(self.temp_dir) / f"start-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        self.procs.append(proc)
        return proc

    def _why(self, i: int) -> str:
        """Why `ray start` #i exited: its exit code and the end of its output."""
        log = Path(self.temp_dir) / f"start-{i}.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-2:]
        return f"`ray start` #{i} exited ({self.procs[i].returncode}): {' | '.join(tail)}"

    def _cpus(self, ray) -> float:
        return sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])

    def _wait(self, ray, deadline: float) -> None:
        host, port = self.address.split(":")
        while True:
            self.remember()
            if self.procs[0].poll() is not None:
                raise RuntimeError(self._why(0))
            with socket.socket() as s:
                if s.connect_ex((host, int(port))) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray head did not open its port")
            time.sleep(0.3)
        ray.init(address=self.address, logging_level="warning", log_to_driver=False)
        for want in range(1, self.workers + 1):  # one at a time: they start faster alone
            self._join_worker(ray, want, deadline)

    def _join_worker(self, ray, want: int, deadline: float) -> None:
        """Start one worker node, and again whenever its `ray start` gives up (Ray waits a
        fixed 30 s for its raylet to register, too short on a loaded machine)."""
        failures = []
        while True:
            proc = self._start_node(f"--address={self.address}", "--num-cpus=1")
            while self._cpus(ray) < want:
                self.remember()
                if self.procs[0].poll() is not None:
                    raise RuntimeError(self._why(0))
                if proc.poll() is not None:
                    failures.append(self._why(self.procs.index(proc)))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray worker {want} did not join: {failures}")
                time.sleep(0.3)
            else:
                return

    def start(self) -> str:
        """Start the cluster (retrying on fresh ports) and connect this process to it.

        Returns:
            The head's HOST:PORT.

        Raises:
            RuntimeError: no attempt brought every node up before its deadline.
        """
        import ray

        errors = []
        for _ in range(self.attempts):
            self.temp_dir = tempfile.mkdtemp(prefix="pbray")  # short: Ray's socket paths
            head, client = free_ports(2)
            self.address = f"{LOOPBACK}:{head}"
            self._start_node("--head", f"--port={head}", f"--ray-client-server-port={client}",
                             "--num-cpus=0", "--include-dashboard=false")
            try:
                self._wait(ray, time.monotonic() + self.deadline_s)
                return self.address
            except Exception as e:  # a failed start: clean up what it started, try again
                errors.append(f"{type(e).__name__}: {e}")
                self.stop()
        raise RuntimeError(f"no local Ray cluster in {self.attempts} attempts: {errors}")

    def remember(self) -> None:
        """Note every process the cluster runs now (workers start and end as tasks run)."""
        for pid in descendants([p.pid for p in self.procs]):
            self._seen.setdefault(pid, start_time(pid))

    def stop(self) -> None:
        """Disconnect, then end the `ray start` processes and every process below them."""
        import ray

        if self._thread is not None:
            self._thread.join()

        if ray.is_initialized():
            ray.shutdown()
        self.remember()
        for proc in self.procs:  # `ray start --block` stops its node on SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.remember()
        for pid, started in self._seen.items():  # what outlived its node, if it is still ours
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.procs, self._seen = [], {}
        shutil.rmtree(self.temp_dir, ignore_errors=True)
