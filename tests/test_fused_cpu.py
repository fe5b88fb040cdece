"""Tests for rnnlab.fused.cpu, the fused CPU kernel (XLA FFI custom call) for the plain LSTM and
the cuDNN-form GRU: outputs, final carry and every gradient (parameters, inputs, initial carry)
against autodiff of the scan, with masks, lengths, reverse, state carried across windows,
extra batch axes and sizes that divide no SIMD width; central finite differences on a tiny
shape; the build cache key and the one-line fallback when the kernel cannot be built.

The kernel is compiled on first use (rnnlab/fused/cpu.py); where it cannot be built here the
parity tests skip with the reason, and `test_kernel_builds_where_the_toolchain_exists` fails
if g++ is present on x86-64 but the build still fails.
"""

from __future__ import annotations

import logging
import platform
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
import rnnlab.fused as fused
from rnnlab.fused import cpu

IN = 4
WHY = cpu.unavailable()
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"CPU kernel unavailable: {WHY}")


def _problem(name, hidden=13, batch_shape=(3,), time=7, seed=0):
    cell = rnnlab.cells.make(name, hidden)
    params = cell.init(jax.random.key(seed), IN)
    # biases away from zero, so that every gate term is exercised
    params = {k: v + 0.3 * jax.random.normal(jax.random.key(seed + 9), v.shape)
              if k.startswith("b") else v for k, v in params.items()}
    xs = jax.random.normal(jax.random.key(seed + 1), (*batch_shape, time, IN))
    carry = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(seed + 2), a.shape),
        cell.initial_carry(batch_shape))
    return cell, params, xs, carry


def _loss(run, params, xs, carry, **kw):
    """A scalar touching every output and every part of the final carry; aux: the outputs."""
    final, ys = run(params, xs, carry, **kw)
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    parts = jax.tree_util.tree_leaves(final)
    return (jnp.sum(ys * w) + jnp.sum(jnp.tanh(parts[0]))
            + sum(jnp.sum(p ** 2) for p in parts[1:])), (final, ys)


def _close(a, b, rtol=2e-5):
    """Leaves equal to float32 rounding at the scale of each compared quantity: the largest
    difference at most `rtol` times the largest magnitude of the reference leaf."""
    sa, sb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert sa == sb, f"tree structures differ: {sa} vs {sb}"
    for path, x in jax.tree_util.tree_leaves_with_path(a):
        y = dict(jax.tree_util.tree_leaves_with_path(b))[path]
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape, (jax.tree_util.keystr(path), x.shape, y.shape)
        scale = max(np.abs(y).max(initial=0.0), 1e-6)
        err = np.abs(x - y).max(initial=0.0)
        assert err <= rtol * scale, f"{jax.tree_util.keystr(path)}: {err:.3g} vs scale {scale:.3g}"


def _same_run(path_a, path_b, cell, params, xs, carry, **kw):
    def both(path):
        run = lambda p, x, c: rnnlab.unroll(cell, p, x, c, fused=path, **kw)  # noqa: E731
        return jax.jit(jax.grad(_loss, argnums=(1, 2, 3), has_aux=True),
                       static_argnums=0)(run, params, xs, carry)

    (ga, out_a), (gb, out_b) = both(path_a), both(path_b)
    _close(out_a, out_b)
    _close(ga, gb)
    assert min(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(gb)) > 1e-3


def _holed_mask(batch, time):
    lengths = np.array([time, 4, 0, time - 1, 2][:batch])  # full, padded, empty, ...
    return jnp.asarray((np.arange(time)[None] < lengths[:, None])).at[0, 2].set(False)


# --- parity with the scan --------------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_kernel_matches_scan_with_mask(name, reverse):
    """A mask with a hole, padding and an empty row; hidden 13 and batch 5 divide no SIMD
    width; a random initial carry."""
    cell, params, xs, carry = _problem(name, batch_shape=(5,))
    _same_run("cpu", "scan", cell, params, xs, carry, mask=_holed_mask(5, 7), reverse=reverse)


@needs_kernel
@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_kernel_lengths_extra_axes_zero_carry_and_vmap(name, threads, monkeypatch):
    """Hidden 37 split over 2 threads (units 0-23 and 24-36) or run by one."""
    monkeypatch.setenv("RNNLAB_CPU_THREADS", threads)  # read by the kernel at every call
    cell, params, xs, carry = _problem(name, hidden=37, batch_shape=(2, 3), time=5)
    lengths = jnp.asarray([[5, 3, 0], [1, 5, 2]])
    _same_run("cpu", "scan", cell, params, xs, carry, lengths=lengths, reverse=True)
    scan = rnnlab.unroll(cell, params, xs, fused="scan")
    _close(jax.jit(lambda p, x: rnnlab.unroll(cell, p, x, fused="cpu"))(params, xs), scan)
    got = jax.jit(jax.vmap(lambda x: rnnlab.unroll(cell, params, x, fused="cpu")))(xs)
    _close(got, scan)


@needs_kernel
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_kernel_carries_state_across_windows(name):
    """Two windows in a row, the second starting from the first's final carry (truncated BPTT
    without the cut): the gradient flows through the carried state into the first window."""
    cell, params, xs, carry = _problem(name, batch_shape=(3,), time=8)

    def run(path):
        def two(p, x, c):
            c, y1 = rnnlab.unroll(cell, p, x[:, :4], c, fused=path)
            c, y2 = rnnlab.unroll(cell, p, x[:, 4:], c, mask=_holed_mask(3, 4), fused=path)
            return c, jnp.concatenate([y1, y2], axis=1)
        return jax.jit(jax.grad(_loss, argnums=(1, 2, 3), has_aux=True),
                       static_argnums=0)(two, params, xs, carry)

    (ga, out_a), (gb, out_b) = run("cpu"), run("scan")
    _close(out_a, out_b)
    _close(ga, gb)


@needs_kernel
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_kernel_gradients_match_finite_differences(name):
    """Central differences of the loss along random directions of every argument (params,
    inputs, initial carry) on a tiny shape, against the kernel's gradient (float32: the
    difference is accurate to ~1e-3 of the derivative's scale at this step size)."""
    cell, params, xs, carry = _problem(name, hidden=3, batch_shape=(2,), time=4)
    mask = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 0]], bool)
    run = lambda p, x, c: rnnlab.unroll(cell, p, x, c, mask=mask, fused="cpu")  # noqa: E731
    f = jax.jit(lambda *a: _loss(run, *a)[0])
    args = (params, xs, carry)
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    g_leaves = jax.tree_util.tree_leaves(grads)
    eps = 1e-2
    for k in range(len(leaves)):
        v = [jnp.zeros_like(a) for a in leaves]
        v[k] = jax.random.normal(jax.random.key(k), leaves[k].shape)
        shift = lambda s: jax.tree_util.tree_unflatten(  # noqa: E731
            tree, [a + s * d for a, d in zip(leaves, v)])
        fd = (float(f(*shift(eps))) - float(f(*shift(-eps)))) / (2 * eps)
        exact = float(jnp.vdot(g_leaves[k], v[k]))
        scale = float(jnp.linalg.norm(g_leaves[k]) * jnp.linalg.norm(v[k]))
        assert abs(fd - exact) <= 2e-3 * scale, (k, fd, exact, scale)


# --- choosing the path, building, falling back -----------------------------------------------


def _shapes(name, hidden, batch):
    """The problem's arrays as shapes only (select() looks at nothing else)."""
    cell, params, xs, carry = _problem(name, hidden=hidden)
    big = jax.ShapeDtypeStruct((batch, 7, IN), xs.dtype)
    to = lambda a: jax.ShapeDtypeStruct((batch, *a.shape[1:]), a.dtype)  # noqa: E731
    return cell, jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                        params), big, jax.tree_util.tree_map(to, carry)


@needs_kernel
def test_auto_takes_the_kernel_for_lstm_and_gru_at_every_size_and_says_why_not():
    # as measured: faster than "vjp" at L's step (batch 16, hidden 256) and B's (32, 512)
    for name in ("lstm", "gru"):
        assert fused.select(*_shapes(name, 256, 16)) == "cpu", name
        assert fused.select(*_problem(name)) == "cpu", name
        assert fused.select(*_shapes(name, 512, 32)) == "cpu", name
        cell, params, xs, carry = _problem(name)
        assert fused.select(cell, params, xs, carry, requested="cpu") == "cpu", name
        c_big, p_big, x_big, k_big = _shapes(name, 512, 32)
        p16 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16),
                                     p_big)
        assert fused.select(c_big, p16, x_big) == "vjp"  # bfloat16: the XLA path
        assert fused.select(c_big, p_big, x_big, k_big, compute_dtype="bfloat16") == "vjp"
        p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
        with pytest.raises(ValueError, match="float32 only"):
            fused.select(cell, p16, xs, requested="cpu")
    for name, kw in [("rnn_tanh", {}), ("lstm", {"peepholes": True})]:
        cell = rnnlab.cells.make(name, 5, **kw)
        assert fused.select(cell, cell.init(jax.random.key(0), IN), xs) == "vjp", name
    cho = rnnlab.cells.make("gru", 5, variant="cho")
    with pytest.raises(ValueError, match="plain LSTM and the cuDNN-form GRU"):
        rnnlab.unroll(cho, cho.init(jax.random.key(0), IN), xs, fused="cpu")


def test_auto_falls_back_in_one_line_when_the_kernel_is_unavailable(monkeypatch, caplog):
    why = "no C++ compiler (g++ not on PATH)"
    monkeypatch.setattr(cpu, "unavailable", lambda: why)
    fused.dispatch._log_fallback.cache_clear()
    cell, params, xs, carry = _problem("lstm")
    with caplog.at_level(logging.WARNING):
        assert fused.select(*_shapes("lstm", 512, 32)) == "vjp"
        assert fused.select(*_shapes("gru", 512, 32)) == "vjp"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"rnnlab: fused CPU kernel unavailable ({why}); using the XLA path"]
    with pytest.raises(ValueError, match=r"fused='cpu' cannot run this layer: no C\+\+ comp"):
        rnnlab.unroll(cell, params, xs, fused="cpu")
    fused.dispatch._log_fallback.cache_clear()


def test_build_reasons_and_cache_key(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    assert cpu.cache_dir() == str(tmp_path / "fused_cpu")
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(cpu.KernelUnavailable, match="no C\\+\\+ compiler"):
        cpu._build()
    monkeypatch.delenv("CXX")
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache directory should be
    monkeypatch.setenv("RNNLAB_CACHE", str(blocked))
    with pytest.raises(cpu.KernelUnavailable, match="cannot write the kernel cache .*RNNLAB_CA"):
        cpu._build()
    args = (b"source", "/usr/bin/g++")
    assert cpu.build_key(*args, "cpu A") != cpu.build_key(*args, "cpu B")  # -march=native
    assert cpu.build_key(*args, "cpu A") != cpu.build_key(b"other", *args[1:], "cpu A")
    assert cpu.build_key(*args, "cpu A") == cpu.build_key(*args, "cpu A")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("g++") is None,
                    reason="the kernel is built with g++ on x86-64")
def test_kernel_builds_where_the_toolchain_exists():
    """g++ on x86-64 Linux: the kernel must build and load (else the parity tests above would
    skip silently on the machines meant to run them, CI's included)."""
    assert WHY is None
