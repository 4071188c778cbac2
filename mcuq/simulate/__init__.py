"""Host simulators of a Graph: the bit-exact integer executor (TFLM reference arithmetic)."""

from mcuq.simulate.integer import prepare_graph, run_integer

__all__ = ["prepare_graph", "run_integer"]
