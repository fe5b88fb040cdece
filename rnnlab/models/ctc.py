"""Alignment-free sequence labelling (the speech-recognition shape): a recurrent frame
classifier trained with CTC (Graves et al. 2006), decoded greedily or by prefix beam search.

    model = CTCModel(cells=(rnnlab.cells.make("lstm", 64),), num_labels=9, bidirectional=True)
    logits = model.apply({"params": params}, frames, mask)        # [B, T, 9], index 0 = blank
    loss = ctc_loss(logits, mask, labels, labels != 0)            # [B] -log p(labels | frames)
    tokens, lengths = greedy_ctc_decode(logits, mask)             # [B, T], [B]
    prefixes, lengths, scores = prefix_beam_search(jax.nn.log_softmax(logits), mask,
                                                   beam_width=8, max_length=6)
    errors = edit_distance(tokens, lengths, labels, label_lengths)  # [B] Levenshtein

Conventions: label ids 1..C, the blank is 0 (`BLANK`), labels are right-padded with 0 and
decoded outputs are left-aligned and padded with 0. `mask` [B, T] is True on real frames.

p(l | x) sums, over every frame alignment π that collapses to l (merge repeats, then drop
blanks), the product of the per-frame probabilities y_t(π_t); `ctc_loss` is `optax.ctc_loss`.
Greedy decoding collapses the per-frame argmax path (the best path, not always the best
labelling). Prefix beam search (Hannun et al. 2014) keeps `beam_width` label prefixes, each with
its probability split by last frame (ended in blank / in its last label), merges the alignments
that reach the same prefix, and returns the prefixes with the largest p(prefix | x); with a
beam as wide as the number of possible prefixes it is exact (the most probable labelling).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rnnlab.models.recurrent import recurrent_layers

BLANK = 0
NEG_INF = -jnp.inf


class CTCModel(nn.Module):
    """frames [batch, T, features] float, mask [batch, T] -> logits [batch, T, num_labels]:
    stacked `Recurrent` layers (forward and backward, outputs concatenated, when
    `bidirectional`), dropout between layers, a dense readout per frame."""

    cells: tuple  # one rnnlab cell per layer (the backward direction uses the same kind)
    num_labels: int  # label symbols + 1 (index 0 is the blank)
    bidirectional: bool = True
    dropout: float = 0.0  # between layers and before the readout (training only)
    unroll: int = 1  # scan steps per compiled loop iteration (speed only)

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        if frames.ndim != 3:
            raise ValueError(f"frames must be [batch, time, features], got shape "
                             f"{tuple(frames.shape)}")
        _, xs = recurrent_layers(self.cells, frames.astype(jnp.float32), mask=mask,
                                 unroll=self.unroll, bidirectional=self.bidirectional,
                                 dropout=self.dropout, train=train, backward_suffix="_backward")
        return nn.Dense(self.num_labels, name="readout")(xs)


def ctc_loss(logits: jax.Array, mask: jax.Array, labels: jax.Array,
             label_mask: jax.Array) -> jax.Array:
    """-log p(labels | frames) per sequence [batch] (`optax.ctc_loss`, blank 0).
    logits [B, T, K], mask [B, T] (True = real frame), labels [B, N], label_mask [B, N]."""
    return optax.ctc_loss(logits.astype(jnp.float32), 1.0 - mask.astype(jnp.float32), labels,
                          1.0 - label_mask.astype(jnp.float32), blank_id=BLANK)


def greedy_ctc_decode(logits: jax.Array, mask: jax.Array | None = None):
    """Best-path decoding: per-frame argmax, repeats merged, blanks and padded frames dropped.
    logits [B, T, K] -> (tokens [B, T] left-aligned, padded with 0; lengths [B])."""
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if mask is None:
        mask = jnp.ones(best.shape, bool)
    prev = jnp.concatenate([jnp.full_like(best[:, :1], BLANK), best[:, :-1]], axis=1)
    keep = (best != BLANK) & (best != prev) & mask.astype(bool)
    width = best.shape[1]
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, width)  # width = dropped
    rows = jnp.arange(best.shape[0])[:, None]
    tokens = jnp.zeros_like(best).at[rows, slot].set(best, mode="drop")
    return tokens, keep.sum(1).astype(jnp.int32)


def _prefix_beam_one(log_probs, valid, beam_width: int, max_length: int):
    """Prefix beam search over one sequence: log_probs [T, K], valid [T]."""
    k, num = beam_width, log_probs.shape[-1]
    labels = jnp.arange(num)
    beams = jnp.arange(k)
    init = (jnp.zeros((k, max_length), jnp.int32), jnp.zeros((k,), jnp.int32),
            jnp.where(beams == 0, 0.0, NEG_INF),  # log p(prefix, last frame blank)
            jnp.full((k,), NEG_INF))  # log p(prefix, last frame = its last label)

    def step(carry, inp):
        seq, length, pb, pnb = carry
        lp, ok = inp
        has_last = length > 0
        last = jnp.where(has_last, seq[beams, jnp.maximum(length - 1, 0)], -1)
        total = jnp.logaddexp(pb, pnb)
        stay_pb = total + lp[BLANK]
        stay_pnb = jnp.where(has_last, pnb + lp[jnp.maximum(last, 0)], NEG_INF)
        # prefix + c: after a blank only when c repeats the last label
        ext = jnp.where(labels[None, :] == last[:, None], pb[:, None], total[:, None]) + lp
        ext = jnp.where((labels[None, :] == BLANK) | (length[:, None] >= max_length),
                        NEG_INF, ext)  # [k, num]
        # beam j already holds prefix(k) + last(j): merge that extension into it
        alive = total > NEG_INF
        pos = jnp.arange(max_length)
        same = jnp.all((seq[:, None, :] == seq[None, :, :]) | (pos >= length[None, :, None]),
                       axis=-1)  # same[j, i]: prefix i is a prefix of j's first length(i)
        parent = same & (length[:, None] == length[None, :] + 1) & alive[:, None] & alive[None]
        into = jnp.where(parent, ext[:, jnp.maximum(last, 0)].T, NEG_INF)  # [j, i]
        stay_pnb = jnp.logaddexp(stay_pnb, jax.nn.logsumexp(into, axis=1))
        merged = jnp.any(parent[:, :, None] & (last[:, None, None] == labels), axis=0)
        ext = jnp.where(merged, NEG_INF, ext)

        cand = jnp.concatenate([jnp.logaddexp(stay_pb, stay_pnb), ext.reshape(-1)])
        _, idx = jax.lax.top_k(cand, k)
        is_stay = idx < k
        src = jnp.where(is_stay, idx, (idx - k) // num)
        char = (idx - k) % num
        new_seq, new_len = seq[src], length[src]
        extended = new_seq.at[beams, jnp.minimum(new_len, max_length - 1)].set(char)
        new_seq = jnp.where(is_stay[:, None], new_seq, extended)
        new_len = jnp.where(is_stay, new_len, jnp.minimum(new_len + 1, max_length))
        new_pb = jnp.where(is_stay, stay_pb[src], NEG_INF)
        new_pnb = jnp.where(is_stay, stay_pnb[src], ext.reshape(-1)[jnp.maximum(idx - k, 0)])
        new = (new_seq, new_len, new_pb, new_pnb)
        return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, carry), None

    (seq, length, pb, pnb), _ = jax.lax.scan(step, init, (log_probs, valid))
    scores = jnp.logaddexp(pb, pnb)
    order = jnp.argsort(-scores)
    return seq[order], length[order], scores[order]


def prefix_beam_search(log_probs: jax.Array, mask: jax.Array | None = None,
                       beam_width: int = 8, max_length: int | None = None):
    """CTC prefix beam search (see the module docstring).

    log_probs [B, T, K] (log-softmax outputs; index 0 = blank), mask [B, T]. Returns
    (prefixes [B, beam_width, max_length] padded with 0, lengths [B, beam_width],
    log p(prefix | x) [B, beam_width]), best first; unused beams score -inf.
    `max_length` (default T) bounds the prefix length.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    batch, frames, _ = log_probs.shape
    max_length = frames if max_length is None else int(max_length)
    if mask is None:
        mask = jnp.ones((batch, frames), bool)
    one = lambda lp, m: _prefix_beam_one(lp, m, beam_width, max_length)  # noqa: E731
    return jax.vmap(one)(log_probs.astype(jnp.float32), mask.astype(bool))


def edit_distance(hyp: jax.Array, hyp_len: jax.Array, ref: jax.Array,
                  ref_len: jax.Array) -> jax.Array:
    """Levenshtein distance between hyp[b, :hyp_len[b]] and ref[b, :ref_len[b]] -> [B] int32.

    Jittable: one `lax.scan` over the hyp positions; each DP row is computed at once with
    D[i, j] = j + cummin_k(c[k] - k), where c[k] = min(D[i-1, k] + 1, D[i-1, k-1] + [h_i != r_k])
    (deletion, substitution) and c[0] = i, so the insertion chain is the running minimum.
    """
    width = ref.shape[1]
    cols = jnp.arange(width + 1, dtype=jnp.int32)

    def one(h, hl, r, rl):
        def row(prev, inp):
            i, tok = inp
            sub = prev[:-1] + (tok != r).astype(jnp.int32)
            c = jnp.concatenate([i[None], jnp.minimum(sub, prev[1:] + 1)])
            d = cols + jax.lax.cummin(c - cols)
            return jnp.where(i <= hl, d, prev), None
        steps = (jnp.arange(1, h.shape[0] + 1, dtype=jnp.int32), h)
        final, _ = jax.lax.scan(row, cols, steps)
        return final[rl]

    return jax.vmap(one)(hyp.astype(jnp.int32), jnp.asarray(hyp_len, jnp.int32),
                         ref.astype(jnp.int32), jnp.asarray(ref_len, jnp.int32))


__all__ = ["BLANK", "CTCModel", "ctc_loss", "edit_distance", "greedy_ctc_decode",
           "prefix_beam_search"]
