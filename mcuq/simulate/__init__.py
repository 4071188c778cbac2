"""Host simulators of a Graph: the bit-exact integer executor (TFLM reference arithmetic)."""

from mcuq.simulate.integer import as_inputs, prepare_graph, run_integer

__all__ = ["as_inputs", "prepare_graph", "run_integer"]
