"""The scan engine: run a cell over [batch, time, features] with `jax.lax.scan`.

    carry, ys = unroll(cell, params, xs)                      # xs [batch, time, in]
    carry, ys = unroll(cell, params, xs, mask=mask)           # mask [batch, time], True = real step
    (c_fw, c_bw), ys = bidirectional(cell, (p_fw, p_bw), xs, mask=mask)

The input half of every gate is computed for all time steps in one matmul before the scan
(`cell.project_inputs`), so the scan body holds only the recurrent matmul. A `Stack` is unrolled
layer by layer, each layer with its own hoisted projection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab.cells.stack import Stack


def _batch_shape(carry):
    return jax.tree_util.tree_leaves(carry)[0].shape[:-1]


def _check(cell, params, xs, carry, mask):
    if not hasattr(cell, "step") or not hasattr(cell, "init"):
        raise ValueError(f"unroll needs a cell (rnnlab.cells.make(...)), got {cell!r}")
    if xs.ndim < 2:
        raise ValueError(f"inputs must be [batch..., time, features], got shape {tuple(xs.shape)}")
    cell.check_input(params, xs)
    batch_shape = xs.shape[:-2]
    if mask is not None and tuple(mask.shape) != tuple(xs.shape[:-1]):
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the inputs' "
                         f"[batch..., time] shape {tuple(xs.shape[:-1])}")
    if carry is not None:
        expected = cell.initial_carry(batch_shape)
        got = jax.tree_util.tree_structure(carry)
        want = jax.tree_util.tree_structure(expected)
        shapes_ok = got == want and all(
            a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(carry),
                                               jax.tree_util.tree_leaves(expected)))
        if not shapes_ok:
            raise ValueError(
                "carry does not match the cell's initial_carry for batch shape "
                f"{tuple(batch_shape)}: got {jax.tree_util.tree_map(jnp.shape, carry)}, expected "
                f"{jax.tree_util.tree_map(jnp.shape, expected)}")


def unroll(cell, params, xs: jax.Array, carry=None, mask: jax.Array | None = None,
           reverse: bool = False, unroll: int = 1, remat: bool = False):
    """Runs `cell` over the time axis of xs.

    Args:
      cell: a cell from `rnnlab.cells` (or a `Stack`).
      params: the cell's parameter pytree.
      xs: [*batch, time, features] inputs.
      carry: initial carry with batch shape `xs.shape[:-2]`; zeros (`cell.initial_carry`) if None.
      mask: optional [*batch, time] booleans; at False steps the carry is left unchanged and the
        output is zero. With `reverse=True` and padding at the end, each sequence's reverse run
        starts at its own last real step.
      reverse: scan from the last step to the first (outputs stay in input order).
      unroll: time steps per loop iteration of the compiled scan.
      remat: recompute each step in the backward pass instead of storing its activations.

    Returns:
      (final_carry, ys) with ys [*batch, time, cell.output_size].
    """
    _check(cell, params, xs, carry, mask)
    if isinstance(cell, Stack):
        return _unroll_stack(cell, params, xs, carry, mask, reverse, unroll, remat)
    if hasattr(cell, "parallel_unroll"):  # linear recurrences: associative scan, O(log T) depth
        return cell.parallel_unroll(params, xs, carry, mask, reverse)

    # time-major before the projection: transposing xs moves `features` values per step, the
    # projection's output G (4 hidden for an LSTM) would be several times more
    xp = cell.project_inputs(params, jnp.moveaxis(xs, -2, 0))  # [time, *batch, G]
    if carry is None:
        carry = cell.initial_carry(xs.shape[:-2], dtype=xp.dtype)
    ms = None if mask is None else jnp.moveaxis(mask.astype(bool), -1, 0)  # [time, *batch]

    def body(c, inp):
        x_t, m_t = inp
        new_c, y = cell.step(params, c, x_t)
        new_c = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new_c, c)
        if m_t is not None:
            keep = m_t[..., None]
            new_c = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new_c, c)
            y = jnp.where(keep, y, jnp.zeros((), y.dtype))
        return new_c, y

    if remat:
        body = jax.checkpoint(body)
    carry, ys = jax.lax.scan(body, carry, (xp, ms), reverse=reverse, unroll=unroll)
    return carry, jnp.moveaxis(ys, 0, -2)


def _unroll_stack(stack: Stack, params, xs, carry, mask, reverse, unroll_, remat):
    carries = []
    for l, cell in enumerate(stack.cells):
        c, ys = unroll(cell, params[l], xs, None if carry is None else carry[l], mask=mask,
                       reverse=reverse, unroll=unroll_, remat=remat)
        residual = stack.residual_applies(l, xs.shape[-1])
        xs = ys + xs if residual else ys
        if residual and mask is not None:  # padded steps output zero, residual or not
            xs = jnp.where(mask[..., None].astype(bool), xs, jnp.zeros((), xs.dtype))
        carries.append(c)
    return tuple(carries), xs


def bidirectional(cell, params, xs: jax.Array, carry=None, mask: jax.Array | None = None,
                  backward_cell=None, merge: str = "concat", **kwargs):
    """Runs a forward and a backward cell over xs and merges their outputs.

    params = (forward_params, backward_params); carry, if given, is a (forward, backward) pair;
    `backward_cell` defaults to `cell`. The backward pass scans from the end; with a padding
    mask it starts at each sequence's own last real step, so outputs at real steps are the same
    as running it on each sequence cut to its length. merge: "concat" ([..., 2 * output]),
    "sum", or "none" (returns the pair of outputs). kwargs go to `unroll`.

    Returns ((forward_carry, backward_carry), ys).
    """
    if merge not in ("concat", "sum", "none"):
        raise ValueError(f"unknown merge {merge!r}; valid choices: ['concat', 'none', 'sum']")
    if not isinstance(params, (tuple, list)) or len(params) != 2:
        raise ValueError("bidirectional needs params = (forward_params, backward_params)")
    c_fw, c_bw = (None, None) if carry is None else carry
    c_fw, y_fw = unroll(cell, params[0], xs, c_fw, mask=mask, **kwargs)
    c_bw, y_bw = unroll(backward_cell or cell, params[1], xs, c_bw, mask=mask, reverse=True,
                        **kwargs)
    if merge == "concat":
        ys = jnp.concatenate([y_fw, y_bw], axis=-1)
    elif merge == "sum":
        ys = y_fw + y_bw
    else:
        ys = (y_fw, y_bw)
    return (c_fw, c_bw), ys
