"""The quantization and partition reports of a language-model build: measured by running the float and the
fixed-point graph side by side on the calibration tokens (teacher-forced, from a fresh state), and laid out as
JSON for machines and a table for people. Driver level (it runs the CPU simulator)."""

from __future__ import annotations

import math

import nir
import numpy as np

from spikecc.ir import Graph, infer_shapes
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, LoihiElastic, LoihiRelay, SpikeRouter

NEURONS = (LoihiLIF, LoihiElastic)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(relative error = RMS(got - ref) / RMS(ref), SQNR in dB = -20 log10 of it); inf dB when exact."""
    signal = float(np.sum(np.square(ref)))
    noise = float(np.sum(np.square(got - ref)))
    if noise == 0.0:
        return 0.0, math.inf
    rel = math.sqrt(noise / signal) if signal > 0 else math.inf
    return rel, -20.0 * math.log10(rel) if 0 < rel < math.inf else -math.inf


def _source_denses(g: Graph, name: str) -> list[str]:
    return [e.src for e in g.in_edges(name) if isinstance(g.nodes[e.src], LoihiDense)]


def quantization_report(float_graph: Graph, fixed_graph: Graph, ids: list[int]) -> dict:
    """Per neuro-core layer: its static quantization (weights clipped to the grid, rounded to zero, exponents,
    state scale, threshold in state units) and what the calibration run measured (SQNR of what reaches the host,
    spike agreement of spiking layers); per boundary message: its scale, width and clipped values."""
    from spikecc.lm_build import run_teacher_forced

    g = fixed_graph
    to_host = [n for n, op in g.nodes.items() if isinstance(op, CoreToHost)]
    spiking = [n for n, op in g.nodes.items() if isinstance(op, NEURONS)]
    record = to_host + spiking
    ref = run_teacher_forced(float_graph, ids, "float", record)
    ref.pop("__sim__")  # its kernels (a float copy of every weight) go before the fixed run builds its own
    got = run_teacher_forced(fixed_graph, ids, "fixed", record)
    fixed_sim = got.pop("__sim__")
    layers = []
    for n in to_host:  # graded results reaching the host (spikes reaching it are compared spike by spike)
        (src,) = g.predecessors(n)
        if not isinstance(g.nodes[src], LoihiRelay):
            continue
        rel, db = _sqnr(ref[n], got[n])
        layers.append({"layer": ", ".join(_source_denses(g, src)), "kind": "graded (relay)", "reaches_host_at": n,
                       "relative_error": rel, "sqnr_db": db, "values": int(ref[n].size)})
    for n in spiking:
        same = float(np.mean(ref[n] == got[n])) if ref[n].size else 1.0
        op = g.nodes[n]
        ann = g.annotations.get(n, {})
        scale = float(np.min(ann.get("v_scale", 1.0)))
        th = np.asarray(op.vth if isinstance(op, LoihiLIF) else op.hi, dtype=np.float64)
        th_units = float(np.min(np.abs(th[th != 0]))) * (64 if isinstance(op, LoihiLIF) else 1) if np.any(th) else 0.0
        layers.append({"layer": n, "kind": type(op).__name__, "spike_agreement": same,
                       "spikes_float": int(np.count_nonzero(ref[n])), "spikes_fixed": int(np.count_nonzero(got[n])),
                       "state_scale": scale, "threshold_state_units": th_units,
                       "threshold_headroom": float((2**23 - 1) / th_units) if th_units > 0 else None})
    synapses = []
    for n, op in g.nodes.items():
        if not isinstance(op, LoihiDense):
            continue
        ann = g.annotations.get(n, {})
        w = np.asarray(op.weight)
        nonzero = int(np.count_nonzero(w)) + int(ann.get("zeroed_weights", 0))
        top = int(np.abs(w).max(initial=0))
        synapses.append({"layer": n, "weights": int(w.size), "weight_exp": int(op.weight_exp),
                         "message_bits": int(op.num_message_bits),
                         "rounded_to_zero": int(ann.get("zeroed_weights", 0)) / max(1, nonzero),
                         "clipped": 0.0,  # weights are scaled to the grid's top (max-abs): none clip
                         "grid_top_used": top, "max_abs_error": float(ann.get("quant_error", 0.0)),
                         "relative_error": float(ann.get("quant_rel_error", 0.0))})
    boundary = []
    for n, op in g.nodes.items():
        if isinstance(op, HostToCore):
            kern = fixed_sim.kernels[n]
            boundary.append({"node": n, "bits": int(op.bits), "scale": float(op.scale),
                             "calibrated_max": g.annotation(n, "calibrated_max"),
                             "clipped_values": int(getattr(kern, "clipped", 0))})
    graded = [r for r in layers if "relative_error" in r]
    worst = max(graded, key=lambda r: r["relative_error"], default=None)
    spikes = [r["spike_agreement"] for r in layers if "spike_agreement" in r]
    return {"tokens": len(ids), "layers": layers, "synapses": synapses, "boundary": boundary,
            "worst": {"layer": worst["layer"], "sqnr_db": worst["sqnr_db"], "relative_error": worst["relative_error"]}
            if worst else None,
            "spike_agreement": float(np.mean(spikes)) if spikes else 1.0,
            "weight_bits": int(g.metadata.get("quantization", {}).get("weight_bits", 8))}


def _params(op: nir.NIRNode) -> int:
    return sum(int(np.size(v)) for k, v in vars(op).items()
               if isinstance(v, np.ndarray) and k not in ("input_type", "output_type"))


def _host_ops(op: nir.NIRNode, out_size: int, in_size: int) -> int:
    """Operations of one host node per step: multiply-accumulates for linear layers, one per output value
    otherwise (an estimate: LayerNorm, softmax and exp cost a few operations per value)."""
    if isinstance(op, (nir.Linear, nir.Affine)):
        rows = max(1, in_size // int(op.weight.shape[1]))
        return rows * int(op.weight.size)
    return out_size


def partition_report(g: Graph, activity: dict[str, np.ndarray], tokens: int, rows: int = 1) -> dict:
    """Per token, on each side: nodes, parameters, operations (measured synaptic operations on the neuro-cores:
    events x fan-out on the calibration run; estimated operations on the host), and the boundary messages.
    Also which linear layers take graded inputs (real host values, not spikes), what each spike-routing
    choice costs (synapses with it, and with the other choice), and by which rule each op type was placed.

    `rows`: tokens presented at each step (an encoder's sequence length; its neuro-cores serve them in turn, and
    `activity` is per neuron per step of one token): the host's work and messages of a step are shared by them."""
    shapes = infer_shapes(g)
    size = {n: int(np.prod(s)) for n, s in shapes.items()}
    substeps = int(g.metadata.get("substeps", 1))
    steps_per_token = substeps
    per_token = steps_per_token / rows  # host work and boundary values of a whole step, per token
    sides = {"neurocore": {"nodes": 0, "parameters": 0, "synops_per_token": 0.0},
             "host": {"nodes": 0, "parameters": 0, "ops_per_token": 0.0}}
    for n, op in g.nodes.items():
        side = "neurocore" if g.annotation(n, "partition") == "neurocore" else "host"
        sides[side]["nodes"] += 1
        sides[side]["parameters"] += _params(op)
        if side == "host":
            in_size = sum(size[e.src] for e in g.in_edges(n)[:1])
            sides["host"]["ops_per_token"] += _host_ops(op, size[n], in_size) * per_token
    # synaptic operations on the cores: each event of a source costs its fan-out in every Dense it feeds
    for n, op in g.nodes.items():
        if not isinstance(op, LoihiDense):
            continue
        (src,) = g.predecessors(n)
        fan = np.count_nonzero(np.asarray(op.weight), axis=0)
        rate = activity.get(src)
        if rate is None or np.size(rate) != fan.size:  # graded host values: a message per value each step
            rate = np.ones(fan.size)
        sides["neurocore"]["synops_per_token"] += float(np.asarray(rate) @ fan) * steps_per_token
    to_core = [(n, op) for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    to_host = [(n, op) for n, op in g.nodes.items() if isinstance(op, CoreToHost)]

    def messages(node: str, src: str) -> float:
        rate = activity.get(src)
        return float(np.sum(rate)) * steps_per_token if rate is not None else float(size[node]) * per_token

    boundary = {
        "to_core": [{"node": n, "values": size[n], "bits": int(op.bits), "messages_per_token":
                     float(size[n] * per_token)} for n, op in to_core],
        "to_host": [{"node": n, "values": size[n], "messages_per_token": messages(n, g.predecessors(n)[0])}
                    for n, _ in to_host],
    }
    boundary["to_core_messages"] = sum(r["messages_per_token"] for r in boundary["to_core"])
    boundary["to_host_messages"] = sum(r["messages_per_token"] for r in boundary["to_host"])
    graded_inputs = sorted({e.dst for n, op in to_core if op.bits > 0 for e in g.out_edges(n)
                            if isinstance(g.nodes[e.dst], LoihiDense)})
    choices = []
    for n, op in g.nodes.items():
        if not isinstance(op, SpikeRouter):
            continue
        syn = sum(int(np.count_nonzero(np.asarray(g.nodes[e.dst].weight))) for e in g.out_edges(n)
                  if isinstance(g.nodes[e.dst], LoihiDense))
        steps = len(g.annotation(n, "amplitudes") or ()) or op.banks
        choices.append({"router": n, "banks": op.banks, "polarity": "split" if op.split else "graded",
                        "amplitude": "graded" if op.graded else "banks",
                        "synapses": syn,
                        "synapses_if_graded_polarity": syn // 2 if op.split else syn,
                        "synapses_if_graded_amplitude": syn // op.banks,
                        "synapses_if_banks": syn * steps * 2 if op.graded else syn,
                        "messages_per_token": float(np.sum(activity.get(n, np.zeros(1)))) * steps_per_token})
    rules: dict[str, dict] = {}  # the partition pass's rule per placed node (spikecc.compiler.passes.partition)
    for n, op in g.nodes.items():
        why = g.annotation(n, "placement_rule")
        if why is None:
            continue
        kind = g.annotation(n, "lowered_from") or type(op).__name__
        row = rules.setdefault(why, {"side": g.annotation(n, "partition"), "ops": [], "nodes": 0})
        row["nodes"] += 1
        if kind not in row["ops"]:
            row["ops"].append(kind)
    return {"tokens": tokens, "steps_per_token": steps_per_token, "tokens_per_step": rows,
            "neurocore": sides["neurocore"],
            "host": sides["host"], "boundary": boundary, "graded_input_layers": graded_inputs,
            "spike_routing": choices, "placement": rules,
            "note": ("linear layers listed under graded_input_layers take real host values (e.g. LayerNorm outputs), "
                     "not spikes: their inputs travel as graded messages of the given bits")}


def report_text(data: dict, kind: str) -> str:
    """A readable table of a quantization or partition report."""
    lines: list[str] = []
    if kind == "quantization":
        lines.append(f"quantization on {data['tokens']} calibration tokens, {data['weight_bits']}-bit weights")
        lines.append(f"{'layer':60s} {'kind':18s} {'SQNR dB':>9s} {'rel err':>9s} {'spikes same':>11s}")
        for r in data["layers"]:
            sq = f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "-"
            rel = f"{r['relative_error']:.2e}" if "relative_error" in r else "-"
            agree = f"{r['spike_agreement']:.4f}" if "spike_agreement" in r else "-"
            lines.append(f"{r['layer'][:60]:60s} {r['kind'][:18]:18s} {sq:>9s} {rel:>9s} {agree:>11s}")
        lines.append(f"{'synapses':60s} {'weights':>9s} {'exp':>4s} {'msg bits':>8s} {'to zero':>8s} {'max rel':>9s}")
        for r in data["synapses"]:
            lines.append(f"{r['layer'][:60]:60s} {r['weights']:>9d} {r['weight_exp']:>4d} {r['message_bits']:>8d} "
                         f"{r['rounded_to_zero']:>8.4f} {r['relative_error']:>9.2e}")
        for r in data["boundary"]:
            lines.append(f"boundary {r['node']}: {r['bits']} bits, unit {r['scale']:.4g}, "
                         f"{r['clipped_values']} values clipped")
        if data.get("worst"):
            lines.append(f"worst layer: {data['worst']['layer']} ({data['worst']['sqnr_db']:.1f} dB); "
                         f"spike agreement {data['spike_agreement']:.4f}")
    else:
        nc, h, b = data["neurocore"], data["host"], data["boundary"]
        lines.append(f"partition per token ({data['steps_per_token']} step(s) per token)")
        lines.append(f"neuro-core: {nc['nodes']} nodes, {nc['parameters']:,} parameters, "
                     f"{nc['synops_per_token']:,.0f} synaptic operations")
        lines.append(f"host:       {h['nodes']} nodes, {h['parameters']:,} parameters, "
                     f"{h['ops_per_token']:,.0f} operations")
        lines.append(f"boundary:   {b['to_core_messages']:,.0f} messages host -> cores, {b['to_host_messages']:,.0f} "
                     "cores -> host")
        if data["graded_input_layers"]:
            lines.append(f"graded inputs (real host values, not spikes): {len(data['graded_input_layers'])} layers, "
                         f"e.g. {', '.join(data['graded_input_layers'][:4])}")
        for why, r in data.get("placement", {}).items():
            lines.append(f"{r['side']:10s}  {', '.join(r['ops'])} ({r['nodes']} nodes): {why}")
        for c in data["spike_routing"]:
            if c.get("amplitude") == "graded":
                lines.append(f"routing {c['router']}: graded amplitudes (signed payloads): {c['synapses']:,} synapses "
                             f"({c['synapses_if_banks']:,} with per-step banks split by polarity)")
                continue
            lines.append(f"routing {c['router']}: {c['banks']} bank(s), polarity {c['polarity']}: {c['synapses']:,} "
                         f"synapses ({c['synapses_if_graded_polarity']:,} with graded polarity, "
                         f"{c['synapses_if_graded_amplitude']:,} with graded amplitudes)")
    return "\n".join(lines) + "\n"
