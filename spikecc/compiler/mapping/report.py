"""The budget of a mapping, for machines and for people: budget.json, budget.txt, budget.html + PNG plots.

`write_budget(mapping, out_dir)` writes them into a (build) directory. Bytes depend only on the mapping:
sorted JSON keys, numbers rounded to 6 significant digits, PNGs drawn by matplotlib's Agg canvas with no
timestamp or software tag. The HTML needs nothing online: plain tables and the PNGs beside it.

JSON top level: `cores`, `chips`, `boards`, `lower_bound_cores`, `violations` (layer, resource, value, limit,
fix, message), then `lower_bound` per resource, `totals`, `traffic` per link class, `latency`, `energy`,
`layers` (per layer: cores, lower bound, row groups, extra steps, ...), `per_core`, `placement`, `target`.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

import numpy as np

from spikecc.compiler.mapping.budget import Mapping
from spikecc.compiler.mapping.pack import USAGE

FILES = ("budget.json", "budget.txt", "budget.html", "budget_utilisation.png", "budget_traffic.png",
         "budget_energy.png")
RES_LABEL = {"neurons": "neurons", "neuron_groups": "neuron groups", "axons_in": "axons in", "axons_out": "axons out",
             "synmem": "synaptic memory"}


def _r(x):
    """Numbers rounded to 6 significant digits, recursively (stable, readable JSON)."""
    if isinstance(x, dict):
        return {str(k): _r(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_r(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.6g}") if math.isfinite(x) else str(x)
    return x


def budget_json(m: Mapping) -> dict:
    pc = m.per_core
    t = m.target
    per_core = []
    for c in m.cores:
        i = c.index
        per_core.append({
            "core": i, "chip": c.chip, "slot": c.slot,
            "layers": sorted({f.pop.layer for f in c.fragments}),
            "fragments": [f"{f.pop.name}[{f.lo}:{f.hi}]" for f in c.fragments],
            **{k: c.usage[k] for k in USAGE},
            "synapses": pc["synapses"][i], "spikes_in": pc["msgs_in"][i], "spikes_out": pc["spikes_out"][i],
            "messages_out": pc["msgs_out"][i], "synops": pc["synops"][i], "time_ns": pc["time_ns"][i],
            "energy_pj": pc["energy_pj"][i],
            "utilisation": {k: pc[f"util_{k}"][i] for k in USAGE},
        })
    host = [n for n in m.network.host_nodes if n not in m.network.io_nodes]
    data = {
        "cores": m.n_cores, "chips": m.chips, "boards": m.boards, "lower_bound_cores": m.lower_bound_cores,
        "chips_requested": m.chips_requested,
        "violations": [v.to_json() for v in m.violations],
        "lower_bound": m.lower_bound,
        "target": {"name": t.name, "path": t.path, "figures": t.to_json()["figures"]},
        "split_policy": m.split_policy,
        "totals": {"neurons": int(sum(p.n for p in m.network.populations)),
                   "partial_sum_neurons": int(sum(p.n for p in m.split.populations if p.role == "partial")),
                   "synapses": int(sum(f.synapses for f in m.split.fragments)),
                   "synmem": float(sum(f.synmem for f in m.split.fragments)),
                   "fragments": len(m.split.fragments), "layers": len(m.layers),
                   "host_ops": len(host), "host_nodes": host},
        "traffic": m.link_classes,
        "latency": m.latency,
        "energy": m.energy,
        "placement": {"method": m.placement.method, "interchip_msgs": m.placement.interchip_msgs,
                      "interchip_hop_msgs": m.placement.interchip_hop_msgs,
                      "alternatives": m.placement.alternatives},
        "activity_assumed": list(m.network.assumed),
        "notes": list(m.notes),
        "layers": m.layers,
        "per_core": per_core,
    }
    return _r(data)


def budget_text(m: Mapping, per_core: bool = True) -> str:
    """The budget as plain text tables (what `spikecc budget` prints, and budget.txt)."""
    t = m.target
    out = [f"target {t.name} ({t.path}): {int(t['chip.cores'])} cores per chip, split policy {m.split_policy}",
           f"cores {m.n_cores:,}  (lower bound {m.lower_bound_cores:,}: "
           + ", ".join(f"{RES_LABEL.get(k, k)} {v:,.1f}" for k, v in m.lower_bound.items()) + ")",
           f"chips {m.chips}" + (f" of {m.chips_requested} available" if m.chips_requested is not None else "")
           + f", boards {m.boards} ({int(t['board.chips'])} chips each)",
           f"placement {m.placement.method}: " + ", ".join(f"{k} {v:,.1f}" for k, v in
                                                           sorted(m.placement.alternatives.items()))
           + " messages/step between chips",
           "traffic per step: " + ", ".join(f"{k} {v['msgs']:,.1f} msgs" for k, v in m.link_classes.items()),
           f"latency per step {m.latency['step_ns']:,.0f} ns, bottleneck: {m.latency['bottleneck']}"
           + (f"; partial sums add {m.latency['partial_sum_extra_steps']} step(s)"
              if m.latency["partial_sum_extra_steps"] else ""),
           f"energy per step {m.energy['step_pj'] / 1e6:,.4f} uJ (dynamic {m.energy['dynamic_step_pj'] / 1e6:,.4f}, "
           f"static {m.energy['static_step_pj'] / 1e6:,.4f}); per token {m.energy['token_uj']:,.4f} uJ"]
    out += [f"note: {n}" for n in m.notes]
    out.append("")
    if m.violations:
        out.append(f"VIOLATIONS ({len(m.violations)}):")
        out += [f"  {v.message()}" for v in m.violations]
        out.append("")
    head = ("layer", "role", "neurons", "value grp", "rows", "synapses", "cores", "lower bd", "row grp", "+steps",
            "spikes/step", "synops/step")
    rows = [(r["layer"], r["role"], f"{r['neurons']:,}", f"{r['value_groups']:,}", f"{r['rows']:,}",
             f"{r['synapses']:,}", f"{r['cores']:,}", f"{r['lower_bound_cores']:,}", str(r["row_groups"]),
             str(r["extra_steps"]), f"{r['spikes_per_step']:,.1f}", f"{r['synops_per_step']:,.0f}") for r in m.layers]
    if any(r["value_groups"] > 1 for r in m.layers):
        out.append("value grp: neuron groups a layer takes on Loihi 2, one per distinct (du, dv, threshold) set of "
                   "its neurons (each its own Lava process)")
    out += _table(head, rows)
    if per_core:
        out.append("")
        head = ("core", "chip", "neurons", "groups", "axons in", "axons out", "synmem %", "synapses", "spikes in",
                "spikes out", "synops", "layers")
        pc = m.per_core
        rows = [(str(c.index), str(c.chip), f"{c.usage['neurons']:,.0f}", f"{c.usage['neuron_groups']:.0f}",
                 f"{c.usage['axons_in']:,.0f}", f"{c.usage['axons_out']:,.0f}",
                 f"{100 * pc['util_synmem'][c.index]:.1f}",
                 f"{pc['synapses'][c.index]:,.0f}", f"{pc['msgs_in'][c.index]:,.1f}",
                 f"{pc['spikes_out'][c.index]:,.1f}", f"{pc['synops'][c.index]:,.0f}",
                 ",".join(sorted({f.pop.layer for f in c.fragments}))) for c in m.cores]
        out += _table(head, rows)
    return "\n".join(out) + "\n"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, len(head) - 1) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


# -- plots --------------------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_utilisation(m: Mapping) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    x = np.arange(m.n_cores)
    for k in USAGE:
        ax.step(x, 100 * m.per_core[f"util_{k}"], where="mid", label=RES_LABEL[k], linewidth=1)
    ax.axhline(100, color="black", linestyle="--", linewidth=0.8)
    if m.chips <= 64:
        for c in range(1, m.chips):
            first = np.flatnonzero(m.placement.chip_of == c)
            if first.size and m.placement.method == "greedy":
                ax.axvline(first[0] - 0.5, color="grey", linewidth=0.5)
    ax.set_xlabel("core")
    ax.set_ylabel("% of the per-core limit")
    ax.set_title(f"per-core utilisation, {m.target.name}: {m.n_cores} cores on {m.chips} chip(s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_traffic(m: Mapping, bins: int = 128) -> bytes:
    """Messages per step between cores (cores binned by index) and between chips and the host, log colours."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    tr = m.traffic
    frag_core = np.array([f.core for f in m.split.fragments], dtype=np.int64)
    cs, cd = frag_core[tr.src], frag_core[tr.dst]
    nb = max(1, min(bins, m.n_cores))
    per_bin = max(1, math.ceil(m.n_cores / nb))
    core_m = np.zeros((nb, nb))
    np.add.at(core_m, (cs // per_bin, cd // per_bin), tr.msgs)
    k = max(m.chips, 1)
    chip_m = np.zeros((k + 1, k + 1))  # the last row and column: the host
    chip_of = m.placement.chip_of
    np.add.at(chip_m, (chip_of[cs], chip_of[cd]), tr.msgs)
    frag_chip = chip_of[frag_core] if frag_core.size else frag_core
    np.add.at(chip_m, (np.full(frag_chip.size, k), frag_chip), tr.host_in)
    np.add.at(chip_m, (frag_chip, np.full(frag_chip.size, k)), tr.host_out)
    fig = Figure(figsize=(11, 4.8))
    for i, (mat, title, label) in enumerate(((core_m, f"cores ({per_bin} per cell)", "core"),
                                             (chip_m, "chips and the host (last)", "chip"))):
        ax = fig.add_subplot(1, 2, i + 1)
        pos = mat[mat > 0]
        norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if pos.size and pos.max() > pos.min() else None
        im = ax.imshow(np.where(mat > 0, mat, np.nan), cmap="viridis", norm=norm, interpolation="nearest")
        if not pos.size:
            ax.text(0.5, 0.5, "no messages", transform=ax.transAxes, ha="center", va="center")
        if label == "chip" and k <= 40:  # name the host's row and column
            ticks = np.arange(k + 1)
            names = [str(c) for c in range(k)] + ["host"]
            ax.set_xticks(ticks, names, fontsize=7, rotation=90)
            ax.set_yticks(ticks, names, fontsize=7)
        ax.set_title(f"messages per step between {title}", fontsize=10)
        ax.set_xlabel(f"destination {label}")
        ax.set_ylabel(f"source {label}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _png(fig)


def plot_energy(m: Mapping, top: int = 40) -> bytes:
    from matplotlib.figure import Figure

    items = sorted(m.energy["per_layer_step_pj"].items(), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > top:
        items = items[:top - 1] + [(f"{len(items) - top + 1} other layers", sum(v for _, v in items[top - 1:]))]
    items = items[::-1]
    fig = Figure(figsize=(9, max(3.0, 0.22 * len(items) + 1.2)))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(items)), [v / 1e6 for _, v in items], color="tab:blue")
    ax.set_yticks(np.arange(len(items)), [n for n, _ in items], fontsize=7)
    ax.set_xlabel("dynamic energy per step (uJ)")
    ax.set_title(f"energy per layer ({m.target.name}); static {m.energy['static_step_pj'] / 1e6:,.3f} uJ per step "
                 f"on {m.chips} chip(s)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# -- HTML ---------------------------------------------------------------------------------------------------
def budget_html(m: Mapping, max_core_rows: int = 2000) -> str:
    e = html.escape
    t = m.target
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>spikecc budget</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}"
             ".bad{color:#b00}img{max-width:100%}", "</style></head><body>",
             f"<h1>Does it fit on {e(t.name)}?</h1>", "<pre>" + e(budget_text(m, per_core=False)) + "</pre>"]
    if m.violations:
        parts.append("<h2 class='bad'>Violations</h2><ul>"
                     + "".join(f"<li class='bad'>{e(v.message())}</li>" for v in m.violations) + "</ul>")
    parts += ["<h2>Per-core utilisation</h2><img src='budget_utilisation.png' alt='per-core utilisation'>",
              "<h2>Traffic</h2><img src='budget_traffic.png' alt='traffic heat map'>",
              "<h2>Energy per layer</h2><img src='budget_energy.png' alt='energy per layer'>",
              "<h2>Per core</h2>"]
    head = ("core", "chip", *(RES_LABEL[k] + " %" for k in USAGE), "synapses", "spikes in/step", "spikes out/step",
            "synops/step", "layers")
    pc = m.per_core
    rows = []
    for c in m.cores[:max_core_rows]:
        i = c.index
        util = [f"{100 * pc[f'util_{k}'][i]:.1f}" for k in USAGE]
        cls = " class='bad'" if any(pc[f"util_{k}"][i] > 1 for k in USAGE) else ""
        cells = [str(i), str(c.chip), *util, f"{pc['synapses'][i]:,.0f}", f"{pc['msgs_in'][i]:,.1f}",
                 f"{pc['spikes_out'][i]:,.1f}", f"{pc['synops'][i]:,.0f}",
                 ", ".join(sorted({f.pop.layer for f in c.fragments}))]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>")
    parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")
    if m.n_cores > max_core_rows:
        parts.append(f"<p>{m.n_cores - max_core_rows:,} more cores in budget.txt and budget.json.</p>")
    parts.append("<h2>Target figures</h2><table><tr><th>figure</th><th>value</th><th>confidence</th>"
                 "<th>source</th></tr>"
                 + "".join(f"<tr><td>{e(k)}</td><td>{f.value:g}</td><td>{e(f.confidence)}</td>"
                           f"<td style='text-align:left'>{e(f.source)}</td></tr>" for k, f in sorted(t.figures.items()))
                 + "</table></body></html>")
    return "\n".join(parts) + "\n"


def budget_files(m: Mapping) -> dict[str, bytes]:
    return {
        "budget.json": (json.dumps(budget_json(m), indent=1, sort_keys=True) + "\n").encode(),
        "budget.txt": budget_text(m).encode(),
        "budget.html": budget_html(m).encode(),
        "budget_utilisation.png": plot_utilisation(m),
        "budget_traffic.png": plot_traffic(m),
        "budget_energy.png": plot_energy(m),
    }


def write_budget(m: Mapping, out_dir: str | Path) -> list[Path]:
    """Write budget.json, budget.txt, budget.html and its PNGs into `out_dir` (which must exist: a build
    directory being written, whose driver makes the whole directory atomic). Returns the paths written."""
    out_dir = Path(out_dir)
    written = []
    for name, data in budget_files(m).items():
        (out_dir / name).write_bytes(data)
        written.append(out_dir / name)
    return written
