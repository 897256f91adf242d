"""NIR file reading and writing: round trips, extension ops, nested graphs, and errors that name the problem."""

from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest

from spikecc.backends.cpu import simulate
from spikecc.errors import InputFileError, UnknownOpError
from spikecc.ir import Edge, Graph, TernaryLIF, read, write
from spikecc.ir.nir_io import ANNOTATION_KEY

PARAMS = ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset", "tau_syn", "tau_mem", "w_in",
          "v_threshold_hi", "v_threshold_lo", "amplitude", "kernel_size", "stride", "padding", "dilation", "groups",
          "start_dim", "end_dim", "scale", "threshold", "delay")


def assert_same_params(a: nir.NIRNode, b: nir.NIRNode) -> None:
    assert type(a) is type(b)
    compared = 0
    for field in PARAMS:
        if hasattr(a, field):
            np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))
            compared += 1
    assert compared or isinstance(a, (nir.Input, nir.Output))


def small_graph() -> Graph:
    """in(3) -> w (Affine 4x3) -> lif(4) -> out, definition order deliberately not alphabetical."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}))
    g.add_node("w", nir.Affine(weight=rng.normal(size=(4, 3)), bias=rng.normal(size=4)))
    g.add_node("lif", nir.LIF(tau=rng.uniform(1e-3, 2e-3, 4), r=rng.uniform(1, 2, 4), v_leak=rng.normal(size=4),
                              v_threshold=rng.uniform(0.5, 1, 4), v_reset=rng.normal(size=4)))
    g.add_node("out", nir.Output(output_type={"output": np.array([4])}))
    g.connect("in", "w")
    g.connect("w", "lif")
    g.connect("lif", "out")
    return g


def ternary_graph() -> Graph:
    rng = np.random.default_rng(1)
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([5])}))
    g.add_node("t", TernaryLIF(tau=rng.uniform(1e-3, 2e-3, 5), r=rng.uniform(1, 2, 5), v_leak=np.zeros(5),
                               v_threshold_hi=rng.uniform(0.5, 1, 5), v_threshold_lo=-rng.uniform(0.5, 1, 5),
                               v_reset=rng.normal(size=5), amplitude=0.375))
    g.add_node("out", nir.Output(output_type={"output": np.array([5])}))
    g.connect("in", "t")
    g.connect("t", "out")
    return g


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------
def test_standard_graph_written_by_spikecc_loads_in_plain_nir(work_dir):
    g = small_graph()
    write(g, work_dir / "g.nir")
    plain = nir.read(work_dir / "g.nir")
    assert set(plain.nodes) == set(g.nodes)
    for name, op in g.nodes.items():
        assert_same_params(plain.nodes[name], op)
    assert sorted(map(tuple, plain.edges)) == sorted((e.src, e.dst) for e in g.edges)


def test_standard_graph_round_trips_through_spikecc(work_dir):
    g = small_graph()
    write(g, work_dir / "g.nir")
    back = read(work_dir / "g.nir")
    assert list(back.nodes) == list(g.nodes)
    for name, op in g.nodes.items():
        assert_same_params(back.nodes[name], op)
    assert sorted(back.edges, key=str) == sorted(g.edges, key=str)
    x = np.random.default_rng(2).normal(size=(50, 3))
    np.testing.assert_array_equal(simulate(back, x).outputs["out"], simulate(g, x).outputs["out"])
    assert sorted(p.name for p in work_dir.iterdir()) == ["g.nir"]  # the temporary file was renamed away


@pytest.mark.parametrize("name", ["ff_lif", "cuba_lif", "recurrent_rleaky", "conv_lif"])
def test_snntorch_exports_read_like_plain_nir(name, networks_dir):
    plain = nir.read(networks_dir / f"{name}.nir")
    g = read(networks_dir / f"{name}.nir")
    assert set(g.nodes) == set(plain.nodes)
    for node, op in plain.nodes.items():
        assert_same_params(g.nodes[node], op)
    assert sorted((e.src, e.dst) for e in g.edges) == sorted(map(tuple, plain.edges))
    assert all(e.port == "input" for e in g.edges)


def test_ternary_lif_round_trips_with_identical_parameters(work_dir):
    g = ternary_graph()
    write(g, work_dir / "t.nir")
    with h5py.File(work_dir / "t.nir") as f:
        assert f["node/nodes/t/type"][()] == b"spikecc.TernaryLIF"
    back = read(work_dir / "t.nir")
    op, orig = back.nodes["t"], g.nodes["t"]
    assert isinstance(op, TernaryLIF)
    assert_same_params(op, orig)
    assert isinstance(op.amplitude, float) and op.amplitude == 0.375
    x = np.random.default_rng(3).normal(size=(40, 5))
    np.testing.assert_array_equal(simulate(back, x).outputs["out"], simulate(g, x).outputs["out"])
    with pytest.raises(Exception):  # noqa: B017  plain nir.read knows no spikecc types (a bare AssertionError)
        nir.read(work_dir / "t.nir")


def test_annotations_and_metadata_survive(work_dir):
    g = small_graph()
    g.annotate("lif", core=3, quant={"bits": 8, "exp": -2})
    g.annotate("w", signal={"kind": "binary"})
    g.metadata.update(dt=2e-4, model="toy", layers=[1, 2])
    g.nodes["w"].metadata = {"origin": "hand-made"}
    write(g, work_dir / "g.nir")
    back = read(work_dir / "g.nir")
    assert back.annotations == {"lif": {"core": 3, "quant": {"bits": 8, "exp": -2}},
                                "w": {"signal": {"kind": "binary"}}}
    assert back.metadata == {"dt": 2e-4, "model": "toy", "layers": [1, 2]}
    assert back.dt == 2e-4
    assert back.nodes["w"].metadata["origin"] == "hand-made"
    # annotations live in NIR's own metadata field, so plain NIR tools carry them along
    assert ANNOTATION_KEY in nir.read(work_dir / "g.nir").nodes["lif"].metadata
    # writing does not change the graph that was written
    assert ANNOTATION_KEY not in g.nodes["lif"].metadata


def test_node_order_survives(work_dir):
    g = Graph()
    names = ["zeta", "in", "mid", "alpha", "out"]
    g.add_node("zeta", nir.Input(input_type={"input": np.array([2])}))
    g.add_node("in", nir.Input(input_type={"input": np.array([2])}))
    g.add_node("mid", nir.Scale(scale=np.array([1.0, 2.0])))
    g.add_node("alpha", nir.Scale(scale=np.array([3.0, 4.0])))
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    for e in [("zeta", "mid"), ("in", "alpha"), ("mid", "out"), ("alpha", "out")]:
        g.connect(*e)
    write(g, work_dir / "g.nir")
    assert list(nir.read(work_dir / "g.nir").nodes) != names  # HDF5 alone sorts by name
    back = read(work_dir / "g.nir")
    assert list(back.nodes) == names
    assert back.schedule() == g.schedule()


# ------------------------------------------------------------------------------------------------
# nested sub-graphs
# ------------------------------------------------------------------------------------------------
def nested_nir() -> nir.NIRGraph:
    """input -> sub[in -> w -> deep[i -> x -> o] -> lif -> out] -> output, addressed both ways NIR allows:
    the sub-graph by name ("sub") and its port by "sub.in" / "sub.out"."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 2))
    deep = nir.NIRGraph(nodes={"i": nir.Input(input_type=np.array([3])), "x": nir.Scale(scale=np.array([1., 2, 3])),
                               "o": nir.Output(output_type=np.array([3]))},
                        edges=[("i", "x"), ("x", "o")], type_check=False)
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.full(3, 2.0), v_leak=np.zeros(3), v_threshold=np.ones(3),
                  v_reset=np.zeros(3))
    sub = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([2])), "w": nir.Linear(weight=w), "deep": deep,
                              "lif": lif, "out": nir.Output(output_type=np.array([3]))},
                       edges=[("in", "w"), ("w", "deep"), ("deep", "lif"), ("lif", "out")], type_check=False)
    return nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "sub": sub,
                               "output": nir.Output(output_type=np.array([3]))},
                        edges=[("input", "sub.in"), ("sub", "output")], type_check=False)


def test_nested_graphs_are_flattened(work_dir):
    nir.write(work_dir / "nested.nir", nested_nir())
    g = read(work_dir / "nested.nir")
    assert set(g.nodes) == {"input", "sub.w", "sub.deep.x", "sub.lif", "output"}
    assert sorted(g.edges, key=str) == sorted([Edge("input", "sub.w"), Edge("sub.w", "sub.deep.x"),
                                               Edge("sub.deep.x", "sub.lif"), Edge("sub.lif", "output")], key=str)
    # the flattened graph computes what the same chain built flat computes
    flat = Graph()
    flat.add_node("input", nir.Input(input_type={"input": np.array([2])}))
    for name in ("sub.w", "sub.deep.x", "sub.lif"):
        src = g.nodes[name]
        flat.add_node(name, src)
    flat.add_node("output", nir.Output(output_type={"output": np.array([3])}))
    for a, b in [("input", "sub.w"), ("sub.w", "sub.deep.x"), ("sub.deep.x", "sub.lif"), ("sub.lif", "output")]:
        flat.connect(a, b)
    x = np.random.default_rng(5).uniform(0, 1, size=(30, 2))
    want = simulate(flat, x).outputs["output"]
    assert want.sum() > 0
    np.testing.assert_array_equal(simulate(g, x).outputs["output"], want)


def test_subgraph_with_two_outputs_needs_a_port_name(work_dir):
    sub = nir.NIRGraph(nodes={"i": nir.Input(input_type=np.array([1])), "a": nir.Output(output_type=np.array([1])),
                              "b": nir.Output(output_type=np.array([1]))},
                       edges=[("i", "a"), ("i", "b")], type_check=False)
    top = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1])), "sub": sub,
                              "output": nir.Output(output_type=np.array([1]))},
                       edges=[("input", "sub"), ("sub", "output")], type_check=False)
    nir.write(work_dir / "two.nir", top)
    with pytest.raises(Exception, match="sub.*2 Output"):
        read(work_dir / "two.nir")


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_missing_file(work_dir):
    with pytest.raises(InputFileError, match=r"nope\.nir: no such file"):
        read(work_dir / "nope.nir")


def test_directory_is_not_a_file(work_dir):
    with pytest.raises(InputFileError, match="not a file"):
        read(work_dir)


@pytest.mark.parametrize("content", [b"", b"this is not HDF5\n" * 10])
def test_not_hdf5(work_dir, content):
    path = work_dir / "text.nir"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=r"text\.nir: not a readable HDF5 file"):
        read(path)


def test_truncated_file(work_dir):
    write(small_graph(), work_dir / "g.nir")
    data = (work_dir / "g.nir").read_bytes()
    (work_dir / "cut.nir").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"cut\.nir"):
        read(work_dir / "cut.nir")


def test_hdf5_without_node_group(work_dir):
    with h5py.File(work_dir / "other.h5", "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(InputFileError, match="without a 'node' group"):
        read(work_dir / "other.h5")


def _set_type(path, node_path: str, type_name: str) -> None:
    with h5py.File(path, "r+") as f:
        del f[node_path + "/type"]
        f[node_path + "/type"] = type_name


def test_unknown_node_type_names_node_and_type(work_dir):
    path = work_dir / "g.nir"
    write(small_graph(), path)
    _set_type(path, "node/nodes/lif", "FancyNeuron")
    with pytest.raises(UnknownOpError, match=r"node 'lif' has type 'FancyNeuron'") as info:
        read(path)
    known = str(info.value).split("supported types:")[1]
    assert "LIF" in known and "spikecc.TernaryLIF" in known and "dict2NIRNode" not in known


def test_unknown_node_type_inside_a_subgraph_names_the_full_path(work_dir):
    path = work_dir / "nested.nir"
    nir.write(path, nested_nir())
    _set_type(path, "node/nodes/sub/nodes/deep/nodes/x", "Mystery")
    with pytest.raises(UnknownOpError, match=r"node 'sub\.deep\.x' has type 'Mystery'"):
        read(path)


def test_node_with_missing_field_names_the_node(work_dir):
    path = work_dir / "g.nir"
    write(small_graph(), path)
    with h5py.File(path, "r+") as f:
        del f["node/nodes/lif/tau"]
    with pytest.raises(InputFileError, match=r"node 'lif' of type 'LIF' has bad or missing fields"):
        read(path)


def test_extension_op_with_unknown_field_names_the_node(work_dir):
    path = work_dir / "t.nir"
    write(ternary_graph(), path)
    with h5py.File(path, "r+") as f:
        f["node/nodes/t/colour"] = 3.0
    with pytest.raises(InputFileError, match=r"node 't' of type 'spikecc.TernaryLIF'.*colour"):
        read(path)
