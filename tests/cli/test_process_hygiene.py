"""No Lava OS process outlives `spikecc lava`: after Ctrl-C (SIGINT to the process group, as a terminal sends
it), SIGTERM, SIGKILL or success, every process it started is gone, and the user sees one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import write_net

SPIKECC = [sys.executable, "-m", "spikecc.cli"]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("hygiene")
    net, _ = write_net(tmp)
    x = (np.random.default_rng(0).random((200_000, 6)) < 0.3).astype(np.float32)  # minutes in Lava
    np.save(tmp / "long.npy", x)
    return [*SPIKECC, "lava", str(net), "--input", str(tmp / "long.npy"), "--spike-inputs"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_mid_run_leaves_no_process_behind(long_run, sig):
    proc = subprocess.Popen(long_run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(descendants(proc.pid)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # let Lava's runtime start stepping
        started = descendants(proc.pid)
        assert len(started) >= 3, "Lava did not start its processes"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground process group
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in started if alive(p)] == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.strip().splitlines() == [
            "error: interrupted (Ctrl-C); stopped, nothing left running or half-written"], err
    elif sig == signal.SIGTERM:
        assert proc.returncode == 143 and err.strip().splitlines() == [
            "error: terminated (SIGTERM); stopped, nothing left running or half-written"], err
    assert "Process SystemProcess" not in err


def test_a_finished_run_leaves_no_process_behind(tmp_path):
    net, x = write_net(tmp_path)
    proc = subprocess.Popen([*SPIKECC, "lava", str(net), "--input", str(x), "--spike-inputs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(descendants(proc.pid))
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()
    time.sleep(0.5)
    assert [p for p in seen if alive(p)] == []
