"""The fused CPU kernel (`cpu_kernel.cc`): whole LSTM / cuDNN-form GRU layers, forward and
backward over all time steps, as XLA FFI custom calls.

    reason = unavailable()                        # None when the kernel can run here
    hs, h_T, c_T = lstm_layer_cpu(x, w_ih, w_hh, h0, c0, mask, b=b)
    hs, h_T, c_T = lstm_tokens_layer_cpu(ids, emb, w_ih, w_hh, h0, c0, mask, b=b)  # emb[ids]
    hs, h_T = gru_recurrence_cpu(xp, w_hh, b_hh, h0, mask)

Why a kernel: on XLA:CPU every iteration of a `lax.scan` pays a fixed cost (thunk dispatch, a
fresh temp mapping), which dominates long sequences of small matmuls (issue 19, workload L).
Here one custom call runs the whole forward loop and one the whole backward loop. Per step:
one [batch, hidden] x [hidden, G] GEMM against W_hh packed once per call into register-width
column panels (the kernel's own micro-kernel: MKL's packed GEMM, `cblas_sgemm_pack` /
`cblas_sgemm_compute`, runs its generic code path on AMD CPUs and measured slower than XLA's
dot on the development machine's EPYC; OpenBLAS has no packed-weights API and measured slower
at batch-sized M), then the gate arithmetic in the same loop (vectorised by g++ -O3
-march=native; -fno-trapping-math lets it vectorise the `floor` in exp: without it the gate
loops stay scalar, 8x slower). The hidden units are split over up to 2 threads
(`$RNNLAB_CPU_THREADS`; 2 from 4 MFLOP per step), each with its own slice of the packed
weights, one barrier per step; the helper threads are XLA's own intra-op pool's
(`ffi::ThreadPool`), so the kernel does not oversubscribe the cores beside XLA's matmuls, with
threads of the kernel's own for blocks no pool thread takes up. The forward saves the gate
activations (streamed past the caches); the backward runs one packed GEMM against W_hh^T
per step and sums db while dZ is in cache; the weight gradients are one large matmul after the
loop (XLA's) from the transposed rows the forward writes while they are in cache: for the
LSTM [dW_ih; dW_hh] = [x; h_prev]^T dZ, whence `lstm_layer_cpu` takes x and W_ih and projects
inside its custom VJP; for the GRU, whose input and hidden halves have different gradients,
dW_hh = h_prev^T dU (dW_ih by autodiff of its projection). On embedded tokens
(`rnnlab.Embedded`, a vocabulary no larger than time x batch) the LSTM's forward reads each
step's input half of the gates from the table E W_ih [V, 4H] by token id, and its backward adds
dZ's rows per token into that table's gradient while they are in cache: dE and dW_ih follow at
vocabulary size, and x W_ih, dZ W_ih^T and x^T dZ over all time steps are gone (the first layer
of workloads B and L: 4-8% of the training step).

Build: compiled on first use into `$RNNLAB_CACHE` (default ~/.cache/rnnlab) under a key of the
source, the compiler flags, the jax version (its FFI headers) and this CPU's model and flags
(-march=native code must not run on another CPU), with g++ (or $CXX); no library beyond the
C++ runtime. Without a compiler, or on another platform, `unavailable()` says why in one line
and `rnnlab.fused` takes the XLA path instead.

Inputs are float32 only (the paths of `rnnlab.fused` check that), time-major and already in
recurrence order (reversal is the caller's); masks are [time, batch] 0/1 floats. Reverse-mode
autodiff only (custom VJPs); under `jax.vmap` the calls run sequentially over the mapped axis.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp

F32 = jnp.float32
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernel.cc")
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd",
         "-fno-math-errno", "-fno-trapping-math"]
TARGETS = {"rnnlab_lstm_fwd": "RnnlabLstmForward", "rnnlab_lstm_bwd": "RnnlabLstmBackward",
           "rnnlab_gru_fwd": "RnnlabGruForward", "rnnlab_gru_bwd": "RnnlabGruBackward"}


class KernelUnavailable(RuntimeError):
    """Why the kernel cannot be built or loaded here (one line)."""


def cache_dir(sub: str = "fused_cpu") -> str:
    """rnnlab's cache on disk, `$RNNLAB_CACHE` (default ~/.cache/rnnlab), then `sub`: the kernel
    builds in fused_cpu/, the compiled programs of the entry points in xla/
    (`experiments.cli.compile_cache`)."""
    return os.path.join(os.environ.get("RNNLAB_CACHE") or
                        os.path.join(os.path.expanduser("~"), ".cache", "rnnlab"), sub)


def _cpu_id() -> str:
    """This CPU's model name and flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return platform.processor() + platform.machine()
    keep = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags")]
    return platform.machine() + "\n" + "\n".join(keep)


def build_key(source: bytes, cxx: str, cpu_id: str) -> str:
    """The cache key of a build: source, compiler and flags, jax (its FFI headers) and the CPU
    (-march=native code must not run on another one)."""
    parts = [source, " ".join(FLAGS).encode(), cxx.encode(), jax.__version__.encode(),
             cpu_id.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def _build(source_path: str = SOURCE) -> str:
    """The kernel's shared library built from `source_path` (this package's kernel unless a
    benchmark passes another revision's): from the cache, else compiled there now. Returns its
    path."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise KernelUnavailable(f"the CPU kernel is built for x86-64 Linux only, this is "
                                f"{sys.platform}/{platform.machine()}")
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise KernelUnavailable(f"no C++ compiler ({os.environ.get('CXX', 'g++')} not on PATH)")
    with open(source_path, "rb") as f:
        source = f.read()
    out_dir = os.path.join(cache_dir(), build_key(source, cxx, _cpu_id()))
    lib = os.path.join(out_dir, "librnnlab_cpu.so")
    if os.path.exists(lib):
        return lib
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
    except OSError as e:
        raise KernelUnavailable(f"cannot write the kernel cache {out_dir} ({e.strerror}; set "
                                "RNNLAB_CACHE to a writable directory)") from None
    cmd = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), source_path, "-o", tmp, "-pthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log = os.path.join(out_dir, "build.log")
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        os.unlink(tmp)
        raise KernelUnavailable(f"compiling {os.path.basename(source_path)} failed (log: {log})")
    os.replace(tmp, lib)  # atomic: parallel test workers may build at once
    return lib


@functools.cache
def _load() -> str | None:
    """Builds (once per cache key), loads and registers the kernel; None or why not."""
    try:
        path = _build()
        handle = ctypes.CDLL(path)
    except KernelUnavailable as e:
        return str(e)
    except OSError as e:  # loading failed (e.g. a cache copied from another machine)
        return f"loading the CPU kernel failed: {str(e).splitlines()[0]}"
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)),
                                    platform="cpu")
    return None


def unavailable() -> str | None:
    """None when the CPU kernel is built and registered, else the one-line reason."""
    return _load()


def _call(target, shapes, *args, prefix=""):
    """The FFI call `prefix + target` (the registered kernel; `experiments.benchmarks.kernel_ab`
    registers a second build under a prefix and calls it through the same layouts)."""
    if not prefix and _load() is not None:
        raise KernelUnavailable(_load())
    out = [jax.ShapeDtypeStruct(s, F32) for s in shapes]
    return jax.ffi.ffi_call(prefix + target, out, vmap_method="sequential")(*args)


def _empty(dtype=F32):
    return jnp.zeros((0,), dtype)


def _weight_grad(xht, dz):
    """sum_t (x_t, h_{t-1})^T dz_t as one large matmul (XLA's, on all cores) from the forward
    call's xht [(I +) H, T B], written transposed while each step's rows were in cache: the
    layout XLA's dot runs fastest (on the L LSTM's second layer 88 ms against 114 for x^T dZ
    and h_prev^T dZ apart). db = sum dz comes from the backward call itself (in float64)."""
    t, n, g = dz.shape
    return xht @ dz.reshape(t * n, g)


# --- LSTM ------------------------------------------------------------------------------------


def _lstm_forward(xp, w, b, h0, c0, mask, x, save, ids=None, prefix=""):
    """x [T, B, I] (or empty without `save`) is xp's input: the forward writes it into xht.
    With token ids [T, B] (int32), xp is the table E W_ih [V, 4H] and x is empty."""
    t, n = xp.shape[:2] if ids is None else ids.shape
    g = xp.shape[-1]
    hid = g // 4
    seq = (t, n, hid)
    shapes = [seq, seq if save else (0,), (t, n, g) if save else (0,),
              (x.shape[-1] + hid, t * n) if save else (0,), (n, hid), (n, hid)]
    ids = _empty(jnp.int32) if ids is None else ids
    return _call("rnnlab_lstm_fwd", shapes, xp, w, b, h0, c0, mask, x, ids, prefix=prefix)


def _lstm_backward(acts, cs, hs, d_hs, w, h0, c0, d_h, d_c, mask, ids=None, vocab=0,
                   prefix=""):
    """(dz [T, B, 4H], dh0, dc0, db, dtab) from the saved activations and the cotangents; with
    token ids [T, B], dtab [vocab, 4H] is the sum of dz's rows per token, else empty."""
    t, n, g = acts.shape
    hid = g // 4
    dtab = (vocab, g) if ids is not None else (0,)
    ids = _empty(jnp.int32) if ids is None else ids
    return _call("rnnlab_lstm_bwd", [(t, n, g), (n, hid), (n, hid), (g,), dtab],
                 acts, cs, hs, d_hs, w, h0, c0, d_h, d_c, mask, ids, prefix=prefix)


def _project(x, w_ih):
    """x W_ih as one 2-D matmul, [T, B, 4H]; the bias is added in the kernel's gate loop."""
    t, n, i = x.shape
    return (x.reshape(t * n, i) @ w_ih).reshape(t, n, -1)


@jax.custom_vjp
def _lstm(x, w_ih, w, b, h0, c0, mask):
    hs, _, _, _, h, c = _lstm_forward(_project(x, w_ih), w, b, h0, c0, mask, _empty(),
                                      save=False)
    return hs, h, c


def _lstm_fwd(x, w_ih, w, b, h0, c0, mask):
    hs, cs, acts, xht, h, c = _lstm_forward(_project(x, w_ih), w, b, h0, c0, mask, x,
                                            save=True)
    return (hs, h, c), (w_ih, w, h0, c0, mask, hs, cs, acts, xht)


def _lstm_bwd(res, cotangents):
    w_ih, w, h0, c0, mask, hs, cs, acts, xht = res
    d_hs, d_h, d_c = cotangents
    dz, dh0, dc0, db, _ = _lstm_backward(acts, cs, hs, d_hs, w, h0, c0, d_h, d_c, mask)
    t, n, g = dz.shape
    i = w_ih.shape[0]
    dw = _weight_grad(xht, dz)  # [dW_ih; dW_hh]
    dx = (dz.reshape(t * n, g) @ w_ih.T).reshape(t, n, i)
    return dx, dw[:i], dw[i:], db, dh0, dc0, jnp.zeros_like(mask)


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


@jax.custom_vjp
def _lstm_tokens(ids, emb, w_ih, w, b, h0, c0, mask):
    hs, _, _, _, h, c = _lstm_forward(emb @ w_ih, w, b, h0, c0, mask, _empty(), save=False,
                                      ids=ids)
    return hs, h, c


def _lstm_tokens_fwd(ids, emb, w_ih, w, b, h0, c0, mask):
    hs, cs, acts, ht, h, c = _lstm_forward(emb @ w_ih, w, b, h0, c0, mask, _empty(), save=True,
                                           ids=ids)
    return (hs, h, c), (ids, emb, w_ih, w, h0, c0, mask, hs, cs, acts, ht)


def _lstm_tokens_bwd(res, cotangents):
    ids, emb, w_ih, w, h0, c0, mask, hs, cs, acts, ht = res
    d_hs, d_h, d_c = cotangents
    dz, dh0, dc0, db, dtab = _lstm_backward(acts, cs, hs, d_hs, w, h0, c0, d_h, d_c, mask,
                                            ids=ids, vocab=emb.shape[0])
    # the table E W_ih's gradient dtab gives both: dE = dtab W_ih^T, dW_ih = E^T dtab
    return (None, dtab @ w_ih.T, emb.T @ dtab, _weight_grad(ht, dz), db, dh0, dc0,
            jnp.zeros_like(mask))


_lstm_tokens.defvjp(_lstm_tokens_fwd, _lstm_tokens_bwd)


def lstm_tokens_layer_cpu(ids, emb, w_ih, w_hh, h0, c0, mask=None, *, b=None):
    """`lstm_layer_cpu` on the embedded tokens emb[ids] without forming them: ids [time, batch]
    (int32; clamped into [0, vocab) as `emb[ids]` clamps), emb [vocab, in]. The kernel reads
    each step's input half of the gates from the table emb W_ih [vocab, 4 hidden] and sums the
    backward's dZ rows per token into that table's gradient while they are in cache, so the
    layer skips x W_ih, dZ W_ih^T and x^T dZ over all time steps (worth it when vocab is well
    under time x batch). Same results as `lstm_layer_cpu(emb[ids], ...)` to float32 rounding."""
    t, n = ids.shape
    b = jnp.zeros((w_hh.shape[1],), F32) if b is None else b
    return _lstm_tokens(ids.astype(jnp.int32), emb.astype(F32), w_ih.astype(F32),
                        w_hh.astype(F32), b.astype(F32), h0.astype(F32), c0.astype(F32),
                        _mask(mask, t, n))


def _mask(mask, t, n):
    return _empty() if mask is None else mask.astype(F32).reshape(t, n)


def lstm_layer_cpu(x, w_ih, w_hh, h0, c0, mask=None, *, b=None):
    """One plain LSTM layer on the CPU kernel, time-major: x [time, batch, in], w_ih [in,
    4 hidden], w_hh [hidden, 4 hidden] (gates i f g o), h0/c0 [batch, hidden], mask optional
    [time, batch], b [4 hidden] or None. Returns (hs [time, batch, hidden], h_T, c_T). The
    projection x W_ih is inside the custom VJP so that dW_ih and dW_hh are one matmul."""
    t, n, _ = x.shape
    b = jnp.zeros((w_hh.shape[1],), F32) if b is None else b
    return _lstm(x.astype(F32), w_ih.astype(F32), w_hh.astype(F32), b.astype(F32),
                 h0.astype(F32), c0.astype(F32), _mask(mask, t, n))


# --- GRU (cuDNN form) ------------------------------------------------------------------------


def _gru_forward(xp, w, b, h0, mask, save, prefix=""):
    t, n, g = xp.shape
    hid = g // 3
    return _call("rnnlab_gru_fwd", [(t, n, hid), (t, n, 4 * hid) if save else (0,),
                                    (hid, t * n) if save else (0,), (n, hid)],
                 xp, w, b, h0, mask, prefix=prefix)


def _gru_backward(acts, hs, d_hs, w, h0, d_h, mask, prefix=""):
    """(dxp, du [T, B, 3H], dh0, db_hh) from the saved activations and the cotangents."""
    t, n, hid = hs.shape
    g = 3 * hid
    return _call("rnnlab_gru_bwd", [(t, n, g), (t, n, g), (n, hid), (g,)],
                 acts, hs, d_hs, w, h0, d_h, mask, prefix=prefix)


@jax.custom_vjp
def _gru(xp, w, b, h0, mask):
    hs, _, _, h = _gru_forward(xp, w, b, h0, mask, save=False)
    return hs, h


def _gru_fwd(xp, w, b, h0, mask):
    hs, acts, hpt, h = _gru_forward(xp, w, b, h0, mask, save=True)
    return (hs, h), (w, h0, mask, hs, acts, hpt)


def _gru_bwd(res, cotangents):
    w, h0, mask, hs, acts, hpt = res
    d_hs, d_h = cotangents
    dxp, du, dh0, db = _gru_backward(acts, hs, d_hs, w, h0, d_h, mask)
    return dxp, _weight_grad(hpt, du), db, dh0, jnp.zeros_like(mask)


_gru.defvjp(_gru_fwd, _gru_bwd)


def gru_recurrence_cpu(xp, w_hh, b_hh, h0, mask=None):
    """The cuDNN-form GRU (`rnnlab.cells.GRU`) on the CPU kernel: xp [time, batch, 3 hidden]
    (x W_ih + b_ih, gates r z n), w_hh [hidden, 3 hidden], b_hh [3 hidden], h0 [batch, hidden],
    mask optional [time, batch]. Returns (hs [time, batch, hidden], h_T)."""
    t, n, _ = xp.shape
    return _gru(xp.astype(F32), w_hh.astype(F32), b_hh.astype(F32), h0.astype(F32),
                _mask(mask, t, n))
