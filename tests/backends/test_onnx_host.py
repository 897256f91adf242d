"""The host partition as ONNX (spikecc.backends.onnx) run by onnxruntime, against spikecc's whole-graph simulator.

For every shipped checkpoint and for small random models of each family, compiled through the LM passes (float form)
and quantized (fixed form), a greedy generation runs twice in lockstep: in spikecc's CPU simulator on the whole graph,
and with the host stages in onnxruntime and the neuro-core phases in the CPU simulator (SimulatorCore). The tokens
must be the same, the logits within 1e-9, and in fixed form every integer payload crossing the boundary identical.
Single ops the language models do not reach are checked on one-op graphs against the CPU kernels; erf (which
onnxruntime has no double kernel for) against math.erf.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from spikecc.backends.cpu.simulator import Simulator
from spikecc.backends.onnx import HostProgram, HostRunner, SimulatorCore, export_host_program, run_step
from spikecc.backends.onnx.builder import F64, StageBuilder
from spikecc.backends.onnx.erf import erf
from spikecc.backends.onnx.runner import session_options
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.frontends.rwkv6 import export_rwkv6
from spikecc.compiler.frontends.spikegpt import export_spikegpt
from spikecc.compiler.frontends.spikelm import export_spikelm
from spikecc.compiler.frontends.spikerwkv import export_spikerwkv
from spikecc.compiler.passes.quantize_lm import quantize_lm
from spikecc.compiler.pipeline import lm_passes, run_passes
from spikecc.errors import BackendError
from spikecc.ir import Graph
from spikecc.ir.lm_ops import DiscreteLIF, Embedding
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, SpikeRouter
from spikecc.ir.rwkv6_ops import GroupNorm
from spikecc.ir.spikelm_ops import (
    ContextLengthError,
    CrossAttention,
    ElasticBiSpike,
    PositionEmbedding,
    SelfAttention,
    TokenMean,
)
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder, MultiLevelValue

torch.set_num_threads(1)

CHECKPOINTS = Path(__file__).resolve().parents[2] / "examples" / "checkpoints"
SHIPPED = ("spikegpt", "spikelm", "spikerwkv", "rwkv6")
VOCAB = "abcdefghijklmnopqrstuvwxyz .,;"
PROMPT = "to be or not"
N_TOKENS = 16
LOGIT_TOL = 1e-9


# ------------------------------------------------------------------------------------------------ models
def _random_spikegpt() -> Graph:
    from spikecc.models.spikegpt import load_spikegpt, random_state_dict

    sd = random_state_dict(n_layer=2, d_model=48, vocab=len(VOCAB), seed=3, dtype=torch.float64)
    return export_spikegpt(load_spikegpt(sd, embedding="binary").double().eval())


def _random_spikelm() -> Graph:
    from spikecc.models.spikelm import SpikeLM, SpikeLMConfig

    torch.manual_seed(1)
    cfg = SpikeLMConfig(vocab_size=len(VOCAB), n_layer=2, d_model=32, n_head=4, d_ff=48, context=64, T=3)
    model = SpikeLM(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model(torch.randint(0, len(VOCAB), (3, 24)))  # calibrates every neuron on this first batch
    return export_spikelm(model.eval(), VOCAB)


def _random_spikerwkv() -> Graph:
    """T = 2 encoder steps: binary level channels, routed on the host (a host-side SpikeRouter)."""
    from spikecc.models.spikerwkv import SpikeRWKV, SpikeRWKVConfig, binary_level_weights

    torch.manual_seed(2)
    cfg = SpikeRWKVConfig(vocab_size=len(VOCAB), d_model=24, n_layers=2, d_ffn=56, T=2,
                          level_weights=binary_level_weights(4, 2))
    model = SpikeRWKV(cfg).double().eval()
    with torch.no_grad():  # away from the initialisation, so that decays, bonuses and gates all matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return export_spikerwkv(model, VOCAB)


def _random_rwkv6(tiny_rwkv6, spiking: bool) -> Graph:
    model = tiny_rwkv6(seed=4, vocab_size=len(VOCAB))
    if spiking:  # SpikeRWKV-6: encoders before every linear, T = 2 (binary channels routed on the host)
        from spikecc.models.spikerwkv6 import convert

        model = convert(model, torch.tensor([VOCAB.index(c) for c in PROMPT * 4]), levels=3, T=2, scope="all")
    return export_rwkv6(model, VOCAB)


RANDOM = {"spikegpt": _random_spikegpt, "spikelm": _random_spikelm, "spikerwkv": _random_spikerwkv}


def compile_lm(graph: Graph) -> Graph:
    return run_passes(graph, lm_passes())


def quantized(g: Graph, ids: list[int]) -> Graph:
    """quantize_lm calibrated as the build does: the largest |value| each calibrated HostToCore carries on a float
    run of `ids`."""
    sim = Simulator(g)
    sim.start()
    (inp,) = g.inputs()
    top = {n: 0.0 for n, op in g.nodes.items() if isinstance(op, HostToCore)}
    for tok in ids:
        for _ in range(int(g.metadata.get("substeps", 1))):
            cur = sim.step({inp: np.array([float(tok)])})
            for n in top:
                top[n] = max(top[n], float(np.abs(cur[n]).max()))
    return run_passes(g, [("quantize", lambda g, a: quantize_lm(g, a, calibration=top))])


_CACHE: dict[str, tuple[Graph, Graph, list[int]]] = {}


def compiled(key: str, tiny_rwkv6) -> tuple[Graph, Graph, list[int]]:
    """(float graph, quantized graph, prompt ids) of a shipped checkpoint ("shipped:<family>") or a random model
    ("random:<family>"), compiled once per test session."""
    if key not in _CACHE:
        kind, family = key.split(":")
        if kind == "shipped":
            lm = load_lm(CHECKPOINTS / f"{family}-shakespeare.pt")
            from spikecc.backends.cpu.lm_runner import graph_tokenizer

            graph, ids = lm.graph, graph_tokenizer(lm.graph).encode("ROMEO:\nWhat say")
        else:
            graph = _random_rwkv6(tiny_rwkv6, family == "spikerwkv6") if family in ("rwkv6", "spikerwkv6") \
                else RANDOM[family]()
            ids = [VOCAB.index(c) for c in PROMPT]
        g = compile_lm(graph)
        _CACHE[key] = (g, quantized(g, ids), ids)
    return _CACHE[key]


# ------------------------------------------------------------------------------------------------ lockstep run
def lockstep(g: Graph, form: str, ids: list[int], n_tokens: int) -> dict:
    """Greedy generation after `ids` in spikecc's whole-graph simulator and, step for step, with the host in
    onnxruntime and the cores in SimulatorCore. Each side picks its own next token (argmax, lowest id on ties)."""
    program = export_host_program(g, form)
    runner, core = HostRunner(program), SimulatorCore(g, form)
    ref = Simulator(g, mode=form)
    ref.start()
    (inp,) = g.inputs()
    (out,) = g.outputs()
    substeps = int(g.metadata.get("substeps", 1))
    to_core = [n for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    from_core = [g.predecessors(n)[0] for n, op in g.nodes.items() if isinstance(op, CoreToHost)]
    stats = {"tokens_ref": [], "tokens_onnx": [], "logit_diff": 0.0, "payload_mismatch": 0, "payload_diff": 0.0,
             "message_mismatch": 0, "payloads": 0, "dtypes": set()}
    feed = list(ids)
    for i in range(len(ids) + n_tokens - 1):
        tok = np.array([float(feed[i])])
        for _ in range(substeps):
            a = ref.step({inp: tok})
            b = run_step(runner, core, {inp: tok})
            for n in to_core:
                stats["payloads"] += 1
                stats["dtypes"].add(b[n].dtype.name)
                stats["payload_mismatch"] += not np.array_equal(a[n], b[n])
                stats["payload_diff"] = max(stats["payload_diff"], float(np.abs(a[n] - b[n]).max()))
            stats["message_mismatch"] += sum(not np.array_equal(a[n], b[n]) for n in from_core)
        stats["logit_diff"] = max(stats["logit_diff"], float(np.abs(a[out] - b[out]).max()))
        if i >= len(ids) - 1:
            stats["tokens_ref"].append(int(np.argmax(a[out])))
            stats["tokens_onnx"].append(int(np.argmax(b[out])))
            feed.append(stats["tokens_onnx"][-1])
    return stats


CASES = [f"shipped:{f}" for f in SHIPPED] + [f"random:{f}" for f in (*RANDOM, "rwkv6", "spikerwkv6")]


@pytest.mark.parametrize("form", ["float", "fixed"])
@pytest.mark.parametrize("key", CASES)
def test_generation_with_host_in_onnxruntime_equals_whole_graph_simulator(key, form, tiny_rwkv6):
    g, q, ids = compiled(key, tiny_rwkv6)
    stats = lockstep(g if form == "float" else q, form, ids, N_TOKENS)
    assert len(stats["tokens_onnx"]) == N_TOKENS
    assert stats["tokens_onnx"] == stats["tokens_ref"], key
    assert stats["logit_diff"] <= LOGIT_TOL, (key, stats["logit_diff"])
    assert stats["payloads"] > 0
    if form == "fixed":  # integers crossing the boundary: identical, both ways
        assert stats["dtypes"] == {"int64"}
        assert stats["payload_mismatch"] == 0 and stats["message_mismatch"] == 0, key
    else:
        assert stats["dtypes"] == {"float64"} and stats["payload_diff"] <= LOGIT_TOL


def test_the_cases_reach_every_host_op_of_the_four_families(tiny_rwkv6):
    host = set()
    for key in CASES:
        g = compiled(key, tiny_rwkv6)[0]
        host |= {type(op).__name__ for n, op in g.nodes.items() if g.annotation(n, "partition") == "host"}
    assert host >= {"Embedding", "LayerNorm", "Delay", "Scale", "Linear", "Affine", "Product", "Sigmoid", "Exp",
                    "SquaredReLU", "GELU", "Tanh", "WKV", "WKV6", "GroupNorm", "CausalSelfAttention",
                    "PositionEmbedding", "TokenMean", "MultiLevelEncoder", "MultiLevelValue", "SpikeRouter",
                    "HostToCore", "CoreToHost"}
    spikelm = compiled("shipped:spikelm", tiny_rwkv6)[0]  # per-spike-step scales at a boundary (K and V spikes)
    assert any(isinstance(op, CoreToHost) and op.scales.size == 4 for op in spikelm.nodes.values())


def test_the_package_imports_neither_the_cpu_backend_nor_onnxruntime():
    import subprocess
    import sys

    code = ("import sys, spikecc.backends.onnx; "
            "print(sorted(m for m in sys.modules if m.startswith('spikecc.backends.cpu') or m == 'onnxruntime'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stages_alternate_with_core_phases_and_name_their_boundary_values(tiny_rwkv6):
    g, q, _ = compiled("shipped:spikegpt", tiny_rwkv6)
    p = export_host_program(q)
    assert p.form == "fixed" and len(p.stages) > 2 and len(p.core_phases) in (len(p.stages) - 1, len(p.stages))
    boundary_in = {n for n, op in q.nodes.items() if isinstance(op, HostToCore)}
    boundary_out = {q.predecessors(n)[0] for n, op in q.nodes.items() if isinstance(op, CoreToHost)}
    sent = [n for s in p.stages for n in s.core_outputs]
    received = [n for s in p.stages for n in s.core_inputs]
    assert sorted(sent) == sorted(boundary_in) and set(received) == boundary_out
    assert not p.stages[0].core_inputs  # nothing has come back from the cores before the first stage
    produced = set()
    for k, phase in enumerate(p.core_phases):  # a phase needs payloads of earlier stages or values of earlier phases
        ready = {n for s in p.stages[: k + 1] for n in s.core_outputs} | produced
        assert {t.name for t in phase.needs} <= ready
        produced |= {t.name for t in phase.produces}
        for later in p.stages[k + 1:]:
            assert not set(later.core_outputs) & {t.name for t in phase.needs}
    # the state is explicit: WKV's aa/bb/pp, the token-shift Delay registers, the step counter
    keys = set(p.state)
    assert "step" in keys and any(k.endswith("/pp") for k in keys) and any(k.endswith("/rows") for k in keys)
    assert float(p.state[next(k for k in keys if k.endswith("/pp"))][0]) == -1e30
    assert p.stages[-1].outputs[-1].name == "step/next"


def test_program_is_plain_data_that_pickles_saves_and_exports_byte_identically(tiny_rwkv6, tmp_path):
    g, q, ids = compiled("shipped:spikelm", tiny_rwkv6)
    p = export_host_program(q)
    again = export_host_program(q)
    assert [s.model for s in p.stages] == [s.model for s in again.stages]
    clone = pickle.loads(pickle.dumps(p))
    p.save(tmp_path / "host")
    loaded = HostProgram.load(tmp_path / "host")
    assert sorted(f.name for f in (tmp_path / "host").iterdir())[:2] == ["program.json", "stage0.onnx"]
    outs = []
    for prog in (p, clone, loaded):
        runner, core = HostRunner(prog), SimulatorCore(q, prog.form)
        for tok in ids[:3]:
            for _ in range(int(q.metadata["substeps"])):
                last = run_step(runner, core, {q.inputs()[0]: np.array([float(tok)])})
        outs.append(last[q.outputs()[0]])
        assert runner.step == 3 * int(q.metadata["substeps"])
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    with pytest.raises(FileExistsError):
        p.save(tmp_path / "host")


def test_context_past_the_learned_positions_is_a_one_line_error(tiny_rwkv6):
    g, _, _ = compiled("random:spikelm", tiny_rwkv6)
    p = export_host_program(g)
    assert p.max_steps == 64 * 3  # context x T spike steps
    runner = HostRunner(p)
    runner.state["step"] = np.array(p.max_steps, dtype=np.int64)
    with pytest.raises(ContextLengthError) as info:
        runner.step_stage(0, {g.inputs()[0]: np.array([1.0])})
    assert "\n" not in str(info.value) and "192" in str(info.value)


# ------------------------------------------------------------------------------------------------ errors
def _host_graph(op: nir.NIRNode, shapes: dict[str, tuple[int, ...]]) -> Graph:
    """One Input per port of `op` (named after the port), the op, an Output; all on the host."""
    g = Graph()
    for port, shape in shapes.items():
        g.add_node(port, nir.Input(input_type={"input": np.array(shape)}), partition="host")
    g.add_node("op", op, partition="host")
    for port in shapes:
        g.connect(port, "op", port)
    g.add_node("out", nir.Output(output_type={"output": np.array([1])}), partition="host")
    g.connect("op", "out")
    return g


def test_unsupported_host_op_is_a_one_line_error_naming_the_node():
    lif = nir.LIF(tau=np.full(4, 0.01), r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.ones(4),
                  v_reset=np.zeros(4))
    g = _host_graph(lif, {"input": (4,)})
    with pytest.raises(BackendError) as info:
        export_host_program(g)
    msg = str(info.value)
    assert "\n" not in msg and "node 'op'" in msg and "LIF" in msg and "no rule" in msg


def test_unpartitioned_or_unquantized_graphs_are_refused_in_one_line():
    g = _host_graph(nir.Scale(scale=np.ones(3)), {"input": (3,)})
    del g.annotations["op"]["partition"]
    with pytest.raises(BackendError, match="node 'op' has no partition annotation"):
        export_host_program(g)
    g = _host_graph(nir.Scale(scale=np.ones(3)), {"input": (3,)})
    with pytest.raises(BackendError, match="not quantized"):
        export_host_program(g, "fixed")


# ------------------------------------------------------------------------------------------------ single ops
def run_both(op: nir.NIRNode, inputs: list[dict[str, np.ndarray]], dt: float | None = None) \
        -> tuple[np.ndarray, np.ndarray]:
    """The op's outputs step by step in the CPU simulator and through its exported host stage."""
    shapes = {p: v.shape for p, v in inputs[0].items()}
    g = _host_graph(op, shapes)
    if dt is not None:
        g.metadata["dt"] = dt
    sim = Simulator(g)
    sim.start()
    runner = HostRunner(export_host_program(g))
    want, got = [], []
    for x in inputs:
        want.append(sim.step(x)["op"])
        got.append(run_step(runner, lambda k, needs: {}, x)["out"])
    return np.stack(want), np.stack(got)


def _steps(rng, n: int, **shapes: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    return [{p: rng.normal(0.0, 1.0, s) for p, s in shapes.items()} for _ in range(n)]


def test_erf_from_double_ops_matches_math_erf():
    import onnxruntime as ort

    b = StageBuilder("erf")
    b.output(erf(b, b.input("x", F64, ["n"])), "y", F64, ["n"])
    sess = ort.InferenceSession(b.model_bytes(), session_options(), providers=["CPUExecutionProvider"])
    x = np.concatenate([np.linspace(-8.0, 8.0, 40001), [0.0, -0.0, 1e-300, 5.92, 5.999999, 6.0, np.inf, -np.inf]])
    y = sess.run(None, {"x": x})[0]
    want = np.array([math.erf(v) for v in x])
    assert np.abs(y - want).max() < 1e-14
    assert y[-2] == 1.0 and y[-1] == -1.0


def test_no_graph_rewrite_drops_a_near_unit_scale():
    """onnxruntime's basic optimizations would run Mul(x, 1 + 1e-12) as x (no-op elimination in float32); the
    runner turns them off."""
    want, got = run_both(nir.Scale(scale=np.full(3, 1.0 + 1e-12)), [{"input": np.full(3, 1e6)}])
    assert np.array_equal(got, want) and got[0, 0] == 1e6 * (1.0 + 1e-12) != 1e6


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_elastic_bi_spike_on_the_host(mode):
    rng = np.random.default_rng(0)
    op = ElasticBiSpike(T=3, alpha=np.array([0.5, 0.8, 0.3]), leak=0.25, threshold_mode=mode)
    want, got = run_both(op, _steps(rng, 12, input=(2, 5)))
    assert np.array_equal(got, want) and np.count_nonzero(got) > 10


def test_sequence_attention_with_padding_and_cross_attention():
    rng = np.random.default_rng(1)
    xs = _steps(rng, 3, q=(5, 8), k=(5, 8), v=(5, 8))
    for x in xs:
        x["mask"] = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    want, got = run_both(SelfAttention(n_head=2, masked=True), xs)
    assert np.abs(got - want).max() < 1e-14
    xs = _steps(rng, 3, q=(8,), k=(5, 8), v=(5, 8))
    for x in xs:
        x["mask"] = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    want, got = run_both(CrossAttention(n_head=4), xs)
    assert np.abs(got - want).max() < 1e-14


def test_stateful_and_step_counting_ops():
    rng = np.random.default_rng(2)
    # Delay of 0, 1 and 3 steps per element (dt 1e-3): y_i[t] = x_i[t - d_i], 0 before
    xs = _steps(rng, 6, input=(3,))
    want, got = run_both(nir.Delay(delay=np.array([0.0, 1e-3, 3e-3])), xs, dt=1e-3)
    x = np.stack([s["input"] for s in xs])
    assert np.array_equal(got, want)
    assert np.array_equal(got[:, 0], x[:, 0]) and np.array_equal(got[1:, 1], x[:-1, 1]) and got[0, 1] == 0
    assert np.array_equal(got[3:, 2], x[:-3, 2]) and not got[:3, 2].any()
    want, got = run_both(TokenMean(T=3), _steps(rng, 7, input=(4,)))
    assert np.abs(got - want).max() < 1e-15
    lif = DiscreteLIF(tau=np.full(6, 2.0), v_threshold=np.full(6, 0.7), v_reset=np.zeros(6))
    want, got = run_both(lif, _steps(rng, 8, input=(6,)))
    assert np.array_equal(got, want) and got.any()
    table = rng.normal(size=(4, 3))
    want, got = run_both(PositionEmbedding(weight=table, T=2), [{"input": np.array([0.0])}] * 8)
    assert np.array_equal(got, want) and np.array_equal(got[7], table[3])
    want, got = run_both(PositionEmbedding(weight=table, mode="sequence"), [{"input": np.zeros(3)}] * 2)
    assert np.array_equal(got[1], table[:3].reshape(-1))
    for split in (True, False):
        want, got = run_both(SpikeRouter(size=4, banks=3, split=split),
                             [{"input": np.sign(rng.normal(size=4))} for _ in range(5)])
        assert np.array_equal(got, want)


def test_spike_encoders_and_norms_and_lookups():
    rng = np.random.default_rng(3)
    x = [{"input": np.concatenate([rng.normal(0, 2, 6), [np.nan, 0.0, -0.0, 3.75, -3.75, 100.0]])} for _ in range(3)]
    for cls in (MultiLevelEncoder, MultiLevelValue):
        for polarity in (True, False):
            op = cls(channels=12, T=3, level_weights=np.array([2.0, 1.0, 0.5]), polarity=polarity)
            want, got = run_both(op, x)
            assert np.array_equal(got, want), (cls.__name__, polarity)
    gn = GroupNorm(weight=rng.normal(size=8), bias=rng.normal(size=8), groups=2, eps=1e-3)
    want, got = run_both(gn, _steps(rng, 2, input=(8,)))
    assert np.abs(got - want).max() < 1e-14
    emb = Embedding(weight=rng.normal(size=(7, 3)))
    want, got = run_both(emb, [{"input": np.array([float(i)])} for i in (0, 6, 3)])
    assert np.array_equal(got, want)
    head = nir.Affine(weight=rng.normal(size=(3, 4)), bias=rng.normal(size=3))
    want, got = run_both(head, _steps(rng, 2, input=(4,)))
    assert np.abs(got - want).max() < 1e-14
    rows = nir.Linear(weight=rng.normal(size=(3, 4)))
    want, got = run_both(rows, _steps(rng, 2, input=(5, 4)))  # a sequence: the same W on each of 5 rows
    assert got.shape == (2, 15) and np.abs(got - want).max() < 1e-14
