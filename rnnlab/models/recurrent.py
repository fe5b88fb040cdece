"""Flax glue: a module that owns a cell's parameters and unrolls it.

The cell math stays in the pure functions of `rnnlab.cells`; the module only creates the
parameter pytree with `cell.init` (so it lives in the model's `params` collection, under the
module's name, key "cell", always float32) and calls `rnnlab.unroll`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def recurrent_layers(cells, xs: jax.Array, carry=None, *, mask=None, resets=None, unroll=1,
                     bidirectional: bool = False, dropout: float = 0.0, train: bool = False,
                     prefix: str = "rnn", backward_suffix: str = "_bw"):
    """The stack of recurrent layers the sequence models compose, called inside a Flax module's
    compact method: layer l is that module's `Recurrent` submodule `{prefix}_{l}` (with
    `bidirectional`, a second one `{prefix}_{l}{backward_suffix}` reads backwards and the
    outputs are concatenated), followed by dropout (training only) when `dropout > 0`.

    carry: one entry per layer (a (forward, backward) pair when bidirectional) or None;
    mask / resets [batch, time] as in `rnnlab.unroll`. Returns (carries, outputs). The names
    are parameters because they are the models' checkpoint layout (and Flax derives each
    layer's initialisation key from its name), which this module keeps as it was.
    """
    carries = []
    for l, cell in enumerate(cells):
        c_in = None if carry is None else carry[l]
        name = f"{prefix}_{l}"
        if bidirectional:
            c_fw, c_bw = (None, None) if c_in is None else c_in
            c_fw, y_fw = Recurrent(cell, unroll=unroll, name=name)(
                xs, c_fw, mask=mask, resets=resets)
            c_bw, y_bw = Recurrent(cell, reverse=True, unroll=unroll,
                                   name=name + backward_suffix)(xs, c_bw, mask=mask, resets=resets)
            c, xs = (c_fw, c_bw), jnp.concatenate([y_fw, y_bw], axis=-1)
        else:
            c, xs = Recurrent(cell, unroll=unroll, name=name)(xs, c_in, mask=mask, resets=resets)
        carries.append(c)
        if dropout:
            xs = nn.Dropout(dropout, deterministic=not train)(xs)
    return tuple(carries), xs
