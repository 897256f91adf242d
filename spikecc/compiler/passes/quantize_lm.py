"""quantize (language models): the neuro-core part to Loihi 2 fixed point; the host part stays float.

Input: a language model after map-neurons and message-widths (float form), and the activity of a short
calibration prompt, which the build driver measures with the float graph: `calibration` maps each calibrated
HostToCore boundary, and each neuro-core neuron or relay, to the largest |value| it carried (for a neuron: the
largest |synaptic input| of one step). Per node:

    HostToCore (graded)  scale = max |x| / (2**(bits-1) - 1) on the calibration prompt: the prompt's largest value
                         is the top of the payload range (larger values later are clipped, and counted)
    SpikeRouter (graded amplitudes)  payloads round(alpha_t / unit), unit = max alpha / (2**(bits-1) - 1)
    LoihiLIF             spikecc.compiler.passes.quantize.quantize_neuron: the state scale S bounded by the
                         16-bit a_in, the 24-bit u and the 17-bit threshold, weights on the 8-bit grid
    LoihiRelay           S = 0.97 (2**23 - 1) / bound (the graded spike fits 24 bits), weights
                         round(S W unit / 2**e); the CoreToHost after it reads one unit as 1 / S
    LoihiElastic         S = 0.97 (2**23 - 1) / B, B the bound on |m| (m_t <= 2 mult_t m_{t-1} + |x| + |bias|, over
                         the T steps of a token); mult -> round(4096 mult), thresholds and bias -> round(S .)

    The input bound of a neuron or relay is the smaller of the worst case (every input at its extreme in one
    step, which no input can exceed) and HEADROOM times the largest input the calibration run saw. Worst cases
    of graded inputs are far above what occurs (128 LayerNorm outputs never all peak with the signs that add
    up), and a bound that is too loose costs the state its resolution; the calibrated bound keeps HEADROOM x
    margin, and the report measures the layer's error, spikes and headroom on the calibration text.
    every LoihiDense     weight_exp puts its largest |W S unit| in the top octave of the weight grid; the
                         int32 sum of Lava's Dense must not wrap: sum |W_int| * max payload < 2**31 (a layer
                         that could wrap is refused, naming it, with what to change)

Worst-case bounds make overflow impossible for any input; the price is resolution, which the build's
quantization report measures (SQNR per layer on the calibration prompt, spike agreement per spiking layer).
Every node gets its `format` (spikecc.ir.formats): fixed on the neuro-cores and HostToCore, float on the host.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from spikecc.compiler.passes.analysis import Analysis
from spikecc.compiler.passes.quantize import (
    ROUNDING_MARGIN,
    _worst_input,
    dense_inputs,
    quantize_neuron,
    quantize_synapses,
)
from spikecc.errors import BackendError, SpikeccWarning
from spikecc.ir.formats import FLOAT, fixed_format
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF
from spikecc.ir.loihi_spec import DECAY_UNITY, UV_BITS, UV_MAX, WEIGHT_BITS, WEIGHT_EXP_RANGE
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, LoihiElastic, LoihiRelay, SpikeRouter

INT32_MAX = 2**31 - 1
HEADROOM = 2.0  # calibrated bounds: twice the largest synaptic input seen on the calibration text


def quantize_lm(g: Graph, a: Analysis | None = None, calibration: dict[str, float] | None = None,
                weight_bits: int = 8) -> Graph:
    """A new graph whose neuro-core nodes hold Loihi 2 integers (module docstring). Warnings (weights rounded to
    zero) are given once the layer passed the checks: a refused layer gets its error alone."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = _quantize(g, calibration or {}, weight_bits)
    for w in seen:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out


def _quantize(g: Graph, calibration: dict[str, float], weight_bits: int) -> Graph:
    out = g.copy()
    for name, op in out.nodes.items():
        if isinstance(op, HostToCore) and op.bits > 0 and out.annotation(name, "calibrate"):
            top = float(calibration.get(name, 0.0))
            pmax = 2 ** (op.bits - 1) - 1
            out.nodes[name] = HostToCore(bits=op.bits, scale=top / pmax if top > 0 else 1.0,
                                         metadata=dict(op.metadata or {}))
            out.annotate(name, calibrated_max=top)
        if isinstance(op, HostToCore):
            out.annotate(name, format=fixed_format(message_bits=op.bits))
        if isinstance(op, SpikeRouter) and op.graded:
            _quantize_payloads(out, name, op)
    dense_into: dict[str, list[str]] = {}
    for e in out.edges:
        if isinstance(out.nodes[e.src], LoihiDense):
            dense_into.setdefault(e.dst, []).append(e.src)
    floats = {d: np.asarray(out.nodes[d].weight, dtype=np.float64) for ds in dense_into.values() for d in ds}
    for name, op in list(out.nodes.items()):
        dense = dense_into.get(name, [])
        seen = float(calibration.get(name, 0.0))
        bound = HEADROOM * seen if seen > 0 else None
        if isinstance(op, LoihiLIF):
            quantize_neuron(out, name, op, dense, weight_bits, in_bound=bound)
        elif isinstance(op, LoihiRelay):
            _quantize_relay(out, name, op, dense, weight_bits, bound)
        elif isinstance(op, LoihiElastic):
            _quantize_elastic(out, name, op, dense, weight_bits, bound)
        if bound is not None and isinstance(op, (LoihiLIF, LoihiRelay, LoihiElastic)):
            out.annotate(name, calibrated_input_max=seen)
    for name, op in out.nodes.items():
        if isinstance(op, LoihiDense):
            _check_int32(out, name, weight_bits)
            _check_rows(name, floats.get(name), np.asarray(op.weight), weight_bits)
        if out.annotation(name, "partition") == "host" and not isinstance(op, HostToCore):
            out.annotate(name, format={"kind": FLOAT})
    out.metadata["quantization"] = {"weight_bits": int(weight_bits)}
    return out


def _quantize_payloads(g: Graph, name: str, op: SpikeRouter) -> None:
    """Graded amplitudes (SpikeRouter `payloads`): p_t = round(alpha_t / unit) with unit = max alpha /
    (2**(bits-1) - 1), the largest amplitude on the top of the signed payload range; the synapses it feeds take
    `unit` into their weights (quantize.dense_inputs)."""
    alpha = np.asarray(op.payloads, dtype=np.float64)
    top = 2 ** (op.payload_bits - 1) - 1
    unit = float(np.abs(alpha).max()) / top
    q = np.clip(np.rint(alpha / unit), -top, top).astype(np.int64)
    g.nodes[name] = SpikeRouter(size=op.size, banks=op.banks, split=op.split, payloads=q, payload_bits=op.payload_bits,
                                metadata=dict(op.metadata or {}))
    g.annotate(name, payload_unit=unit, format=fixed_format(message_bits=op.payload_bits),
               quant_error={"payload": float(np.abs(q * unit - alpha).max())})


def _state_scale(name: str, bound: float) -> float:
    if bound <= 0:
        return 1.0
    return ROUNDING_MARGIN * UV_MAX / bound


def _worst_bound(rows: list) -> np.ndarray | float:
    return sum(_worst_input(w, pmax, nonneg) for _, _, _, w, pmax, nonneg, _ in rows) if rows else 0.0


def _row_scales(rows: list, s_max: float, weight_bits: int) -> np.ndarray:
    """One state scale per neuron (output channel), so that each neuron's largest incoming weight lands on the
    top of the weight grid: S_i = hi 2**e / m_i with m_i its largest |weight| (per payload unit) over all
    incoming synapses and e the one weight exponent of the layer, the largest with every S_i <= s_max (the
    overflow bound). Neurons whose weights are all tiny (m_i < max m / 256) are held at s_max instead of
    pulling e down for everyone. With one scale per layer, a row whose weights are 10x smaller than the
    layer's largest would use 3 bits fewer; per-channel scales cost nothing on Loihi (the host reads each
    relay output with its own unit; a neuron's thresholds are per neuron)."""
    from spikecc.compiler.passes.quantize import weight_grid

    n = rows[0][3].shape[0] if rows else 0
    m = np.zeros(n)
    hi = np.inf
    for _, _, _, w, _, _, _ in rows:
        if w.size:
            m = np.maximum(m, np.abs(w).max(axis=1))
            hi = min(hi, weight_grid(weight_bits, bool(w.min() < 0 < w.max()))[2])
    if not np.any(m > 0):
        return np.full(n, s_max)
    floor = max(float(m[m > 0].min()), float(m.max()) / 256)
    e = int(np.clip(math.floor(math.log2(s_max * floor / hi)), *WEIGHT_EXP_RANGE))
    return np.where(m > 0, np.minimum(s_max, hi * 2.0**e / np.where(m > 0, m, 1.0)), s_max)


def _quantize_relay(g: Graph, name: str, op: LoihiRelay, dense: list[str], weight_bits: int,
                    in_bound: float | None) -> None:
    rows = dense_inputs(g, dense)
    bound = float(np.max(_worst_bound(rows), initial=0.0))
    if in_bound is not None:
        bound = min(bound, in_bound)
    s = _row_scales(rows, _state_scale(name, bound), weight_bits)
    quantize_synapses(g, rows, s, weight_bits, 0)
    g.annotate(name, format=fixed_format(state_bits=UV_BITS, message_bits=op.message_bits),
               v_scale=s.tolist() if np.ptp(s) else float(s[0]))
    for e in g.out_edges(name):
        if isinstance(g.nodes[e.dst], CoreToHost):
            g.nodes[e.dst].scales = np.ones(1)
            g.nodes[e.dst].units = 1.0 / s


def _quantize_elastic(g: Graph, name: str, op: LoihiElastic, dense: list[str], weight_bits: int,
                      in_bound: float | None) -> None:
    rows = dense_inputs(g, dense)
    bias = np.abs(np.asarray(op.bias, dtype=np.float64))
    drive = float(np.max(_worst_bound(rows) + bias, initial=0.0))
    if in_bound is not None:  # the calibrated bound is of x + bias, the synaptic input with its bias
        drive = min(drive, in_bound)
    mult = np.asarray(op.mult, dtype=np.float64)
    bound, worst = 0.0, 0.0
    for t in range(int(op.T)):  # m_t <= 2 mult_t m_{t-1} + drive, restarting each token (mult_0 = 0)
        bound = 2.0 * mult[t] * bound + drive
        worst = max(worst, bound)
    s = _row_scales(rows, _state_scale(name, max(worst, float(np.max(np.abs(op.hi))))), weight_bits)
    quantize_synapses(g, rows, s, weight_bits, 0)
    mult_q = np.rint(mult * DECAY_UNITY).astype(np.int64)
    hi, lo = np.asarray(op.hi, dtype=np.float64), np.asarray(op.lo, dtype=np.float64)
    per_neuron = bool(np.ptp(s))

    def thresholds(th: np.ndarray) -> np.ndarray:
        q = np.rint(th.reshape(-1, 1) * s[None, :]) if per_neuron else np.rint(th * s[0])
        return np.clip(q, -UV_MAX, UV_MAX).astype(np.int64)

    hi_q, lo_q = thresholds(hi), thresholds(lo)
    bias_q = np.clip(np.rint(np.asarray(op.bias, dtype=np.float64) * s), -UV_MAX, UV_MAX).astype(np.int64)
    g.nodes[name] = LoihiElastic(T=op.T, mult=mult_q, hi=hi_q, lo=lo_q, bias=bias_q, metadata=dict(op.metadata or {}))
    back = hi_q / (s[None, :] if per_neuron else s[0])
    errors = {"mult": float(np.abs(mult_q / DECAY_UNITY - mult).max(initial=0.0)),
              "threshold": float(np.abs(back - (hi.reshape(-1, 1) if per_neuron else hi)).max(initial=0.0)),
              "bias": float(np.abs(bias_q / s - np.asarray(op.bias)).max(initial=0.0))}
    g.annotate(name, format=fixed_format(state_bits=UV_BITS), v_scale=s.tolist() if per_neuron else float(s[0]),
               quant_error=errors)


def _check_rows(name: str, before: np.ndarray | None, after: np.ndarray, weight_bits: int) -> None:
    """A neuron whose every incoming weight rounds to 0 has lost its input. At the full 8 bits the layer's weights
    span more than one exponent can hold (an outlier sets the exponent for all): refused, naming the layer. With
    fewer weight bits it is what those bits give (a sweep measures it): a warning that says so."""
    if before is None or not before.size:
        return
    lost = np.any(before != 0, axis=1) & ~np.any(after != 0, axis=1)
    if not lost.any():
        return
    top = float(np.abs(before).max())
    typical = float(np.median(np.abs(before[before != 0])))
    what = f"layer '{name}': all incoming weights of {int(lost.sum())} of {lost.size} neurons round to 0 in fixed point"
    if weight_bits < WEIGHT_BITS:
        warnings.warn(f"{what} at {weight_bits}-bit weights (those neurons lose their input); give more "
                      "--weight-bits to keep them", SpikeccWarning, stacklevel=2)
        return
    raise BackendError(f"{what}: its largest |weight| ({top:.3g}) is {top / typical:.3g}x the median ({typical:.3g}), "
                       "more than one weight exponent can span (an overflow of every exponent the others could "
                       "use); check the layer's weights for outliers")


def _check_int32(g: Graph, name: str, weight_bits: int) -> None:
    """Lava's Dense sums W s in int32 before it shifts by weight_exp: the largest possible sum must not wrap."""
    from spikecc.compiler.passes.quantize import _source_payload

    op = g.nodes[name]
    (src,) = g.predecessors(name)
    _, pmax, _ = _source_payload(g, src, g.annotations)
    worst = float(np.abs(np.asarray(op.weight, dtype=np.float64)).sum(axis=1).max(initial=0.0)) * pmax
    if worst > INT32_MAX:
        bits = int(math.log2(worst / INT32_MAX)) + 1
        raise BackendError(f"layer '{name}': its largest possible input sum ({worst:.3g}) overflows the 32-bit "
                           f"accumulator of a Loihi synapse; send its input with {bits} fewer message bits "
                           "(--message-bits) or fewer weight bits (--weight-bits)")
