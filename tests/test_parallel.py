"""Parallel (associative-scan) forms of minGRU, minLSTM and LRU against a Python loop over
`cell(params, carry, x)`.

Tolerance: float32 throughout; the log-space and complex scans reorder the arithmetic, so forward
values agree to rtol = atol = 1e-5 at T <= 64 (measured: ~1e-6) and gradients to 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.cells import make
from rnnlab.cells.parallel import g, log_g


NAMES = ["mingru", "minlstm", "lru"]
TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)


def loop(cell, params, xs, carry, mask=None, reverse=False):
    """Independent reference: one `cell(...)` call per step; masked steps keep the carry."""
    t_len = xs.shape[1]
    ys = [None] * t_len
    order = range(t_len - 1, -1, -1) if reverse else range(t_len)
    for t in order:
        new_c, y = cell(params, carry, xs[:, t])
        if mask is not None:
            keep = mask[:, t][:, None]
            new_c = jnp.where(keep, new_c, carry)
            y = jnp.where(keep, y, 0.0)
        carry, ys[t] = new_c, y
    return carry, jnp.stack(ys, axis=1)


def setup(name, batch=3, t_len=17, d_in=5, hidden=8, seed=0):
    cell = make(name, hidden_size=hidden)
    k_p, k_x, k_c = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p, d_in)
    xs = jax.random.normal(k_x, (batch, t_len, d_in))
    carry = jax.random.normal(k_c, cell.initial_carry((batch,)).shape)
    return cell, params, xs, carry


def padding_mask(batch, t_len):
    lengths = np.array([t_len, t_len // 2, 1] + [t_len] * (batch - 3))[:batch]
    return jnp.asarray(np.arange(t_len)[None, :] < lengths[:, None])


def test_registered():
    for name in NAMES:
        assert name in rnnlab.cells.names()
        assert hasattr(make(name, 4), "parallel_unroll")


def test_g_and_log_g():
    x = jnp.linspace(-30.0, 30.0, 601)
    # exp(y) inherits y's float32 rounding as a relative error of up to |y| * 2^-24 (|y| <= 30:
    # 1.8e-6), plus a few ulp from exp and g themselves: 1e-6 is finer than float32 resolves
    np.testing.assert_allclose(jnp.exp(log_g(x)), g(x), rtol=4e-6)
    assert bool(jnp.all(g(x) > 0))
    grads = jax.vmap(jax.grad(log_g))(x)
    assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_parallel_matches_loop(name, reverse, masked):
    cell, params, xs, carry = setup(name)
    mask = padding_mask(xs.shape[0], xs.shape[1]) if masked else None
    c_ref, y_ref = loop(cell, params, xs, carry, mask, reverse)
    c_par, y_par = jax.jit(lambda p, x, c: rnnlab.unroll(cell, p, x, c, mask=mask,
                                                         reverse=reverse))(params, xs, carry)
    np.testing.assert_allclose(y_par, y_ref, **TOL)
    np.testing.assert_allclose(c_par, c_ref, **TOL)
    if masked:
        assert bool(jnp.all(y_par[~mask] == 0))


@pytest.mark.parametrize("name", NAMES)
def test_zero_carry_default(name):
    cell, params, xs, _ = setup(name)
    zero = cell.initial_carry((xs.shape[0],))
    c_ref, y_ref = loop(cell, params, xs, zero)
    c_par, y_par = rnnlab.unroll(cell, params, xs)
    np.testing.assert_allclose(y_par, y_ref, **TOL)
    np.testing.assert_allclose(c_par, c_ref, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_carry_in_out_chains(name):
    """Unrolling two halves with the carry passed on equals one unroll of the whole."""
    cell, params, xs, carry = setup(name, t_len=20)
    c_full, y_full = rnnlab.unroll(cell, params, xs, carry)
    c_half, y1 = rnnlab.unroll(cell, params, xs[:, :10], carry)
    c_end, y2 = rnnlab.unroll(cell, params, xs[:, 10:], c_half)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y_full, **TOL)
    np.testing.assert_allclose(c_end, c_full, **TOL)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("masked", [pytest.param(False, marks=pytest.mark.slow), True])
def test_gradients_match_loop(name, masked):  # unmasked: under -m slow
    cell, params, xs, carry = setup(name, t_len=12)
    mask = padding_mask(xs.shape[0], xs.shape[1]) if masked else None
    w = jax.random.normal(jax.random.key(9), (cell.output_size,))

    def loss(fn, p, x, c):
        c_out, ys = fn(p, x, c)
        return jnp.sum(jnp.tanh(ys @ w)) + jnp.sum(jnp.sin(c_out))

    par = lambda p, x, c: rnnlab.unroll(cell, p, x, c, mask=mask)  # noqa: E731
    ref = lambda p, x, c: loop(cell, p, x, c, mask)  # noqa: E731
    # jitted: one compile each instead of hundreds of op-by-op dispatches (the slow part)
    g_par = jax.jit(jax.grad(lambda *a: loss(par, *a), argnums=(0, 1, 2)))(params, xs, carry)
    g_ref = jax.jit(jax.grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2)))(params, xs, carry)
    for a, b in zip(jax.tree_util.tree_leaves(g_par), jax.tree_util.tree_leaves(g_ref)):
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, **GRAD_TOL)


@pytest.mark.slow  # ~17 s each: compiling the T = 1024 associative scan and its gradient
@pytest.mark.parametrize("name", NAMES)
def test_long_sequence_stable(name):
    """T = 1024: finite values and gradients, and agreement with the step-by-step scan."""
    cell, params, xs, carry = setup(name, batch=2, t_len=1024, d_in=4, hidden=16)

    def seq(p, x, c):  # lax.scan over the ordinary step, the sequential form
        c, ys = jax.lax.scan(lambda c, x_t: cell(p, c, x_t), c, jnp.swapaxes(x, 0, 1))
        return c, jnp.swapaxes(ys, 0, 1)

    c_par, y_par = jax.jit(lambda p, x, c: rnnlab.unroll(cell, p, x, c))(params, xs, carry)
    c_seq, y_seq = jax.jit(seq)(params, xs, carry)
    assert bool(jnp.all(jnp.isfinite(y_par)))
    np.testing.assert_allclose(y_par, y_seq, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c_par, c_seq, rtol=1e-4, atol=1e-4)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(rnnlab.unroll(cell, p, xs, carry)[1] ** 2)))(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(grads))


def test_lru_ring_init():
    cell = make("lru", hidden_size=256, r_min=0.5, r_max=0.8, max_phase=np.pi)
    p = cell.init(jax.random.key(0), 4)
    lr, li = cell._lambda(p)
    mod = jnp.sqrt(lr ** 2 + li ** 2)
    assert float(mod.min()) >= 0.5 - 1e-5 and float(mod.max()) <= 0.8 + 1e-5
    np.testing.assert_allclose(jnp.exp(p["gamma_log"]), jnp.sqrt(1 - mod ** 2), rtol=1e-5)
    assert p["D"].shape == (4,) or p["D"].shape == (4, 256)
    with pytest.raises(ValueError, match="r_max"):
        make("lru", hidden_size=4, r_min=0.9, r_max=1.0)


def test_stack_of_parallel_cells():
    stack = rnnlab.cells.Stack((make("mingru", 6), make("lru", 5, out_features=6)))
    params = stack.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 9, 3))
    carry = stack.initial_carry((2,))
    c_par, y_par = jax.jit(lambda p, x, c: rnnlab.unroll(stack, p, x, c))(params, xs, carry)
    c_ref, y_ref = jax.jit(lambda p, x, c: loop(stack, p, x, c))(params, xs, carry)
    np.testing.assert_allclose(y_par, y_ref, **TOL)
    for a, b in zip(c_par, c_ref):
        np.testing.assert_allclose(a, b, **TOL)
