"""mcuq: integer-only neural networks on Cortex-M, proven bit-exact on the target."""

__version__ = "0.1.0"
