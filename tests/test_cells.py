"""Tests for rnnlab.cells: the cell contract, the initialisers, the ESN and its readout,
and the errors for bad hyperparameters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BATCH, HIDDEN, INPUT, TIME, tree_allclose

import rnnlab
from rnnlab.cells import Stack


def _eigradius(w) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(w, np.float64)))))


# --- the contract, for every cell ----------------------------------------------------------


def test_registry_has_the_documented_cells():
    expected = {"elman", "rnn_tanh", "rnn_relu", "irnn", "jordan", "esn", "lstm", "gru",
                "gru_cho"}
    assert expected <= set(rnnlab.cells.names())
    assert rnnlab.cells.names() == sorted(rnnlab.cells.names())


def test_call_equals_step_of_projected_input(cell, params, xs):
    carry = cell.initial_carry((BATCH,))
    x = xs[:, 0]
    # A non-zero carry, so the recurrent half matters.
    carry, _ = cell(params, carry, x)
    want = cell(params, carry, xs[:, 1])
    got = cell.step(params, carry, cell.project_inputs(params, xs[:, 1]))
    tree_allclose(got, want, atol=1e-6, rtol=1e-6)
    # project_inputs works on any leading shape, step by step the same as all at once.
    proj_all = cell.project_inputs(params, xs)
    tree_allclose(proj_all[:, 1], cell.project_inputs(params, xs[:, 1]), atol=1e-6, rtol=1e-6)


def test_output_and_carry_shapes(cell, params, xs):
    carry = cell.initial_carry((BATCH,))
    for leaf in jax.tree_util.tree_leaves(carry):
        assert leaf.shape[0] == BATCH
        assert not np.any(np.asarray(leaf))
    new_carry, y = cell(params, carry, xs[:, 0])
    assert y.shape == (BATCH, cell.output_size)
    assert jax.tree_util.tree_structure(new_carry) == jax.tree_util.tree_structure(carry)
    for a, b in zip(jax.tree_util.tree_leaves(new_carry), jax.tree_util.tree_leaves(carry)):
        assert a.shape == b.shape
    # No batch at all: a single sequence step.
    c0 = cell.initial_carry(())
    _, y0 = cell(params, c0, xs[0, 0])
    assert y0.shape == (cell.output_size,)
    assert cell.input_size(params) == INPUT


def test_cell_is_hashable_and_frozen(cell):
    hash(cell)
    assert cell == dataclasses.replace(cell)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.hidden_size = 3  # type: ignore[misc]


def test_init_under_jit_equals_eager(cell, params):
    jitted = jax.jit(lambda k: cell.init(k, INPUT))(jax.random.key(0))
    tree_allclose(jitted, params, atol=1e-6, rtol=1e-6)
    for leaf in jax.tree_util.tree_leaves(jitted):
        assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize("name,kwargs", [
    ("elman", {"recurrent_init": "spectral", "spectral_radius": 0.9}),
    ("esn", {}), ("lstm", {"recurrent_init": "orthogonal"}), ("gru", {}),
])
def test_init_under_vmap_gives_an_ensemble(name, kwargs):
    cell = rnnlab.cells.make(name, HIDDEN, **kwargs)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    ensemble = jax.jit(jax.vmap(lambda k: cell.init(k, INPUT)))(keys)
    for i in range(2):
        tree_allclose(jax.tree_util.tree_map(lambda a, i=i: a[i], ensemble),
                      cell.init(keys[i], INPUT), atol=1e-6, rtol=1e-6)
    assert any(not np.allclose(np.asarray(leaf[0]), np.asarray(leaf[1]))  # keys matter
               for leaf in jax.tree_util.tree_leaves(ensemble))


# --- initialisers ----------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [0.5, 0.9, 1.3])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_spectral_init_has_requested_radius(radius, jit):
    cell = rnnlab.cells.make("elman", 16, recurrent_init="spectral", spectral_radius=radius)
    init = jax.jit(lambda k: cell.init(k, INPUT)) if jit else (lambda k: cell.init(k, INPUT))
    for seed in range(3):
        w = init(jax.random.key(seed))["w_hh"]
        assert w.shape == (16, 16)
        np.testing.assert_allclose(_eigradius(w), radius, rtol=1e-5)
        # Not trivially a scaled identity or a scaled orthogonal matrix.
        assert not np.allclose(np.asarray(w).T @ np.asarray(w), radius**2 * np.eye(16), atol=1e-2)


def test_spectral_radius_helper_matches_numpy():
    w = jax.random.normal(jax.random.key(0), (9, 9))
    np.testing.assert_allclose(float(rnnlab.cells.spectral_radius(w)), _eigradius(w), rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(rnnlab.cells.spectral_radius)(w)), _eigradius(w),
                               rtol=1e-6)


def test_identity_init_gives_identity():
    cell = rnnlab.cells.make("irnn", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    np.testing.assert_array_equal(np.asarray(p["w_hh"]), np.eye(HIDDEN))
    np.testing.assert_array_equal(np.asarray(p["b"]), np.zeros(HIDDEN))
    assert cell.activation == "relu"
    scaled = rnnlab.cells.make("elman", HIDDEN, recurrent_init="identity", spectral_radius=0.5)
    np.testing.assert_allclose(np.asarray(scaled.init(jax.random.key(0), INPUT)["w_hh"]),
                               0.5 * np.eye(HIDDEN))


@pytest.mark.parametrize("radius", [1.0, 0.5])
def test_orthogonal_init_is_orthogonal(radius):
    cell = rnnlab.cells.make("elman", HIDDEN, recurrent_init="orthogonal", spectral_radius=radius)
    w = np.asarray(cell.init(jax.random.key(0), INPUT)["w_hh"], np.float64)
    np.testing.assert_allclose(w.T @ w, radius**2 * np.eye(HIDDEN), atol=1e-5)
    np.testing.assert_allclose(w @ w.T, radius**2 * np.eye(HIDDEN), atol=1e-5)


@pytest.mark.parametrize("name,gates", [("lstm", 4), ("gru", 3), ("gru_cho", 3)])
def test_gated_orthogonal_init_is_orthogonal_per_gate(name, gates):
    cell = rnnlab.cells.make(name, HIDDEN, recurrent_init="orthogonal")
    w = np.asarray(cell.init(jax.random.key(0), INPUT)["w_hh"], np.float64)
    assert w.shape == (HIDDEN, gates * HIDDEN)
    for g in range(gates):
        blk = w[:, g * HIDDEN:(g + 1) * HIDDEN]
        np.testing.assert_allclose(blk.T @ blk, np.eye(HIDDEN), atol=1e-5)


@pytest.mark.parametrize("name", ["elman", "gru", "lstm", "jordan"])
def test_default_init_is_pytorch_uniform(name):
    cell = rnnlab.cells.make(name, 16)
    p = cell.init(jax.random.key(0), INPUT)
    bound = 1.0 / np.sqrt(16)
    for key in ("w_ih", "w_hh", "w_yh"):
        if key in p:
            w = np.asarray(p[key])
            assert np.abs(w).max() <= bound + 1e-7
            assert np.abs(w).max() > 0.5 * bound  # really spread over the interval


def test_lstm_forget_bias():
    for fb in (1.0, 0.0, 2.5):
        p = rnnlab.cells.make("lstm", HIDDEN, forget_bias=fb).init(jax.random.key(0), INPUT)
        b = np.asarray(p["b"])
        np.testing.assert_array_equal(b[HIDDEN:2 * HIDDEN], fb)
        np.testing.assert_array_equal(np.delete(b, np.s_[HIDDEN:2 * HIDDEN]), 0.0)


def test_lstm_chrono_init():
    t_max = 120
    b = np.asarray(rnnlab.cells.make("lstm", 256, chrono_init=t_max)
                   .init(jax.random.key(0), INPUT)["b"])
    b_i, b_f, rest = b[:256], b[256:512], b[512:]
    # Tallec & Ollivier 2018: b_f = log U(1, T_max - 1), b_i = -b_f, other gates 0
    assert b_f.min() >= 0.0 and b_f.max() <= np.log(t_max - 1) + 1e-6
    assert b_f.max() > np.log(t_max / 2)  # spread over the range, not a constant
    np.testing.assert_array_equal(b_i, -b_f)
    np.testing.assert_array_equal(rest, 0.0)
    with pytest.raises(ValueError, match="chrono_init=2"):
        rnnlab.cells.make("lstm", HIDDEN, chrono_init=2)


def test_lstm_forget_gate_near_one_keeps_the_cell_state():
    cell = rnnlab.cells.make("lstm", HIDDEN, forget_bias=30.0)
    p = cell.init(jax.random.key(0), INPUT)
    p = {**p, "w_ih": jnp.zeros_like(p["w_ih"])}
    c0 = jax.random.normal(jax.random.key(1), (BATCH, HIDDEN))
    carry = rnnlab.cells.LSTMCarry(jnp.zeros_like(c0), c0)
    (h, c), _ = cell(p, carry, jnp.zeros((BATCH, INPUT)))
    # i = sigmoid(0) = 0.5 and g = tanh(0) = 0, so c = f * c0 with f = sigmoid(30) ~ 1.
    np.testing.assert_allclose(np.asarray(c), np.asarray(c0), atol=1e-6)


def test_lstm_variants_change_the_output():
    xs = jax.random.normal(jax.random.key(1), (BATCH, INPUT))
    outs = []
    for kw in ({}, {"peepholes": True}, {"layer_norm": True}):
        cell = rnnlab.cells.make("lstm", HIDDEN, **kw)
        p = cell.init(jax.random.key(0), INPUT)
        carry = rnnlab.cells.LSTMCarry(jnp.ones((BATCH, HIDDEN)), jnp.ones((BATCH, HIDDEN)))
        outs.append(np.asarray(cell(p, carry, xs)[1]))
    assert not np.allclose(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_lstm_projection_formula_init_and_errors():
    """h_t = (o ⊙ tanh c_t) W_hr (Sak et al. 2014), the recurrence reading the projected h;
    PyTorch's init bound for W_hr; the other parameters as without a projection."""
    h, p = 6, 2
    cell = rnnlab.cells.make("lstm", h, proj_size=p)
    params = cell.init(jax.random.key(0), INPUT)
    assert cell.output_size == p
    assert {k: v.shape for k, v in params.items()} == {
        "w_ih": (INPUT, 4 * h), "w_hh": (p, 4 * h), "b": (4 * h,), "w_hr": (h, p)}
    plain = rnnlab.cells.make("lstm", h).init(jax.random.key(0), INPUT)
    np.testing.assert_array_equal(params["w_ih"], plain["w_ih"])
    np.testing.assert_array_equal(params["b"], plain["b"])
    assert 0.5 / np.sqrt(h) < np.abs(np.asarray(params["w_hr"])).max() <= 1 / np.sqrt(h)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, INPUT)).astype(np.float32)
    h0 = rng.standard_normal((BATCH, p)).astype(np.float32)
    c0 = rng.standard_normal((BATCH, h)).astype(np.float32)
    (h1, c1), y = cell(params, rnnlab.cells.LSTMCarry(jnp.asarray(h0), jnp.asarray(c0)), x)
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    z = x @ w["w_ih"] + h0 @ w["w_hh"] + w["b"]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    i, f, g, o = np.split(z, 4, axis=-1)
    c_want = sig(f) * c0 + sig(i) * np.tanh(g)
    h_want = (sig(o) * np.tanh(c_want)) @ w["w_hr"]
    np.testing.assert_allclose(c1, c_want, atol=1e-5 * np.abs(c_want).max())
    np.testing.assert_allclose(h1, h_want, atol=1e-5 * np.abs(h_want).max())
    np.testing.assert_array_equal(y, h1)
    orth = rnnlab.cells.make("lstm", h, proj_size=p, recurrent_init="orthogonal")
    w_hh = np.asarray(orth.init(jax.random.key(1), INPUT)["w_hh"], np.float64)
    for k in range(4):  # each gate's [P, hidden] block has orthonormal rows
        blk = w_hh[:, k * h:(k + 1) * h]
        np.testing.assert_allclose(blk @ blk.T, np.eye(p), atol=1e-5)
    for bad in (h, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"proj_size=.* must be 0 \(off\) or an integer "
                           r"in \[1, hidden_size=6\)"):
            rnnlab.cells.make("lstm", h, proj_size=bad)


def test_gru_variants_differ_and_cudnn_formula():
    cudnn = rnnlab.cells.make("gru", HIDDEN)
    cho = rnnlab.cells.make("gru_cho", HIDDEN)
    p = cudnn.init(jax.random.key(0), INPUT)
    x = jax.random.normal(jax.random.key(1), (BATCH, INPUT))
    h = jax.random.normal(jax.random.key(2), (BATCH, HIDDEN))
    y_cudnn, y_cho = np.asarray(cudnn(p, h, x)[1]), np.asarray(cho(p, h, x)[1])
    assert not np.allclose(y_cudnn, y_cho)

    # Independent numpy reference of both equations.
    P = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x, h = np.asarray(x, np.float64), np.asarray(h, np.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    H = HIDDEN
    a = x @ P["w_ih"] + P["b_ih"]
    w, b = P["w_hh"], P["b_hh"]
    r = sig(a[:, :H] + h @ w[:, :H] + b[:H])
    z = sig(a[:, H:2 * H] + h @ w[:, H:2 * H] + b[H:2 * H])
    n_cudnn = np.tanh(a[:, 2 * H:] + r * (h @ w[:, 2 * H:] + b[2 * H:]))
    n_cho = np.tanh(a[:, 2 * H:] + (r * h) @ w[:, 2 * H:] + b[2 * H:])
    np.testing.assert_allclose(y_cudnn, (1 - z) * n_cudnn + z * h, atol=1e-5)
    np.testing.assert_allclose(y_cho, (1 - z) * n_cho + z * h, atol=1e-5)


def test_elman_relu_and_jordan_formulas():
    x = jax.random.normal(jax.random.key(1), (BATCH, INPUT))
    for act, f in (("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0))):
        cell = rnnlab.cells.make("elman", HIDDEN, activation=act)
        p = cell.init(jax.random.key(0), INPUT)
        h = jax.random.normal(jax.random.key(2), (BATCH, HIDDEN))
        want = f(np.asarray(x) @ np.asarray(p["w_ih"]) + np.asarray(h) @ np.asarray(p["w_hh"])
                 + np.asarray(p["b"]))
        np.testing.assert_allclose(np.asarray(cell(p, h, x)[1]), want, atol=1e-5)

    jordan = rnnlab.cells.make("jordan", HIDDEN, output_features=3, output_activation="identity")
    p = jordan.init(jax.random.key(0), INPUT)
    y_prev = jax.random.normal(jax.random.key(2), (BATCH, 3))
    assert jordan.initial_carry((BATCH,)).shape == (BATCH, 3)
    hid = np.tanh(np.asarray(x) @ np.asarray(p["w_ih"]) + np.asarray(y_prev) @ np.asarray(p["w_yh"])
                  + np.asarray(p["b"]))
    want = hid @ np.asarray(p["w_hy"]) + np.asarray(p["b_y"])
    carry, y = jordan(p, y_prev, x)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(carry), want, atol=1e-5)  # the output is fed back


# --- echo-state network --------------------------------------------------------------------


@pytest.mark.parametrize("radius,sparsity", [(0.9, 0.9), (1.2, 0.5), (0.5, 0.0)])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_esn_reservoir_radius_and_sparsity(radius, sparsity, jit):
    cell = rnnlab.cells.make("esn", 40, spectral_radius=radius, sparsity=sparsity,
                             input_scaling=0.3, bias_scaling=0.2)
    init = jax.jit(lambda k: cell.init(k, INPUT)) if jit else (lambda k: cell.init(k, INPUT))
    p = init(jax.random.key(0))
    w = np.asarray(p["w_hh"])
    np.testing.assert_allclose(_eigradius(w), radius, rtol=1e-5)
    zero_frac = np.mean(w == 0)
    assert abs(zero_frac - sparsity) < 0.06, zero_frac
    assert np.abs(np.asarray(p["w_ih"])).max() <= 0.3 + 1e-7
    assert np.abs(np.asarray(p["b"])).max() <= 0.2 + 1e-7


def test_esn_small_reservoirs_are_never_degenerate():
    # A very sparse small reservoir can be nilpotent (spectral radius 0); init must not
    # divide by zero but still deliver the requested radius.
    cell = rnnlab.cells.make("esn", 6, spectral_radius=0.8, sparsity=0.9)
    init = jax.jit(lambda k: cell.init(k, 2))
    for seed in range(40):
        w = np.asarray(init(jax.random.key(seed))["w_hh"])
        assert np.all(np.isfinite(w)), seed
        np.testing.assert_allclose(_eigradius(w), 0.8, rtol=1e-5)


def test_esn_leak_rate():
    full = rnnlab.cells.make("esn", HIDDEN, leak_rate=1.0)
    leaky = rnnlab.cells.make("esn", HIDDEN, leak_rate=0.25)
    p = full.init(jax.random.key(0), INPUT)
    x = jax.random.normal(jax.random.key(1), (BATCH, INPUT))
    h = jax.random.normal(jax.random.key(2), (BATCH, HIDDEN))
    h_full = full(p, h, x)[0]
    np.testing.assert_allclose(np.asarray(leaky(p, h, x)[0]),
                               np.asarray(0.75 * h + 0.25 * h_full), atol=1e-6)


def test_esn_gradients_do_not_reach_the_reservoir():
    cell = rnnlab.cells.make("esn", HIDDEN, sparsity=0.5, bias_scaling=0.5)
    p = cell.init(jax.random.key(0), INPUT)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))

    def loss(p, xs):
        return jnp.sum(rnnlab.unroll(cell, p, xs)[1] ** 2)

    g_p, g_x = jax.grad(loss, argnums=(0, 1))(p, xs)
    for leaf in jax.tree_util.tree_leaves(g_p):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    # ... but the state still depends on the inputs (state Jacobians are intact).
    assert np.abs(np.asarray(g_x)).max() > 1e-4


def test_ridge_readout_recovers_a_linear_map():
    cell = rnnlab.cells.make("esn", 12, sparsity=0.5, spectral_radius=0.9)
    p = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 60, 2))
    _, states = rnnlab.unroll(cell, p, xs)  # [2, 60, 12]
    w_true = np.asarray(jax.random.normal(jax.random.key(2), (12, 3)))
    b_true = np.array([0.5, -1.0, 2.0], np.float32)
    targets = states @ w_true + b_true
    fit = rnnlab.cells.ridge_readout(states, targets, alpha=1e-7)
    assert fit["w"].shape == (12, 3) and fit["b"].shape == (3,)
    np.testing.assert_allclose(np.asarray(states @ fit["w"] + fit["b"]), np.asarray(targets),
                               atol=2e-3)
    np.testing.assert_allclose(np.asarray(fit["b"]), b_true, atol=2e-2)
    np.testing.assert_allclose(np.asarray(fit["w"]), w_true, atol=5e-2)


def test_ridge_readout_exact_on_well_conditioned_states():
    s = jax.random.normal(jax.random.key(0), (200, 6))
    w_true = jax.random.normal(jax.random.key(1), (6, 2))
    b_true = jnp.array([1.0, -3.0])
    fit = rnnlab.cells.ridge_readout(s, s @ w_true + b_true, alpha=1e-8)
    np.testing.assert_allclose(np.asarray(fit["w"]), np.asarray(w_true), atol=1e-4)
    np.testing.assert_allclose(np.asarray(fit["b"]), np.asarray(b_true), atol=1e-4)
    # A large ridge penalty shrinks the weights towards zero.
    shrunk = rnnlab.cells.ridge_readout(s, s @ w_true + b_true, alpha=1e6)
    assert np.abs(np.asarray(shrunk["w"])).max() < 1e-2


def test_ridge_readout_washout_discards_the_transient():
    s = jax.random.normal(jax.random.key(0), (2, 50, 5))
    w_true = jax.random.normal(jax.random.key(1), (5, 1))
    y = s @ w_true + 0.25
    junk = 100.0 * jax.random.normal(jax.random.key(2), (2, 10, 1))
    y = y.at[:, :10].set(junk)  # the first 10 steps do not follow the map
    good = rnnlab.cells.ridge_readout(s, y, alpha=1e-8, washout=10)
    np.testing.assert_allclose(np.asarray(good["w"]), np.asarray(w_true), atol=1e-4)
    np.testing.assert_allclose(np.asarray(good["b"]), [0.25], atol=1e-4)
    bad = rnnlab.cells.ridge_readout(s, y, alpha=1e-8, washout=0)
    assert not np.allclose(np.asarray(bad["w"]), np.asarray(w_true), atol=1e-2)


def test_ridge_readout_shape_error():
    with pytest.raises(ValueError, match=r"states \(2, 10, 4\) and targets \(2, 9, 1\)"):
        rnnlab.cells.ridge_readout(jnp.zeros((2, 10, 4)), jnp.zeros((2, 9, 1)))


# --- clear errors --------------------------------------------------------------------------


def test_unknown_cell_name_lists_the_choices():
    with pytest.raises(ValueError, match="'lstmm'") as info:
        rnnlab.cells.make("lstmm", 8)
    msg = str(info.value)
    assert "valid choices" in msg
    for name in rnnlab.cells.names():
        assert repr(name) in msg


def test_unknown_kwarg_is_named():
    with pytest.raises(ValueError, match=r"forget_bais.*valid fields.*forget_bias"):
        rnnlab.cells.make("lstm", 8, forget_bais=1.0)
    with pytest.raises(ValueError, match="spectral_radius"):
        rnnlab.cells.make("gru", 8, spectral_radius=0.9)


@pytest.mark.parametrize("name,kwargs,match", [
    ("elman", {"activation": "sigmoid"}, r"activation 'sigmoid'.*'relu', 'tanh'"),
    ("rnn_tanh", {"activation": "gelu"}, r"activation 'gelu'"),
    ("jordan", {"activation": "softplus"}, r"activation 'softplus'"),
    ("jordan", {"output_activation": "swish"}, r"output_activation 'swish'"),
    ("elman", {"recurrent_init": "glorot"}, r"recurrent_init 'glorot'.*'identity'.*'spectral'"),
    ("lstm", {"recurrent_init": "spectral"}, r"recurrent_init 'spectral'.*'orthogonal'"),
    ("gru", {"variant": "minimal"}, r"variant 'minimal'.*'cho', 'cudnn'"),
    ("esn", {"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
    ("esn", {"leak_rate": 0.0}, r"leak_rate must be in \(0, 1\], got 0.0"),
])
def test_bad_hyperparameters(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnlab.cells.make(name, 8, **kwargs)


@pytest.mark.parametrize("hidden", [0, -3, 2.5, "8"])
def test_bad_hidden_size(hidden):
    with pytest.raises(ValueError, match=f"hidden_size must be a positive integer, got {hidden!r}"):
        rnnlab.cells.make("lstm", hidden)


def test_bad_stack():
    with pytest.raises(ValueError, match="non-empty tuple"):
        Stack(())
    with pytest.raises(ValueError, match="non-empty tuple of cells, got list"):
        Stack([rnnlab.cells.make("gru", 4)])
