"""Runs one layer on a fused path (`fused_unroll`): the plain LSTM on "cudnn", "pallas", "vjp"
or "cpu", the cuDNN-form GRU on "cpu", any other cell with a split step on "vjp"."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnnlab.cells.base import Embedded, dot, padding_mask
from rnnlab.cells.lstm import LSTMCarry
from rnnlab.fused import cudnn
from rnnlab.fused.cpu import gru_recurrence_cpu, lstm_layer_cpu, lstm_tokens_layer_cpu
from rnnlab.fused.dispatch import float_dtypes, is_plain_lstm
from rnnlab.fused.pallas_lstm import lstm_recurrence, lstm_recurrence_scan
from rnnlab.fused.split_vjp import split_recurrence


def fused_unroll(path, cell, params, xs, carry=None, mask=None, lengths=None, reverse=False,
                 interpret: bool | None = None, unroll: int = 1):
    """Runs one plain LSTM layer on the fused `path` ("cudnn", "pallas", "vjp" or "cpu"; "vjp"
    and "cpu" also run other cells, see the module docstring).

    xs [*batch, time, in] (on "cpu", the plain LSTM also takes `Embedded` tokens: see
    `rnnlab.cells.base.Embedded`); carry LSTMCarry [*batch, hidden] or None (zeros); mask
    [*batch, time] or lengths [*batch] (real steps, padding at the end). `params` may hold
    bfloat16 copies of the float32 parameters (the mixed-precision policy): the kernel
    multiplies in their dtype.
    `interpret` (Pallas only) defaults to True on CPU; `unroll` ("vjp" only) is the scans'
    unroll factor. Same results as `rnnlab.unroll`'s scan.
    """
    batch_shape, (time, _) = xs.shape[:-2], xs.shape[-2:]
    hidden, b = cell.hidden_size, math.prod(xs.shape[:-2])
    tokens = isinstance(xs, Embedded)
    if tokens and (path != "cpu" or not is_plain_lstm(cell)):
        raise ValueError(f"fused_unroll takes Embedded inputs on 'cpu' for the plain LSTM only, "
                         f"not {path!r} / {cell!r}; pass xs.lookup()")
    # time-major ids [time, b] for the token path, else the inputs [b, time, in]
    x = xs.ids.reshape(b, time).T if tokens else xs.reshape(b, time, xs.shape[-1])
    if path in ("cudnn", "pallas") and not is_plain_lstm(cell):
        raise ValueError(f"fused_unroll({path!r}) runs the LSTM without peepholes, layer norm "
                         f"or projection, not {cell!r}; use rnnlab.unroll (it picks a valid path)")
    if path == "cpu" and not is_plain_lstm(cell):
        return _gru_unroll(params, x, carry, mask, lengths, reverse, cell, batch_shape)
    if path == "vjp" and not is_plain_lstm(cell):
        return _split_unroll(cell, params, x, carry, mask, lengths, reverse, unroll, batch_shape)
    dtype = jnp.float32 if carry is None else carry.h.dtype
    c0 = (LSTMCarry(jnp.zeros((b, hidden), dtype), jnp.zeros((b, hidden), dtype))
          if carry is None else LSTMCarry(*(a.reshape(b, hidden) for a in carry)))
    lens = None if lengths is None else lengths.reshape(b)
    if path == "cudnn":
        c, ys = cudnn.cudnn_unroll(params, x, c0, lens, reverse)
    elif path in ("pallas", "vjp", "cpu"):
        m = padding_mask(mask, lens, time, (b,))
        x_t = x if tokens else jnp.moveaxis(x, 1, 0)  # time-major
        mt = None if m is None else m.T
        if reverse:  # the inputs, not their projection: 4 hidden features per step
            x_t, mt = x_t[::-1], None if mt is None else mt[::-1]
        # x W_ih as one 2-D matmul (inside the kernel's custom VJP on "cpu"); the bias is added
        # inside the recurrence, in the per-step gate arithmetic (a separate pass over xp
        # costs as much as a matmul on CPU)
        xp = None if path == "cpu" else dot(x_t.reshape(time * b, -1), params["w_ih"]).reshape(
            time, b, 4 * hidden)
        if tokens:
            hs, h, cc = lstm_tokens_layer_cpu(x_t, xs.table, params["w_ih"], params["w_hh"],
                                              c0.h, c0.c, mt, b=params["b"])
        elif path == "cpu":
            hs, h, cc = lstm_layer_cpu(x_t, params["w_ih"], params["w_hh"], c0.h, c0.c, mt,
                                       b=params["b"])
        elif path == "vjp":
            hs, h, cc = lstm_recurrence_scan(xp, params["w_hh"], c0.h, c0.c, mt,
                                             b=params["b"], unroll=unroll)
        else:
            if interpret is None:
                interpret = jax.default_backend() == "cpu"
            hs, h, cc = lstm_recurrence(xp, params["w_hh"], c0.h, c0.c, mt, b=params["b"],
                                        interpret=interpret)
        if reverse:
            hs = hs[::-1]
        if m is not None:
            hs = jnp.where(m.T[..., None], hs, 0.0)
        ys = jnp.moveaxis(hs, 0, 1).astype(dtype)
        c = LSTMCarry(h.astype(dtype), cc.astype(dtype))
    else:
        raise ValueError(f"fused_unroll runs 'cudnn', 'pallas', 'vjp' or 'cpu', not {path!r}")
    c = LSTMCarry(*(a.reshape(*batch_shape, hidden) for a in c))
    return c, ys.reshape(*batch_shape, time, hidden)


def _gru_unroll(params, x, carry, mask, lengths, reverse, cell, batch_shape):
    """fused_unroll's "cpu" path for the cuDNN-form GRU."""
    b, time = x.shape[:2]
    h0 = (jnp.zeros((b, cell.hidden_size), jnp.float32) if carry is None
          else carry.reshape(b, cell.hidden_size))
    xp = cell.project_inputs(params, jnp.moveaxis(x, 1, 0))  # [time, b, 3 hidden], + b_ih
    m = padding_mask(mask, lengths, time, (b,))
    mt = None if m is None else m.T
    if reverse:
        xp, mt = xp[::-1], None if mt is None else mt[::-1]
    hs, h = gru_recurrence_cpu(xp, params["w_hh"], params["b_hh"], h0, mt)
    if mt is not None:
        hs = jnp.where(mt[..., None], hs, 0.0)
    if reverse:
        hs = hs[::-1]
    return (h.reshape(*batch_shape, cell.hidden_size),
            jnp.moveaxis(hs, 0, 1).reshape(*batch_shape, time, cell.hidden_size))


def _split_unroll(cell, params, x, carry, mask, lengths, reverse, unroll, batch_shape):
    """fused_unroll's "vjp" path for a cell other than the plain LSTM (`split_vjp.py`)."""
    b, time = x.shape[:2]
    m = padding_mask(mask, lengths, time, (b,))
    if carry is None:
        carry = cell.initial_carry((b,), jnp.result_type(*float_dtypes(params), x.dtype))
    c0 = jax.tree_util.tree_map(lambda a: a.reshape(b, *a.shape[len(batch_shape):]), carry)
    xp = cell.project_inputs(params, jnp.moveaxis(x, 1, 0))  # [time, b, G]
    mt = None if m is None else m.T
    if reverse:
        xp, mt = xp[::-1], None if mt is None else mt[::-1]
    c, ys = split_recurrence(cell, params, xp, c0, mt, unroll=unroll)
    ys = ys[::-1] if reverse else ys
    c = jax.tree_util.tree_map(lambda a: a.reshape(*batch_shape, *a.shape[1:]), c)
    return c, jnp.moveaxis(ys, 0, 1).reshape(*batch_shape, time, ys.shape[-1])
