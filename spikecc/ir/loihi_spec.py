"""Loihi 2's register and message widths: the one place spikecc's passes, simulator and backends read them from.

The numbers are those of Lava's bit-accurate Loihi models (lava-nc 0.10.0), which Intel states match the chip
(lava/proc/lif/models.py, lava/proc/dense/models.py, lava/utils/weightutils.py, lava/proc/graded/models.py).
Per-core budgets (neurons, synaptic memory, axons) are not register widths: they live in the target profiles
of the mapping stage.

Neuron state (LIF, TernaryLIF; lava/proc/lif/models.py:78-108, 252-262)
    u, v                 24-bit signed: u wraps at 2**23, v saturates at +-(2**23 - 1)
    du, dv               12-bit unsigned decays; the decay of one step multiplies by (4096 - d) / 4096
    vth                  17-bit unsigned mantissa, compared as vth << 6 (MSB-aligned in the 24-bit v)
    a_in                 synaptic input, annotated 16 bit, added as a_in << 6
    bias_mant, bias_exp  13-bit signed mantissa, 3-bit exponent: bias = bias_mant << bias_exp

Synapses (Dense; lava/proc/dense/models.py:77-107 with lava/utils/weightutils.py)
    weights              8-bit magnitude and a sign mode (mixed signs keep even values in [-256, 254])
    weight_exp           shifts the summed input; [-8, 7] is Loihi 1's range (nengo-loihi), assumed for Loihi 2

Messages
    binary spikes        0 payload bits
    graded spikes        up to 24-bit payloads in Lava's models (GradedVec's ports are 24-bit); Loihi 2 carries
                         up to 32 (Intel, Loihi 2 brief). spikecc uses GRADED_MAX_BITS = 24.
"""

from __future__ import annotations

UV_BITS = 24  # u and v registers
UV_MAX = 2 ** (UV_BITS - 1) - 1  # v saturates at +-UV_MAX; u wraps past 2**23
DECAY_BITS = 12  # du, dv: unsigned
DECAY_UNITY = 2**DECAY_BITS  # a decay d keeps (DECAY_UNITY - d) / DECAY_UNITY of the state
DECAY_MAX = DECAY_UNITY - 1
VTH_SHIFT = 6  # threshold mantissa is MSB-aligned: effective threshold = vth << 6
VTH_MAX = 2**17 - 1  # vth: unsigned 17-bit mantissa
ACT_SHIFT = 6  # synaptic input is MSB-aligned: u += a_in << 6
A_IN_MAX = 2**15 - 1  # a_in: 16-bit annotated
BIAS_MANT_BITS = 13  # signed
BIAS_MANT_MAX = 2 ** (BIAS_MANT_BITS - 1) - 1
BIAS_MANT_RANGE = (-(2 ** (BIAS_MANT_BITS - 1)), BIAS_MANT_MAX)
BIAS_EXP_MAX = 7  # 3-bit exponent
WEIGHT_BITS = 8
WEIGHT_RANGE = (-256, 255)  # what Lava's clip_weights keeps (8-bit magnitude and a sign)
WEIGHT_EXP_RANGE = (-8, 7)
GRADED_MAX_BITS = 24  # graded spike payloads (Lava's GradedVec ports)
TERNARY_MESSAGE_BITS = 2  # +1 / -1 / 0 payloads (TernaryLIF's s_out is a 2-bit port in Lava)
MULTIPLIER_SHIFT = 12  # constant multipliers of spikecc's own neurons: m * C >> 12, like the decays
