"""Extension op for SpikeRWKV: the multi-level spike encoder with spiking flag (paper Sec. 3.3-3.4, Eq. 3-4).

SpikeRWKV (spikecc/models/spikerwkv.py; Zhang, Shen, Wang 2025) feeds every linear inside its RWKV blocks with a
spike-encoded input. NIR has no node that turns a real value into several weighted spike trains, so the encoder is
an extension op; the linear it feeds stays a standard `nir.Linear` (see `MultiLevelEncoder` for how its weight is
laid out so that it sees exactly the reference model's decoded value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikecc.ir.ops import ExtensionOp, register_op
from spikecc.ir.signals import BINARY, Signal, graded, ternary


@register_op
@dataclass(eq=False)
class MultiLevelEncoder(ExtensionOp):
    """Multi-level spike encoding of a real vector x (C channels) with spiking flag, one token per simulator step.

    Paper Eq. 3 with Eq. 4: a value is carried by l levels of binary spikes d_i^j (level i = 1..l, encoder time
    step j = 1..T) and a polarity d_f in {-1, +1}, and stands for

        x_hat = (1/T) * sum_j sum_i d_i^j * W_i * d_f          (W_1 > W_2 > ... > W_l > 0: `level_weights`)

    The spikes are chosen greedily from the most significant level down on the saturated magnitude (truncation,
    "the first l digits" of Sec. 3.4), exactly as `MultiLevelSpikeEncoder.encode` does:

        d_f = -1 if x < 0 else +1,  a = min(|x|, sum_i W_i)            (polarity=True)
        d_f = +1,                   a = min(max(x, 0), sum_i W_i)      (polarity=False: unsigned, negatives silent)
        r_0 = a;  c_i = clip(floor(r_{i-1} * (T / W_i)), 0, T);  r_i = r_{i-1} - c_i * (W_i / T)
        d_i^j = floor(j * c_i / T) - floor((j - 1) * c_i / T),  j = 1..T   (integrate-and-fire spreading of c_i)

    (sum_i W_i is summed left to right in float64, as Python's `sum` does in the reference.) NaN has no code:
    it is encoded as silence here (the torch reference leaves it undefined).

    Output: the signed spikes s[j, i, c] = d_i^j[c] * d_f[c] in {-1, 0, +1}, flattened in C order of the
    (T, l, C) array, i.e. element (j, i, c) (0-based) sits at index (j * l + i) * C + c. That is the order of
    `SpikeRWKV.step_detailed(...).spikes[name] * polarity[name]` flattened. A signed encoder emits ternary spikes of
    amplitude 1 (the flag rides on the spike's sign, as Loihi 2's signed spike payloads can carry it); an unsigned
    one (polarity=False) emits binary spikes.

    The consumer is a plain `nir.Linear` with weight W' (C_out, T*l*C), W'[:, (j*l + i)*C + c] = W[:, c] * W_i / T
    (the reference weight tiled over (j, i) and scaled by the level weight), so that W' s = W x_hat: every spike
    gathers one weight row, which is the event-driven synaptic work the paper's energy model counts.
    """

    channels: int  # C, the size of the input vector
    T: int  # encoder time steps per token
    level_weights: np.ndarray  # (l,) W_1 > ... > W_l > 0
    polarity: bool = True  # True: signed code with the spiking flag; False: unsigned (negatives clipped to 0)

    def __post_init__(self) -> None:
        self.level_weights = np.asarray(self.level_weights, dtype=np.float64).reshape(-1)
        w = self.level_weights
        if int(self.T) < 1:
            raise ValueError(f"MultiLevelEncoder: T must be >= 1, got {self.T}")
        if w.size == 0 or not np.all(np.isfinite(w) & (w > 0)) or np.any(np.diff(w) >= 0):
            raise ValueError(f"MultiLevelEncoder: level weights must be positive, finite and strictly decreasing, "
                             f"got {w.tolist()}")
        self.channels, self.T, self.polarity = int(self.channels), int(self.T), bool(self.polarity)
        super().__post_init__()
        # the input is the C-vector being encoded, not the natural (output) shape the base class assumes
        self.input_type = {"input": np.asarray((self.channels,))}

    @property
    def levels(self) -> int:
        return int(self.level_weights.size)

    @property
    def max_value(self) -> float:
        """sum_i W_i summed left to right (Python's `sum`, as the reference), the saturation magnitude."""
        return float(sum(float(w) for w in self.level_weights))

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.T) * int(np.size(self.level_weights)) * int(self.channels),)

    def output_shape(self, in_shapes):
        n_in = int(np.prod(in_shapes["input"]))
        if n_in != self.channels:
            from spikecc.errors import ShapeError

            raise ShapeError(f"MultiLevelEncoder encodes {self.channels} channels but receives shape "
                             f"{tuple(in_shapes['input'])}; the encoder's `channels` must match its input")
        return self.natural_shape()

    def output_signal(self, in_signals) -> Signal:
        return ternary(1.0) if self.polarity else BINARY



@register_op
@dataclass(eq=False)
class MultiLevelValue(MultiLevelEncoder):
    """The multi-level encoder's code sent as ONE signed graded value per channel instead of T*l spikes:

        y = x_hat = d_f * sum_i c_i * (W_i / T)          (c_i = sum_j d_i^j: the spike count of level i)

    the value the T*l spikes stand for (MultiLevelEncoder, paper Eq. 3). With level weights that are powers
    of two times W_l, x_hat is a whole number of units W_l / T, at most (2**l - 1) of them, so it travels exactly
    as an (l + 1)-bit graded message (the sign included). The consumer is a Linear with the reference's weight
    W (not tiled): W x_hat = W' s. Cheaper than the spikes when T is small (T = 1: l binary spikes and a flag
    become one (l + 1)-bit message, and the synapses l times fewer). decompose-levels makes the choice."""

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.channels),)

    def output_signal(self, in_signals) -> Signal:
        return graded(self.levels + 1, float(self.level_weights[-1]) / int(self.T))


SPIKERWKV_OPS = (MultiLevelEncoder, MultiLevelValue)
