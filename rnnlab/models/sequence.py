"""A task model for sequence tasks: input layer -> stack of recurrent layers -> readout.

    model = SequenceModel(cells=(rnnlab.cells.make("lstm", 128),), output_size=1, readout="last")
    params = model.init(rng, xs)["params"]                 # xs [batch, time, in] float
    (ys, carry) = model.apply({"params": params}, xs)      # ys [batch, 1] ("last")

Inputs are float features [batch, time, in] (`vocab_size=0`) or integer tokens [batch, time]
(`vocab_size>0`), which are embedded (`embed_dim>0`) or one-hot encoded (`embed_dim=0`).
Each layer is a `rnnlab.models.Recurrent` owning one cell's parameters (the cell math stays in
`rnnlab.cells`). The readout is a dense layer applied to the last step's output
(`readout="last"`, many-to-one: [batch, output_size]) or to every step (`readout="all"`,
many-to-many: [batch, time, output_size]).

The carry is a tuple with one entry per layer; pass the previous call's carry back in to
continue a stream (truncated BPTT). `initial_carry(batch_size)` needs no parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab.models.recurrent import Recurrent

READOUTS = ("last", "all")


class SequenceModel(nn.Module):
    """Input layer, `len(cells)` recurrent layers (dropout between them), dense readout."""

    cells: tuple[Any, ...]  # one rnnlab cell per layer
    output_size: int
    readout: str = "last"  # "last" (many-to-one) or "all" (many-to-many)
    vocab_size: int = 0  # > 0: inputs are integer tokens [batch, time]
    embed_dim: int = 0  # with tokens: 0 = one-hot inputs, > 0 = learned embedding
    dropout: float = 0.0  # between recurrent layers and before the readout (training only)
    unroll: int = 1  # time steps per compiled scan iteration

    def initial_carry(self, batch_size: int):
        return tuple(cell.initial_carry((batch_size,)) for cell in self.cells)

    @nn.compact
    def __call__(self, inputs: jax.Array, carry=None, train: bool = False):
        """inputs [batch, time, in] or tokens [batch, time] -> (outputs, final carry)."""
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; valid choices: {list(READOUTS)}")
        if self.vocab_size:
            if self.embed_dim:
                xs = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(inputs)
            else:
                xs = jax.nn.one_hot(inputs, self.vocab_size)
        else:
            xs = inputs.astype(jnp.float32)
        carries = []
        for l, cell in enumerate(self.cells):
            c, xs = Recurrent(cell, unroll=self.unroll, name=f"rnn_{l}")(
                xs, None if carry is None else carry[l])
            carries.append(c)
            if self.dropout:
                xs = nn.Dropout(self.dropout, deterministic=not train)(xs)
        if self.readout == "last":
            xs = xs[:, -1]
        return nn.Dense(self.output_size, name="readout")(xs), tuple(carries)
