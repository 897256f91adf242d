"""spikecc's graph IR: NIR nodes plus registered extension ops, over networkx. Needs only numpy,
networkx, h5py and nir."""

import spikecc.ir.neurocore_ops  # noqa: F401  (importing registers the neuro-core and boundary ops)
import spikecc.ir.rwkv6_ops  # noqa: F401  (importing registers the RWKV-6 ops)
import spikecc.ir.spikelm_ops  # noqa: F401  (importing registers the SpikeLM ops)
import spikecc.ir.spikerwkv_ops  # noqa: F401  (importing registers the SpikeRWKV encoder op)
from spikecc.ir.graph import DEFAULT_DT, Edge, Graph
from spikecc.ir.infer import infer_shapes, infer_signals, validate
from spikecc.ir.lm_ops import LM_OPS  # importing registers the language-model ops
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF  # importing registers the Loihi ops
from spikecc.ir.nir_io import from_nir, read, to_nir, write
from spikecc.ir.ops import OP_REGISTRY, ExtensionOp, TernaryLIF, register_op
from spikecc.ir.signals import BINARY, REAL, Signal, graded, ternary

__all__ = [
    "BINARY", "DEFAULT_DT", "LM_OPS", "OP_REGISTRY", "REAL", "Edge", "ExtensionOp", "Graph", "LoihiDense", "LoihiLIF",
    "LoihiTernaryLIF", "Signal", "TernaryLIF",
    "from_nir", "graded", "infer_shapes", "infer_signals", "read", "register_op", "ternary", "to_nir",
    "validate", "write",
]
