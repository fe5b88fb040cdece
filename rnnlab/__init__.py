"""rnnlab: pure-functional recurrent networks in JAX.

    import rnnlab
    cell = rnnlab.cells.make("lstm", hidden_size=64)
    params = cell.init(jax.random.key(0), input_size=16)
    carry, ys = rnnlab.unroll(cell, params, xs)        # xs [batch, time, 16] -> ys [batch, time, 64]
    carry, ys = rnnlab.unroll(cell, params, rnnlab.Embedded(table, ids))  # table[ids], lazily
"""

from rnnlab import cells, interop
from rnnlab.cells.base import Embedded
from rnnlab.unroll import bidirectional, unroll

__all__ = ["Embedded", "bidirectional", "cells", "interop", "unroll"]
__version__ = "0.1.0"
