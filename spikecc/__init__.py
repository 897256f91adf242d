"""spikecc: compile and verify spiking (language) models for Intel Loihi 2 through Lava."""

from spikecc.lava_compat import install_lava_py311_fix

__version__ = "0.1.0"

# Lava 0.10.0 fails to import on Python 3.11; the fix is an import hook that only acts when
# `lava.magma.compiler.var_model` is loaded, so installing it here costs nothing.
install_lava_py311_fix()
