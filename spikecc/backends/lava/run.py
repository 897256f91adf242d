"""Run a Loihi-form graph in Lava's Loihi 2 simulator (Loihi2SimCfg) and read back outputs and states.

Time alignment. Lava counts steps from 1; at step t the source sends column t-1 of its data, every
process runs its spiking phase once, and the probe stores what it received in row t-1 and, in the
post-management phase, the state variables as they stand after step t (after the neurons' update and
reset). spikecc's CPU simulator counts steps from 0 and reports at step k the input row k, each node's
output computed in step k and its state after step k, with every edge that leaves a LoihiDense delivering
the previous step's value (zero at step 0), just as Lava's Dense sends its a_buff from step t-1. So
Lava's step t is the CPU simulator's step k = t-1, row for row: `result.outputs[o][k]` and
`result.states[n][v][k]` compare directly with `SimResult.outputs[o][k]` and `SimResult.states[n][v][k]`,
without any shift. An Output fed by a readout neuron (annotation readout="v", what lower_for_loihi makes
of LI, CubaLI and I) reads that neuron's v after each step, which the CPU simulator reports as
`states[node]["v"]`. (Compared with the float NIR graph, every Dense on a path adds one step of latency;
that is the lowering's doing, not the backend's.)
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from spikecc.backends.lava.plan import check_mode, plan_network
from spikecc.errors import BackendError
from spikecc.ir.graph import Graph
from spikecc.ir.inputs import bind_inputs


@dataclass
class LavaResult:
    """What a Lava run produced: `outputs[name]` (steps, *shape) per Output node, `states[node][var]`
    (steps, n) per recorded state; int64 in fixed point, float64 in float."""

    outputs: dict[str, np.ndarray]
    steps: int
    mode: str
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    wall_s: float = 0.0  # seconds spent in Lava's compile + run + stop


def _check_inputs(graph: Graph, sizes: dict[str, int], inputs: np.ndarray | Mapping[str, np.ndarray],
                  steps: int | None, mode: str) -> tuple[dict[str, np.ndarray], int]:
    shapes = {n: tuple(np.atleast_1d(graph.nodes[n].input_type["input"]).astype(int)) for n in graph.inputs()}
    shapes = {n: s if int(np.prod(s)) == sizes[n] else (sizes[n],) for n, s in shapes.items()}
    return bind_inputs(graph, shapes, inputs, steps, integer=mode == "fixed")


def _state_request(plan, record_states) -> dict[str, tuple[str, ...]]:
    """Normalise `record_states`: node names (all their states) or a mapping node -> variable names."""
    items = record_states.items() if isinstance(record_states, Mapping) else ((n, None) for n in record_states)
    out: dict[str, tuple[str, ...]] = {}
    for node, names in items:
        if node not in plan.node_specs:
            raise BackendError(f"cannot record states of unknown node '{node}'")
        spec = plan.node_specs[node]
        names = spec.states if names is None else tuple(names)
        bad = [v for v in names if v not in spec.states]
        if not spec.states or bad:
            raise BackendError(f"node '{node}': Lava records the states {', '.join(spec.states) or '(none)'} "
                               f"here, not {', '.join(bad or names)}")
        out[node] = names
    return out


def _child_error(process) -> str:
    """The last line of the first traceback a Lava OS process reported, or '' (lm_processes.child_error)."""
    from spikecc.backends.lava.lm_processes import child_error

    return child_error(process)


def _shutdown(process, failed: bool) -> None:
    """Stop the Lava runtime of `process` and end its OS processes, also after a failure
    (lm_processes.stop_runtime, which the generated language-model modules share)."""
    from spikecc.backends.lava.lm_processes import stop_runtime

    stop_runtime(process, failed)


# -- process hygiene ---------------------------------------------------------------------------------
# Lava forks one OS process per process model and runtime service. Two things keep them from outliving
# spikecc: (1) every process forked while `contained_processes` is active ignores SIGINT (Ctrl-C reaches the
# whole terminal process group: only spikecc itself should react, once, instead of each child printing a
# traceback), takes the default action on SIGTERM (not a handler inherited from spikecc), and asks the
# kernel to kill it when its parent dies (Linux PR_SET_PDEATHSIG), so even a SIGKILL of spikecc leaves
# nothing behind; (2) on leaving the block, whatever still runs is terminated, then killed.
_CONTAINED = [0]
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _in_forked_child() -> None:
    if not _CONTAINED[0]:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: step (2) still applies
        pass


os.register_at_fork(after_in_child=_in_forked_child)


def reap_children(timeout: float = 2.0) -> int:
    """Terminate (then kill) every child process still running; returns how many there were."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(1.0)
    return len(children)


@contextmanager
def contained_processes() -> Iterator[None]:
    """Run Lava inside this block: no OS process it forks outlives the block, however the block ends
    (success, error, KeyboardInterrupt, SystemExit)."""
    _CONTAINED[0] += 1
    try:
        yield
    finally:
        _CONTAINED[0] -= 1
        reap_children()


def run_lava(graph: Graph, inputs: np.ndarray | Mapping[str, np.ndarray], steps: int | None = None,
             mode: str | None = None, record_states: Iterable[str] | Mapping[str, Iterable[str]] = (),
             split: bool = False) -> LavaResult:
    """Run `graph` (lowered with lower_for_loihi, and quantized with quantize_for_loihi for mode "fixed")
    in Lava's simulator with `Loihi2SimCfg(select_tag="fixed_pt" | "floating_pt")` for `steps` steps.

    `inputs` is one (steps, *shape) array for a graph with one Input node, else a dict by Input name.
    `mode` defaults to the graph's form (fixed point when its nodes were quantized). `record_states` names neuron
    nodes whose u and v to record (or maps node -> variables). Outputs and states align with the CPU
    simulator's step for step (module docstring). The runtime is always stopped, also on errors.
    `split` runs the plan Loihi 2 takes (neuron layers split by value, spikecc.backends.lava.split) instead of
    one process per layer: the same outputs, from more Lava processes (each an OS process here).
    """
    from lava.magma.core.run_conditions import RunSteps

    from spikecc.backends.lava.network import build_network

    mode = check_mode(graph, mode)
    plan = plan_network(graph, mode, split=split)
    data, steps = _check_inputs(graph, plan.sizes, inputs, steps, mode)
    states_req = _state_request(plan, record_states)
    net = build_network(plan, data, steps, states_req)
    dtype = np.int64 if mode == "fixed" else np.float64
    t0 = time.perf_counter()
    try:
        with contained_processes():
            failed = True
            try:
                net.probe.run(condition=RunSteps(num_steps=steps), run_cfg=net.run_config())
                failed = False
            except RuntimeError as e:  # Lava's report of an exception inside a process model
                raise BackendError(f"the Lava run failed: {_child_error(net.probe) or e}") from e
            finally:
                _shutdown(net.probe, failed)
        buf = np.array(net.buffer(), copy=True)
    finally:
        net.release()
    wall = time.perf_counter() - t0
    if mode == "fixed":
        buf = np.rint(buf)
    outputs = {n: net.gather(buf, cols, plan.sizes[n]).astype(dtype).reshape(steps, *plan.shapes[n])
               for n, cols in net.outputs.items()}
    states: dict[str, dict[str, np.ndarray]] = {}
    for (node, var), cols in net.states.items():
        states.setdefault(node, {})[var] = net.gather(buf, cols, plan.sizes[node]).astype(dtype)
    return LavaResult(outputs=outputs, steps=steps, mode=mode, states=states, wall_s=wall)
