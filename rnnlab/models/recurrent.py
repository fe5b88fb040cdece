"""Flax glue: a module that owns a cell's parameters and unrolls it.

The cell math stays in the pure functions of `rnnlab.cells`; the module only creates the
parameter pytree with `cell.init` (so it lives in the model's `params` collection, under the
module's name, key "cell", always float32) and calls `rnnlab.unroll`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from rnnlab.unroll import unroll


class Recurrent(nn.Module):
    """Unrolls `cell` over [batch, time, features]; returns (final_carry, ys).

    The speed and precision fields go to `rnnlab.unroll` unchanged (see its docstring)."""

    cell: Any  # an rnnlab cell or Stack (frozen dataclass, hashable)
    reverse: bool = False
    unroll: int | str = 1  # steps per scan iteration; "auto" or 0: picked per shape
    remat: bool | int = False  # True: checkpoint chunks of ~sqrt(time) steps; k: chunks of k
    fused: str = "auto"  # "auto" | "scan" | "cudnn" | "pallas" | "vjp" | "cpu" (rnnlab.fused)
    compute_dtype: Any = None  # None: the params' dtype; jnp.bfloat16: mixed precision

    @nn.compact
    def __call__(self, xs: jax.Array, carry=None, mask: jax.Array | None = None,
                 lengths: jax.Array | None = None, resets: jax.Array | None = None):
        params = self.param("cell", lambda rng: self.cell.init(rng, xs.shape[-1]))
        return unroll(self.cell, params, xs, carry, mask=mask, reverse=self.reverse,
                      unroll=self.unroll, remat=self.remat, lengths=lengths, fused=self.fused,
                      compute_dtype=self.compute_dtype, resets=resets)
