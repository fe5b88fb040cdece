"""Tests for rnnlab.fused: the Pallas LSTM kernel (interpret mode on CPU) and the cuDNN path
against the scan (forward outputs, final carry, gradients), the cuDNN weight layout, and the
choice between the paths. The cuDNN binding itself runs only on a CUDA GPU: on CPU its
glue (weights, lengths, reversal, batch shapes) is tested through JAX's pure-JAX reference of
the same primitive, `jax.experimental.rnn.lstm_ref`, and the GPU parity test skips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_allclose
from jax.experimental import rnn as jax_rnn

import rnnlab
import rnnlab.fused as fused
from rnnlab.fused import cudnn
from rnnlab.fused.pallas_lstm import lstm_recurrence

H, IN, B, T = 6, 4, 3, 7
LENGTHS = np.array([T, 4, 0])  # a full, a padded and an empty sequence


def _problem(seed=0, batch_shape=(B,), time=T, hidden=H):
    cell = rnnlab.cells.make("lstm", hidden)
    params = cell.init(jax.random.key(seed), IN)
    params = {**params,
              "b": params["b"] + 0.3 * jax.random.normal(jax.random.key(9), (4 * hidden,))}
    xs = jax.random.normal(jax.random.key(seed + 1), (*batch_shape, time, IN))
    carry = rnnlab.cells.LSTMCarry(*(0.5 * jax.random.normal(jax.random.key(seed + k),
                                                             (*batch_shape, hidden))
                                     for k in (2, 3)))
    return cell, params, xs, carry


def _loss(run, params, xs, carry, **kw):
    """A scalar touching every output and every part of the final carry; aux: the outputs."""
    out = run(params, xs, carry, **kw)
    final, ys = out
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    parts = jax.tree_util.tree_leaves(final)
    return (jnp.sum(ys * w) + jnp.sum(jnp.tanh(parts[0]))
            + sum(jnp.sum(p ** 2) for p in parts[1:])), out


def _assert_same_run(run_a, run_b, params, xs, carry, atol=1e-5, grad_atol=1e-5, grad_rtol=1e-5,
                     **kw):
    """Same outputs, final carry and gradients (params, inputs, initial carry); one compiled
    function per run."""
    def both(run):
        fn = jax.jit(jax.grad(_loss, argnums=(1, 2, 3), has_aux=True), static_argnums=0)
        return fn(run, params, xs, carry, **kw)

    (ga, out_a), (gb, out_b) = both(run_a), both(run_b)
    tree_allclose(out_a, out_b, atol=atol)
    tree_allclose(ga, gb, atol=grad_atol, rtol=grad_rtol)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(gb)) > 1e-2


def _scan(cell):
    return lambda p, x, c, **kw: rnnlab.unroll(cell, p, x, c, fused="scan", **kw)


# --- Pallas kernel (interpret mode) --------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["fwd", "rev"])
def test_pallas_matches_scan_with_mask(reverse):
    """A mask with a hole in the middle and padding at the end, forwards and backwards."""
    cell, params, xs, carry = _problem()
    mask = (jnp.arange(T)[None] < LENGTHS[:, None]).at[0, 2].set(False)
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, mask=mask, reverse=reverse, fused=path)
    _assert_same_run(run("pallas"), run("scan"), params, xs, carry)


@pytest.mark.slow
def test_pallas_time_and_batch_blocks_and_zero_carry():
    """The kernel streamed in time blocks over a batch grid equals one block."""
    cell, params, xs, _ = _problem(batch_shape=(4,), time=6)
    xp = cell.project_inputs(params, jnp.moveaxis(xs, 1, 0))
    zeros = jnp.zeros((4, H))

    def run(p, x, c, **kw):
        hs, h, cc = lstm_recurrence(cell.project_inputs(p, jnp.moveaxis(x, 1, 0)),
                                    p["w_hh"], c.h, c.c, interpret=True, **kw)
        return rnnlab.cells.LSTMCarry(h, cc), jnp.moveaxis(hs, 0, 1)

    carry = rnnlab.cells.LSTMCarry(zeros, zeros)
    blocked = lambda p, x, c: run(p, x, c, block_time=2, block_batch=2)  # noqa: E731
    _assert_same_run(blocked, run, params, xs, carry)
    tree_allclose(jax.jit(run)(params, xs, carry), _scan(cell)(params, xs, None))
    with pytest.raises(ValueError, match="block_time=4 and block_batch=4 must divide time=6"):
        lstm_recurrence(xp, params["w_hh"], zeros, zeros, interpret=True, block_time=4)


@pytest.mark.slow
def test_pallas_bfloat16_policy_matches_scan_policy():
    """bfloat16 W_hh in the kernel (float32 gates and carry) = the scan under the same policy.
    Gradients pass through bfloat16 matmul inputs rounded at different points: equal to within
    1% (about 2 bfloat16 ulps)."""
    cell, params, xs, carry = _problem()
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, fused=path, compute_dtype=jnp.bfloat16)
    _assert_same_run(run("pallas"), run("scan"), params, xs, carry, atol=1e-4, grad_atol=1e-2,
                     grad_rtol=1e-2)


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_pallas_kernel_lowers_for_accelerators(monkeypatch, platform):
    """Forward and backward kernels lower to Mosaic TPU / Triton from this CPU (the compilers
    behind them run only on the device), in float32 and bfloat16."""
    from jax.experimental.pallas import triton as pltriton

    import rnnlab.fused.pallas_lstm as pallas_lstm

    if platform == "cuda":  # what _compiler_params picks on a GPU backend
        monkeypatch.setattr(pallas_lstm, "_compiler_params",
                            lambda: pltriton.CompilerParams(num_warps=4))
    t, b, h = 8, 16, 128
    for dtype in (jnp.float32, jnp.bfloat16):
        args = (jnp.zeros((t, b, 4 * h)), jnp.zeros((h, 4 * h), dtype), jnp.zeros((b, h)),
                jnp.zeros((b, h)), jnp.ones((t, b), bool))
        loss = lambda *a: sum(jnp.sum(o) for o in lstm_recurrence(*a))  # noqa: E731
        text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(*args).lower(
            lowering_platforms=(platform,)).as_text()
        assert text.count("rnnlab_lstm_") >= 2  # the forward and the backward kernel


@pytest.mark.slow
def test_pallas_extra_batch_axes_and_unbatched():
    cell, params, xs, carry = _problem(batch_shape=(2, 2), time=3)
    got = jax.jit(lambda x, c: rnnlab.unroll(cell, params, x, c, fused="pallas"))(xs, carry)
    tree_allclose(got, _scan(cell)(params, xs, carry))
    one = jax.jit(lambda x: rnnlab.unroll(cell, params, x, fused="pallas"))(xs[0, 0])
    tree_allclose(one, _scan(cell)(params, xs[0, 0], None))


# --- cuDNN: weight layout and glue through JAX's reference -----------------------------------


def _reference_lstm(x, h0, c0, w, seq_lengths, *, input_size, hidden_size, num_layers, dropout,
                    bidirectional):
    """`jax.experimental.rnn.lstm`'s signature on JAX's pure-JAX reference of cuDNN's LSTM."""
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(w, input_size, hidden_size,
                                                         num_layers, bidirectional)
    return jax_rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size,
                            hidden_size, num_layers, dropout, bidirectional)


def test_cudnn_weight_layout_and_round_trip():
    _, params, _, _ = _problem()
    params = jax.tree_util.tree_map(np.asarray, params)
    flat = np.asarray(cudnn.to_cudnn_weights(params))
    assert flat.shape == (jax_rnn.get_num_params_in_lstm(IN, H, 1, False),)
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(flat, IN, H, 1, False)
    np.testing.assert_array_equal(w_ih[0], params["w_ih"].T)
    np.testing.assert_array_equal(w_hh[0], params["w_hh"].T)
    np.testing.assert_array_equal(b_ih[0] + b_hh[0], params["b"])
    tree_allclose(cudnn.from_cudnn_weights(flat, IN, H), params, atol=0, rtol=0)
    # cuDNN's own weights (two biases) come back with the biases summed, and go round again
    other = np.random.default_rng(0).uniform(-1, 1, flat.shape).astype(np.float32)
    once = cudnn.from_cudnn_weights(other, IN, H)
    tree_allclose(cudnn.from_cudnn_weights(cudnn.to_cudnn_weights(once), IN, H), once)
    with pytest.raises(ValueError, match=r"must have shape \(288,\), got \(287,\)"):
        cudnn.from_cudnn_weights(other[:-1], IN, H)


def test_flip_padded_reverses_within_lengths():
    xs = jnp.arange(2 * 5).reshape(2, 5, 1)
    got = cudnn.flip_padded(xs, jnp.array([5, 3]))[..., 0]
    np.testing.assert_array_equal(np.asarray(got), [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]])


@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["fwd", "rev"])
def test_cudnn_glue_matches_scan_with_lengths(monkeypatch, reverse):
    """`rnnlab.unroll` on a pretended CUDA backend, the binding swapped for its reference:
    lengths (including 0), reversal and two batch axes give the scan's values and gradients."""
    monkeypatch.setattr(fused.dispatch, "platform", lambda: "cuda")
    monkeypatch.setattr(cudnn, "_binding_lstm", _reference_lstm)
    cell, params, xs, carry = _problem(batch_shape=(1, B))
    lengths = jnp.asarray(LENGTHS)[None]
    assert fused.select(cell, params, xs, carry) == "cudnn"
    auto = lambda p, x, c: rnnlab.unroll(cell, p, x, c, lengths=lengths,  # noqa: E731
                                         reverse=reverse)
    _assert_same_run(auto, lambda p, x, c: rnnlab.unroll(
        cell, p, x, c, mask=jnp.arange(T) < lengths[..., None], reverse=reverse,
        fused="scan"), params, xs, carry)
    # the empty sequence keeps its carry, its outputs are zero
    (h, c), ys = jax.jit(auto)(params, xs, carry)
    tree_allclose((h[0, 2], c[0, 2]), (carry.h[0, 2], carry.c[0, 2]), atol=0)
    np.testing.assert_array_equal(np.asarray(ys[0, 2]), 0.0)


# --- the hand-written VJP on lax.scan ("vjp": any backend) -----------------------------------


@pytest.mark.parametrize("reverse,unroll", [(False, 1), (True, 3)], ids=["fwd", "rev-unroll3"])
def test_vjp_path_matches_scan_with_mask(reverse, unroll):
    """Outputs, final carry and gradients of the hand-written backward equal autodiff of the
    scan: a mask with a hole and padding, forwards and backwards, unrolled or not."""
    cell, params, xs, carry = _problem()
    mask = (jnp.arange(T)[None] < LENGTHS[:, None]).at[0, 2].set(False)
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, mask=mask, reverse=reverse, fused=path, unroll=unroll)
    _assert_same_run(run("vjp"), run("scan"), params, xs, carry)


def test_vjp_path_lengths_zero_carry_extra_axes_and_bfloat16():
    cell, params, xs, carry = _problem(batch_shape=(2, B))
    lengths = jnp.stack([jnp.asarray(LENGTHS), jnp.asarray([1, T, 2])])
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, lengths=lengths, fused=path)
    _assert_same_run(run("vjp"), run("scan"), params, xs, carry)
    zero = jax.jit(lambda p, x: rnnlab.unroll(cell, p, x, fused="vjp"))(params, xs)
    tree_allclose(zero, rnnlab.unroll(cell, params, xs, fused="scan"), atol=1e-5)
    bf16 = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, fused=path, compute_dtype="bfloat16")
    _assert_same_run(bf16("vjp"), bf16("scan"), params, xs, carry, atol=1e-4, grad_atol=1e-2,
                     grad_rtol=1e-2)


# --- the split-step VJP (split_vjp.py: every cell with one recurrent matmul) ---------------

SPLIT_CELLS = {"gru": {}, "rnn_tanh": {}, "rnn_relu": {},
               "lstm-peep-ln": {"peepholes": True, "layer_norm": True},
               "lstm-proj": {"proj_size": 4}}  # "auto" keeps it on the scan, "vjp" on request


@pytest.mark.each_once("name")  # each cell one way by default, both ways under -m slow
@pytest.mark.parametrize("name", list(SPLIT_CELLS))
@pytest.mark.parametrize("reverse,unroll", [(False, 2), (True, 3)], ids=["fwd-unroll2",
                                                                          "rev-unroll3"])
def test_split_vjp_path_matches_scan(name, reverse, unroll):
    """Outputs, final carry and gradients of the split-step backward equal autodiff of the
    scan, with a holed and padded mask; unroll 2 divides no time length here, 3 does not."""
    cell = rnnlab.cells.make(name.split("-")[0], H, **SPLIT_CELLS[name])
    assert cell.recurrent_weight == "w_hh"
    params = cell.init(jax.random.key(0), IN)
    xs = jax.random.normal(jax.random.key(1), (B, 6 if unroll == 2 else T, IN))
    carry = jax.tree_util.tree_map(lambda a: 0.5 + a, cell.initial_carry((B,)))
    mask = (jnp.arange(xs.shape[1])[None] < LENGTHS[:, None]).at[0, 2].set(False)
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, mask=mask, reverse=reverse, fused=path, unroll=unroll)
    _assert_same_run(run("vjp"), run("scan"), params, xs, carry)


def test_split_vjp_path_flax_params_and_bfloat16():
    """A Flax module's FrozenDict parameters, and the bfloat16 policy, through the split path."""
    from flax.core import freeze

    cell = rnnlab.cells.make("gru", H)
    params = cell.init(jax.random.key(0), IN)
    xs = jax.random.normal(jax.random.key(1), (B, T, IN))
    run = lambda path, **kw: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, fused=path, **kw)
    _assert_same_run(run("vjp"), run("scan"), freeze(params), xs, cell.initial_carry((B,)))
    _assert_same_run(run("vjp", compute_dtype="bfloat16"), run("scan", compute_dtype="bfloat16"),
                     params, xs, cell.initial_carry((B,)), atol=1e-4, grad_atol=1e-2,
                     grad_rtol=1e-2)


# --- choosing the path -----------------------------------------------------------------------


def test_auto_on_cpu_is_the_kernel_or_vjp_and_fused_paths_say_why_not():
    cell, params, xs, carry = _problem()
    assert fused.platform() == "cpu"
    fast = "vjp" if fused.cpu.unavailable() else "cpu"  # the fused CPU kernel at any size
    assert fused.select(cell, params, xs, carry) == fast
    mask = jnp.ones((B, T), bool)
    assert fused.select(cell, params, xs, carry, mask) == fast  # any mask
    for case, args, kw in [
        ("remat", (cell, params, xs, carry), {"remat": True}),
        ("float64", (cell, jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params),
                     np.asarray(xs, np.float64)), {}),
        ("gru, Cho form", (rnnlab.cells.make("gru", H, variant="cho"), params, xs), {}),
        ("jordan", (rnnlab.cells.make("jordan", H), params, xs), {}),
    ]:
        assert fused.select(*args, **kw) == "scan", case
    for name, kw in [("rnn_tanh", {}), ("lstm", {"peepholes": True})]:
        assert fused.select(rnnlab.cells.make(name, H, **kw), params, xs) == "vjp", name
    assert fused.select(rnnlab.cells.make("gru", H), params, xs) == fast
    proj = rnnlab.cells.make("lstm", H, proj_size=2)
    p_proj = proj.init(jax.random.key(0), IN)
    assert fused.select(proj, p_proj, xs) == "scan"  # a second matmul per step
    assert fused.select(proj, p_proj, xs, requested="vjp") == "vjp"
    for path in ("pallas", "cudnn"):
        with pytest.raises(ValueError, match="without peepholes, layer norm or projection"):
            fused.select(proj, p_proj, xs, requested=path)
        with pytest.raises(ValueError, match=rf"fused_unroll\('{path}'\) runs the LSTM without"):
            fused.fused_unroll(path, proj, p_proj, xs)
    resets = jnp.zeros((B, T), bool)
    assert fused.select(cell, params, xs, carry, resets=resets) == "scan"
    with pytest.raises(ValueError, match=r"fused='vjp' cannot run this layer: resets= run on "
                       "the scan"):
        rnnlab.unroll(cell, params, xs, fused="vjp", resets=resets)
    # forward mode needs the scan: the vjp path is a custom VJP
    jvp = lambda path: jax.jvp(  # noqa: E731
        lambda x: rnnlab.unroll(cell, params, x, carry, fused=path)[1], (xs,), (xs,))
    jvp("scan")
    with pytest.raises(TypeError, match="forward-mode"):
        jvp("auto")
    with pytest.raises(ValueError, match="cuDNN needs a CUDA GPU backend, this is 'cpu'"):
        rnnlab.unroll(cell, params, xs, fused="cudnn")
    with pytest.raises(ValueError, match=r"unknown fused='cuda'; valid choices: \['auto', "):
        rnnlab.unroll(cell, params, xs, fused="cuda")
    gru = rnnlab.cells.make("gru", H)
    with pytest.raises(ValueError, match="plain LSTM only, not GRU"):
        rnnlab.unroll(gru, gru.init(jax.random.key(0), IN), xs, fused="pallas")


def test_auto_picks_cudnn_only_where_valid(monkeypatch):
    monkeypatch.setattr(fused.dispatch, "platform", lambda: "cuda")
    cell, params, xs, carry = _problem()
    mask = jnp.ones((B, T), bool)
    assert fused.select(cell, params, xs, carry) == "cudnn"
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    for case, args, kw in [
        ("mask", (cell, params, xs, carry, mask), {}),
        ("bfloat16 params", (cell, p16, xs, carry), {}),
        ("bfloat16 policy", (cell, params, xs, carry), {"compute_dtype": jnp.bfloat16}),
        ("remat", (cell, params, xs, carry), {"remat": True}),
        ("peepholes", (rnnlab.cells.make("lstm", H, peepholes=True), params, xs), {}),
        ("layer norm", (rnnlab.cells.make("lstm", H, layer_norm=True), params, xs), {}),
        ("projection", (rnnlab.cells.make("lstm", H, proj_size=2), params, xs), {}),
        ("resets", (cell, params, xs, carry), {"resets": jnp.zeros((B, T), bool)}),
        ("gru", (rnnlab.cells.make("gru", H), params, xs), {}),
    ]:
        assert fused.select(*args, **kw) == "scan", case
    with pytest.raises(ValueError, match="pass lengths=, not mask="):
        fused.select(cell, params, xs, carry, mask, requested="cudnn")
    monkeypatch.setattr(fused.dispatch, "platform", lambda: "rocm")
    assert fused.select(cell, params, xs, carry) == "scan"


@pytest.mark.slow
def test_auto_falls_back_to_scan_under_vmap(monkeypatch):
    """The real binding has no vmap rule: "auto" takes the scan at trace time (checked on CPU
    with a pretended CUDA backend: the batching error comes before any GPU work)."""
    monkeypatch.setattr(fused.dispatch, "platform", lambda: "cuda")
    cell, params, xs, _ = _problem(batch_shape=(2, B), time=3)
    got = jax.jit(jax.vmap(lambda x: rnnlab.unroll(cell, params, x)))(xs)
    tree_allclose(got, jax.jit(_scan(cell))(params, xs, None))
    with pytest.raises(NotImplementedError, match="Batching rule for 'rnn_fwd'"):
        jax.vmap(lambda x: rnnlab.unroll(cell, params, x, fused="cudnn"))(xs)


# --- on a CUDA GPU only ----------------------------------------------------------------------


@pytest.mark.skipif(fused.platform() != "cuda", reason="needs a CUDA GPU (cuDNN, Pallas/Triton)")
def test_gpu_cudnn_and_pallas_match_scan():
    """Triton needs power-of-two blocks of at least 16 for its matmuls: batch 16, hidden 16."""
    cell, params, xs, carry = _problem(batch_shape=(16,), time=8, hidden=16)
    lengths = jnp.asarray(np.random.default_rng(0).integers(0, 9, 16))
    run = lambda path: lambda p, x, c: rnnlab.unroll(  # noqa: E731
        cell, p, x, c, lengths=lengths, fused=path)
    with jax.default_matmul_precision("highest"):
        for path in ("cudnn", "pallas"):
            _assert_same_run(run(path), run("scan"), params, xs, carry, atol=1e-4,
                             grad_atol=1e-4)
