"""The scan engine: run a cell over [batch, time, features] with `jax.lax.scan`.

    carry, ys = unroll(cell, params, xs)                      # xs [batch, time, in]
    carry, ys = unroll(cell, params, xs, mask=mask)           # mask [batch, time], True = real step
    carry, ys = unroll(cell, params, xs, lengths=lengths)     # lengths [batch]: padding at the end
    (c_fw, c_bw), ys = bidirectional(cell, (p_fw, p_bw), xs, mask=mask)
    carry, ys = unroll(cell, params, xs, resets=resets)       # resets [batch, time]: new segments

Resets (Haiku's `ResetCore`): `resets[b, t]` True says that step t starts a new segment of
sequence b (a document, an episode). Before the step at t the carry of that sequence is
replaced by `cell.initial_carry` (zeros for most cells), so no state and no gradient crosses
the boundary; the outputs and final carry equal separate unrolls of the segments, each from
the initial carry (the segment read first starts from `carry`; forwards, not even that one
when resets[b, 0] is set). With `reverse=True` the same segments are read backwards: the
carry is restarted before the step at t when resets[b, t + 1] is set (the last step of a
segment is the first one the reverse run reads; resets[b, 0] has no effect there), so
`bidirectional` passes one `resets` to both directions. A reset applies whatever the mask
says: at a masked step it restarts the carry and the step then leaves it there (the segment
that starts at a padded step starts from the initial carry, as a separate unroll of it would). Stacks reset every layer at the same steps.
Resets always run on the scan (`fused="auto"` falls back to it; a forced fused path is an
error), linear-recurrence cells included (their associative scan has no reset).

The input half of every gate is computed for all time steps in one matmul before the scan
(`cell.project_inputs`), so the scan body holds only the recurrent matmul. A `Stack` is unrolled
layer by layer, each layer with its own hoisted projection.

Speed and memory options (none changes the results beyond float rounding):
  unroll         time steps per compiled loop iteration; "auto" (or 0) picks from a table
                 measured per backend and shape (`auto_unroll`).
  remat          recompute activations in the backward pass: True checkpoints chunks of about
                 sqrt(time) steps (only the carries between chunks are stored), an int k chunks
                 of k steps (1 = every step).
  fused          "auto" runs a plain LSTM layer through cuDNN on a CUDA GPU (float32, no general
                 mask), and on CPU every cell whose step is one recurrent matmul and elementwise
                 work (LSTM, GRU, Elman; float32 or bfloat16, any mask) through a hand-written
                 backward pass ("vjp") or, for float32 GRU and large-step LSTM layers, the
                 fused CPU kernel ("cpu"); everything else through the scan. "scan", "cudnn",
                 "pallas", "vjp", "cpu" force a path (`rnnlab.fused`). The fused paths support
                 reverse-mode autodiff only: for `jax.jvp` / `jax.jacfwd` through float32
                 cells on CPU or GPU pass "scan" (float64 always takes the scan).
  compute_dtype  mixed precision: e.g. "bfloat16" multiplies in bfloat16 while parameters,
                 carry, gates and accumulation stay float32 (the floating parameters are cast
                 once, outside the loop; their gradients arrive in float32). Defaults to the
                 cell's own `compute_dtype` field, so `cell_kwargs="compute_dtype=bfloat16"`
                 selects it from a config.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from rnnlab import fused as fused_lib
from rnnlab.cells.base import Embedded, padding_mask
from rnnlab.cells.stack import Stack
from rnnlab.fused.dispatch import is_plain_lstm

# Steps per loop iteration for `unroll="auto"`: backend -> rows (max hidden, max batch, unroll);
# the first row whose bounds hold (None = any) wins.
AUTO_UNROLL = {
    # `python -m experiments.benchmarks.micro --bench=unroll` (one LSTM layer, forward and
    # backward, 32 steps, 2 shared cores at load average 11-15, so +-20% is noise): speedup of
    # unroll 2 over 1 was 1.07-1.40x at batch 1 (hidden 32-650); 0.74-1.09x for hidden <= 256
    # at batch 8-32 (4 and 8 down to 0.3x); for hidden 512/650 even at batch 8 (0.83-1.04x),
    # 1.04-1.92x at batch 20-32 (five runs; 4 and 8 no better).
    "cpu": ((None, 1, 2), (256, None, 1), (None, 16, 1), (None, None, 2)),
}


def auto_unroll(batch: int, hidden: int, time: int, backend: str | None = None) -> int:
    """The `unroll` that `unroll="auto"` uses for one layer (see `AUTO_UNROLL`). Backends without
    measurements (GPU, TPU) get 1. Never more than `time`."""
    rows = AUTO_UNROLL.get(backend or jax.default_backend(), ((None, None, 1),))
    for max_hidden, max_batch, k in rows:
        if (max_hidden is None or hidden <= max_hidden) and (max_batch is None
                                                             or batch <= max_batch):
            return max(1, min(k, time))
    return 1


def _batch_shape(carry):
    return jax.tree_util.tree_leaves(carry)[0].shape[:-1]


def _check(cell, params, xs, carry, mask, lengths, unroll, remat, resets=None):
    if not hasattr(cell, "step") or not hasattr(cell, "init"):
        raise ValueError(f"unroll needs a cell (rnnlab.cells.make(...)), got {cell!r}")
    if xs.ndim < 2:
        raise ValueError(f"inputs must be [batch..., time, features], got shape {tuple(xs.shape)}")
    cell.check_input(params, xs)
    batch_shape = xs.shape[:-2]
    if mask is not None and tuple(mask.shape) != tuple(xs.shape[:-1]):
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the inputs' "
                         f"[batch..., time] shape {tuple(xs.shape[:-1])}")
    if resets is not None and tuple(resets.shape) != tuple(xs.shape[:-1]):
        raise ValueError(f"resets shape {tuple(resets.shape)} must equal the inputs' "
                         f"[batch..., time] shape {tuple(xs.shape[:-1])}")
    if lengths is not None:
        if mask is not None:
            raise ValueError("pass either mask= or lengths=, not both")
        if tuple(lengths.shape) != tuple(batch_shape):
            raise ValueError(f"lengths shape {tuple(lengths.shape)} must equal the inputs' "
                             f"batch shape {tuple(batch_shape)}")
    if not (unroll == "auto" or (isinstance(unroll, numbers.Integral) and unroll >= 0)):
        raise ValueError(f"unroll={unroll!r} must be a positive int, or 'auto' (or 0) to pick "
                         "it per shape")
    if not isinstance(remat, numbers.Integral) or remat < 0:
        raise ValueError(f"remat={remat!r} must be False, True (chunks of ~sqrt(time) steps) "
                         "or a chunk length >= 1")
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


def _cast_floats(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def unroll(cell, params, xs: jax.Array, carry=None, mask: jax.Array | None = None,
           reverse: bool = False, unroll: int | str = 1, remat: bool | int = False, *,
           lengths: jax.Array | None = None, fused: str = "auto", compute_dtype=None,
           resets: jax.Array | None = None):
    """Runs `cell` over the time axis of xs.

    Args:
      cell: a cell from `rnnlab.cells` (or a `Stack`).
      params: the cell's parameter pytree.
      xs: [*batch, time, features] inputs, or `rnnlab.Embedded(table, ids)`: embedded tokens
        that the first layer may fold into its input projection (the plain LSTM on the CPU
        kernel; `Embedded`), looked up as table[ids] everywhere else.
      carry: initial carry with batch shape `xs.shape[:-2]`; zeros (`cell.initial_carry`) if None.
      mask: optional [*batch, time] booleans; at False steps the carry is left unchanged and the
        output is zero. With `reverse=True` and padding at the end, each sequence's reverse run
        starts at its own last real step.
      reverse: scan from the last step to the first (outputs stay in input order).
      unroll: time steps per loop iteration of the compiled scan; "auto" or 0: `auto_unroll`.
      remat: recompute activations in the backward pass instead of storing them: True in
        chunks of about sqrt(time) steps, an int k in chunks of k steps.
      lengths: optional [*batch] ints, the number of real steps of each sequence (padding at the
        end): the same as mask = arange(time) < lengths, and the form cuDNN accepts.
      fused: "auto", "scan", "cudnn", "pallas", "vjp" or "cpu": see `rnnlab.fused`.
      compute_dtype: None (the cell's `compute_dtype` field; None there too: the parameters'
        dtype) or e.g. "bfloat16" (mixed precision, see the module docstring).
      resets: optional [*batch, time] booleans, True where a new segment starts: the carry
        restarts from `cell.initial_carry` before that step (module docstring, "Resets").

    Returns:
      (final_carry, ys) with ys [*batch, time, cell.output_size].
    """
    embedded = xs if isinstance(xs, Embedded) else None
    if embedded is not None:  # the dense inputs for the checks and every other path (dead code
        # under jit where the first layer folds the lookup)
        xs = embedded.lookup()
    _check(cell, params, xs, carry, mask, lengths, unroll, remat, resets)
    if lengths is not None:  # padding normalised once; `lengths` stays for cuDNN, which takes it
        mask = padding_mask(None, lengths, xs.shape[-2])
    opts = dict(reverse=reverse, unroll=unroll, remat=remat, fused=fused,
                compute_dtype=compute_dtype, resets=resets)
    if isinstance(cell, Stack):
        return _unroll_stack(cell, params, xs, carry, mask, lengths, opts, embedded)
    return _unroll_layer(cell, params, xs, carry, mask, lengths, **opts, embedded=embedded)


def _folds(path, cell, xs, embedded, compute_dtype) -> bool:
    """Whether this layer reads `embedded` through the CPU kernel's token path: the plain LSTM
    on "cpu", float32, and a table no longer than the tokens (else forming E W_ih costs more
    than the projection it saves)."""
    return (embedded is not None and path == "cpu" and is_plain_lstm(cell)
            and compute_dtype is None and embedded.table.dtype == jnp.float32
            and embedded.table.ndim == 2 and embedded.table.shape[0] <= math.prod(xs.shape[:-1]))


def _unroll_layer(cell, params, xs, carry, mask, lengths, reverse, unroll, remat, fused,
                  compute_dtype, resets=None, embedded=None):
    if compute_dtype is None:  # the cell's own field (rnnlab.cells.Cell.compute_dtype)
        compute_dtype = getattr(cell, "compute_dtype", None)
    if compute_dtype is not None:
        compute_dtype = jnp.dtype(compute_dtype)
        params = _cast_floats(params, compute_dtype)  # once, outside the loop
    if hasattr(cell, "prepare"):  # parameter-only work (e.g. expRNN's expm), once per unroll
        params = cell.prepare(params)
    if hasattr(cell, "parallel_unroll") and resets is None:  # linear recurrences: associative
        # scan, O(log T) depth
        return cell.parallel_unroll(params, xs, carry, mask, reverse)

    time = xs.shape[-2]
    if unroll in ("auto", 0):
        unroll = auto_unroll(math.prod(xs.shape[:-2]), cell.hidden_size, time)
    if carry is None:  # zeros in the projection's dtype; the mixed-precision policy keeps the
        # carry in float32 (or wider)
        dtype = jax.eval_shape(lambda x: cell.project_inputs(params, x), xs[..., :1, :]).dtype
        if compute_dtype is not None:
            dtype = jnp.promote_types(dtype, jnp.float32)
        carry = cell.initial_carry(xs.shape[:-2], dtype=dtype)
    path = fused_lib.select(cell, params, xs, carry, mask, compute_dtype, remat, fused, resets,
                            lengths=lengths)
    if path != "scan":
        inputs = embedded if _folds(path, cell, xs, embedded, compute_dtype) else xs
        try:
            return fused_lib.fused_unroll(path, cell, params, inputs, carry, mask, lengths,
                                          reverse, unroll=unroll)
        except NotImplementedError as e:  # under vmap: the cuDNN binding has no batching rule
            if fused != "auto" or not fused_lib.is_fallback_error(e):
                raise

    # time-major before the projection: transposing xs moves `features` values per step, the
    # projection's output G (4 hidden for an LSTM) would be several times more
    xs_t = jnp.moveaxis(xs, -2, 0)  # [time, *batch, in]

    def project(x):  # [steps, *batch, in] -> [steps, *batch, G]
        return cell.project_inputs(params, x)

    ms = None if mask is None else jnp.moveaxis(mask.astype(bool), -1, 0)  # [time, *batch]
    rs, fresh = None, None
    if resets is not None:
        rs = jnp.moveaxis(resets.astype(bool), -1, 0)
        if reverse:  # the reverse run of a segment starts at its last step: the one before the
            # next segment's first
            rs = jnp.concatenate([rs[1:], jnp.zeros_like(rs[:1])])
        fresh = jax.tree_util.tree_map(lambda z, c: z.astype(c.dtype),
                                       cell.initial_carry(xs.shape[:-2]), carry)

    def body(c, inp):
        x_t, m_t, r_t = inp
        if r_t is not None:
            restart = r_t[..., None]
            c = jax.tree_util.tree_map(lambda z, o: jnp.where(restart, z, o), fresh, c)
        new_c, y = cell.step(params, c, x_t)
        new_c = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new_c, c)
        if m_t is not None:
            keep = m_t[..., None]
            new_c = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new_c, c)
            y = jnp.where(keep, y, jnp.zeros((), y.dtype))
        return new_c, y

    carry, ys = _scan(body, project, carry, xs_t, (ms, rs), time, reverse, unroll, remat)
    return carry, jnp.moveaxis(ys, 0, -2)


def remat_chunk(time: int) -> int:
    """Chunk length for `remat=True`: about sqrt(time), which balances the stored carries
    (time / k) against one chunk's recomputed activations (k)."""
    return max(1, round(math.sqrt(time)))


def _scan(body, project, carry, xs, ms, time, reverse, unroll, remat):
    """lax.scan of `body` over the projected inputs project(xs) [time, ...] and the per-step
    extras `ms` (a tuple of [time, ...] arrays or Nones: mask and resets).

    With remat in chunks of k steps: an outer scan over time // k checkpointed chunks, each
    projecting its own inputs (so neither the projection [time, ..., G] nor the per-step
    activations are stored: only xs and the carry between chunks), then (first, in reverse)
    a scan over the remaining steps. k = 1 checkpoints every step."""
    if not remat:
        return jax.lax.scan(body, carry, (project(xs), *ms), reverse=reverse, unroll=unroll)
    k = remat_chunk(time) if remat is True else int(remat)
    if k == 1 or k >= time:
        return jax.lax.scan(jax.checkpoint(body), carry, (project(xs), *ms), reverse=reverse,
                            unroll=unroll)
    n = time // k

    @jax.checkpoint
    def chunk(c, inp):
        x_c, m_c = inp
        return jax.lax.scan(body, c, (project(x_c), *m_c), reverse=reverse,
                            unroll=min(unroll, k))

    def part(lo, hi):
        return jax.tree_util.tree_map(lambda a: a[lo:hi], (xs, ms))

    def run_head(c):
        head = jax.tree_util.tree_map(lambda a: a.reshape(n, k, *a.shape[1:]), part(0, n * k))
        c, ys = jax.lax.scan(chunk, c, head, reverse=reverse)
        return c, ys.reshape(n * k, *ys.shape[2:])

    def run_tail(c):
        x_r, m_r = part(n * k, time)
        return jax.lax.scan(jax.checkpoint(body), c, (project(x_r), *m_r), reverse=reverse,
                            unroll=unroll)

    if n * k == time:
        return run_head(carry)
    if reverse:
        carry, ys_tail = run_tail(carry)
        carry, ys_head = run_head(carry)
    else:
        carry, ys_head = run_head(carry)
        carry, ys_tail = run_tail(carry)
    return carry, jnp.concatenate([ys_head, ys_tail])


def _unroll_stack(stack: Stack, params, xs, carry, mask, lengths, opts, embedded=None):
    carries = []
    real = mask
    for l, cell in enumerate(stack.cells):
        c, ys = _unroll_layer(cell, params[l], xs, None if carry is None else carry[l], mask,
                              lengths, **opts, embedded=embedded if l == 0 else None)
        residual = stack.residual_applies(l, xs.shape[-1])
        xs = ys + xs if residual else ys
        if residual and real is not None:  # padded steps output zero, residual or not
            xs = jnp.where(real[..., None].astype(bool), xs, jnp.zeros((), xs.dtype))
        carries.append(c)
    return tuple(carries), xs


def bidirectional(cell, params, xs: jax.Array, carry=None, mask: jax.Array | None = None,
                  backward_cell=None, merge: str = "concat", **kwargs):
    """Runs a forward and a backward cell over xs and merges their outputs.

    params = (forward_params, backward_params); carry, if given, is a (forward, backward) pair;
    `backward_cell` defaults to `cell`. The backward pass scans from the end; with a padding
    mask it starts at each sequence's own last real step, so outputs at real steps are the same
    as running it on each sequence cut to its length. merge: "concat" ([..., 2 * output]),
    "sum", or "none" (returns the pair of outputs). kwargs go to `unroll` (e.g. lengths=, or
    resets=, which marks segment starts for both directions).

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
