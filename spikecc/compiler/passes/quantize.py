"""Quantize a Loihi-form graph to Loihi 2 fixed point (the integer fields Lava's fixed_pt models take).

`quantize_for_loihi(g, weight_bits=8)` returns a new graph whose Loihi ops hold integers (see the fixed
form in spikecc.ir.loihi_ops) and annotates every Loihi node and Input with its number format
(`format`, spikecc.ir.formats) plus its scales and quantization errors. The graph must be lowered first.

Scales. Each neuron layer gets one voltage scale S (integer state units per float unit):

    v_int ~ S * v_float        (annotation v_scale; v_float = v_int / v_scale + v_offset)
    u_int ~ S * u_float        (u_scale)
    vth   = round(S * vth_float / 2**6)            (Lava compares v with vth << 6)
    bias  = bias_mant << bias_exp ~ S * bias_float  (13-bit mantissa, bias_exp in [0, 7], the smallest that fits)
    v_init = clip(round(S * v_init_float), -(2**23 - 1), 2**23 - 1)   (like v; S is not lowered for it)
    u_init = round(S * u_init_float)                                   (like u; S keeps it from wrapping)
    du    = round(4096 * du_float) - 1, dv = round(4096 * dv_float), both clipped to [0, 4095]
    synapse k into it: u gets (w_int @ s) * 2**e_k << 6 per step, so
    w_int = round_grid(S * W_k * x_scale / 2**(6 + e_k))  (x_scale: float value of one input payload unit)

S is the largest value under which, in the worst case (every input at its maximum in one step, with the
signs that add up), the synaptic input fits the 16 bits Lava annotates a_in with (S * in_max / 64 < 2**15),
u cannot wrap (S * (in_max / du + |u_init|) < 2**23: u is its driven part plus u_init's free decay), the
threshold fits 17 bits (vth <= 131071) and the bias fits 4095 << 7. A larger S only buys precision (finer
threshold, bias, decay rounding), so the largest safe one is taken (then lowered by less than 2x so that the
dominant synapse layer's largest weight lands exactly on the top of the weight grid). Each synapse layer
then gets the weight exponent e_k (in [-8, 7]) that maps its largest |weight| into the top octave of the
weight range: 255 for one-signed weights, 254 (even values only, Lava's MIXED sign mode) for mixed signs;
with weight_bits < 8 the grid is 2**(8 - weight_bits) (times 2 for mixed signs), which Lava's
truncate_weights then leaves unchanged.

Inputs. A binary Input sends 0/1 spikes. A real-valued Input becomes an `input_bits` graded message:
payload q = round(x / input_scale) with input_scale = input_range / (2**(input_bits-1) - 1) (annotated on
the Input; `quantize_inputs` does the conversion). A graded(bits, scale) Input keeps its bits and scale.
A Dense feeding an Output directly gets an output scale instead (annotation output_scale: float per unit).

Precision lost (annotated per node so a user can see where):
- weights: 8 bits relative to the layer's largest |weight| (7 magnitude bits for mixed signs); max abs error
  annotated as quant_error (in the lowered float graph's units) and quant_rel_error;
- weight_exp < 0 floors the summed input each step (up to one unit of a, 64 units of v, per step);
- decay: du, dv to 1/4096; du = 0 (no decay) becomes 4095/4096 (Lava's u decay has an offset of 1); dv = 1
  keeps |v|/4096 of the old v; Lava truncates each decay product toward zero (up to one unit per step);
- thresholds to 64 units of v (17-bit mantissa); biases to 2**bias_exp units;
- v_init, u_init to one unit of v, u (quant_error "v_init", "u_init"; clipping included: a v_init beyond
  24 bits, which only a 1 - dv close to 0 gives, is clipped rather than lowering S for the whole layer).
  They were solved by lower_for_loihi with the float du, dv and bias, so after the input_delay bias-only
  steps, run with the quantized du, dv, bias and Lava's truncating decays, the state misses the NIR initial
  state by a few units of v per step (up to 2**(bias_exp-1) per step from the bias): on examples/networks
  by at most 74 units, under 1e-4 of the threshold;
- real inputs to input_bits; a readout (LI) gets vth = 131071 (the largest) and a scale S that keeps its worst-case
  |v| below 131071 << 6, so it never fires (an integrator readout, dv = 0, has no such bound);
- state ranges: u wraps and v saturates beyond 2**23 - 1; S is chosen so this cannot happen for u under
  the worst-case input bound, v may saturate far below threshold (strong inhibition).
"""

from __future__ import annotations

import math
import warnings

import nir
import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.errors import BackendError, SpikeccWarning
from spikecc.ir.formats import fixed_format, is_fixed, is_fixed_node
from spikecc.ir.graph import Graph
from spikecc.ir.inputs import check_input_values
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LOIHI_OPS, LoihiDense, LoihiTernaryLIF
from spikecc.ir.loihi_spec import (
    A_IN_MAX,
    ACT_SHIFT,
    BIAS_EXP_MAX,
    BIAS_MANT_MAX,
    DECAY_MAX,
    UV_BITS,
    UV_MAX,
    VTH_MAX,
    VTH_SHIFT,
    WEIGHT_EXP_RANGE,
)

ZEROED_WARN_SHARE = 0.25  # warn when more than this share of a layer's non-zero weights round to 0
ROUNDING_MARGIN = 0.97  # the worst-case input bound is met after weights round up (<= 1/128 each, relative)


def weight_grid(weight_bits: int, mixed: bool) -> tuple[int, int, int]:
    """(step, lo, hi) of the integer weights Lava keeps unchanged for the sign mode (weightutils.py)."""
    step = 2 ** (8 - weight_bits + int(mixed))
    return (step, -256, 256 - step) if mixed else (step, 0, 256 - step)


def quantize_weights(w: np.ndarray, unit: float, weight_bits: int) -> np.ndarray:
    """round(w / unit) on Lava's weight grid for the sign mode of w (negated grid when all w <= 0)."""
    mixed = bool(w.min() < 0 < w.max())
    inhibitory = not mixed and w.min() < 0
    step, lo, hi = weight_grid(weight_bits, mixed)
    x = -w if inhibitory else w
    q = np.clip(np.rint(x / unit / step) * step, lo, hi).astype(np.int16)  # [-256, 255]: 16 bits hold it
    return -q if inhibitory else q


def _source_payload(g: Graph, src: str, ann: dict) -> tuple[float, float, bool]:
    """(value of one payload unit, max |payload|, payload non-negative) for messages leaving `src`."""
    from spikecc.ir.neurocore_ops import HostToCore, LoihiElastic, SpikeRouter

    op = g.nodes[src]
    if isinstance(op, nir.Input):
        scale = ann.get(src, {}).get("input_scale", 1.0)
        bits = ann.get(src, {}).get("input_bits", 0)
        if bits == 0:
            return 1.0, 1.0, True
        return float(scale), float(2 ** (bits - 1) - 1), False
    if isinstance(op, HostToCore):
        if op.bits == 0:
            return 1.0, 1.0, True
        return float(op.scale), float(2 ** (op.bits - 1) - 1), False
    if isinstance(op, SpikeRouter) and op.graded:  # graded amplitudes: integer payloads once quantized
        unit = ann.get(src, {}).get("payload_unit")
        return (float(unit), float(np.abs(op.payloads).max()), False) if unit else \
            (1.0, float(np.abs(op.payloads).max()), False)
    if isinstance(op, (LoihiTernaryLIF, LoihiElastic)) or (isinstance(op, SpikeRouter) and not op.split):
        return 1.0, 1.0, False
    return 1.0, 1.0, True


def _worst_input(w: np.ndarray, pmax: float, nonneg: bool) -> np.ndarray:
    """Per output neuron, the largest |sum| one step of input can give (all inputs at their extremes)."""
    if nonneg:
        return np.maximum(np.clip(w, 0, None).sum(axis=1), np.clip(-w, 0, None).sum(axis=1)) * pmax
    return np.abs(w).sum(axis=1) * pmax


def quantize_for_loihi(g: Graph, weight_bits: int = 8, input_bits: int = 8, input_range: float = 1.0,
                       analysis: Analysis | None = None) -> Graph:
    """A new graph with Loihi 2 fixed-point parameters; see the module docstring for the rules. The graph must be
    in Loihi form already (lower_for_loihi): quantizing never lowers implicitly."""
    if not 1 <= weight_bits <= 8:
        raise ValueError(f"weight_bits must be in 1..8, got {weight_bits}")
    if is_fixed(g):
        return g.copy()
    for name, op in g.nodes.items():
        if not isinstance(op, (nir.Input, nir.Output, *LOIHI_OPS)):
            raise BackendError(f"node '{name}': {type(op).__name__} is not in Loihi form; lower the graph "
                               "(lower_for_loihi) before quantizing it")
    out = g.copy()
    signals = analysis_of(g, analysis).signals

    # Inputs: payload units.
    for name in out.inputs():
        sig = signals[name]
        if sig.kind == "binary":
            out.annotate(name, input_bits=0, input_scale=1.0)
        elif sig.kind == "graded" and sig.bits > 0:
            out.annotate(name, input_bits=int(sig.bits), input_scale=float(sig.scale))
        else:
            out.annotate(name, input_bits=int(input_bits), input_scale=float(input_range) / (2 ** (input_bits - 1) - 1))
        out.annotate(name, format=fixed_format(message_bits=out.annotations[name]["input_bits"]))

    dense_into: dict[str, list[str]] = {}
    for e in out.edges:
        if isinstance(out.nodes[e.src], LoihiDense):
            dense_into.setdefault(e.dst, []).append(e.src)

    for name, op in list(out.nodes.items()):
        if isinstance(op, LOIHI_NEURON_OPS):
            quantize_neuron(out, name, op, dense_into.get(name, []), weight_bits)
        elif isinstance(op, nir.Output) and dense_into.get(name):
            _quantize_output(out, name, dense_into[name], weight_bits)
    for name, op in out.nodes.items():
        if isinstance(op, LoihiDense) and not is_fixed_node(out, name):
            raise BackendError(f"node '{name}': LoihiDense feeds neither a Loihi neuron nor an Output, so it has no "
                               "scale to quantize to; connect it to a neuron")
    out.metadata["quantization"] = {"weight_bits": int(weight_bits), "input_bits": int(input_bits),
                                    "input_range": float(input_range)}
    return out


def dense_inputs(g: Graph, dense: list[str]) -> list:
    """Per incoming Dense: (name, op, source, W per payload unit, pmax, nonneg, payload unit)."""
    rows = []
    for d in dense:
        op: LoihiDense = g.nodes[d]
        src = g.predecessors(d)[0]
        unit, pmax, nonneg = _source_payload(g, src, g.annotations)
        w = np.asarray(op.weight, dtype=np.float64) * 2.0 ** int(op.weight_exp)
        rows.append((d, op, src, w * unit, pmax, nonneg, unit))
    return rows


def quantize_neuron(g: Graph, name: str, op, dense: list[str], weight_bits: int, in_bound: float | None = None) \
        -> None:
    """Fixed-point fields of one Loihi neuron and the synapses into it (module docstring). `in_bound` replaces
    the worst case of one step's synaptic input (every input at its extreme) by a given bound, e.g. a calibrated
    one (spikecc.compiler.passes.quantize_lm)."""
    n = int(np.size(op.du))
    du, dv = np.asarray(op.du, dtype=np.float64), np.asarray(op.dv, dtype=np.float64)
    bias = np.asarray(op.bias_mant, dtype=np.float64) * 2.0 ** np.asarray(op.bias_exp, dtype=np.float64)
    if isinstance(op, LoihiTernaryLIF):
        ths = {"vth_hi": np.asarray(op.vth_hi, dtype=np.float64), "vth_lo": np.asarray(op.vth_lo, dtype=np.float64)}
    else:
        ths = {"vth": np.asarray(op.vth, dtype=np.float64)}
        if np.any(ths["vth"] < 0):
            raise BackendError(f"node '{name}': threshold {ths['vth'].min():g} < 0; Loihi 2's LIF threshold is "
                               "unsigned; shift v (v_reset, v_leak) so that the threshold is positive")
    rows = dense_inputs(g, dense)
    in_max = np.zeros(n)
    for _, _, _, w, pmax, nonneg, _ in rows:
        in_max += _worst_input(w, pmax, nonneg)

    # The largest scale S under every range limit (see the module docstring).
    limits = []
    peak_in = float(in_max.max()) if n else 0.0
    if in_bound is not None and in_bound > 0:
        peak_in = min(peak_in, float(in_bound))
    u_init = np.asarray(op.u_init, dtype=np.float64)
    du_min = float(du.min()) if np.all(du > 0) else 1.0 / 4096
    if peak_in > 0:
        # ROUNDING_MARGIN: rounding each weight to the grid may add up to half a grid step per synapse
        limits.append(ROUNDING_MARGIN * A_IN_MAX * 2**ACT_SHIFT / peak_in)
    u0 = float(np.abs(u_init).max(initial=0.0))
    if peak_in > 0 or u0 > 0:  # |u| <= in_max / du (driven part) + |u_init| (its free decay)
        limits.append(ROUNDING_MARGIN * UV_MAX * du_min / (peak_in + du_min * u0))
    if "vth" in ths:
        finite = ths["vth"][np.isfinite(ths["vth"])]
        if finite.size and finite.max() > 0:
            limits.append(VTH_MAX * 2**VTH_SHIFT / finite.max())
        dv_min = float(dv.min()) if dv.size else 0.0
        if finite.size < ths["vth"].size and dv_min > 0:
            # A readout (vth = inf) must never fire: its |v| <= (|u| + |bias|) / dv + |v_init| has to stay
            # below the largest threshold Loihi can hold, VTH_MAX << 6 (else it spikes and resets).
            v_bound = (peak_in / du_min + u0 + float(np.abs(bias).max(initial=0.0))) / dv_min \
                + float(np.abs(np.asarray(op.v_init, dtype=np.float64)).max(initial=0.0))
            if v_bound > 0:
                limits.append(ROUNDING_MARGIN * (VTH_MAX * 2**VTH_SHIFT - 1) / v_bound)
    else:
        peak = max(np.abs(ths["vth_hi"]).max(), np.abs(ths["vth_lo"]).max())
        if peak > 0:
            limits.append((UV_MAX - 2**VTH_SHIFT) / peak)
    if np.abs(bias).max(initial=0) > 0:
        limits.append(BIAS_MANT_MAX * 2**BIAS_EXP_MAX / np.abs(bias).max())
    s = min(limits) if limits else float(2**VTH_SHIFT)
    # Weight exponents are powers of two, so the largest weight would land anywhere in (hi/2, hi]: lower S
    # (by less than 2x; the state keeps far more precision than the weights) so that the dominant synapse
    # layer's largest weight lands exactly on the top of the grid, a full extra bit for its weights.
    if rows:
        w = max(rows, key=lambda r: float(_worst_input(r[3], r[4], r[5]).max(initial=0)))[3]
        m = float(np.abs(w).max()) if w.size else 0.0
        if m > 0:
            hi = weight_grid(weight_bits, bool(w.min() < 0 < w.max()))[2]
            e = math.floor(math.log2(s * m / (2**ACT_SHIFT * hi)) + 1e-12)
            if WEIGHT_EXP_RANGE[0] <= e <= WEIGHT_EXP_RANGE[1]:
                s = hi * 2.0 ** (ACT_SHIFT + e) / m

    # Neuron fields.
    du_q = np.clip(np.rint(du * 4096) - 1, 0, DECAY_MAX).astype(np.int64)
    dv_q = np.clip(np.rint(dv * 4096), 0, DECAY_MAX).astype(np.int64)
    target = s * bias
    exp = np.zeros(n, dtype=np.int64)
    for k in range(1, BIAS_EXP_MAX + 1):  # smallest exponent whose mantissa fits 13 bits
        exp = np.where(np.abs(np.rint(target / 2.0**exp)) > BIAS_MANT_MAX, k, exp)
    mant = np.clip(np.rint(target / 2.0**exp), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int64)
    v_init = np.asarray(op.v_init, dtype=np.float64)
    v_init_q = np.clip(np.rint(s * v_init), -UV_MAX, UV_MAX).astype(np.int64)  # the state's own scale
    u_init_q = np.clip(np.rint(s * u_init), -UV_MAX, UV_MAX).astype(np.int64)  # (S keeps it in range)
    fields = dict(du=du_q, dv=dv_q, bias_mant=mant, bias_exp=exp, v_init=v_init_q, u_init=u_init_q)
    errors = {"du": float(np.abs((du_q + 1) / 4096 - du).max()), "dv": float(np.abs(dv_q / 4096 - dv).max()),
              "bias": float(np.abs(mant * 2.0**exp / s - bias).max()),
              "v_init": float(np.abs(v_init_q / s - v_init).max(initial=0.0)),
              "u_init": float(np.abs(u_init_q / s - u_init).max(initial=0.0))}
    for k, th in ths.items():
        if k == "vth":
            q = np.where(np.isfinite(th), np.rint(s * np.where(np.isfinite(th), th, 0) / 2**VTH_SHIFT), VTH_MAX)
            q = np.clip(q, 0, VTH_MAX).astype(np.int64)
        else:
            q = np.clip(np.rint(s * th / 2**VTH_SHIFT), -(UV_MAX >> VTH_SHIFT), UV_MAX >> VTH_SHIFT).astype(np.int64)
        fin = np.isfinite(th)
        errors[k] = float(np.abs(q[fin] * 2**VTH_SHIFT / s - th[fin]).max()) if fin.any() else 0.0
        fields[k] = q
    g.nodes[name] = type(op)(**fields, metadata=dict(op.metadata or {}))
    g.annotate(name, format=fixed_format(state_bits=UV_BITS), v_scale=float(s), u_scale=float(s), quant_error=errors)

    quantize_synapses(g, rows, s, weight_bits, ACT_SHIFT)


def quantize_synapses(g: Graph, rows: list, s: float | np.ndarray, weight_bits: int, shift: int) -> None:
    """The synapses `rows` (from `dense_inputs`) into a neuron whose state has scale `s` (one value, or one per
    neuron: per-output-channel scales) and whose synaptic input is added as a_in << shift: each gets the weight
    exponent that puts its largest |s_i W_ij| in the top octave of the weight grid, and integer weights
    round(s_i W_ij / 2**(shift + e))."""
    for d, dop, src, w, _, _, unit in rows:
        s_rows = np.broadcast_to(np.asarray(s, dtype=np.float64).reshape(-1), (w.shape[0],))
        top = float((s_rows * np.abs(w).max(axis=1)).max()) if w.size else 0.0
        mixed = bool(w.size and w.min() < 0 < w.max())
        _, _, hi = weight_grid(weight_bits, mixed)
        if top > 0:
            e = math.ceil(math.log2(top / (2**shift * hi)) - 1e-12)
            e = int(np.clip(e, *WEIGHT_EXP_RANGE))
        else:
            e = 0
        # float value (per payload unit) of one integer weight unit, per row
        w_unit = (2.0 ** (shift + e) / s_rows)[:, None] if np.ndim(s) else 2.0 ** (shift + e) / float(s)
        wq = quantize_weights(w, w_unit, weight_bits) if w.size else np.zeros(w.shape, dtype=np.int64)
        _set_dense(g, d, dop, src, wq, e, weight_bits, w, w_unit, unit)


def _quantize_output(g: Graph, name: str, dense: list[str], weight_bits: int) -> None:
    """Dense -> Output: no neuron scale; the Output reads a_int, one unit = output_scale."""
    rows = dense_inputs(g, dense)
    m = max((float(np.abs(r[3]).max()) for r in rows if r[3].size), default=0.0)
    unit_out = m / 254 if m > 0 else 1.0
    for d, dop, src, w, _, _, unit in rows:
        wq = quantize_weights(w, unit_out, weight_bits) if w.size else np.zeros(w.shape, dtype=np.int64)
        _set_dense(g, d, dop, src, wq, 0, weight_bits, w, unit_out, unit)
    g.annotate(name, format=fixed_format(), output_scale=float(unit_out))


def _set_dense(g: Graph, d: str, dop: LoihiDense, src: str, wq: np.ndarray, e: int, weight_bits: int,
               w: np.ndarray, w_unit: float | np.ndarray, payload_unit: float) -> None:
    bits = int(dop.num_message_bits)
    if bits > 0 and isinstance(g.nodes[src], nir.Input):
        bits = int(g.annotations[src]["input_bits"]) or bits
    g.nodes[d] = LoihiDense(weight=wq, weight_exp=int(e), num_weight_bits=int(weight_bits), num_message_bits=bits,
                            delay=int(dop.delay), metadata=dict(dop.metadata or {}))
    err = float(np.abs(w - wq * w_unit).max()) / payload_unit if w.size else 0.0
    m = float(np.abs(w).max()) / payload_unit if w.size else 0.0
    nonzero = w != 0
    zeroed = int(np.count_nonzero(nonzero & (wq == 0)))
    scale = np.asarray(w_unit, dtype=np.float64).reshape(-1) / payload_unit
    g.annotate(d, format=fixed_format(weight_bits=weight_bits, message_bits=bits),
               weight_scale=float(scale[0]) if np.all(scale == scale[0]) else scale.tolist(), quant_error=err,
               quant_rel_error=err / m if m > 0 else 0.0, zeroed_weights=zeroed)
    n_nonzero = int(np.count_nonzero(nonzero))
    if n_nonzero and zeroed > ZEROED_WARN_SHARE * n_nonzero:
        median = float(np.median(np.abs(w[nonzero]))) / payload_unit
        warnings.warn(f"layer '{d}': {zeroed} of {n_nonzero} non-zero weights round to 0 in {weight_bits}-bit fixed "
                      f"point, because its largest |weight| ({m:.3g}) is {m / median:.3g}x the median ({median:.3g}) "
                      "and the layer shares one exponent; check the layer for outlier weights", SpikeccWarning,
                      stacklevel=2)


def quantize_inputs(g: Graph, inputs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Real-valued input arrays -> the integer payloads a quantized graph's Inputs expect (see module docstring):
    binary Inputs get their 0/1 spikes, graded ones clip(round(x / input_scale), +-(2**(bits-1) - 1)). Values
    beyond the payload range are clipped, with a SpikeccWarning that counts them; NaN, infinite or complex
    values (and non-0/1 data for binary Inputs) are an InputFileError."""
    names = g.inputs()
    if not isinstance(inputs, dict):
        inputs = {names[0]: inputs}
    out = {}
    for name in names:
        x = check_input_values(g, name, inputs[name]).astype(np.float64)
        bits = int(g.annotation(name, "input_bits", 0))
        if bits == 0:
            out[name] = (x != 0).astype(np.int64)
        else:
            lim = 2 ** (bits - 1) - 1
            scale = float(g.annotation(name, "input_scale"))
            q = np.rint(x / scale)
            clipped = int(np.count_nonzero(np.abs(q) > lim))
            if clipped:
                warnings.warn(f"Input '{name}': {clipped} of {x.size} values lie outside the fixed-point input "
                              f"range +-{lim * scale:g} and were clipped to it; compile with a larger "
                              "--input-range", SpikeccWarning, stacklevel=2)
            out[name] = np.clip(q, -lim, lim).astype(np.int64)
    return out
