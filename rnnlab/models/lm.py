"""Recurrent language model: embedding -> stack of rnnlab cells -> dropout -> softmax readout.

    cells = tuple(rnnlab.cells.make("lstm", 650, init_scale=0.05) for _ in range(2))
    model = LanguageModel(vocab_size=10000, cells=cells, embed_size=650, dropout_input=0.5,
                          dropout_hidden=0.5, dropout_output=0.5)          # Zaremba medium
    params = model.init(rng, tokens, train=False)["params"]
    carry = model.initial_carry(batch)
    out = model.apply({"params": params}, tokens, carry, mask=mask, train=True,
                      rngs={"dropout": key})                                # LMOutput
    loss = masked_mean(token_nll(out.logits, targets), mask)
         + ar_tar(out.hidden, out.hidden_dropped, alpha, beta, mask)       # AWD's AR/TAR
    carry = out.carry                                                       # truncated BPTT

Dropouts (all off with train=False):
  dropout_embedding  drops whole words: rows of the embedding matrix, scaled 1/(1-p) (Gal &
                     Ghahramani 2016; AWD `dropoute`);
  dropout_input      on the embedded inputs (AWD `dropouti`; Zaremba's first dropout);
  dropout_hidden     between recurrent layers (AWD `dropouth`; Zaremba's non-recurrent dropout);
  dropout_output     on the last layer's output, before the readout (AWD `dropout`);
  variational        the three above use one mask per sequence, shared across time ("locked"
                     dropout, Gal & Ghahramani 2016) instead of a fresh mask each step;
  weight_drop        DropConnect on every layer's recurrent matrix `w_hh` (Merity et al. 2017):
                     one mask per window, applied to the parameter pytree before unrolling.

Weight tying (Inan et al. 2017; Press & Wolf 2017): the readout is h W_E^T + b with the
embedding matrix W_E [vocab, embed]; when the last layer's width differs from `embed_size` a
linear projection (no bias) maps it to `embed_size` first.

The cell math stays in `rnnlab.cells`; layers are run with `rnnlab.unroll`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab.cells.base import Embedded
from rnnlab.unroll import unroll as _unroll

LN2 = math.log(2.0)


class LMOutput(NamedTuple):
    logits: jax.Array          # [batch, time, vocab]
    carry: tuple               # one carry per layer, for the next window
    hidden: jax.Array          # [batch, time, hidden_last] last layer output before dropout
    hidden_dropped: jax.Array  # the same after `dropout_output` (equal at eval)


def _check_rate(name, p):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p!r}")


class LanguageModel(nn.Module):
    """Embedding -> `cells` (layer l reads layer l-1's output) -> readout over `vocab_size`.

    tokens [batch, time] int -> LMOutput (logits [batch, time, vocab], per-layer carry, ...).
    `mask` [batch, time] (False on padding) leaves the carry unchanged at padded steps;
    `lengths` [batch] says the same for padding at the end of each row, in the form the fused
    cuDNN LSTM path accepts (`rnnlab.fused`); give one or the other. `resets` [batch, time]
    (True where a document starts) restarts every layer's carry from zeros before those steps
    (`rnnlab.unroll`; the layers then run on the scan).
    """

    vocab_size: int
    cells: tuple[Any, ...]     # rnnlab cells (frozen dataclasses), one per layer
    embed_size: int
    tie_weights: bool = False
    embed_init_scale: float = 0.1   # embedding (and untied readout) ~ U(±scale)
    dropout_embedding: float = 0.0
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    dropout_output: float = 0.0
    variational: bool = False
    weight_drop: float = 0.0
    unroll: int = 1
    remat: bool = False

    def _validate(self):
        if not isinstance(self.cells, tuple) or not self.cells:
            raise ValueError("LanguageModel needs a non-empty tuple of cells, got "
                             f"{self.cells!r}")
        for name in ("dropout_embedding", "dropout_input", "dropout_hidden", "dropout_output",
                     "weight_drop"):
            _check_rate(name, getattr(self, name))

    def initial_carry(self, batch_size: int, dtype=jnp.float32) -> tuple:
        """Zero carry: a tuple with each layer's `cell.initial_carry((batch_size,))`."""
        return tuple(c.initial_carry((batch_size,), dtype=dtype) for c in self.cells)

    def _dropout(self, x, rate, train):
        if not train or rate == 0.0:
            return x
        # Locked dropout: one mask per sequence, broadcast over the time axis.
        return nn.Dropout(rate, broadcast_dims=(1,) if self.variational else ())(
            x, deterministic=False)

    @nn.compact
    def __call__(self, tokens: jax.Array, carry=None, mask: jax.Array | None = None,
                 train: bool = False, lengths: jax.Array | None = None,
                 resets: jax.Array | None = None) -> LMOutput:
        self._validate()
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, time] ids, got shape {tuple(tokens.shape)}")
        init = nn.initializers.uniform(2 * self.embed_init_scale)
        embedding = self.param(
            "embedding", lambda k, s: init(k, s) - self.embed_init_scale,
            (self.vocab_size, self.embed_size))
        table = embedding
        if train and self.dropout_embedding > 0.0:
            keep = 1.0 - self.dropout_embedding
            rows = jax.random.bernoulli(self.make_rng("dropout"), keep, (self.vocab_size, 1))
            table = embedding * rows.astype(embedding.dtype) / keep
        if train and self.dropout_input > 0.0:
            x = self._dropout(jnp.take(table, tokens, axis=0), self.dropout_input, train)
        else:  # the first layer may fold the lookup into its projection (`rnnlab.Embedded`)
            x = Embedded(table, tokens)

        if carry is None:
            carry = self.initial_carry(tokens.shape[0], x.dtype)
        if len(carry) != len(self.cells):
            raise ValueError(f"carry has {len(carry)} layers, the model {len(self.cells)}")
        new_carry = []
        for l, cell in enumerate(self.cells):
            in_size = x.shape[-1]
            p = self.param(f"cell_{l}", lambda k, n=in_size, c=cell: c.init(k, n))
            if train and self.weight_drop > 0.0:
                p = weight_drop(p, self.weight_drop, self.make_rng("dropout"))
            c, x = _unroll(cell, p, x, carry[l], mask=mask, lengths=lengths,
                           unroll=self.unroll, remat=self.remat, resets=resets)
            new_carry.append(c)
            if l < len(self.cells) - 1:
                x = self._dropout(x, self.dropout_hidden, train)
        hidden = x
        x = self._dropout(x, self.dropout_output, train)
        hidden_dropped = x

        if self.tie_weights:
            if x.shape[-1] != self.embed_size:
                x = nn.Dense(self.embed_size, use_bias=False, name="tie_projection")(x)
            bias = self.param("readout_bias", nn.initializers.zeros, (self.vocab_size,))
            logits = x @ embedding.T + bias
        else:
            logits = nn.Dense(self.vocab_size, name="readout",
                              kernel_init=lambda k, s, d=jnp.float32: init(k, s, d)
                              - self.embed_init_scale)(x)
        return LMOutput(logits, tuple(new_carry), hidden, hidden_dropped)


def weight_drop(params, rate: float, rng: jax.Array):
    """DropConnect on the recurrent matrix: params["w_hh"] * Bernoulli(1-rate) / (1-rate).

    Works on one cell's parameter dict (or a tuple of them, e.g. a Stack's); cells without a
    `w_hh` are returned unchanged."""
    if isinstance(params, (tuple, list)):
        keys = jax.random.split(rng, len(params))
        return type(params)(weight_drop(p, rate, k) for p, k in zip(params, keys))
    if not isinstance(params, dict) or "w_hh" not in params or rate == 0.0:
        return params
    w = params["w_hh"]
    keep = jax.random.bernoulli(rng, 1.0 - rate, w.shape)
    return {**params, "w_hh": jnp.where(keep, w / (1.0 - rate), jnp.zeros((), w.dtype))}


# --- losses and metrics ---------------------------------------------------------------------


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token negative log-likelihood in nats: [..., vocab], [...] -> [...]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def masked_sum_count(values: jax.Array, mask: jax.Array | None = None):
    """(sum of values over mask, number of mask entries): add these across windows/batches and
    divide at the end for an exact corpus-level mean."""
    if mask is None:
        return values.sum(), jnp.asarray(values.size, jnp.float32)
    m = mask.astype(values.dtype)
    return (values * m).sum(), m.sum()


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    s, n = masked_sum_count(values, mask)
    return s / jnp.maximum(n, 1.0)


def perplexity(mean_nll):
    """exp(mean NLL in nats)."""
    return jnp.exp(mean_nll) if isinstance(mean_nll, jax.Array) else math.exp(mean_nll)


def bits_per_char(mean_nll):
    """Mean NLL in nats per character -> bits per character (= nll / ln 2)."""
    return mean_nll / LN2


def ar_tar(hidden: jax.Array, hidden_dropped: jax.Array, alpha: float, beta: float,
           mask: jax.Array | None = None) -> jax.Array:
    """AWD-LSTM's activation regularisation (Merity et al. 2017):
    alpha * mean(dropped_h^2) + beta * mean((h_t - h_{t-1})^2) on the undropped last layer.
    With a mask, padded steps (and differences that touch one) are left out."""
    total = jnp.zeros((), jnp.float32)
    if alpha:
        sq = jnp.square(hidden_dropped).mean(-1)
        total = total + alpha * masked_mean(sq, mask)
    if beta and hidden.shape[1] > 1:
        d = jnp.square(hidden[:, 1:] - hidden[:, :-1]).mean(-1)
        m = None if mask is None else mask[:, 1:] & mask[:, :-1]
        total = total + beta * masked_mean(d, m)
    return total


# --- scoring and generation -----------------------------------------------------------------


def score(model: LanguageModel, params, ids, carry=None) -> dict:
    """Log-probability of ids[1:] given ids[:-1] (and `carry`, the state before ids[0]).

    ids [time] or [batch, time]. Returns {"log_prob": total in nats, "num_tokens",
    "nll": mean nats per token, "perplexity", "bits_per_token"} (per sequence when batched)."""
    ids = jnp.asarray(ids, jnp.int32)
    single = ids.ndim == 1
    ids = ids[None] if single else ids
    if ids.shape[1] < 2:
        raise ValueError("score needs at least two tokens (the first is the context)")
    out = model.apply({"params": params}, ids[:, :-1], carry, train=False)
    nll = token_nll(out.logits, ids[:, 1:])
    total = -nll.sum(-1)
    n = ids.shape[1] - 1
    res = {"log_prob": total, "num_tokens": n, "nll": -total / n,
           "perplexity": jnp.exp(-total / n), "bits_per_token": -total / n / LN2}
    return {k: (v[0] if single and k != "num_tokens" else v) for k, v in res.items()}


def sample_logits(rng, logits, temperature: float = 1.0, top_k: int | None = None):
    """Samples ids from logits [..., vocab]; temperature 0 is greedy (argmax)."""
    if temperature == 0.0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate(model: LanguageModel, params, prompt, length: int, rng: jax.Array,
             temperature: float = 1.0, top_k: int | None = None) -> jax.Array:
    """Samples `length` tokens after `prompt` (ids [time] or [batch, time], time >= 1).

    The prompt warms up the state (one pass over all of it), then each step feeds the last token
    back (`lax.scan`). Reproducible given `rng`; jit-compiled per (model, length, shapes,
    temperature, top_k). Returns the new ids [length] or [batch, length]."""
    prompt = jnp.asarray(prompt, jnp.int32)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt
    if prompt.shape[1] < 1:
        raise ValueError("generate needs a prompt of at least one token")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    out = _generate(model, params, prompt, rng, length, float(temperature),
                    None if top_k is None else int(top_k))
    return out[0] if single else out


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _generate(model, params, prompt, rng, length, temperature, top_k):
    carry = model.initial_carry(prompt.shape[0])
    if prompt.shape[1] > 1:
        carry = model.apply({"params": params}, prompt[:, :-1], carry, train=False).carry
    last = prompt[:, -1]

    def step(state, key):
        carry, tok = state
        out = model.apply({"params": params}, tok[:, None], carry, train=False)
        nxt = sample_logits(key, out.logits[:, -1], temperature, top_k)
        return (out.carry, nxt), nxt

    _, toks = jax.lax.scan(step, (carry, last), jax.random.split(rng, length))
    return toks.T
