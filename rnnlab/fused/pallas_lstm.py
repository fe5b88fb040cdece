"""The LSTM recurrence as a Pallas kernel, with a hand-written backward pass (custom VJP).

    hs, h_T, c_T = lstm_recurrence(xp, w_hh, h0, c0, mask)
    hs, h_T, c_T = lstm_recurrence_scan(xp, w_hh, h0, c0, mask)  # same VJP, loops on lax.scan

The input projection is already hoisted (`LSTM.project_inputs`), so the kernel sees
xp [time, batch, 4 hidden] (the input half of the gates, bias included) and runs only the
sequential part: per step one [batch, hidden] x [hidden, 4 hidden] matmul against W_hh, which
stays resident in the kernel's memory (VMEM on TPU, SMEM/registers on GPU) for all time steps,
and the gate arithmetic in float32:

    z = xp_t + h_{t-1} W_hh,  [i, f, g, o] = [σ, σ, tanh, σ](z)
    c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t)

At a masked step (mask 0) the carry is left unchanged. `hs` [time, batch, hidden] is the carry
h after every step (the layer's outputs before masking).

Backward (reverse-mode only, as for any custom VJP): the gate activations are recomputed in
parallel for all steps from the saved carries (one large matmul, outside the kernel); the
backward kernel runs only the sequential chain dh_{t-1} = dz_t W_hh^T; dW_hh = Σ_t h_{t-1}^T dz_t
is again one large matmul outside. The grid is (batch blocks, time blocks): batch blocks are
independent, time blocks run in order and carry (h, c) in the resident final-carry outputs, so
on TPU long sequences can be streamed through VMEM in chunks of `block_time` steps.

`interpret=True` runs the kernel with Pallas's interpreter on any backend (the CPU tests);
compiled, it lowers to Mosaic (TPU) and Triton (GPU; checked from CPU by the tests, never run
on either device here). Triton needs power-of-two blocks with matmul sides >= 16, runs grid
programs in parallel (so on GPU keep one time block, the default) and holds W_hh in registers /
shared memory, which limits it to small hidden sizes: the GPU default is cuDNN (`cudnn.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

F32 = jnp.float32


def _dot(x, w):
    """x @ w in w's dtype with float32 accumulation and result."""
    return jnp.dot(x.astype(w.dtype), w, preferred_element_type=F32)


def _gates(z, hidden):
    i = jax.nn.sigmoid(z[..., :hidden])
    f = jax.nn.sigmoid(z[..., hidden:2 * hidden])
    g = jnp.tanh(z[..., 2 * hidden:3 * hidden])
    o = jax.nn.sigmoid(z[..., 3 * hidden:])
    return i, f, g, o


# --- kernels ----------------------------------------------------------------------------------


def _forward_kernel(*refs, hidden, block_time, has_mask, save_cells):
    xp_ref, w_ref, h0_ref, c0_ref, *refs = refs
    m_ref = refs.pop(0) if has_mask else None
    hs_ref, h_ref, c_ref, *refs = refs
    cs_ref = refs.pop(0) if save_cells else None
    gate = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]  # i, f, g, o

    @pl.when(pl.program_id(1) == 0)
    def _():
        h_ref[...] = h0_ref[...]
        c_ref[...] = c0_ref[...]

    # per-gate blocks, loaded once for all steps (ref slices: no value slicing in the loop)
    w = [w_ref[:, s] for s in gate]

    def step(t, carry):
        h, c = carry
        z = [xp_ref[t, :, s].astype(F32) + _dot(h, w_s) for s, w_s in zip(gate, w)]
        i, f, o = jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jax.nn.sigmoid(z[3])
        c_new = f * c + i * jnp.tanh(z[2])
        h_new = o * jnp.tanh(c_new)
        if has_mask:
            keep = m_ref[t] > 0  # [batch, 1]
            h_new = jnp.where(keep, h_new, h)
            c_new = jnp.where(keep, c_new, c)
        hs_ref[t] = h_new.astype(hs_ref.dtype)
        if save_cells:
            cs_ref[t] = c_new.astype(cs_ref.dtype)
        return h_new, c_new

    h, c = jax.lax.fori_loop(0, block_time, step,
                             (h_ref[...].astype(F32), c_ref[...].astype(F32)))
    h_ref[...] = h.astype(h_ref.dtype)
    c_ref[...] = c.astype(c_ref.dtype)


def _backward_kernel(*refs, hidden, block_time, has_mask):
    acts_ref, tc_ref, cp_ref, dhs_ref, wt_ref, dh_ref_in, dc_ref_in, *refs = refs
    m_ref = refs.pop(0) if has_mask else None
    dz_ref, dh_ref, dc_ref = refs
    gate = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]

    @pl.when(pl.program_id(1) == 0)
    def _():
        dh_ref[...] = dh_ref_in[...]
        dc_ref[...] = dc_ref_in[...]

    wt = [wt_ref[s, :] for s in gate]  # W_hh^T per gate: [hidden, hidden]

    def step(k, carry):
        t = block_time - 1 - k
        dh, dc = carry  # gradients reaching h_t, c_t through the carry
        dh = dh + dhs_ref[t].astype(F32)
        i, f, g, o = (acts_ref[t, :, s] for s in gate)
        tc = tc_ref[t]
        dct = dc + dh * o * (1.0 - tc * tc)
        dz = [dct * g * i * (1.0 - i), dct * cp_ref[t] * f * (1.0 - f),
              dct * i * (1.0 - g * g), dh * tc * o * (1.0 - o)]
        dc_prev = dct * f
        if has_mask:
            keep = m_ref[t] > 0
            dz = [jnp.where(keep, d, 0.0) for d in dz]
            dc_prev = jnp.where(keep, dc_prev, dc)
        dh_prev = sum(_dot(d, w_t) for d, w_t in zip(dz, wt))
        if has_mask:
            dh_prev = jnp.where(keep, dh_prev, dh)
        for s, d in zip(gate, dz):
            dz_ref[t, :, s] = d.astype(dz_ref.dtype)
        return dh_prev, dc_prev

    dh, dc = jax.lax.fori_loop(0, block_time, step,
                               (dh_ref[...].astype(F32), dc_ref[...].astype(F32)))
    dh_ref[...] = dh
    dc_ref[...] = dc


# --- pallas_call wrappers ---------------------------------------------------------------------


def _compiler_params():
    """Triton on GPU (Pallas's default there, Mosaic GPU, stages whole blocks through shared
    memory, which [time, batch, 4 hidden] blocks overflow); the platform default elsewhere."""
    return pltriton.CompilerParams(num_warps=4) if jax.default_backend() == "gpu" else None


def _blocks(time, batch, block_time, block_batch):
    bt = time if block_time is None else block_time
    bb = batch if block_batch is None else block_batch
    if time % bt or batch % bb:
        raise ValueError(f"block_time={bt} and block_batch={bb} must divide time={time} and "
                         f"batch={batch}")
    return bt, bb, time // bt, batch // bb


def _forward_call(xp, w, h0, c0, mask, *, save_cells, interpret, block_time, block_batch):
    time, batch, g4 = xp.shape
    hidden = g4 // 4
    bt, bb, nt, nb = _blocks(time, batch, block_time, block_batch)
    seq = lambda width: pl.BlockSpec((bt, bb, width), lambda b, t: (t, b, 0))  # noqa: E731
    row = pl.BlockSpec((bb, hidden), lambda b, t: (b, 0))
    in_specs = [seq(g4), pl.BlockSpec((hidden, g4), lambda b, t: (0, 0)), row, row]
    args = [xp, w, h0, c0]
    if mask is not None:
        in_specs.append(seq(1))
        args.append(mask)
    carry_t = jax.ShapeDtypeStruct((batch, hidden), F32)
    out_shape = [jax.ShapeDtypeStruct((time, batch, hidden), F32), carry_t, carry_t]
    out_specs = [seq(hidden), row, row]
    if save_cells:
        out_shape.append(jax.ShapeDtypeStruct((time, batch, hidden), F32))
        out_specs.append(seq(hidden))
    kernel = functools.partial(_forward_kernel, hidden=hidden, block_time=bt,
                               has_mask=mask is not None, save_cells=save_cells)
    return pl.pallas_call(kernel, out_shape=out_shape, grid=(nb, nt), in_specs=in_specs,
                          out_specs=out_specs, interpret=interpret,
                          compiler_params=None if interpret else _compiler_params(),
                          name="rnnlab_lstm_forward")(*args)


def _backward_call(acts, tc, cp, dhs, wt, dh_t, dc_t, mask, *, interpret, block_time,
                   block_batch):
    time, batch, g4 = acts.shape
    hidden = g4 // 4
    bt, bb, nt, nb = _blocks(time, batch, block_time, block_batch)
    seq = lambda width: pl.BlockSpec((bt, bb, width),  # noqa: E731
                                     lambda b, t: (nt - 1 - t, b, 0))
    row = pl.BlockSpec((bb, hidden), lambda b, t: (b, 0))
    in_specs = [seq(g4), seq(hidden), seq(hidden), seq(hidden),
                pl.BlockSpec((g4, hidden), lambda b, t: (0, 0)), row, row]
    args = [acts, tc, cp, dhs, wt, dh_t, dc_t]
    if mask is not None:
        in_specs.append(seq(1))
        args.append(mask)
    carry_t = jax.ShapeDtypeStruct((batch, hidden), F32)
    kernel = functools.partial(_backward_kernel, hidden=hidden, block_time=bt,
                               has_mask=mask is not None)
    return pl.pallas_call(kernel, out_shape=[jax.ShapeDtypeStruct((time, batch, g4), F32),
                                             carry_t, carry_t],
                          grid=(nb, nt), in_specs=in_specs,
                          out_specs=[seq(g4), row, row], interpret=interpret,
                          compiler_params=None if interpret else _compiler_params(),
                          name="rnnlab_lstm_backward")(*args)


# --- the same two loops on lax.scan (XLA, any backend) -----------------------------------------


def _forward_scan(xp, w, b, h0, c0, mask, *, save_cells, unroll):
    """`_forward_call` as a `lax.scan`: per step one fused matmul and the gate arithmetic.
    With `save_cells` it also returns the gate activations [time, batch, 4 hidden] (i, f, g, o),
    which the backward pass then reads instead of recomputing them."""
    hidden = h0.shape[-1]

    def step(carry, inputs):
        h, c = carry
        x, keep = inputs
        z = x.astype(F32) + _dot(h, w)
        i, f, g, o = _gates(z if b is None else z + b, hidden)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if keep is not None:
            h_new, c_new = jnp.where(keep > 0, h_new, h), jnp.where(keep > 0, c_new, c)
        if save_cells:
            return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, g, o], axis=-1))
        return (h_new, c_new), h_new

    (h_t, c_t), out = jax.lax.scan(step, (h0, c0), (xp, mask), unroll=unroll)
    return (out[0], h_t, c_t, out[1], out[2]) if save_cells else (out, h_t, c_t)


def _backward_scan(acts, tc, cp, dhs, wt, dh_t, dc_t, mask, *, unroll):
    """`_backward_call` as a reverse `lax.scan`: per step the gate derivatives (elementwise)
    and one [batch, 4 hidden] x [4 hidden, hidden] matmul."""
    hidden = dh_t.shape[-1]

    def step(carry, inputs):
        dh, dc = carry
        a, tanh_c, c_prev, d_out, keep = inputs
        dh = dh + d_out
        i, f, g, o = (a[..., k * hidden:(k + 1) * hidden] for k in range(4))
        dct = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dz = jnp.concatenate([dct * g * i * (1.0 - i), dct * c_prev * f * (1.0 - f),
                              dct * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=-1)
        dc_prev = dct * f
        if keep is not None:
            dz = jnp.where(keep > 0, dz, 0.0)
            dc_prev = jnp.where(keep > 0, dc_prev, dc)
        dh_prev = _dot(dz, wt)
        if keep is not None:
            dh_prev = jnp.where(keep > 0, dh_prev, dh)
        return (dh_prev, dc_prev), dz

    (dh0, dc0), dz = jax.lax.scan(step, (dh_t, dc_t), (acts, tc, cp, dhs, mask), reverse=True,
                                  unroll=unroll)
    return dz, dh0, dc0


def _run_forward(impl, xp, w, b, h0, c0, mask, save_cells):
    kind, arg, block_time, block_batch = impl
    if kind == "scan":
        return _forward_scan(xp, w, b, h0, c0, mask, save_cells=save_cells, unroll=arg)
    if b is not None:
        xp = xp + b.astype(xp.dtype)
    return _forward_call(xp, w, h0, c0, mask, save_cells=save_cells, interpret=arg,
                         block_time=block_time, block_batch=block_batch)


def _run_backward(impl, *args):
    kind, arg, block_time, block_batch = impl
    if kind == "scan":
        return _backward_scan(*args, unroll=arg)
    return _backward_call(*args, interpret=arg, block_time=block_time, block_batch=block_batch)


# --- the differentiable recurrence ------------------------------------------------------------
# impl: ("pallas", interpret, block_time, block_batch) or ("scan", unroll, None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _recurrence(xp, w, b, h0, c0, mask, impl):
    hs, h_t, c_t = _run_forward(impl, xp, w, b, h0, c0, mask, save_cells=False)
    return hs, h_t, c_t


def _recurrence_fwd(xp, w, b, h0, c0, mask, impl):
    hs, h_t, c_t, cs, *acts = _run_forward(impl, xp, w, b, h0, c0, mask, save_cells=True)
    # the scan saved the gates, so xp is not kept alive for the backward (only its dtype)
    xp_res = jnp.zeros((0,), xp.dtype) if acts else xp
    return (hs, h_t, c_t), (xp_res, w, b, h0, c0, mask, hs, cs, acts[0] if acts else None)


def _recurrence_bwd(impl, res, cotangents):
    xp, w, b, h0, c0, mask, hs, cs, acts = res
    d_hs, d_ht, d_ct = cotangents
    hidden = h0.shape[-1]
    h_prev = jnp.concatenate([h0[None].astype(F32), hs[:-1]], axis=0)   # [time, batch, hidden]
    c_prev = jnp.concatenate([c0[None].astype(F32), cs[:-1]], axis=0)
    if acts is None:  # Pallas: all steps' gates at once, one [time*batch, hidden] x [hidden,
        z = xp.astype(F32) + _dot(h_prev, w)  # 4 hidden] matmul (the kernel saved none)
        z = z if b is None else z + b
        acts = jnp.concatenate(_gates(z, hidden), axis=-1)
    dz, dh0, dc0 = _run_backward(impl, acts, jnp.tanh(cs), c_prev, d_hs.astype(F32), w.T,
                                 d_ht.astype(F32), d_ct.astype(F32), mask)
    dw = jnp.einsum("tbh,tbg->hg", h_prev.astype(w.dtype), dz.astype(w.dtype),
                    preferred_element_type=F32)
    d_mask = None if mask is None else jnp.zeros_like(mask)
    db = None if b is None else jnp.sum(dz, axis=(0, 1)).astype(b.dtype)
    return (dz.astype(xp.dtype), dw.astype(w.dtype), db, dh0.astype(h0.dtype),
            dc0.astype(c0.dtype), d_mask)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _arguments(name, xp, w_hh, b, h0, c0, mask):
    """Checks the public functions' shapes; the carry in float32, the mask as [time, batch, 1]."""
    if (xp.ndim != 3 or xp.shape[-1] != 4 * h0.shape[-1]
            or w_hh.shape != (h0.shape[-1], xp.shape[-1])
            or (b is not None and b.shape != (xp.shape[-1],))):
        raise ValueError(f"{name} needs xp [time, batch, 4h], w_hh [h, 4h], h0/c0 [batch, h], "
                         f"b [4h] or None; got xp {xp.shape}, w_hh {w_hh.shape}, h0 {h0.shape}, "
                         f"b {None if b is None else b.shape}")
    if mask is not None:
        mask = mask.astype(F32)[..., None]
    return xp, w_hh, b, h0.astype(F32), c0.astype(F32), mask


def lstm_recurrence(xp: jax.Array, w_hh: jax.Array, h0: jax.Array, c0: jax.Array,
                    mask: jax.Array | None = None, *, b: jax.Array | None = None,
                    interpret: bool = False, block_time: int | None = None,
                    block_batch: int | None = None):
    """The LSTM recurrence over projected inputs, as a Pallas kernel.

    Args:
      xp: [time, batch, 4 hidden] input half of the gates (x W_ih, + b unless `b` is given),
        gate order i, f, g, o.
      w_hh: [hidden, 4 hidden] recurrent matrix; its dtype is the matmul's compute dtype
        (bfloat16 for the mixed-precision policy), accumulation is float32.
      h0, c0: [batch, hidden] initial carry (float32).
      mask: optional [time, batch] (bool or 0/1); at 0 the carry is left unchanged.
      b: optional [4 hidden] gate bias, added to xp inside the recurrence (the scan adds it in
        the per-step gate arithmetic instead of in a pass over all of xp).
      interpret: run with Pallas's interpreter (any backend; needed on CPU).
      block_time, block_batch: block sizes of the grid (default: the whole axis); they must
        divide time and batch.

    Returns:
      (hs [time, batch, hidden] float32: the carry h after each step, h_T, c_T [batch, hidden]).
    """
    return _recurrence(*_arguments("lstm_recurrence", xp, w_hh, b, h0, c0, mask),
                       ("pallas", interpret, block_time, block_batch))


def lstm_recurrence_scan(xp: jax.Array, w_hh: jax.Array, h0: jax.Array, c0: jax.Array,
                         mask: jax.Array | None = None, *, b: jax.Array | None = None,
                         unroll: int = 1):
    """`lstm_recurrence` with both loops on `jax.lax.scan` instead of the Pallas kernel: the
    same hand-written backward pass (one matmul per backward step, dW_hh as one matmul after
    the loop) on any backend; the forward saves h, c and the gate activations per step, so
    nothing is recomputed. Same arguments and results; `unroll` is the scans' unroll factor."""
    return _recurrence(*_arguments("lstm_recurrence_scan", xp, w_hh, b, h0, c0, mask),
                       ("scan", int(unroll), None, None))
