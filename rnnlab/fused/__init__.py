"""Fused paths for the recurrence (cuDNN, Pallas, hand-written backward passes), and the choice
between them and the scan.

    path = select(cell, params, xs, mask=None, lengths=None, requested="auto")
    carry, ys = fused_unroll(path, cell, params, xs, carry, mask, lengths, reverse)

Paths:
  "scan"    `jax.lax.scan` over `cell.step` (every cell, every backend; `rnnlab.unroll`'s own).
  "cudnn"   one cuDNN call per LSTM layer through `jax.experimental.rnn` (`cudnn.py`): CUDA GPU,
            float32, no peepholes / layer norm / projection, padding given as `lengths` (not a
            general mask).
  "pallas"  the Pallas kernel of `pallas_lstm.py`: W_hh resident across time steps, float32 or
            bfloat16 matmuls with float32 gates and carry, any mask. Compiled on TPU and GPU,
            interpreted on CPU (slow; for tests). Chosen only on request.
  "vjp"     the same hand-written backward pass as "pallas" with both loops on `lax.scan`
            (`pallas_lstm.lstm_recurrence_scan`): the forward saves h, c and the gates per
            step, the backward runs one matmul per step, and dW_hh is one matmul after the loop
            instead of an accumulation inside it; the bias joins the per-step gate arithmetic
            instead of a pass over all projected inputs. Any backend, any mask. Every other
            cell with a split step (`Cell.recurrent_weight`: Elman, GRU in its cuDNN form, LSTM
            with peepholes or layer norm) takes the generic form of the same idea
            (`split_vjp.py`). float32 / bfloat16. The LSTM with a projection (`proj_size`)
            runs here only on request: its step has a second matmul (W_hr), whose gradient
            the generic form accumulates per step, so "auto" keeps it on the scan.
  "cpu"     the fused CPU kernel of `cpu.py` (an XLA FFI custom call compiled on first use):
            the plain LSTM and the cuDNN-form GRU, the whole forward and the whole backward
            loop in one call each, W_hh packed once per call for the kernel's own GEMM,
            float32, any mask.

`requested="auto"` takes the platform's fast path (`AUTO`: "cudnn" on a CUDA GPU for the plain
LSTM; on CPU "cpu" for the cells in `AUTO_CPU_KERNEL` with a large enough step where the
kernel can run, else "vjp" for every cell with a split step) where it is valid and "scan"
otherwise (always for `rnnlab.unroll(..., resets=...)` and for the projection LSTM); under
`jax.vmap` (the cuDNN binding has no batching rule) it falls back to the scan at trace time.
When the CPU kernel cannot be built (no compiler, another platform) "auto" logs the reason
once, in one line, and takes "vjp". Asking for a path where it is not valid is a ValueError
that says why.

Limits of the fused paths: they are custom VJPs, so forward-mode autodiff (`jax.jvp`,
`jax.jacfwd`) through them fails with JAX's "can't apply forward-mode autodiff (jvp) to a
custom_vjp function"; pass `fused="scan"` for forward-mode studies.
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp

from rnnlab.cells.base import dot
from rnnlab.cells.gru import GRU
from rnnlab.cells.lstm import LSTM, LSTMCarry
from rnnlab.fused import cpu, cudnn
from rnnlab.fused.cpu import gru_recurrence_cpu, lstm_recurrence_cpu
from rnnlab.fused.pallas_lstm import lstm_recurrence, lstm_recurrence_scan
from rnnlab.fused.split_vjp import split_recurrence

PATHS = ("auto", "scan", "cudnn", "pallas", "vjp", "cpu")
# the path `requested="auto"` takes per platform where it is valid (else the scan): cuDNN by its
# design (never run here); "vjp" measured faster than the scan on CPU with
# `experiments.benchmarks.speed` (LSTM: workload B 1.45x, L 1.3x, A the same; GRU and tanh RNN
# on B ~1.3x; GRU on L 1.1-1.2x)
AUTO = {"cuda": "cudnn", "cpu": "vjp"}
# "auto" on CPU takes the fused kernel ("cpu") over "vjp" for these cells where a step's
# recurrent GEMM has at least this many FLOPs (2 batch hidden G): measured with
# `experiments.benchmarks.speed --fused=auto` against `--fused=vjp` on the 2-core EPYC (README,
# Speed; under heavy load): workload B (67 MFLOP per step) LSTM 1.58x, GRU 1.38x; workload L
# (8.4 / 6.3 MFLOP) GRU 1.20x but LSTM 0.83x, so the LSTM at L-sized steps stays on "vjp".
# Workload A (68 MFLOP) follows B by size, unmeasured.
AUTO_CPU_KERNEL = {"LSTM": 32e6, "GRU": 0.0}
_log = logging.getLogger(__name__)


def platform() -> str:
    """'cuda', 'rocm', 'tpu' or 'cpu': where jitted computations run by default."""
    backend = jax.default_backend()
    if backend == "gpu":
        version = jax.devices()[0].client.platform_version.lower()
        return "rocm" if "rocm" in version else "cuda"
    return backend


def _floats(tree):
    return [leaf.dtype for leaf in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)]


def _plain_lstm(cell) -> bool:
    return type(cell) is LSTM and not (cell.peepholes or cell.layer_norm or cell.proj_size)


def why_not(path: str, cell, params, xs, carry=None, mask=None, compute_dtype=None,
            remat=False, resets=None) -> list[str]:
    """The reasons `path` ("cudnn", "pallas" or "vjp") cannot run this layer; [] when it can."""
    if remat:
        return ["remat asks for the scan (the fused paths keep their own activations)"]
    if resets is not None:
        return ["resets= run on the scan (the fused paths have no per-step carry reset)"]
    reasons = []
    if path == "cpu":
        return _why_not_cpu(cell, params, xs, carry, compute_dtype)
    if path == "vjp" and not _plain_lstm(cell):  # any cell with a split step (split_vjp.py)
        if getattr(cell, "recurrent_weight", None) is None:
            return [f"{type(cell).__name__} has no split step (one recurrent matmul, then "
                    "elementwise work)"]
    elif type(cell) is not LSTM:
        return [f"it runs the plain LSTM only, not {type(cell).__name__}"]
    elif not _plain_lstm(cell):
        reasons.append("it runs the LSTM without peepholes, layer norm or projection")
    if path == "cudnn":
        if platform() != "cuda":
            reasons.append(f"cuDNN needs a CUDA GPU backend, this is {platform()!r}")
        if mask is not None:
            reasons.append("cuDNN takes padding as sequence lengths: pass lengths=, not mask=")
        dtypes = {*_floats(params), xs.dtype, *_floats(carry)}
        mixed = compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32
        if dtypes != {jnp.dtype(jnp.float32)} or mixed:
            reasons.append(f"the cuDNN binding is float32 only (got {sorted(map(str, dtypes))}"
                           f", compute_dtype={compute_dtype})")
    elif path in ("pallas", "vjp"):
        allowed = {jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)}
        dtypes = {*_floats(params), xs.dtype}
        if not dtypes <= allowed:
            reasons.append(f"it takes float32/bfloat16 (got {sorted(map(str, dtypes))}; "
                           "float64 studies run on the scan)")
    return reasons


def _cpu_cell(cell) -> bool:
    return _plain_lstm(cell) or (type(cell) is GRU and cell.variant == "cudnn")


def _why_not_cpu(cell, params, xs, carry, compute_dtype) -> list[str]:
    if not _cpu_cell(cell):
        return [f"it runs the plain LSTM and the cuDNN-form GRU, not {cell!r}"]
    reasons = []
    if platform() != "cpu":
        reasons.append(f"it is a CPU kernel, this backend is {platform()!r}")
    dtypes = {*_floats(params), xs.dtype, *_floats(carry)}
    mixed = compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32
    if dtypes != {jnp.dtype(jnp.float32)} or mixed:
        reasons.append(f"it is float32 only (got {sorted(map(str, dtypes))}, "
                       f"compute_dtype={compute_dtype})")
    if not reasons and (why := cpu.unavailable()):
        reasons.append(why)
    return reasons


@functools.cache
def _log_fallback(why: str) -> None:
    _log.warning("rnnlab: fused CPU kernel unavailable (%s); using the XLA path", why)


def _auto(cell, params, xs, carry, mask, compute_dtype, remat) -> str:
    path = AUTO.get(platform())
    gates = 4 if type(cell) is LSTM else 3
    flops = 2 * math.prod(xs.shape[:-2]) * cell.hidden_size ** 2 * gates if _cpu_cell(cell) else 0
    if (path == "vjp" and type(cell).__name__ in AUTO_CPU_KERNEL and _cpu_cell(cell)
            and flops >= AUTO_CPU_KERNEL[type(cell).__name__]):
        reasons = why_not("cpu", cell, params, xs, carry, mask, compute_dtype, remat)
        if not reasons:
            return "cpu"
        if (why := cpu.unavailable()) and reasons[-1] == why:
            _log_fallback(why)
    ok = path and not why_not(path, cell, params, xs, carry, mask, compute_dtype, remat)
    return path if ok else "scan"


def select(cell, params, xs, carry=None, mask=None, compute_dtype=None, remat=False,
           requested: str = "auto", resets=None) -> str:
    """The path `rnnlab.unroll` takes: "scan", "cudnn", "pallas" or "vjp" (module docstring)."""
    if requested not in PATHS:
        raise ValueError(f"unknown fused={requested!r}; valid choices: {list(PATHS)}")
    if requested == "scan":
        return "scan"
    if requested == "auto":
        if resets is not None or getattr(cell, "proj_size", 0):
            return "scan"  # no per-step reset in the fused paths; LSTMP: no measured gain
        return _auto(cell, params, xs, carry, mask, compute_dtype, remat)
    reasons = why_not(requested, cell, params, xs, carry, mask, compute_dtype, remat, resets)
    if reasons:
        raise ValueError(f"fused={requested!r} cannot run this layer: {'; '.join(reasons)}. "
                         "Use fused='auto' or 'scan'.")
    return requested


def is_fallback_error(e: Exception) -> bool:
    """The trace-time error of the cuDNN binding under `jax.vmap` (it has no batching rule)."""
    return isinstance(e, NotImplementedError) and "'rnn_fwd'" in str(e)


def fused_unroll(path, cell, params, xs, carry=None, mask=None, lengths=None, reverse=False,
                 interpret: bool | None = None, unroll: int = 1):
    """Runs one plain LSTM layer on the fused `path` ("cudnn", "pallas", "vjp" or "cpu"; "vjp"
    and "cpu" also run other cells, see the module docstring).

    xs [*batch, time, in]; carry LSTMCarry [*batch, hidden] or None (zeros); mask [*batch, time]
    or lengths [*batch] (real steps, padding at the end). `params` may hold bfloat16 copies of
    the float32 parameters (the mixed-precision policy): the kernel multiplies in their dtype.
    `interpret` (Pallas only) defaults to True on CPU; `unroll` ("vjp" only) is the scans'
    unroll factor. Same results as `rnnlab.unroll`'s scan.
    """
    batch_shape, (time, _) = xs.shape[:-2], xs.shape[-2:]
    hidden, b = cell.hidden_size, math.prod(xs.shape[:-2])
    x = xs.reshape(b, time, xs.shape[-1])
    if path in ("cudnn", "pallas") and not _plain_lstm(cell):
        raise ValueError(f"fused_unroll({path!r}) runs the LSTM without peepholes, layer norm "
                         f"or projection, not {cell!r}; use rnnlab.unroll (it picks a valid path)")
    if path == "cpu" and not _plain_lstm(cell):
        return _gru_unroll(params, x, carry, mask, lengths, reverse, cell, batch_shape)
    if path == "vjp" and not _plain_lstm(cell):
        return _split_unroll(cell, params, x, carry, mask, lengths, reverse, unroll, batch_shape)
    dtype = jnp.float32 if carry is None else carry.h.dtype
    c0 = (LSTMCarry(jnp.zeros((b, hidden), dtype), jnp.zeros((b, hidden), dtype))
          if carry is None else LSTMCarry(*(a.reshape(b, hidden) for a in carry)))
    lens = None if lengths is None else lengths.reshape(b)
    if path == "cudnn":
        c, ys = cudnn.cudnn_unroll(params, x, c0, lens, reverse)
    elif path in ("pallas", "vjp", "cpu"):
        m = None if mask is None else mask.reshape(b, time).astype(bool)
        if lens is not None:
            m = jnp.arange(time)[None] < lens[:, None]
        # x W_ih as one 2-D matmul, time-major; the bias is added inside the recurrence, in the
        # per-step gate arithmetic (a separate pass over xp costs as much as a matmul on CPU)
        x_t = jnp.moveaxis(x, 1, 0)
        xp = dot(x_t.reshape(time * b, -1), params["w_ih"]).reshape(time, b, 4 * hidden)
        mt = None if m is None else m.T
        if reverse:
            xp, mt = xp[::-1], None if mt is None else mt[::-1]
        if path == "cpu":
            hs, h, cc = lstm_recurrence_cpu(xp, params["w_hh"], c0.h, c0.c, mt, b=params["b"])
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


def _time_mask(mask, lengths, b, time):
    """[time, b] booleans, or None."""
    m = None if mask is None else mask.reshape(b, time).astype(bool)
    if lengths is not None:
        m = jnp.arange(time)[None] < lengths.reshape(b)[:, None]
    return None if m is None else m.T


def _gru_unroll(params, x, carry, mask, lengths, reverse, cell, batch_shape):
    """fused_unroll's "cpu" path for the cuDNN-form GRU."""
    b, time = x.shape[:2]
    h0 = (jnp.zeros((b, cell.hidden_size), jnp.float32) if carry is None
          else carry.reshape(b, cell.hidden_size))
    xp = cell.project_inputs(params, jnp.moveaxis(x, 1, 0))  # [time, b, 3 hidden], + b_ih
    mt = _time_mask(mask, lengths, b, time)
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
    m = None if mask is None else mask.reshape(b, time).astype(bool)
    if lengths is not None:
        m = jnp.arange(time)[None] < lengths.reshape(b)[:, None]
    if carry is None:
        carry = cell.initial_carry((b,), jnp.result_type(*_floats(params), x.dtype))
    c0 = jax.tree_util.tree_map(lambda a: a.reshape(b, *a.shape[len(batch_shape):]), carry)
    xp = cell.project_inputs(params, jnp.moveaxis(x, 1, 0))  # [time, b, G]
    mt = None if m is None else m.T
    if reverse:
        xp, mt = xp[::-1], None if mt is None else mt[::-1]
    c, ys = split_recurrence(cell, params, xp, c0, mt, unroll=unroll)
    ys = ys[::-1] if reverse else ys
    c = jax.tree_util.tree_map(lambda a: a.reshape(*batch_shape, *a.shape[1:]), c)
    return c, jnp.moveaxis(ys, 0, 1).reshape(*batch_shape, time, ys.shape[-1])


__all__ = ["PATHS", "cpu", "cudnn", "fused_unroll", "gru_recurrence_cpu", "lstm_recurrence_cpu",
           "is_fallback_error", "lstm_recurrence",
           "lstm_recurrence_scan",
           "platform", "select", "split_recurrence", "why_not"]
