"""Autoregressive decoding over a step function: greedy and beam search, pure and jittable.

    tokens, logp, lengths = greedy_decode(step_fn, context, state, max_length, bos_id, eos_id)
    seqs, scores = beam_search(step_fn, context, state, max_length, bos_id, eos_id,
                               beam_width=4, length_penalty=0.6)      # seqs [batch, beam, L]
    stats = match_stats(tokens, targets)                               # exact match, tokens

A step function is `step_fn(context, state, tokens [N]) -> (logits [N, vocab], new_state)`:
`context` is a pytree that stays fixed while decoding (encoder outputs, attention keys), `state`
the pytree that changes (the decoder carry); both have the rows N as leading axis. The logits
are turned into log-probabilities here (`log_softmax` after masking `banned_ids`), so a step
function may return log-probabilities directly. Beam search repeats `context` and `state`
`beam_width` times along the rows (row b's beams are rows b*K .. b*K+K-1) and reorders only
`state` as beams are chosen.

Output convention: a decoded sequence is its tokens up to and including `eos_id`, then
`pad_id` to the end; a sequence that reached `max_length` without EOS is cut there. Both loops
are `lax.while_loop`s that stop when every row is finished.

Beam search keeps two sets of `beam_width` hypotheses per row (Wu et al. 2016; the scheme of
tensor2tensor and flax/examples/wmt): the alive ones (no EOS yet, ranked by log-probability) and
the finished ones (ended by EOS, ranked by score = log-prob / lp(length)); each step takes the
top 2K of the K*V extensions so that K alive ones survive even when many end. With
`length_penalty` alpha, lp(n) = ((5 + n) / 6)^alpha (alpha = 0: the plain log-probability);
n counts the emitted tokens, EOS included. It stops when no alive hypothesis can beat the worst
finished one; at `max_length` the alive hypotheses compete with the finished ones as they are.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def _log_probs(logits: jax.Array, banned_ids) -> jax.Array:
    logits = logits.astype(jnp.float32)
    if banned_ids:
        banned = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(banned_ids)].set(True)
        logits = jnp.where(banned, NEG_INF, logits)
    return jax.nn.log_softmax(logits, axis=-1)


def _rows(tree) -> int:
    return jax.tree_util.tree_leaves(tree)[0].shape[0]


def length_penalty_factor(length, alpha: float):
    """GNMT's lp(n) = ((5 + n) / 6)^alpha (1 for alpha = 0)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def greedy_decode(step_fn: Callable, context, state, max_length: int, bos_id: int, eos_id: int,
                  pad_id: int = 0, banned_ids: tuple = ()):
    """Feeds back the most probable token until EOS or `max_length` tokens.

    context, state: pytrees with the batch as leading axis (`state` may be None if `context`
    is not). Returns (tokens [batch, max_length] int32, log_prob [batch] of the emitted tokens,
    lengths [batch]: emitted tokens, EOS included).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    batch = _rows((context, state))
    init = (jnp.int32(0), state, jnp.full((batch,), bos_id, jnp.int32),
            jnp.full((batch, max_length), pad_id, jnp.int32), jnp.zeros((batch,), jnp.float32),
            jnp.zeros((batch,), bool))

    def cond(c):
        t, *_, done = c
        return (t < max_length) & ~jnp.all(done)

    def body(c):
        t, st, prev, toks, logp, done = c
        logits, st = step_fn(context, st, prev)
        lp = _log_probs(logits, banned_ids)
        tok = jnp.argmax(lp, axis=-1).astype(jnp.int32)
        gained = jnp.take_along_axis(lp, tok[:, None], axis=-1)[:, 0]
        tok = jnp.where(done, pad_id, tok)
        logp = logp + jnp.where(done, 0.0, gained)
        toks = toks.at[:, t].set(tok)
        return t + 1, st, tok, toks, logp, done | (tok == eos_id)

    _, _, _, toks, logp, _ = jax.lax.while_loop(cond, body, init)
    return toks, logp, sequence_lengths(toks, eos_id, pad_id)


def sequence_lengths(tokens: jax.Array, eos_id: int, pad_id: int = 0) -> jax.Array:
    """Tokens up to and including the first EOS (all non-pad tokens if there is none)."""
    is_eos = tokens == eos_id
    first = jnp.argmax(is_eos, axis=-1)
    return jnp.where(is_eos.any(-1), first + 1, (tokens != pad_id).sum(-1)).astype(jnp.int32)


def _reorder(tree, src: jax.Array, batch: int, width: int):
    """Leaves [batch * width, ...] (beam b of row r at r * width + b) -> the beams src
    [batch, width] of each row, same layout."""
    def take(x):
        y = x.reshape(batch, width, *x.shape[1:])
        idx = src.reshape(batch, width, *([1] * (x.ndim - 1)))
        return jnp.take_along_axis(y, idx, axis=1).reshape(x.shape)
    return jax.tree_util.tree_map(take, tree)


def beam_search(step_fn: Callable, context, state, max_length: int, bos_id: int, eos_id: int,
                beam_width: int = 4, length_penalty: float = 0.0, pad_id: int = 0,
                banned_ids: tuple = ()):
    """Beam search (see the module docstring) with a fixed `beam_width` K.

    context, state: pytrees with the batch as leading axis. Returns (sequences
    [batch, K, max_length] int32, scores [batch, K] float32), best first; score =
    log-prob / lp(length). Rows with fewer than K complete hypotheses have -inf scores at the
    end.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    batch, k, length = _rows((context, state)), beam_width, max_length
    repeat = lambda x: jnp.repeat(x, k, axis=0)  # noqa: E731
    context = jax.tree_util.tree_map(repeat, context)
    state = jax.tree_util.tree_map(repeat, state)
    seqs0 = jnp.full((batch, k, length), pad_id, jnp.int32)
    first_only = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)
    init = dict(
        t=jnp.int32(0), state=state,
        alive_seq=seqs0, alive_logp=jnp.tile(first_only, (batch, 1)),
        last=jnp.full((batch, k), bos_id, jnp.int32),
        fin_seq=seqs0, fin_score=jnp.full((batch, k), NEG_INF),
    )

    def cond(c):
        best_alive = c["alive_logp"][:, 0] / length_penalty_factor(length, length_penalty)
        worst_fin = c["fin_score"][:, -1]
        return (c["t"] < length) & ~jnp.all(worst_fin >= best_alive)

    def body(c):
        t = c["t"]
        logits, st = step_fn(context, c["state"], c["last"].reshape(-1))
        lp = _log_probs(logits, banned_ids)
        vocab = lp.shape[-1]
        cand = (c["alive_logp"][:, :, None] + lp.reshape(batch, k, vocab)).reshape(batch, -1)
        n2 = min(2 * k, k * vocab)
        top_logp, top_idx = jax.lax.top_k(cand, n2)
        beam, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seq2 = jnp.take_along_axis(c["alive_seq"], beam[:, :, None], axis=1).at[:, :, t].set(tok)
        ended = tok == eos_id

        alive_logp, keep = jax.lax.top_k(jnp.where(ended, NEG_INF, top_logp), k)
        src = jnp.take_along_axis(beam, keep, axis=1)  # alive beams to continue from
        new_state = _reorder(st, src, batch, k)

        fin_cand = jnp.where(ended, top_logp / length_penalty_factor(t + 1, length_penalty),
                             NEG_INF)
        all_seq = jnp.concatenate([c["fin_seq"], seq2], axis=1)
        fin_score, pick = jax.lax.top_k(jnp.concatenate([c["fin_score"], fin_cand], 1), k)
        return dict(t=t + 1, state=new_state,
                    alive_seq=jnp.take_along_axis(seq2, keep[:, :, None], axis=1),
                    alive_logp=alive_logp, last=jnp.take_along_axis(tok, keep, axis=1),
                    fin_seq=jnp.take_along_axis(all_seq, pick[:, :, None], axis=1),
                    fin_score=fin_score)

    c = jax.lax.while_loop(cond, body, init)
    # at max_length the unfinished hypotheses are complete (cut) hypotheses too
    alive_score = jnp.where(c["t"] == length,
                            c["alive_logp"] / length_penalty_factor(length, length_penalty),
                            NEG_INF)
    scores, pick = jax.lax.top_k(jnp.concatenate([c["fin_score"], alive_score], 1), k)
    seqs = jnp.take_along_axis(jnp.concatenate([c["fin_seq"], c["alive_seq"]], 1),
                               pick[:, :, None], axis=1)
    return seqs, scores


def match_stats(predicted: jax.Array, targets: jax.Array, pad_id: int = 0) -> dict:
    """Summed comparison of decoded sequences with targets, both [batch, time] (padded with
    `pad_id` after EOS; the shorter is padded to the longer). Rows whose target is all padding
    (filler rows of a last, partial batch) are left out.

    Returns {"sequences": rows counted, "exact": rows equal over every position,
    "tokens": target tokens (EOS included), "correct": target tokens matched position-wise}.
    """
    width = max(predicted.shape[1], targets.shape[1])
    pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])),  # noqa: E731
                            constant_values=pad_id)
    predicted, targets = pad(predicted), pad(targets)
    real = targets != pad_id
    row = real.any(-1)
    same = predicted == targets
    return {"sequences": row.sum().astype(jnp.float32),
            "exact": (same.all(-1) & row).sum().astype(jnp.float32),
            "tokens": real.sum().astype(jnp.float32),
            "correct": (same & real).sum().astype(jnp.float32)}


__all__ = ["beam_search", "greedy_decode", "length_penalty_factor", "match_stats",
           "sequence_lengths"]
