"""Flax glue: a module that owns a cell's parameters and unrolls it.

The cell math stays in the pure functions of `rnnlab.cells`; the module only creates the
parameter pytree with `cell.init` (so it lives in the model's `params` collection, under the
module's name, key "cell") and calls `rnnlab.unroll`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from rnnlab.unroll import unroll


class Recurrent(nn.Module):
    """Unrolls `cell` over [batch, time, features]; returns (final_carry, ys)."""

    cell: Any  # an rnnlab cell or Stack (frozen dataclass, hashable)
    reverse: bool = False
    unroll: int = 1
    remat: bool = False

    @nn.compact
    def __call__(self, xs: jax.Array, carry=None, mask: jax.Array | None = None):
        params = self.param("cell", lambda rng: self.cell.init(rng, xs.shape[-1]))
        return unroll(self.cell, params, xs, carry, mask=mask, reverse=self.reverse,
                      unroll=self.unroll, remat=self.remat)
