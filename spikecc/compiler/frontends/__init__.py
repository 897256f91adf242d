"""Frontends: turn a checkpoint (or another tool's file) into spikecc's IR."""
