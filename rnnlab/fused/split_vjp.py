"""A hand-written backward pass for any cell whose step is one recurrent matmul followed by
elementwise work (Elman, GRU in its cuDNN form, LSTM with peepholes or layer norm).

    carry, ys = split_recurrence(cell, params, xp, carry0, mask, unroll=1)

Such a cell splits its step (`Cell.recurrent_weight`, `recurrent_input`, `combine`):

    zh = recurrent_input(carry) @ params[recurrent_weight]
    carry, y = combine(params, carry, xp_t, zh)

`jax.grad` of a `lax.scan` over that step adds h_{t-1}^T dzh_t into dW_hh inside the reverse
loop: a [hidden, G] read-add-write per step, several MB for the benchmark shapes. Here the
forward saves each step's carry and zh, the reverse loop runs the vjp of `combine` (recomputed
from the saved inputs: elementwise only) and one [batch, G] x [G, hidden] matmul per step, and
dW_hh = sum_t h_{t-1}^T dzh_t is one large matmul after the loop. Reverse-mode only (a custom
VJP); `rnnlab.unroll` uses it on CPU through `fused="auto"` or `fused="vjp"` (`rnnlab.fused`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from rnnlab.cells.base import dot

F32 = jnp.float32


def _masked_combine(cell, params, carry, x, zh, keep):
    new, y = cell.combine(params, carry, x, zh)
    new = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new, carry)
    if keep is not None:
        k = keep[..., None] > 0
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(k, n, o), new, carry)
        y = jnp.where(k, y, jnp.zeros((), y.dtype))
    return new, y


def prefetch_scan(step, carry, xs, unroll=1):
    """`jax.lax.scan(step, carry, xs, unroll=unroll)` (forward in time) that loads the next
    `unroll` steps' slice of xs one loop iteration ahead and hands it over in the loop carry.
    On XLA:CPU an elementwise fusion with transcendentals that reads its operand straight from
    a dynamic slice of a stacked array runs several times slower (LSTM gate arithmetic alone
    at [32, 2048], 128 steps: 36 ms against 11 ms prefetched), so the slice becomes its own
    small copy and the step arithmetic reads a plain buffer. On workload B this made the GRU's
    and the tanh RNN's training step ~15% faster; the LSTM's forward and every backward loop
    measured no gain, so they use plain scans. Only for loops whose gradient comes from a
    custom VJP: under autodiff the carried slice would make JAX accumulate a full-size
    cotangent of xs at every step. `unroll` must divide the length (else 1 is used)."""
    length = jax.tree_util.tree_leaves(xs)[0].shape[0]
    k = unroll if unroll > 1 and length % unroll == 0 else 1
    n = length // k
    chunks = jax.tree_util.tree_map(lambda a: a.reshape(n, k, *a.shape[1:]), xs)

    def body(state, i):
        c, x = state
        nxt = jax.tree_util.tree_map(
            lambda a: jax.lax.dynamic_index_in_dim(a, jnp.minimum(i + 1, n - 1), 0,
                                                   keepdims=False), chunks)
        ys = []
        for j in range(k):
            c, y = step(c, jax.tree_util.tree_map(lambda a: a[j], x))
            ys.append(y)
        return (c, nxt), jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ys)

    first = jax.tree_util.tree_map(lambda a: a[0], chunks)
    (carry, _), ys = jax.lax.scan(body, (carry, first), jnp.arange(n))
    return carry, jax.tree_util.tree_map(lambda a: a.reshape(length, *a.shape[2:]), ys)


def _forward(cell, params, xp, carry0, mask, unroll, save):
    w = params[cell.recurrent_weight]

    def step(carry, inputs):
        x, keep = inputs
        zh = dot(cell.recurrent_input(carry), w)
        new, y = _masked_combine(cell, params, carry, x, zh, keep)
        return new, ((y, new, zh) if save else y)

    return prefetch_scan(step, carry0, (xp, mask), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def _recurrence(cell, params, xp, carry0, mask, unroll):
    return _forward(cell, params, xp, carry0, mask, unroll, save=False)


def _recurrence_fwd(cell, params, xp, carry0, mask, unroll):
    carry, (ys, carries, zh) = _forward(cell, params, xp, carry0, mask, unroll, save=True)
    return (carry, ys), (params, xp, carry0, mask, carries, zh)


def _recurrence_bwd(cell, unroll, res, cotangents):
    params, xp, carry0, mask, carries, zh = res
    d_carry, d_ys = cotangents
    name = cell.recurrent_weight
    w = params[name]
    rest = {k: v for k, v in params.items() if k != name}  # what `combine` may use
    prev = jax.tree_util.tree_map(lambda a0, a: jnp.concatenate([a0[None], a[:-1]]),
                                  carry0, carries)  # the carry entering each step

    def step(acc, inputs):
        d_c, d_rest = acc
        c_prev, x, z, d_y, keep = inputs
        fn = lambda p, c, x_, z_: _masked_combine(cell, {**p, name: w}, c, x_, z_, keep)  # noqa: E731
        _, pull = jax.vjp(fn, rest, c_prev, x, z)
        dp, dc_prev, dx, dz = pull((d_c, d_y))
        dh = dot(dz.astype(w.dtype), w.T)  # back through the recurrent matmul
        _, pull_h = jax.vjp(cell.recurrent_input, c_prev)
        (dc_h,) = pull_h(dh.astype(cell.recurrent_input(c_prev).dtype))
        dc_prev = jax.tree_util.tree_map(jnp.add, dc_prev, dc_h)
        d_rest = jax.tree_util.tree_map(jnp.add, d_rest, dp)
        return (dc_prev, d_rest), (dx, dz)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, rest)
    # a plain reverse scan: prefetching here (as in the forward) measured slower
    (d_c0, d_rest), (dxp, dzh) = jax.lax.scan(
        step, (d_carry, zeros), (prev, xp, zh, d_ys, mask), unroll=unroll, reverse=True)
    h_prev = cell.recurrent_input(prev)  # [time, batch, hidden]
    dw = jnp.einsum("tbh,tbg->hg", h_prev.astype(w.dtype), dzh.astype(w.dtype),
                    preferred_element_type=F32).astype(w.dtype)
    d_mask = None if mask is None else jnp.zeros_like(mask)
    return {**d_rest, name: dw}, dxp, d_c0, d_mask


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def split_recurrence(cell, params, xp: jax.Array, carry0, mask: jax.Array | None = None, *,
                     unroll: int = 1):
    """Runs `cell` over projected inputs xp [time, batch..., G] from carry0 with the
    hand-written backward pass (module docstring). mask: optional [time, batch...] (at False
    steps the carry is kept and the output is zero). Returns (final carry, ys [time, ...])."""
    if getattr(cell, "recurrent_weight", None) is None:
        raise ValueError(f"{type(cell).__name__} has no split step (one recurrent matmul, then "
                         "elementwise work): use fused='scan'")
    m = None if mask is None else mask.astype(F32)
    return _recurrence(cell, _plain(params), xp, carry0, m, int(unroll))


def _plain(tree):
    """Mappings (e.g. Flax's FrozenDict) as plain dicts, so the backward's gradient dict has
    the structure of the primal input."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree
