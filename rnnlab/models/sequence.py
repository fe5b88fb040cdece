"""A task model for sequence tasks: input layer -> stack of recurrent layers -> pooling -> readout.

    model = SequenceModel(cells=(rnnlab.cells.make("lstm", 128),), output_size=1, readout="last")
    params = model.init(rng, xs)["params"]                       # xs [batch, time, in] float
    ys, carry = model.apply({"params": params}, xs)              # ys [batch, 1] ("last")
    ys, _ = model.apply({"params": params}, tokens, mask=mask)   # padded batch, mask [batch, time]

Inputs are float features [batch, time, in] (`vocab_size=0`) or integer tokens [batch, time]
(`vocab_size>0`), which are embedded (`embed_dim>0`) or one-hot encoded (`embed_dim=0`).
Each layer is a `rnnlab.models.Recurrent` owning one cell's parameters (the cell math stays in
`rnnlab.cells`); with `bidirectional=True` every layer is a forward and a backward run
(`rnn_{l}` and `rnn_{l}_bw`) whose outputs are concatenated ([..., 2 · output]).

`mask` [batch, time] (True = real step) marks padding: padded steps leave the carry unchanged
and output zero (`rnnlab.unroll`), and the pooling ignores them exactly, so a padded sequence
gives the same result as the sequence alone. Readouts (a dense layer after the pooling):

    "last"  many-to-one, [batch, output_size]: the output at each sequence's last real step
            (bidirectional: forward half there, backward half at the first real step, where
            the backward run has read the whole sequence);
    "mean"  many-to-one, [batch, output_size]: the mean of the outputs over the real steps;
    "all"   many-to-many, [batch, time, output_size]: every step (padded steps included; the
            loss masks them).

The carry is a tuple with one entry per layer (a (forward, backward) pair per bidirectional
layer); pass the previous call's carry back in to continue a stream (truncated BPTT).
`initial_carry(batch_size)` needs no parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab.models.recurrent import recurrent_layers

READOUTS = ("last", "mean", "all")


def mask_from_lengths(lengths: jax.Array, time: int) -> jax.Array:
    """lengths [batch] -> [batch, time] booleans, True at the first `lengths[b]` steps."""
    return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def last_real_step(mask: jax.Array) -> jax.Array:
    """[batch, time] mask -> [batch] index of each row's last True step (0 for an empty row)."""
    time = mask.shape[-1]
    return jnp.where(mask.any(-1), time - 1 - jnp.argmax(mask[:, ::-1], axis=-1), 0)


def pool(ys: jax.Array, mask: jax.Array | None, how: str, backward_from: int | None = None):
    """Pools per-step outputs ys [batch, time, d] over time with padding `mask` [batch, time].

    how: "last" (each row's last real step; with `backward_from=k` the features `k:` come from
    the first real step instead: a backward run's final output) or "mean" (masked mean).
    Returns [batch, d]; rows without a real step give zeros.
    """
    if how == "mean":
        if mask is None:
            return ys.mean(axis=1)
        m = mask.astype(ys.dtype)[..., None]
        return (ys * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
    if how != "last":
        raise ValueError(f"unknown pooling {how!r}; valid choices: ['last', 'mean']")
    if mask is None:
        last, first = ys[:, -1], ys[:, 0]
    else:
        mask = mask.astype(bool)
        take = lambda idx: jnp.take_along_axis(ys, idx[:, None, None], axis=1)[:, 0]  # noqa: E731
        last, first = take(last_real_step(mask)), take(jnp.argmax(mask, axis=-1))
        real = mask.any(-1, keepdims=True)
        last, first = jnp.where(real, last, 0.0), jnp.where(real, first, 0.0)
    if backward_from is None:
        return last
    return jnp.concatenate([last[:, :backward_from], first[:, backward_from:]], axis=-1)


class SequenceModel(nn.Module):
    """Input layer, `len(cells)` recurrent layers (dropout between them), pooling, dense readout."""

    cells: tuple[Any, ...]  # one rnnlab cell per layer
    output_size: int
    readout: str = "last"  # "last" / "mean" (many-to-one) or "all" (many-to-many)
    vocab_size: int = 0  # > 0: inputs are integer tokens [batch, time]
    embed_dim: int = 0  # with tokens: 0 = one-hot inputs, > 0 = learned embedding
    dropout: float = 0.0  # between recurrent layers and before the readout (training only)
    unroll: int = 1  # time steps per compiled scan iteration
    bidirectional: bool = False  # every layer: forward + backward run, outputs concatenated

    def initial_carry(self, batch_size: int):
        carries = tuple(cell.initial_carry((batch_size,)) for cell in self.cells)
        return tuple((c, c) for c in carries) if self.bidirectional else carries

    @nn.compact
    def __call__(self, inputs: jax.Array, carry=None, train: bool = False,
                 mask: jax.Array | None = None, resets: jax.Array | None = None):
        """inputs [batch, time, in] or tokens [batch, time], optional mask [batch, time] and
        resets [batch, time] (True where a new segment starts: every layer's carry restarts
        there, `rnnlab.unroll`) -> (outputs, final carry)."""
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; valid choices: {list(READOUTS)}")
        if mask is not None and tuple(mask.shape) != tuple(inputs.shape[:2]):
            raise ValueError(f"mask shape {tuple(mask.shape)} must be the inputs' [batch, time] "
                             f"shape {tuple(inputs.shape[:2])}")
        if self.vocab_size:
            if self.embed_dim:
                xs = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(inputs)
            else:
                xs = jax.nn.one_hot(inputs, self.vocab_size)
        else:
            xs = inputs.astype(jnp.float32)
        carries, xs = recurrent_layers(self.cells, xs, carry, mask=mask, resets=resets,
                                       unroll=self.unroll, bidirectional=self.bidirectional,
                                       dropout=self.dropout, train=train)
        if self.readout != "all":
            split = self.cells[-1].output_size if self.bidirectional else None
            xs = pool(xs, mask, self.readout, backward_from=split)
        return nn.Dense(self.output_size, name="readout")(xs), carries
