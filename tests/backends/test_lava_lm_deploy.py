"""BUILD/lava/ of a language-model build: the generated module generates, in a fresh Python process in which spikecc
cannot be imported, the same tokens as spikecc's fixed-point simulator (the reference is the simulator, not the
module): each shipped model from `compile_lm` (the build `spikecc compile` writes). Also: the same bytes on a
second write; the core assignment in cores.json is the mapping's (budget.json), handed to Lava as compile_config
by process name; the Loihi2HwCfg branch built up to the run call; the module's command line; and spikecc's own
Lava run (run_lm_lava, rebuilt on the same data) still equal to the simulator in every recorded value."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikecc.backends.cpu.lm_runner import LMSimulator
from spikecc.backends.lava import lm_processes
from spikecc.backends.lava.lm_codegen import MODULE_NAME
from spikecc.compiler.mapping import map_graph
from spikecc.driver import lm_build_graph
from spikecc.errors import InputFileError
from spikecc.files import check_build_dir
from spikecc.lm_build import compile_lm
from spikecc.lm_deploy import core_assignment, lava_deploy_files
from spikecc.lm_lava import lava_generate, recorded_nodes, simulator_run

PROMPT = "JULIET:"
# (prompt, tokens) per model and mode run in the fresh process: at least 8 tokens each, SpikeLM (4 spike steps per
# token, so 4 times the Lava steps) on a shorter prompt
JOBS = {"spikegpt": [(PROMPT, 12, "fixed")], "spikerwkv": [(PROMPT, 16, "fixed"), ("ROMEO:", 8, "floating_pt")],
        "spikelm": [("JU", 8, "fixed")]}


FAMILIES = ("spikegpt", "spikerwkv", "spikelm")


def _make_builds(folder: Path, examples_dir: Path) -> None:
    """Each shipped model compiled as `spikecc compile` does (64 calibration tokens: quicker)."""
    for family in FAMILIES:
        compile_lm(examples_dir / "checkpoints" / f"{family}-shakespeare.pt", folder / family, calibration_tokens=64)


@pytest.fixture(scope="module")
def builds(made_once, examples_dir) -> dict:
    """family -> (BUILD/lava path, float graph, fixed graph), the graphs read back from the build's files."""
    folder = made_once("lava-deploy-builds", lambda d: _make_builds(d, examples_dir))
    return {f: (folder / f / "lava", lm_build_graph(folder / f, False), lm_build_graph(folder / f, True))
            for f in FAMILIES}


def _mapping(build: Path, fixed):
    """The mapping compile_lm made, again: the same graph, the measured activity of activity.npz, the target."""
    with np.load(build / "activity.npz") as z:
        activity = {k: z[k] for k in z.files}
    return map_graph(fixed, json.loads((build / "manifest.json").read_text())["target"], activity=activity)


CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    # no spikecc: drop the editable install's finder and path hook (the venv's .pth adds them)
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("spikecc") is None, "spikecc is importable"
    jobs = json.loads(sys.argv[1])
    results = {}
    for i, (family, path, runs) in enumerate(jobs):
        spec = importlib.util.spec_from_file_location(f"lava_lm_{i}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        encode, decode = mod.tokenizer()
        out = results[family] = {"runs": []}
        for prompt, n, mode in runs:
            ids = mod.generate_ids(encode(prompt), n, mode)
            out["runs"].append({"ids": ids, "text": decode(ids)})
        # Loihi2HwCfg: everything up to the run call (lava-loihi is not installed here)
        out["hardware_available"] = mod.hardware_available()
        net, cfg, cc = mod.prepare(encode("JU"), 2, "fixed", hardware=True)
        lm = mod._LM
        exceptions = cfg.exception_proc_model_map
        python_only = [net.host, net.source, net.sampler] + [p for p in net.processes.values() if p in net.models]
        out["hw"] = {
            "config": type(cfg).__name__, "select_tag": cfg.select_tag,
            "python_only_selected": all(cfg.select(p, [exceptions[p]]) is net.models[p]
                                        and exceptions[type(p)] is net.models[p] for p in python_only),
            "lava_own": sorted({type(p).__name__ for p in net.processes.values() if p not in exceptions}),
            "names": {n: p.name for n, p in net.processes.items()},
            "partitioning": cc.get("partitioning", {}),
        }
        lm.release_shared(net.logits_key)
        try:
            mod.prepare(encode("JU"), 2, "float", hardware=True)
            out["hw_float"] = "accepted"
        except ValueError as e:
            out["hw_float"] = str(e)
    leaked = sorted(k for k in sys.modules if k == "spikecc" or k.startswith("spikecc."))
    print(json.dumps({"results": results, "spikecc_modules": leaked}))
""")


def _run_fresh(folder: Path, builds: dict, fresh_python) -> None:
    jobs = [[family, str(builds[family][0] / MODULE_NAME), runs] for family, runs in JOBS.items()]
    rc, out, err = fresh_python(["-c", CHILD, json.dumps(jobs)], folder)
    assert rc == 0, err[-3000:]
    assert "Cannot import module" not in err  # Lava's model search found every model it looked for
    (folder / "results.json").write_text(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_runs(builds, made_once, fresh_python) -> dict:
    folder = made_once("lava-deploy-fresh", lambda d: _run_fresh(d, builds, fresh_python))
    return json.loads((folder / "results.json").read_text())


def _simulated(graph, prompt: str, n: int, mode: str) -> list[int]:
    """Greedy generation in spikecc's simulator: the reference."""
    sim = LMSimulator(graph, mode=mode)
    run = sim.generate(prompt, n)
    return run.token_ids[len(sim.encode(prompt)):]


@pytest.mark.parametrize("family", list(JOBS))
def test_generated_module_without_spikecc_generates_the_simulators_tokens(family, builds, fresh_runs):
    _, float_graph, fixed_graph = builds[family]
    assert fresh_runs["spikecc_modules"] == []
    got = fresh_runs["results"][family]["runs"]
    for (prompt, n, mode), run in zip(JOBS[family], got):
        graph = fixed_graph if mode == "fixed" else float_graph
        want = _simulated(graph, prompt, n, "fixed" if mode == "fixed" else "float")
        assert len(run["ids"]) == n
        assert run["ids"] == want, (family, mode)
        assert run["text"] == LMSimulator(graph).decode(want)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("family", ["spikegpt", "spikerwkv", "spikelm"])
def test_hardware_branch_up_to_the_run_call(family, builds, fresh_runs):
    res = fresh_runs["results"][family]
    hw = res["hw"]
    assert res["hardware_available"] is False  # no lava-loihi here: the run itself cannot happen
    assert hw["config"] == "Loihi2HwCfg" and hw["select_tag"] is None
    # Lava's own selection (RunConfig.select) picks the Python models named for the host, the token source, the
    # sampler and spikecc's processes; Lava's own processes are left to lava-loihi's neuro-core models
    assert hw["python_only_selected"] is True
    assert set(hw["lava_own"]) <= {"Dense", "LIF", "GradedVec"} and "Dense" in hw["lava_own"]
    assert all(name == node for node, name in hw["names"].items())
    cores = json.loads((builds[family][0] / "cores.json").read_text())["nodes"]
    assert hw["partitioning"] == {n: {"cores": c} for n, c in cores.items() if n in hw["names"]}
    assert res["hw_float"].startswith("Loihi 2 computes in fixed point")


def test_core_assignment_is_the_mappings(builds):
    """cores.json against budget.json's per-core fragments ("layer[lo:hi]" on chip, slot), written by the mapping
    report: every population's fragments, synapse layers with the neurons they feed."""
    lava_dir, _, fixed = builds["spikegpt"]
    budget = json.loads((lava_dir.parent / "budget.json").read_text())
    want: dict[str, list] = {}
    for core in budget["per_core"]:
        for frag in core["fragments"]:
            layer, lo, hi = re.fullmatch(r"(.+)\[(\d+):(\d+)\]", frag).groups()
            frags = want.setdefault(layer, [])
            frags.append({"chip": core["chip"], "core": core["slot"], "neurons": [int(lo), int(hi)]})
    cores = json.loads((lava_dir / "cores.json").read_text())
    assert cores["chips"] == budget["chips"] and cores["cores"] == budget["cores"]
    nodes = cores["nodes"]
    for layer, frags in want.items():
        assert sorted(map(json.dumps, nodes[layer])) == sorted(map(json.dumps, frags)), layer
    dense = [n for n in nodes if n not in want]
    assert dense and all(type(fixed.nodes[n]).__name__ == "LoihiDense" for n in dense)
    for n in dense:
        assert nodes[n] == nodes[fixed.successors(n)[0]]
    assert core_assignment(fixed, _mapping(lava_dir.parent, fixed)) == nodes
    for family in ("spikelm", "spikerwkv"):  # the others' too: every neuro-core node placed as its mapping says
        lava_dir, _, fixed = builds[family]
        nodes = json.loads((lava_dir / "cores.json").read_text())["nodes"]
        assert nodes and nodes == core_assignment(fixed, _mapping(lava_dir.parent, fixed)), family


def test_the_same_bytes_on_a_second_write(builds):
    """The compile wrote BUILD/lava/; writing it again from the build's graphs (read back from its .nir files) and
    the same mapping gives the same files."""
    lava_dir, float_graph, fixed_graph = builds["spikegpt"]
    again = lava_deploy_files(float_graph, fixed_graph, _mapping(lava_dir.parent, fixed_graph))
    on_disk = {str(p.relative_to(lava_dir)): p.read_bytes() for p in lava_dir.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(again) == sorted(on_disk)
    for rel, content in again.items():  # the parameter files streamed to disk: the bytes of their in-memory form
        assert bytes(content) == on_disk[rel], rel
    assert {"lava_lm.py", "spikecc_lm_processes.py", "spikecc_processes.py", "spikecc_stage_runner.py",
            "spikecc_lava_compat.py", "tokenizer.json", "cores.json", "fixed/network.json", "fixed/params.npz",
            "fixed/host/program.json", "float/host/stage0.onnx"} <= set(on_disk)
    manifest = json.loads((lava_dir.parent / "manifest.json").read_text())
    assert manifest["lava"] == "lava/lava_lm.py" and "lava/fixed/params.npz" in manifest["files"]
    for text in (on_disk["lava_lm.py"], on_disk["spikecc_lm_processes.py"], on_disk["spikecc_stage_runner.py"]):
        assert not re.search(rb"^\s*(import|from)\s+spikecc\b", text, re.MULTILINE)


def test_command_line_prints_what_spikecc_generate_prints(builds, tmp_path, fresh_python):
    lava_dir, float_graph, _ = builds["spikerwkv"]
    module = str(lava_dir / MODULE_NAME)
    rc, out, err = fresh_python([module, "--prompt", "ROMEO:", "--tokens", "6", "--float"], tmp_path)
    assert rc == 0, err[-2000:]
    assert out == "ROMEO:" + LMSimulator(float_graph).generate("ROMEO:", 6).text + "\n"
    rc, out, err = fresh_python([module, "--prompt", "~~", "--tokens", "2"], tmp_path)
    assert rc == 1 and out == "" and err.startswith("error: characters ['~'] are not in the model's vocabulary")
    assert "Traceback" not in err


def test_spikeccs_lava_run_still_equals_the_simulator(builds):
    """run_lm_lava (the same builder, from the same plain data) against spikecc's fixed-point simulator: the tokens
    and every recorded neuro-core value and host payload at every graph step."""
    _, _, fixed = builds["spikerwkv"]
    ids = LMSimulator(fixed).encode(PROMPT)
    gen = lava_generate(fixed, PROMPT, 6, "fixed")
    nodes = recorded_nodes(fixed)
    ref = simulator_run(fixed, "fixed", ids, 6, nodes, "spikecc fixed")
    assert gen.result.tokens == ref.tokens
    assert set(ref.values) <= set(gen.result.outputs)
    for n in nodes:
        np.testing.assert_array_equal(gen.result.outputs[n], ref.values[n], err_msg=n)
    assert lm_processes._SHARED == {} and multiprocessing.active_children() == []


def test_a_bytecode_cache_in_the_build_is_not_the_users_file(builds, tmp_path):
    """Importing lava_lm.py leaves lava/__pycache__/; the next compile into the same build may still replace it,
    while a file the user put there keeps the build from being replaced."""
    build = tmp_path / "build"
    shutil.copytree(builds["spikegpt"][0].parent, build)
    cache = build / "lava" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "lava_lm.cpython-311.pyc").write_bytes(b"\x00")
    check_build_dir(build)
    mine = build / "lava" / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(InputFileError, match="lava/notes.txt in it was not written by spikecc"):
        check_build_dir(build)
