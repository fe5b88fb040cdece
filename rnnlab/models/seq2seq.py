"""Encoder-decoder models: a recurrent decoder over any registry cell, with optional attention,
trained with teacher forcing and decoded greedily or by beam search.

    decoder = Decoder(cells=(rnnlab.cells.make("lstm", 64),), vocab_size=14, embed_dim=32,
                      attention="bahdanau", memory_size=64)
    model = Seq2Seq(encoder_cells=(rnnlab.cells.make("lstm", 64),), decoder=decoder,
                    source_vocab=14, embed_dim=32)
    params = model.init(rng, source, target_in)["params"]    # source [B, S], target_in [B, T]
    logits = model.apply({"params": params}, source, shift_right(target))   # [B, T, vocab]
    tokens = decode(model, params, source, max_length=11)                   # greedy [B, 11]
    seqs, scores = decode(model, params, source, 11, beam_width=4)          # [B, 4, 11]

`Decoder` follows the cell contract: a frozen dataclass of hyperparameters with
`init(rng) -> params` and pure functions of the explicit parameter pytree, so the step function
of `rnnlab.models.decoding` is just `decoder.step` with the params bound. Models that own a
decoder (`Seq2Seq` here, `rnnlab.models.captioner.Captioner`) provide
`encode(inputs) -> (context, state)`; `decode` works on any of them.

Decoder, per step t (y_0 = BOS; s = the decoder's carry, c_t = context over the memory h_j):
  none           s_t, o_t = cell(s_{t-1}, E y_{t-1});            logits = W o_t + b
  bahdanau       e_tj = v^T tanh(W_k h_j + W_q q_{t-1} + b_a), with q_{t-1} the last layer's
                 carry s_{t-1} (all its leaves, e.g. [h; c] for an LSTM), a = softmax_j(e),
                 c_t = sum_j a_tj h_j;  s_t, o_t = cell(s_{t-1}, [E y_{t-1}; c_t]);
                 logits = W [o_t; c_t] + b           (Bahdanau et al. 2015: context at the input)
  luong_dot      s_t, o_t = cell(s_{t-1}, E y_{t-1});  e_tj = o_t^T h_j
  luong_general  ... e_tj = o_t^T W_a h_j;  for both: c_t = sum_j a_tj h_j,
                 õ_t = tanh(W_c [c_t; o_t]), logits = W õ_t + b   (Luong et al. 2015, global
                 attention without input feeding: context at the output)
A multi-layer decoder is a `rnnlab.cells.Stack`; only its first layer reads the context.
Padded memory positions (mask False) get no attention. Without input feeding the Luong and
plain decoders are trained with one hoisted `unroll` and attention over all steps at once; the
Bahdanau decoder is a `lax.scan` of the same step the decoding uses.

Initial carry ("bridge"): "copy" passes each encoder layer's final carry to the same decoder
layer (cells with equal carry shapes); "project" maps the concatenated final carries (every
leaf of every layer) through tanh(W f + b) to every leaf of the decoder's carry; "auto" is
"copy" when the shapes allow it, else "project"; "none" starts from the zero carry. The
encoder's final carry is taken at each sequence's last real step (padding leaves it unchanged).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.stack import Stack
from rnnlab.data.seq2seq import BOS, EOS, PAD
from rnnlab.models import decoding
from rnnlab.models.recurrent import Recurrent
from rnnlab.unroll import unroll

ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general")
BRIDGES = ("auto", "copy", "project", "none")
_MASKED = -1e9  # attention score of a padded memory position (finite: no NaN if all padded)


class Context(NamedTuple):
    """What the decoder reads at every step and never changes (repeated per beam)."""
    memory: jax.Array  # [batch, S, memory_size] encoder outputs (or image features)
    keys: jax.Array    # [batch, S, key_size] attention keys precomputed from the memory
    mask: jax.Array    # [batch, S] bool, False at padded positions


def shift_right(targets: jax.Array, bos_id: int = BOS) -> jax.Array:
    """Teacher-forcing inputs: [BOS, y_1, ..., y_{T-1}] for targets [batch, T]."""
    return jnp.concatenate([jnp.full_like(targets[:, :1], bos_id), targets[:, :-1]], axis=1)


def _carry_width(cell) -> int:
    return sum(int(np.prod(x.shape[1:]))
               for x in jax.tree_util.tree_leaves(cell.initial_carry((1,))))


def _dropout(x, rate, rng):
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A recurrent decoder (see the module docstring): hyperparameters only; params explicit."""

    cells: tuple  # one rnnlab cell per layer
    vocab_size: int  # output tokens (PAD, BOS, EOS included)
    embed_dim: int  # width of the output-token embedding fed back as input
    attention: str = "none"  # none | bahdanau | luong_dot | luong_general
    memory_size: int = 0  # width of the memory the attention reads (required with attention)
    attention_dim: int = 0  # bahdanau: width of the additive scoring layer (0 = top hidden)
    init_size: int = 0  # > 0: init params map a feature vector of this width to the carry

    def __post_init__(self):
        if not isinstance(self.cells, tuple) or not self.cells:
            raise ValueError(f"Decoder needs a non-empty tuple of cells, got {self.cells!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; valid choices: "
                             f"{list(ATTENTIONS)}")
        if self.attention != "none" and self.memory_size <= 0:
            raise ValueError(f"attention {self.attention!r} needs memory_size > 0 (the width "
                             f"of the encoder outputs), got {self.memory_size!r}")
        if self.attention == "luong_dot" and self.memory_size != self.output_size:
            raise ValueError(
                f"attention 'luong_dot' scores o_t . h_j, so the decoder output size "
                f"({self.output_size}) must equal the memory size ({self.memory_size}); use "
                "'luong_general' or equal hidden sizes")
        for name in ("vocab_size", "embed_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Decoder.{name} must be > 0, got {getattr(self, name)!r}")

    @property
    def stack(self) -> Stack:
        return Stack(self.cells)

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    @property
    def query_size(self) -> int:
        return _carry_width(self.cells[-1])

    @property
    def readout_size(self) -> int:
        return self.output_size + (self.memory_size if self.attention == "bahdanau" else 0)

    # --- parameters -----------------------------------------------------------------------
    def init(self, rng: jax.Array) -> dict:
        """Embedding ~ N(0, 1), weight matrices ~ N(0, 1/fan_in) (LeCun), biases 0; the
        recurrent layers by their cells' own `init`. One normal draw for all the decoder's own
        matrices (every random call is a compiled program of its own)."""
        k_rnn, k_rest = jax.random.split(rng)
        in_size = self.embed_dim + (self.memory_size if self.attention == "bahdanau" else 0)
        shapes = {"embedding": (self.vocab_size, self.embed_dim),
                  "w_out": (self.readout_size, self.vocab_size)}
        if self.attention == "bahdanau":
            a = self.attention_dim or self.output_size
            shapes.update(w_key=(self.memory_size, a), w_query=(self.query_size, a),
                          v_att=(a, 1))
        elif self.attention == "luong_general":
            shapes["w_key"] = (self.memory_size, self.output_size)
        if self.attention.startswith("luong"):
            shapes["w_combine"] = (self.memory_size + self.output_size, self.output_size)
        leaves = jax.tree_util.tree_leaves(self.stack.initial_carry((1,)))
        if self.init_size:
            shapes.update({f"init_{i}": (self.init_size, x.shape[-1])
                           for i, x in enumerate(leaves)})
        sizes = [int(np.prod(v)) for v in shapes.values()]
        draws = jnp.split(jax.random.normal(k_rest, (sum(sizes),)), np.cumsum(sizes)[:-1])
        w = {name: d.reshape(shape) * (1.0 if name == "embedding" else shape[0] ** -0.5)
             for (name, shape), d in zip(shapes.items(), draws)}
        p = {"embedding": w["embedding"], "rnn": self.stack.init(k_rnn, in_size),
             "w_out": w["w_out"], "b_out": jnp.zeros((self.vocab_size,))}
        if self.attention == "bahdanau":
            p.update(w_key=w["w_key"], w_query=w["w_query"], b_att=jnp.zeros((a,)),
                     v_att=w["v_att"][:, 0])
        for name in ("w_key", "w_combine"):
            if self.attention.startswith("luong") and name in w:
                p[name] = w[name]
        if self.init_size:
            p["init"] = [{"w": w[f"init_{i}"], "b": jnp.zeros((x.shape[-1],))}
                         for i, x in enumerate(leaves)]
        return p

    # --- state ----------------------------------------------------------------------------
    def zero_carry(self, batch_size: int):
        return self.stack.initial_carry((batch_size,))

    def carry_from_features(self, p: dict, features: jax.Array):
        """features [batch, init_size] -> the initial carry: tanh(W f + b) per carry leaf."""
        if not self.init_size:
            raise ValueError("carry_from_features needs a Decoder built with init_size > 0")
        template = self.zero_carry(features.shape[0])
        leaves, treedef = jax.tree_util.tree_flatten(template)
        new = [jnp.tanh(features @ q["w"] + q["b"]).astype(x.dtype)
               for q, x in zip(p["init"], leaves)]
        return jax.tree_util.tree_unflatten(treedef, new)

    def context(self, p: dict, memory: jax.Array, mask: jax.Array) -> Context:
        """Precomputes the attention keys of memory [batch, S, memory_size]."""
        if self.attention in ("bahdanau", "luong_general"):
            keys = memory @ p["w_key"]
        else:
            keys = memory
        return Context(memory, keys, mask.astype(bool))

    # --- attention ------------------------------------------------------------------------
    def _bahdanau(self, p, ctx: Context, carry):
        query = jnp.concatenate([x.reshape(x.shape[0], -1)
                                 for x in jax.tree_util.tree_leaves(carry[-1])], axis=-1)
        hidden = jnp.tanh(ctx.keys + (query @ p["w_query"] + p["b_att"])[:, None, :])
        scores = jnp.where(ctx.mask, hidden @ p["v_att"], _MASKED)  # [batch, S]
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("bs,bsm->bm", weights, ctx.memory), weights

    def _luong(self, p, ctx: Context, outputs):
        """outputs [batch, T, hidden] -> attentional outputs [batch, T, hidden], weights."""
        scores = jnp.einsum("bth,bsh->bts", outputs, ctx.keys)
        scores = jnp.where(ctx.mask[:, None, :], scores, _MASKED)
        weights = jax.nn.softmax(scores, axis=-1)
        c = jnp.einsum("bts,bsm->btm", weights, ctx.memory)
        return jnp.tanh(jnp.concatenate([c, outputs], -1) @ p["w_combine"]), weights

    # --- decoding -------------------------------------------------------------------------
    def step(self, p: dict, ctx: Context | None, carry, tokens: jax.Array):
        """One step: tokens [batch] (the previous outputs) -> (logits [batch, vocab], carry)."""
        x = p["embedding"][tokens]
        if self.attention == "bahdanau":
            c, _ = self._bahdanau(p, ctx, carry)
            carry, o = self.stack.step(p["rnn"], carry, jnp.concatenate([x, c], -1))
            o = jnp.concatenate([o, c], -1)
        else:
            carry, o = self.stack.step(p["rnn"], carry, x)
            if self.attention != "none":
                o = self._luong(p, ctx, o[:, None])[0][:, 0]
        return o @ p["w_out"] + p["b_out"], carry

    def teacher_forced(self, p: dict, ctx: Context | None, carry, inputs: jax.Array,
                       dropout: float = 0.0, rng: jax.Array | None = None,
                       unroll_steps: int = 1) -> jax.Array:
        """inputs [batch, T] (BOS, y_1, ..., y_{T-1}) -> logits [batch, T, vocab]: the same
        logits as T calls of `step`. Dropout (rate `dropout`, when `rng` is given) acts on the
        embedded inputs and on the readout's input."""
        k_in, k_out = (None, None) if rng is None else jax.random.split(rng)
        xs = _dropout(p["embedding"][inputs], dropout, k_in)
        if self.attention == "bahdanau":
            def body(c, x):
                ctx_t, _ = self._bahdanau(p, ctx, c)
                c, o = self.stack.step(p["rnn"], c, jnp.concatenate([x, ctx_t], -1))
                return c, jnp.concatenate([o, ctx_t], -1)
            _, outs = jax.lax.scan(body, carry, jnp.moveaxis(xs, 1, 0), unroll=unroll_steps)
            outs = jnp.moveaxis(outs, 0, 1)
        else:
            _, outs = unroll(self.stack, p["rnn"], xs, carry, unroll=unroll_steps)
            if self.attention != "none":
                outs = self._luong(p, ctx, outs)[0]
        return _dropout(outs, dropout, k_out) @ p["w_out"] + p["b_out"]

    def attention_weights(self, p: dict, ctx: Context, carry, inputs: jax.Array) -> jax.Array:
        """Teacher-forced attention weights [batch, T, S] (for plots and checks)."""
        if self.attention == "none":
            raise ValueError("attention_weights needs a decoder with attention")
        xs = p["embedding"][inputs]
        if self.attention == "bahdanau":
            def body(c, x):
                ctx_t, w = self._bahdanau(p, ctx, c)
                c, _ = self.stack.step(p["rnn"], c, jnp.concatenate([x, ctx_t], -1))
                return c, w
            return jnp.moveaxis(jax.lax.scan(body, carry, jnp.moveaxis(xs, 1, 0))[1], 0, 1)
        _, outs = unroll(self.stack, p["rnn"], xs, carry)
        return self._luong(p, ctx, outs)[1]


def resolve_bridge(bridge: str, encoder_cells: tuple, decoder_cells: tuple) -> str:
    """The bridge actually used ("auto" -> "copy" or "project"); raises if "copy" cannot work."""
    if bridge not in BRIDGES:
        raise ValueError(f"unknown bridge {bridge!r}; valid choices: {list(BRIDGES)}")
    shapes = lambda cells: [jax.tree_util.tree_map(jnp.shape, c.initial_carry((1,)))  # noqa: E731
                            for c in cells]
    same = len(encoder_cells) == len(decoder_cells) and shapes(encoder_cells) == shapes(
        decoder_cells)
    if bridge == "auto":
        return "copy" if same else "project"
    if bridge == "copy" and not same:
        raise ValueError(
            f"bridge 'copy' needs encoder and decoder layers with equal carry shapes; got "
            f"{shapes(encoder_cells)} vs {shapes(decoder_cells)}; use bridge 'project' or 'auto'")
    return bridge


def bridge_width(encoder_cells: tuple) -> int:
    """Width of the concatenated final carries the "project" bridge reads."""
    return sum(_carry_width(c) for c in encoder_cells)


class Seq2Seq(nn.Module):
    """Token encoder (stacked `Recurrent` layers over embedded source tokens) -> `Decoder`.

    source [batch, S] int (PAD = 0 marks padding), inputs [batch, T] -> logits [batch, T, V].
    The decoder must be built with `memory_size` = the encoder's output size when it attends,
    and `init_size = bridge_width(encoder_cells)` for the "project" bridge
    (`rnnlab.tasks.seq2seq.make_model` does both).
    """

    encoder_cells: tuple  # one rnnlab cell per encoder layer
    decoder: Decoder
    source_vocab: int
    embed_dim: int
    bridge: str = "auto"  # auto | copy | project | none (see the module docstring)
    dropout: float = 0.0  # on embedded inputs and before the readout (training only)
    unroll: int = 1  # scan steps per compiled loop iteration (speed only)

    def setup(self):
        self.embed = nn.Embed(self.source_vocab, self.embed_dim, name="source_embed")
        self.encoder = [Recurrent(c, unroll=self.unroll, name=f"encoder_{i}")
                        for i, c in enumerate(self.encoder_cells)]
        self.decoder_params = self.param("decoder", self.decoder.init)

    def encode(self, source: jax.Array, train: bool = False) -> tuple[Context, Any]:
        """source [batch, S] -> (Context over the encoder outputs, the decoder's first carry)."""
        if source.ndim != 2:
            raise ValueError(f"source must be [batch, S] token ids, got shape "
                             f"{tuple(source.shape)}")
        mask = source != PAD
        xs = self.embed(source)
        if train and self.dropout:
            xs = _dropout(xs, self.dropout, self.make_rng("dropout"))
        finals = []
        for layer in self.encoder:
            c, xs = layer(xs, None, mask=mask)
            finals.append(c)
        bridge = resolve_bridge(self.bridge, self.encoder_cells, self.decoder.cells)
        p = self.decoder_params
        if bridge == "copy":
            carry = tuple(finals)
        elif bridge == "project":
            feats = jnp.concatenate([x.reshape(x.shape[0], -1)
                                     for x in jax.tree_util.tree_leaves(finals)], axis=-1)
            carry = self.decoder.carry_from_features(p, feats)
        else:
            carry = self.decoder.zero_carry(source.shape[0])
        return self.decoder.context(p, xs, mask), carry

    def __call__(self, source: jax.Array, inputs: jax.Array, train: bool = False) -> jax.Array:
        ctx, carry = self.encode(source, train)
        rng = self.make_rng("dropout") if train and self.dropout else None
        return self.decoder.teacher_forced(self.decoder_params, ctx, carry, inputs,
                                           self.dropout, rng, self.unroll)


def decode(model: nn.Module, params, inputs: jax.Array, max_length: int, beam_width: int = 0,
           length_penalty: float = 0.0):
    """Decodes with any model that has `encode(inputs) -> (context, carry)` and a `decoder`
    (`Seq2Seq`, `Captioner`): greedy tokens [batch, max_length] when beam_width = 0, else
    (sequences [batch, K, max_length], scores [batch, K]) of `decoding.beam_search`. PAD and BOS
    are never emitted. Jittable (model, max_length, beam_width, length_penalty static)."""
    ctx, carry = model.apply({"params": params}, inputs, method="encode")
    dec, p = model.decoder, params["decoder"]
    step = lambda c, s, t: dec.step(p, c, s, t)  # noqa: E731
    kw = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD, banned_ids=(PAD, BOS))
    if beam_width:
        return decoding.beam_search(step, ctx, carry, max_length, beam_width=beam_width,
                                    length_penalty=length_penalty, **kw)
    return decoding.greedy_decode(step, ctx, carry, max_length, **kw)[0]


__all__ = ["ATTENTIONS", "BRIDGES", "Context", "Decoder", "Seq2Seq", "bridge_width", "decode",
           "resolve_bridge", "shift_right"]
