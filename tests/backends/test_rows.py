"""Neuro-core ops fed rows (spikecc.ir.rows): an encoder presents L tokens at once, and LoihiDense, LoihiElastic,
SpikeRouter (banks and polarity channels, or graded amplitudes), LoihiRelay and CoreToHost act on each row alone.
Checked against the same chain built for one row and run once per row, in float and in fixed point, whole-run
and step by step."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from spikecc.backends.cpu.simulator import Simulator
from spikecc.errors import ShapeError
from spikecc.ir import Graph, infer_shapes
from spikecc.ir.formats import FLOAT
from spikecc.ir.loihi_ops import LoihiDense
from spikecc.ir.neurocore_ops import CoreToHost, LoihiElastic, LoihiRelay, SpikeRouter

N_IN, N, N_OUT, T, L = 5, 4, 3, 3, 6


def chain(rows: int, router: SpikeRouter, fixed: bool, seed: int = 0) -> Graph:
    """x (rows, N_IN) -> Dense -> Elastic -> router -> Dense -> Relay -> CoreToHost -> out, parameters from `seed`
    (the same for every number of rows)."""
    rng = np.random.default_rng(seed)
    shape = (N_IN,) if rows == 1 else (rows, N_IN)
    blocks = router.banks * router.polarities
    if fixed:
        w1 = rng.integers(-40, 40, size=(N, N_IN)) * 2
        w2 = rng.integers(-40, 40, size=(N_OUT, blocks * N)) * 2
        elastic = LoihiElastic(T=T, mult=np.array([0, 1024, 3000]), hi=rng.integers(200, 400, size=(T, N)),
                               lo=-rng.integers(200, 400, size=(T, N)), bias=rng.integers(-50, 50, size=N))
    else:
        w1, w2 = rng.normal(size=(N, N_IN)), rng.normal(size=(N_OUT, blocks * N))
        elastic = LoihiElastic(T=T, mult=np.array([0.0, 0.25, 0.7]), hi=rng.uniform(0.5, 1.0, size=(T, N)),
                               lo=-rng.uniform(0.5, 1.0, size=(T, N)), bias=rng.normal(scale=0.3, size=N))
    g = Graph()
    g.add_node("x", nir.Input(input_type={"input": np.array(shape)}))
    g.annotate("x", signal={"kind": "graded", "bits": 8, "scale": 1.0, "amplitude": 1.0})
    g.add_node("d1", LoihiDense(weight=w1, delay=0, num_message_bits=8))
    g.add_node("m", elastic)
    g.add_node("r", router)
    g.add_node("d2", LoihiDense(weight=w2, delay=0, num_message_bits=0 if router.split else 8))
    g.add_node("relay", LoihiRelay(size=N_OUT))
    g.add_node("c2h", CoreToHost(units=rng.uniform(0.5, 2.0, size=N_OUT), bias=rng.normal(size=N_OUT)),
               format={"kind": FLOAT})
    g.add_node("out", nir.Output(output_type={"output": np.array(shape[:-1] + (N_OUT,))}))
    for a, b in (("x", "d1"), ("d1", "m"), ("m", "r"), ("r", "d2"), ("d2", "relay"), ("relay", "c2h"),
                 ("c2h", "out")):
        g.connect(a, b)
    return g


ROUTERS = {
    "banks split": lambda fixed: SpikeRouter(size=N, banks=T, split=True),
    "unsplit": lambda fixed: SpikeRouter(size=N, banks=1, split=False),
    "graded amplitudes": lambda fixed: SpikeRouter(size=N, banks=1, split=False, payload_bits=8,
                                                   payloads=np.array([90, 127, 45]) if fixed
                                                   else np.array([0.7, 1.0, 0.35])),
}


@pytest.mark.parametrize("kind", ROUTERS)
@pytest.mark.parametrize("fixed", [False, True], ids=["float", "fixed"])
def test_rows_equal_one_row_at_a_time(kind, fixed):
    mode = "fixed" if fixed else "float"
    rng = np.random.default_rng(7)
    steps = 2 * T  # two tokens: the neurons restart at each
    x = rng.integers(-100, 100, size=(steps, L, N_IN)) if fixed else rng.normal(size=(steps, L, N_IN))
    g = chain(L, ROUTERS[kind](fixed), fixed)
    shapes = infer_shapes(g)
    assert shapes["m"] == (L, N) and shapes["d2"] == (L, N_OUT)
    assert shapes["r"] == (L, (T * 2 if kind == "banks split" else 1) * N)
    sim = Simulator(g, mode=mode)
    whole = sim.run({"x": x.reshape(steps, -1)}, record=["m", "r"])
    sim.start()
    stepped = np.stack([sim.step({"x": row.reshape(-1)})["out"] for row in x])
    one = Simulator(chain(1, ROUTERS[kind](fixed), fixed), mode=mode)
    per_row = [one.run({"x": x[:, r]}, record=["m", "r"]) for r in range(L)]
    want = np.stack([res.outputs["out"] for res in per_row], axis=1)  # (steps, L, N_OUT)
    assert np.array_equal(whole.outputs["out"], want)
    assert np.array_equal(stepped.reshape(want.shape), want)
    spikes = np.stack([res.traces["m"] for res in per_row], axis=1)
    assert np.array_equal(whole.traces["m"], spikes) and np.count_nonzero(spikes) > 0
    assert np.count_nonzero(spikes > 0) and np.count_nonzero(spikes < 0)  # both polarities are exercised


def test_graded_amplitudes_carry_the_step_payload_with_the_spike_sign():
    r = SpikeRouter(size=2, banks=1, split=False, payloads=np.array([3, 5]), payload_bits=4)
    g = Graph()
    g.add_node("x", nir.Input(input_type={"input": np.array([2, 2])}))
    g.add_node("r", r)
    g.add_node("out", nir.Output(output_type={"output": np.array([2, 2])}))
    g.connect("x", "r")
    g.connect("r", "out")
    s = np.array([[[1, -1], [0, 1]], [[-1, 0], [1, 1]], [[1, 1], [0, -1]]])
    got = Simulator(g, mode="fixed").run({"x": s.reshape(3, -1)}).outputs["out"]
    payload = np.array([3, 5, 3])[:, None, None]  # step t carries payloads[t mod 2]
    assert np.array_equal(got, s * payload)
    assert r.output_signal({}).kind == "graded" and r.output_signal({}).bits == 4
    with pytest.raises(ValueError, match="one unsplit block"):
        SpikeRouter(size=2, banks=2, split=False, payloads=np.array([3, 5]), payload_bits=4)


def test_a_row_that_does_not_fit_is_a_shape_error():
    g = Graph()
    g.add_node("x", nir.Input(input_type={"input": np.array([3, 4])}))
    g.add_node("d", LoihiDense(weight=np.ones((2, 5))))
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    g.connect("x", "d")
    g.connect("d", "out")
    with pytest.raises(ShapeError, match="5 inputs"):
        infer_shapes(g)
