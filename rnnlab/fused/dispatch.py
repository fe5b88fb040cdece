"""Which path `rnnlab.unroll` takes for a layer (`select`), and why another cannot run it
(`why_not`); the paths themselves are described in `rnnlab.fused`."""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from rnnlab.cells.gru import GRU
from rnnlab.cells.lstm import LSTM
from rnnlab.fused import cpu

PATHS = ("auto", "scan", "cudnn", "pallas", "vjp", "cpu")
# the path `requested="auto"` takes per platform where it is valid (else the scan): cuDNN by its
# design (never run here); "vjp" measured faster than the scan on CPU with
# `experiments.benchmarks.speed` (LSTM: workload B 1.45x, L 1.3x, A the same; GRU and tanh RNN
# on B ~1.3x; GRU on L 1.1-1.2x)
AUTO = {"cuda": "cudnn", "cpu": "vjp"}
_log = logging.getLogger(__name__)


def platform() -> str:
    """'cuda', 'rocm', 'tpu' or 'cpu': where jitted computations run by default."""
    backend = jax.default_backend()
    if backend == "gpu":
        version = jax.devices()[0].client.platform_version.lower()
        return "rocm" if "rocm" in version else "cuda"
    return backend


def float_dtypes(tree) -> list:
    """The dtypes of `tree`'s floating-point leaves (what decides a path's compute dtype)."""
    return [leaf.dtype for leaf in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)]


def is_plain_lstm(cell) -> bool:
    """An LSTM without peepholes, layer norm or projection: the form every fused path runs."""
    return type(cell) is LSTM and not (cell.peepholes or cell.layer_norm or cell.proj_size)


def why_not(path: str, cell, params, xs, carry=None, mask=None, compute_dtype=None,
            remat=False, resets=None, lengths=None) -> list[str]:
    """The reasons `path` ("cudnn", "pallas", "vjp" or "cpu") cannot run this layer; [] when
    it can. `mask` [*batch, time] is the padding; `lengths` [*batch], when the padding was given
    as lengths (the mask then follows from them), is what cuDNN needs."""
    if remat:
        return ["remat asks for the scan (the fused paths keep their own activations)"]
    if resets is not None:
        return ["resets= run on the scan (the fused paths have no per-step carry reset)"]
    reasons = []
    if path == "cpu":
        return _why_not_cpu(cell, params, xs, carry, compute_dtype)
    if path == "vjp" and not is_plain_lstm(cell):  # any cell with a split step (split_vjp.py)
        if getattr(cell, "recurrent_weight", None) is None:
            return [f"{type(cell).__name__} has no split step (one recurrent matmul, then "
                    "elementwise work)"]
    elif type(cell) is not LSTM:
        return [f"it runs the plain LSTM only, not {type(cell).__name__}"]
    elif not is_plain_lstm(cell):
        reasons.append("it runs the LSTM without peepholes, layer norm or projection")
    if path == "cudnn":
        if platform() != "cuda":
            reasons.append(f"cuDNN needs a CUDA GPU backend, this is {platform()!r}")
        if mask is not None and lengths is None:
            reasons.append("cuDNN takes padding as sequence lengths: pass lengths=, not mask=")
        dtypes = {*float_dtypes(params), xs.dtype, *float_dtypes(carry)}
        mixed = compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32
        if dtypes != {jnp.dtype(jnp.float32)} or mixed:
            reasons.append(f"the cuDNN binding is float32 only (got {sorted(map(str, dtypes))}"
                           f", compute_dtype={compute_dtype})")
    elif path in ("pallas", "vjp"):
        allowed = {jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)}
        dtypes = {*float_dtypes(params), xs.dtype}
        if not dtypes <= allowed:
            reasons.append(f"it takes float32/bfloat16 (got {sorted(map(str, dtypes))}; "
                           "float64 studies run on the scan)")
    return reasons


def _cpu_cell(cell) -> bool:
    """The cells of the fused CPU kernel, which "auto" on CPU takes over "vjp" wherever it can
    run: measured with `experiments.benchmarks.speed --fused=vjp` against the default on the
    2-core EPYC, quiet (README, Speed): B LSTM 8.9k against 7.1k tokens/s, L LSTM 29.7k against
    17.4k, B GRU 10.8k against 8.3k, L GRU 31.4k against 18.9k."""
    return is_plain_lstm(cell) or (type(cell) is GRU and cell.variant == "cudnn")


def _why_not_cpu(cell, params, xs, carry, compute_dtype) -> list[str]:
    if not _cpu_cell(cell):
        return [f"it runs the plain LSTM and the cuDNN-form GRU, not {cell!r}"]
    reasons = []
    if platform() != "cpu":
        reasons.append(f"it is a CPU kernel, this backend is {platform()!r}")
    dtypes = {*float_dtypes(params), xs.dtype, *float_dtypes(carry)}
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


def _auto(cell, params, xs, carry, mask, compute_dtype, remat, lengths) -> str:
    path = AUTO.get(platform())
    if path == "vjp" and _cpu_cell(cell):
        reasons = why_not("cpu", cell, params, xs, carry, mask, compute_dtype, remat)
        if not reasons:
            return "cpu"
        if (why := cpu.unavailable()) and reasons[-1] == why:
            _log_fallback(why)
    ok = path and not why_not(path, cell, params, xs, carry, mask, compute_dtype, remat,
                              lengths=lengths)
    return path if ok else "scan"


def select(cell, params, xs, carry=None, mask=None, compute_dtype=None, remat=False,
           requested: str = "auto", resets=None, lengths=None) -> str:
    """The path `rnnlab.unroll` takes: "scan", "cudnn", "pallas", "vjp" or "cpu" (described in
    `rnnlab.fused`)."""
    if requested not in PATHS:
        raise ValueError(f"unknown fused={requested!r}; valid choices: {list(PATHS)}")
    if requested == "scan":
        return "scan"
    if requested == "auto":
        if resets is not None or getattr(cell, "proj_size", 0):
            return "scan"  # no per-step reset in the fused paths; LSTMP: no measured gain
        return _auto(cell, params, xs, carry, mask, compute_dtype, remat, lengths)
    reasons = why_not(requested, cell, params, xs, carry, mask, compute_dtype, remat, resets,
                      lengths)
    if reasons:
        raise ValueError(f"fused={requested!r} cannot run this layer: {'; '.join(reasons)}. "
                         "Use fused='auto' or 'scan'.")
    return requested


def is_fallback_error(e: Exception) -> bool:
    """The trace-time error of the cuDNN binding under `jax.vmap` (it has no batching rule)."""
    return isinstance(e, NotImplementedError) and "'rnn_fwd'" in str(e)
