"""`spikecc eval` and `spikecc sweep` on real Dask clusters on 127.0.0.1: a `dask scheduler` and `dask worker`
processes started here (the venv's own CLI), a LocalCluster (--workers 2), and the faults: a worker killed
mid-run, an unreachable scheduler, a worker with another spikecc version. Every result must equal the
in-process run bit for bit. Every process started here is killed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from spikecc import evaluate
from spikecc.cli import main
from spikecc.distributed import executor

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
HELDOUT = Path(__file__).parent / "data" / "heldout.txt"
CKPTS = ROOT / "examples" / "checkpoints"


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session (so that it and its children can be killed together), output to `log`."""
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each process's whole session (test clusters need no graceful shutdown) and reap it."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait(timeout=60)


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int, pythonpath: list[Path] | None = None, spikecc_path: Path = ROOT):
    """`dask scheduler` on 127.0.0.1 (a free port) and `workers` single-threaded `dask worker` processes without
    nannies (a killed worker stays dead). Yields (address, worker processes)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, [*(pythonpath or []), spikecc_path])))
    sched_file = tmp / "scheduler.json"
    procs = [spawn([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(sched_file)], env, tmp / "scheduler.log")]
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker_procs = [spawn([str(DASK), "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                               "--no-dashboard", "--name", f"w{i}"], env, tmp / f"worker{i}.log")
                        for i in range(workers)]
        procs += worker_procs
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(workers, timeout=120)
        yield address, worker_procs
    finally:
        kill(procs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers for the module; the last test kills one of the workers."""
    with dask_cluster(tmp_path_factory.mktemp("cluster"), workers=2) as running:
        yield running


def spikecc_cli(*args: str) -> tuple[int, str, str]:
    """`spikecc ARGS` in this process (click's runner): (exit status, stdout, stderr)."""
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def ok(*args: str) -> str:
    code, out, err = spikecc_cli(*args)
    assert code == 0, err
    return out


EVAL = ["eval", str(CKPTS / "spikegpt-shakespeare.pt"), "--text", str(HELDOUT), "--window", "64", "--warmup", "32",
        "--json"]


@pytest.fixture(scope="module")
def eval_in_process() -> str:
    return ok(*EVAL)


def test_eval_through_a_scheduler_and_two_workers_equals_the_in_process_run(cluster, eval_in_process):
    address, _ = cluster
    assert ok(*EVAL, "--scheduler", address) == eval_in_process  # every digit of perplexity and accuracy
    out = json.loads(eval_in_process)
    # a checkpoint's fixed mode: compiled in memory with the default options
    assert set(out["modes"]) == {"reference", "float", "fixed"} and out["windows"] == 10


def test_eval_on_a_local_cluster_of_two_workers_equals_the_in_process_run(eval_in_process):
    assert ok(*EVAL, "--workers", "2") == eval_in_process


def test_sweep_through_the_cluster_equals_the_in_process_sweep_and_reuses_its_cache(cluster, tmp_path):
    address, _ = cluster
    args = ["sweep", str(CKPTS / "spikegpt-shakespeare.pt"), "--grid", "weight_bits=4,8", "--text", str(HELDOUT)]
    ok(*args, "-o", str(tmp_path / "cluster"), "--scheduler", address)
    # the in-process run starts from the cluster run's compiled builds (compiling happens in the client either
    # way) and evaluates every window again, in this process
    shutil.copytree(tmp_path / "cluster" / "cache", tmp_path / "local" / "cache")
    for saved in (tmp_path / "local" / "cache").glob("*/eval-*.json"):
        saved.unlink()
    ok(*args, "-o", str(tmp_path / "local"))
    assert (tmp_path / "cluster" / "sweep.json").read_bytes() == (tmp_path / "local" / "sweep.json").read_bytes()
    local = json.loads((tmp_path / "local" / "sweep.json").read_text())
    builds = local["builds"]
    assert local["mode"] == "fixed" and [b["options"] for b in builds] == [{"weight_bits": 4}, {"weight_bits": 8}]
    assert len({b["key"] for b in builds}) == 2 and len({b["perplexity"] for b in builds}) == 2
    for b in builds:  # the costs are the build's own budget: its cores, its energy per token on loihi2
        budget = json.loads((tmp_path / "local" / "cache" / b["key"] / "build" / "budget.json").read_text())
        assert b["cores"] == budget["cores"] > 0
        assert b["energy_per_token_j"] == budget["energy"]["token_uj"] * 1e-6 > 0
    for d in ("cluster", "local"):
        assert (tmp_path / d / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "perplexity" in (tmp_path / d / "sweep.txt").read_text()
    again = ok(*args, "-o", str(tmp_path / "local"))  # every build and evaluation from the cache
    assert again.count(" yes ") == 2, again
    assert json.loads((tmp_path / "local" / "sweep.json").read_text()) == local


def test_a_sweep_on_a_local_cluster_from_a_fresh_process(tmp_path, fresh_python):
    """`spikecc sweep --workers 2` as a user runs it: a new process in which the LocalCluster starts before any
    build imports Lava (which then needs the start method it set to be accepted again)."""
    out = tmp_path / "sweep"
    rc, stdout, stderr = fresh_python(["-m", "spikecc.cli", "sweep", str(CKPTS / "spikegpt-shakespeare.pt"), "--grid",
                                       "weight_bits=8", "--text", str(HELDOUT), "--workers", "2", "-o", str(out)],
                                      cwd=tmp_path)
    assert rc == 0, stderr
    (build,) = json.loads((out / "sweep.json").read_text())["builds"]
    assert build["options"] == {"weight_bits": 8} and build["perplexity"] > 1 and build["cores"] > 0
    assert (out / "cache" / build["key"] / "build" / "lava" / "lava_lm.py").is_file()


def test_an_unreachable_scheduler_is_one_line_within_the_timeout():
    """As a user runs it: a separate `spikecc` process, which gives up after --connect-timeout."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "spikecc.cli", *EVAL, "--scheduler", f"tcp://127.0.0.1:{port}",
                        "--connect-timeout", "2"], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_worker_with_another_spikecc_version_is_refused_in_one_line(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ROOT / "spikecc", other / "spikecc", ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "spikecc" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.1.0+other"'))
    with dask_cluster(tmp_path, workers=1, spikecc_path=other) as (address, _):
        code, out, err = spikecc_cli(*EVAL, "--scheduler", address)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: version mismatch with the Dask cluster at {address}: spikecc 0.1.0 here, "
                          "0.1.0+other on worker tcp://127.0.0.1:")


def test_a_worker_killed_mid_run_has_its_windows_rerun_and_the_result_is_complete_and_identical(cluster):
    """(Last: it leaves the module's cluster with one worker.)"""
    from distributed import Client

    address, workers = cluster
    subject = evaluate.load_subject(CKPTS / "spikegpt-shakespeare.pt")
    plan = evaluate.plan(subject, HELDOUT, ["float"], window=32, warmup=32)
    expected = evaluate.run(plan)
    killed: list[tuple[str, int]] = []
    pids = {p.pid for p in workers}
    with Client(address, set_as_default=False) as watch:

        def kill_a_busy_worker(done: int, total: int) -> None:
            if killed or done < 2:
                return
            busy = {a for a, keys in watch.processing().items() if keys}
            pid = {a: p for a, p in watch.run(os.getpid).items() if p in pids}
            addr = next(a for a in sorted(busy) if a in pid)  # a worker with a window in hand
            os.kill(pid[addr], signal.SIGKILL)
            killed.append((addr, done))

        with executor(scheduler=address) as ex:
            got = evaluate.run(plan, ex, progress=kill_a_busy_worker)
    assert killed and killed[0][1] < plan.tasks  # killed while windows were left
    assert sum(p.poll() is not None for p in workers) == 1  # and it stayed dead
    assert got.scores == expected.scores
    assert got.scores["float"].tokens == len(plan.ids) - 1
