"""Where spikecc's parallel work runs: in this process, on a local Dask cluster, or on any Dask cluster.

    executor(workers=1)                -> InProcess: the tasks run here, one after another; no Dask at all
    executor(workers=N), N > 1         -> a dask.distributed LocalCluster of N single-threaded worker processes
    executor(scheduler="tcp://H:P")    -> an existing cluster (`dask scheduler`, then `dask worker tcp://H:P` on
                                          each machine; spikecc must be installed where the workers run)

A task is a pure function of its arguments. `Executor.run` yields (task index, result) as tasks finish, so
callers put results back in task order and the outcome does not depend on how many workers ran them, in
which order, or whether a worker died on the way: Dask re-runs the tasks a dead worker held, on the
others (a task is given up after `distributed.scheduler.allowed-failures` worker deaths, 3 by default).
Large inputs shared by many tasks (a model) go to the workers once (`Executor.share`).

Faults, each a one-line ClusterError:
- an unreachable scheduler: after `timeout` seconds (CONNECT_TIMEOUT unless given);
- a cluster without workers: after `timeout` seconds waiting for one;
- versions that differ between this process, the scheduler and the workers, in the packages that decide the
  wire protocol (PROTOCOL_PACKAGES, and Python) or the numbers (RESULT_PACKAGES): results would not be
  bit-identical, so the run is refused, naming the first mismatch;
- workers that cannot import spikecc.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import platform
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from spikecc.errors import ClusterError

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler, and to wait for its first worker
PROTOCOL_PACKAGES = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz")
RESULT_PACKAGES = ("spikecc", "numpy", "scipy", "numba", "torch")


def environment() -> dict[str, str]:
    """Python and the versions of the packages that must agree across a cluster (spikecc: the module
    actually imported, which is what runs; others: installed distributions)."""
    import spikecc

    env = {"python": platform.python_version(), "spikecc": spikecc.__version__}
    for name in PROTOCOL_PACKAGES + RESULT_PACKAGES[1:]:
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = "not installed"
    return env


class InProcess:
    """Runs tasks in this process, in order (`--workers 1`)."""

    workers = 1

    def share(self, obj: Any) -> Any:
        return obj

    def run(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(tasks):
            yield i, fn(*args)

    def close(self) -> None:
        pass


class DaskExecutor:
    """Runs tasks on a Dask cluster through `client` (closing `cluster` too when it owns one)."""

    def __init__(self, client, cluster=None) -> None:
        self.client, self.cluster = client, cluster
        self.address = client.scheduler.address

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def share(self, obj: Any) -> Any:
        """A future of `obj`, sent to every worker once (tasks that take it get the worker's copy)."""
        return self.client.scatter([obj], broadcast=True, hash=False)[0]

    def run(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        tag = uuid.uuid4().hex[:8]
        futures = [self.client.submit(fn, *args, pure=False, key=f"spikecc-{fn.__name__}-{tag}-{i}")
                   for i, args in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for f in as_completed(futures, loop=self.client.loop):
                try:
                    result = f.result()
                except KilledWorker as exc:
                    first = str(exc).splitlines()[0][:160]
                    raise ClusterError(f"Dask cluster at {self.address}: a task was on every worker that died under "
                                       f"it ({first}); check the workers' memory and logs") from None
                yield index[f.key], result
                f.release()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


Executor = InProcess | DaskExecutor


def check_versions(client, address: str) -> None:
    """Raise ClusterError (one line) unless the scheduler and every worker agree with this process."""
    here = environment()
    try:
        workers = client.run(environment)
    except Exception as exc:  # a worker that cannot import spikecc fails to unpickle the function
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ClusterError(f"Dask cluster at {address}: the workers cannot run spikecc ({type(exc).__name__}: "
                           f"{first}); install spikecc {here['spikecc']} where the workers run") from None
    scheduler = dict(client.get_versions()["scheduler"]["packages"])
    scheduler["python"] = ".".join(str(scheduler.get("python")).split(".")[:3])  # Dask writes 3.11.9.final.0
    mismatches = [f"{k} {here[k]} here, {scheduler.get(k)} on the scheduler"
                  for k in ("python", *PROTOCOL_PACKAGES)
                  if k != "msgpack" and scheduler.get(k) not in (None, here[k])]  # Dask ignores msgpack there too
    for addr, env in sorted(workers.items()):
        mismatches += [f"{k} {here[k]} here, {env.get(k)} on worker {addr}" for k in here if env.get(k) != here[k]]
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise ClusterError(f"version mismatch with the Dask cluster at {address}: {mismatches[0]}{more}; results "
                           "would not be bit-identical: install the same versions on this machine, the scheduler "
                           "and the workers")


def _connect(scheduler: str, timeout: float):
    from distributed import Client
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)  # check_versions says it in one line
        try:
            client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({reason}); "
                               "start one with `dask scheduler` and workers with `dask worker ADDRESS`, or check "
                               "the address") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        client.close()
        raise ClusterError(f"the Dask scheduler at {scheduler} has no workers (waited {timeout:g} s); start some with "
                           f"`dask worker {scheduler}`") from None
    try:
        check_versions(client, scheduler)
    except ClusterError:
        client.close()
        raise
    return client


@contextlib.contextmanager
def executor(workers: int | None = None, scheduler: str | None = None,
             timeout: float = CONNECT_TIMEOUT) -> Iterator[Executor]:
    """The executor for `--workers N` / `--scheduler ADDRESS` (see the module docstring); closed on exit,
    a local cluster with it."""
    if scheduler and workers not in (None, 1):
        raise ClusterError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be at least 1, got {workers}")
    if scheduler:
        ex: Executor = DaskExecutor(_connect(scheduler, timeout))
    elif workers and workers > 1:
        from distributed import Client, LocalCluster

        # Single-threaded worker processes: results must not depend on thread counts (see spikecc.evaluate).
        # No dashboard, and its HTTP server on a free port (the default 8787 may be taken).
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR)
        ex = DaskExecutor(Client(cluster, set_as_default=False), cluster)
    else:
        ex = InProcess()
    try:
        yield ex
    finally:
        ex.close()
