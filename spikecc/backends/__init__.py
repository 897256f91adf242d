"""Backends: `cpu` (spikecc's event-driven simulator) and `lava` (Lava process graphs). They do not
import each other."""
