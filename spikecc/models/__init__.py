"""Torch reference implementations of the supported spiking language-model families."""
