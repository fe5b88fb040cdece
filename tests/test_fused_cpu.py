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


def _check_finite_differences(f, args, eps=1e-2):
    """Central differences of the scalar f(*args) along a random direction of each leaf of
    args against its gradient (float32: accurate to ~1e-3 of the derivative's scale at this
    step size)."""
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    g_leaves = jax.tree_util.tree_leaves(grads)
    for k in range(len(leaves)):
        v = [jnp.zeros_like(a) for a in leaves]
        v[k] = jax.random.normal(jax.random.key(k), leaves[k].shape)
        shift = lambda s: jax.tree_util.tree_unflatten(  # noqa: E731
            tree, [a + s * d for a, d in zip(leaves, v)])
        fd = (float(f(*shift(eps))) - float(f(*shift(-eps)))) / (2 * eps)
        exact = float(jnp.vdot(g_leaves[k], v[k]))
        scale = float(jnp.linalg.norm(g_leaves[k]) * jnp.linalg.norm(v[k]))
        assert abs(fd - exact) <= 2e-3 * scale, (k, fd, exact, scale)


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
def test_kernel_blocks_beyond_the_pool_give_the_same_bits(name, monkeypatch):
    """Hidden 130 over 8 blocks, more than XLA's intra-op pool has free threads on a small
    machine, in a step that runs two independent layers (XLA may run their calls at once, each
    asking the pool for helpers): the blocks no pool thread claims run on threads of the
    kernel's own, and the outputs and gradients are bitwise those of one thread."""
    cell, params, xs, carry = _problem(name, hidden=130, batch_shape=(5,), time=6)

    def two_layers(p, x, c):
        fwd = rnnlab.unroll(cell, p, x, c, fused="cpu")[1]
        rev = rnnlab.unroll(cell, p, 0.5 * x, c, fused="cpu", reverse=True)[1]
        return jnp.sum(jnp.tanh(fwd) * rev), (fwd, rev)

    step = jax.jit(jax.grad(two_layers, argnums=(0, 1, 2), has_aux=True))
    runs = {}
    for threads in ("1", "8"):
        monkeypatch.setenv("RNNLAB_CPU_THREADS", threads)  # read by the kernel at every call
        runs[threads] = jax.tree_util.tree_leaves(step(params, xs, carry))
    assert all(np.array_equal(a, b) for a, b in zip(runs["1"], runs["8"]))
    assert min(float(jnp.abs(g).max()) for g in runs["8"]) > 1e-3


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
    _check_finite_differences(f, args)


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


# --- embedded tokens (`rnnlab.Embedded`): the first LSTM layer folds the lookup ---------------


def _tokens(batch_shape, time, vocab, seed=3):
    table = jax.random.normal(jax.random.key(seed), (vocab, IN))
    ids = jax.random.randint(jax.random.key(seed + 1), (*batch_shape, time), 0, vocab)
    return table, ids


def _token_operand(fn, *args, time, batch) -> bool:
    """Whether the compiled program's LSTM forward call takes the int32 ids [time, batch]."""
    text = jax.jit(fn).lower(*args).as_text()
    calls = [ln for ln in text.splitlines() if "rnnlab_lstm_fwd" in ln]
    return bool(calls) and any(f"tensor<{time}x{batch}xi32>" in ln for ln in calls)


def _embedded_run(stack, table_ids, path, **kw):
    """_loss as a function of (params, table, carry) with the inputs as Embedded tokens on
    "cpu" (path "tokens") or as the looked-up rows table[ids] on `path`."""
    ids = table_ids[1]

    def loss(p, tab, c):
        xs = rnnlab.Embedded(tab, ids) if path == "tokens" else jnp.take(tab, ids, axis=0)
        run = lambda p_, x, c_: rnnlab.unroll(  # noqa: E731
            stack, p_, x, c_, fused="cpu" if path == "tokens" else path, **kw)
        return _loss(run, p, xs, c)

    return loss


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_embedded_tokens_fold_into_the_kernel_and_match_the_scan(reverse):
    """Two stacked LSTM layers on Embedded tokens (vocab 6 < time x batch 35): the first layer's
    kernel reads the table E W_ih per token (the ids are an operand of its call) and sums dZ per
    token; outputs, carry and the gradients of every parameter, the table and the initial carry
    match the scan on table[ids], with a holed mask and batch 5, hidden 13."""
    stack = rnnlab.cells.Stack((rnnlab.cells.make("lstm", 13), rnnlab.cells.make("lstm", 13)))
    params = stack.init(jax.random.key(0), IN)
    params = tuple({k: v + 0.3 * jax.random.normal(jax.random.key(9), v.shape)
                    if k.startswith("b") else v for k, v in p.items()} for p in params)
    carry = jax.tree_util.tree_map(lambda a: 0.5 * jax.random.normal(jax.random.key(2), a.shape),
                                   stack.initial_carry((5,)))
    tokens = _tokens((5,), 7, vocab=6)
    kw = dict(mask=_holed_mask(5, 7), reverse=reverse)
    folded = _embedded_run(stack, tokens, "tokens", **kw)
    assert _token_operand(lambda *a: folded(*a)[0], params, tokens[0], carry, time=7, batch=5)
    grad = lambda f: jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(  # noqa: E731
        params, tokens[0], carry)
    (ga, out_a), (gb, out_b) = grad(folded), grad(_embedded_run(stack, tokens, "scan", **kw))
    _close(out_a, out_b)
    _close(ga, gb)
    assert float(jnp.abs(ga[1]).max()) > 1e-3  # the table's gradient is there


@needs_kernel
@pytest.mark.parametrize("threads", ["1", "2"])
def test_embedded_tokens_lengths_extra_axes_threads_and_clamped_ids(threads, monkeypatch):
    """Hidden 37 over 1 or 2 threads (each adds into its own units' columns of the table's
    gradient), batch axes (2, 3), lengths; ids out of range clamp into [0, vocab), as the
    lookup does."""
    monkeypatch.setenv("RNNLAB_CPU_THREADS", threads)
    cell = rnnlab.cells.make("lstm", 37)
    params = cell.init(jax.random.key(0), IN)
    table, ids = _tokens((2, 3), 5, vocab=4)
    ids = ids.at[0, 1, 2].set(9).at[1, 0, 0].set(-3)
    tokens = (table, ids)
    kw = dict(lengths=jnp.asarray([[5, 3, 0], [1, 5, 2]]), reverse=True)
    carry = cell.initial_carry((2, 3))
    grad = lambda f: jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(  # noqa: E731
        params, table, carry)
    folded = _embedded_run(cell, tokens, "tokens", **kw)
    assert _token_operand(lambda *a: folded(*a)[0], params, table, carry, time=5, batch=6)
    clipped = (table, jnp.clip(ids, 0, 3))
    (ga, out_a), (gb, out_b) = grad(folded), grad(_embedded_run(cell, clipped, "scan", **kw))
    _close(out_a, out_b)
    _close(ga, gb)


@needs_kernel
def test_embedded_tokens_are_looked_up_where_the_fold_does_not_apply():
    """A vocabulary larger than time x batch (forming E W_ih would cost more than it saves),
    a GRU first layer and the scan path all run on table[ids], with the same results."""
    lstm, gru = rnnlab.cells.make("lstm", 8), rnnlab.cells.make("gru", 8)
    for cell, vocab, path in ((lstm, 40, "cpu"), (gru, 6, "cpu"), (lstm, 6, "scan")):
        params = cell.init(jax.random.key(0), IN)
        table, ids = _tokens((3,), 7, vocab=vocab)
        run = lambda p, t, path=path, cell=cell, ids=ids: rnnlab.unroll(  # noqa: E731
            cell, p, rnnlab.Embedded(t, ids), fused=path)
        assert not _token_operand(run, params, table, time=7, batch=3)
        dense = rnnlab.unroll(cell, params, table[ids], fused=path)
        _close(jax.jit(run)(params, table), dense)


@needs_kernel
def test_embedded_tokens_gradients_match_finite_differences():
    """Central differences along random directions of the table, W_ih, W_hh and b through the
    folded first layer (the table's and W_ih's gradients come from the kernel's per-token
    sums), on a tiny shape with a mask."""
    cell = rnnlab.cells.make("lstm", 3)
    params = cell.init(jax.random.key(0), IN)
    table, ids = _tokens((2,), 4, vocab=3)
    mask = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 0]], bool)
    run = lambda p, t: rnnlab.unroll(  # noqa: E731
        cell, p, rnnlab.Embedded(t, ids), mask=mask, fused="cpu")
    f = jax.jit(lambda p, t: _loss(lambda p_, x, c: run(p_, x), p, t, None)[0])
    assert _token_operand(f, params, table, time=4, batch=2)
    args = (params, table)
    _check_finite_differences(f, args)
