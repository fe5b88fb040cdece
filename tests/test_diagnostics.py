"""Tests for rnnlab.diagnostics: gradient norms, Jacobian spectra, Lyapunov exponents, Pascanu,
the training-loop hook and the plots.

References are independent of the library: per-step Jacobians from `jax.jacobian` of the cell
call in a Python loop, products and SVDs in float64 numpy, finite differences, and a linear
cell whose exponents are known in closed form. Sweeps use fixed seeds (weights key(seed),
recurrent matrix key(1000 + seed), inputs key(100 + seed)); see `_sweep`.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells
from rnnlab import diagnostics as D
from rnnlab.cells.base import Cell, recurrent_matrix, uniform
from rnnlab.diagnostics import plots

# --- independent references -------------------------------------------------------------------


def _flat(carry):
    """Per-sample carry -> vector, written out by hand ([h, c] for an LSTM)."""
    if isinstance(carry, cells.LSTMCarry):
        return jnp.concatenate([carry.h, carry.c])
    return carry


def _unflat(cell, v):
    if isinstance(cell, cells.LSTM):
        h = cell.output_size  # h is [proj_size] with a projection, c [hidden]
        return cells.LSTMCarry(v[:h], v[h:])
    return v


@functools.partial(jax.jit, static_argnums=0)
def _ref_step(cell, params, v, x_t):
    return _flat(cell(params, _unflat(cell, v), x_t)[0])


_ref_jac = jax.jit(jax.jacobian(_ref_step, argnums=2), static_argnums=0)


def _reference_jacobians(cell, params, x):
    """One sample x [T, in]: the states s_0..s_T and J_t = ∂s_t/∂s_{t-1}, by a Python loop."""
    v = _flat(cell.initial_carry(()))
    states, jacs = [np.asarray(v, np.float64)], []
    for t in range(x.shape[0]):
        jacs.append(np.asarray(_ref_jac(cell, params, v, x[t]), np.float64))
        v = _ref_step(cell, params, v, x[t])
        states.append(np.asarray(v, np.float64))
    return states, jacs


def _reference_grads(cell, params, x, every=False):
    """∂L/∂s_t, t = 0..T, for L = u·s_T (or Σ_t u·s_t) by g_{t-1} = J_t^T g_t (+ u)."""
    _, jacs = _reference_jacobians(cell, params, x)
    u = np.asarray(D.readout_direction(jacs[0].shape[0]), np.float64)
    g = [u]
    for t in range(len(jacs), 0, -1):  # from ∂L/∂s_t to ∂L/∂s_{t-1}
        nxt = jacs[t - 1].T @ g[0]
        g.insert(0, nxt + u if every and t - 1 >= 1 else nxt)
    return np.stack(g)


def _small(name, hidden=5, input_size=3, time=7, batch=3, **kw):
    cell = cells.make(name, hidden, **kw)
    params = cell.init(jax.random.key(0), input_size)
    xs = jax.random.normal(jax.random.key(1), (batch, time, input_size))
    return cell, params, xs


@dataclasses.dataclass(frozen=True)
class Linear(Cell):
    """h_t = x_t W_ih + h_{t-1} W_hh: the identity-activation RNN, known exponents."""

    def init(self, rng, input_size):
        k1, k2 = jax.random.split(rng)
        return {"w_ih": uniform(k1, (input_size, self.hidden_size), 0.1),
                "w_hh": recurrent_matrix(k2, self.hidden_size, "orthogonal")}

    def project_inputs(self, params, xs):
        return xs @ params["w_ih"]

    def step(self, params, carry, xp):
        h = xp + carry @ params["w_hh"]
        return h, h


def lstm_h_last(carries):
    """A custom loss on an LSTM's last h only (module level: hashable, compiled once)."""
    return carries.h[-1].sum()


# --- per-step gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("name,loss", [("rnn_tanh", "last"), ("rnn_tanh", "every"),
                                       ("lstm", "last"), ("lstm", "every"), ("gru", "last"),
                                       ("jordan", "last")])
def test_state_gradients_match_jacobian_product_reference(name, loss):
    cell, params, xs = _small(name)
    got = np.asarray(D.state_gradients(cell, params, xs, loss=loss))
    for b in range(xs.shape[0]):
        want = _reference_grads(cell, params, xs[b], every=loss == "every")
        np.testing.assert_allclose(got[b], want, rtol=2e-4, atol=1e-6)
    norms = D.gradient_norms_by_lag(cell, params, xs, loss=loss)
    want_norms = np.linalg.norm(got, axis=-1)[:, ::-1]  # column k = lag k
    np.testing.assert_allclose(norms["norms"], want_norms, rtol=1e-6)
    np.testing.assert_allclose(norms["mean"], want_norms.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norms["log_mean"], np.log(want_norms).mean(0), rtol=1e-5,
                               atol=1e-6)


def test_state_gradients_match_finite_differences():
    cell, params, xs = _small("rnn_tanh", hidden=4, time=6, batch=1)
    g = np.asarray(D.state_gradients(cell, params, xs))[0]
    u = D.readout_direction(4)
    x = xs[0]

    def loss_from(t, h):  # run steps t+1..T from s_t = h, L = u·s_T
        for s in range(t, x.shape[0]):
            h = _ref_step(cell, params, h, x[s])
        return float(u @ h)

    h, hs = cell.initial_carry(()), []
    for s in range(x.shape[0]):
        hs.append(h)
        h = _ref_step(cell, params, h, x[s])
    eps = 1e-2
    for t in (0, 2, 5):
        for i in range(4):
            e = jnp.zeros(4).at[i].set(eps)
            fd = (loss_from(t, hs[t] + e) - loss_from(t, hs[t] - e)) / (2 * eps)
            assert abs(fd - g[t, i]) < 2e-3 * max(1.0, abs(g[t, i])), (t, i, fd, g[t, i])


def test_custom_loss_on_lstm_h():
    cell, params, xs = _small("lstm", hidden=3)
    g = np.asarray(D.state_gradients(cell, params, xs, loss_fn=lstm_h_last))
    np.testing.assert_allclose(g[:, -1], np.tile([1, 1, 1, 0, 0, 0], (3, 1)))  # lag 0: [1, 0]
    assert np.all(np.linalg.norm(g[:, -2, 3:], axis=-1) > 0)  # c gets gradient one step back


def test_stack_and_given_carry():
    """A Stack's state is all layers' carries ([h_gru, h_lstm, c_lstm], D = 3·4); a given
    initial carry is used (changing it changes the gradients)."""
    stack = cells.Stack((cells.make("gru", 4), cells.make("lstm", 4)))
    params = stack.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    g = D.state_gradients(stack, params, xs, carry=stack.initial_carry((2,)))  # = default zeros
    assert g.shape == (2, 6, 12)
    np.testing.assert_allclose(g[:, -1], np.tile(D.readout_direction(12), (2, 1)), rtol=1e-6)
    carry = jax.tree_util.tree_map(lambda a: a + 0.5, stack.initial_carry((2,)))
    g2 = D.state_gradients(stack, params, xs, carry=carry)
    assert not np.allclose(g[:, 0], g2[:, 0])


def test_fit_rate_recovers_a_known_slope_and_drops_underflow():
    k = np.arange(101)
    log_norms = np.stack([-0.3 * k + 1.0, -0.3 * k - 1.0])  # two samples, slope -0.3
    log_norms[:, 80:] = np.log(1e-37)  # underflowed tail must not bend the fit
    fit = D.fit_rate(jnp.asarray(log_norms), lag_min=5)
    assert float(fit["rate"]) == pytest.approx(-0.3, abs=1e-5)
    assert float(fit["intercept"]) == pytest.approx(0.0, abs=1e-4)
    assert float(fit["lag_lo"]) == 5 and float(fit["lag_hi"]) < 80
    with pytest.raises(ValueError, match="lag_min"):
        D.fit_rate(jnp.asarray(log_norms), lag_min=500)


# --- Jacobian spectra -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm"])
def test_jacobian_spectra_match_numpy_svd_of_explicit_product(name):
    cell, params, xs = _small(name, hidden=4, time=12, batch=2)
    lags = (0, 1, 3, 7, 12)
    got = D.jacobian_spectra(cell, params, xs, lags=lags)
    assert got["log_sv"].shape == (2, len(lags), cell.hidden_size * (2 if name == "lstm" else 1))
    for b in range(2):
        _, jacs = _reference_jacobians(cell, params, xs[b])
        for i, k in enumerate(lags):
            p = np.eye(jacs[0].shape[0])
            for j in jacs[len(jacs) - k:][::-1]:  # J_T ... J_{T-k+1}
                p = p @ j
            want = np.linalg.svd(p, compute_uv=False)
            # float32 resolves a singular value to ~1e-7 of the LARGEST one (measured: up to
            # 8e-8 here, at several XLA CPU ISAs), not of itself: a value 1e-5 of the largest
            # has no relative precision, so every value gets an absolute tolerance at that scale
            np.testing.assert_allclose(np.exp(np.asarray(got["log_sv"][b, i], np.float64)),
                                       want, rtol=1e-4, atol=2e-6 * want[0])
    np.testing.assert_allclose(got["log_sigma_max"], got["log_sv"][..., 0])


def test_projection_lstm_gradients_spectra_and_lyapunov_match_references():
    """The LSTM with a projection (carry [h: P, c: hidden]): state gradients, the spectra of
    the Jacobian products and the full Lyapunov spectrum against the loop references."""
    cell, params, xs = _small("lstm", hidden=4, time=9, batch=2, proj_size=2)
    d = cell.proj_size + cell.hidden_size
    got = np.asarray(D.state_gradients(cell, params, xs, loss="every"))
    assert got.shape == (2, 10, d)
    for b in range(2):
        np.testing.assert_allclose(got[b], _reference_grads(cell, params, xs[b], every=True),
                                   rtol=2e-4, atol=1e-6 * np.abs(got[b]).max())
    lags = (1, 4, 9)
    spectra = D.jacobian_spectra(cell, params, xs, lags=lags)
    ly = D.lyapunov_exponents(cell, params, xs, num=d)
    for b in range(2):
        _, jacs = _reference_jacobians(cell, params, xs[b])
        for i, k in enumerate(lags):
            p = np.eye(d)
            for j in jacs[len(jacs) - k:][::-1]:
                p = p @ j
            want = np.linalg.svd(p, compute_uv=False)
            keep = want > want[0] * 1e-5
            np.testing.assert_allclose(np.exp(spectra["log_sv"][b, i])[keep], want[keep],
                                       rtol=2e-3)
        logdet = sum(np.linalg.slogdet(j)[1] for j in jacs) / len(jacs)
        assert float(ly["exponents"][b].sum()) == pytest.approx(logdet, rel=1e-3)
    flow = D.gradient_flow(cell, params, xs)  # the fitted rate and its Lyapunov reference
    assert bool(flow["finite"])
    assert np.isfinite(float(flow["rate"])) and np.isfinite(float(flow["lyapunov"]))


def test_jacobian_spectra_renormalise_long_products():
    """Product of 300 steps of 0.7·orthogonal: σ_i = 0.7^300 ≈ 1e-47 (below float32)."""
    cell = Linear(6)
    params = cell.init(jax.random.key(0), 2)
    params["w_hh"] = 0.7 * params["w_hh"]
    xs = jax.random.normal(jax.random.key(1), (1, 300, 2))
    got = D.jacobian_spectra(cell, params, xs, lags=(300,))
    np.testing.assert_allclose(got["log_sv"][0, 0], 300 * np.log(0.7), rtol=1e-4)


def test_step_jacobians_match_reference():
    cell, params, xs = _small("gru", hidden=3, time=4, batch=2)
    got = D.step_jacobians(cell, params, xs)
    _, jacs = _reference_jacobians(cell, params, xs[1])
    np.testing.assert_allclose(got[1], np.stack(jacs), rtol=1e-5, atol=1e-6)


# --- Lyapunov exponents -----------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.6, 1.0, 1.15])
def test_lyapunov_of_linear_orthogonal_rnn_is_log_a(a):
    """0.6^120 ≈ 2e-27: the norms stay exact far below where Σ g_i² underflows (~1e-19)."""
    cell = Linear(8)
    params = cell.init(jax.random.key(0), 2)
    params["w_hh"] = a * params["w_hh"]
    xs = jax.random.normal(jax.random.key(1), (3, 120, 2))
    ly = D.lyapunov_exponents(cell, params, xs, num=8, lag_min=0)
    np.testing.assert_allclose(ly["exponents"], np.log(a), atol=1e-5)
    norms = D.gradient_norms_by_lag(cell, params, xs)
    np.testing.assert_allclose(norms["log_norms"], np.log(a) * np.arange(121)[None].repeat(3, 0),
                               atol=2e-4)
    assert float(D.fit_rate(norms["log_norms"])["rate"]) == pytest.approx(np.log(a), abs=1e-5)


def test_lyapunov_full_spectrum_sums_to_log_det():
    """Σ_i λ_i over the whole product = (1/T) log|det P_T|, checked against numpy."""
    cell, params, xs = _small("rnn_tanh", hidden=4, time=10, batch=1)
    ly = D.lyapunov_exponents(cell, params, xs, num=4)
    _, jacs = _reference_jacobians(cell, params, xs[0])
    logdet = sum(np.linalg.slogdet(j)[1] for j in jacs) / len(jacs)
    assert float(ly["exponents"][0].sum()) == pytest.approx(logdet, rel=1e-4)
    with pytest.raises(ValueError, match="num must be"):
        D.lyapunov_exponents(cell, params, xs, num=5)


def test_lyapunov_iterates_the_transposed_product():
    """The first QR column tracks P_K^T q: Σ_k local = log‖P_K^T q‖, not log‖P_K q‖."""
    cell, params, xs = _small("rnn_tanh", hidden=4, time=9, batch=1)
    q = np.array([1.0, -2.0, 0.5, 1.0])
    ly = D.lyapunov_exponents(cell, params, xs, basis=q[:, None])
    _, jacs = _reference_jacobians(cell, params, xs[0])
    p = np.linalg.multi_dot(jacs[::-1])  # J_T ... J_1
    q = q / np.linalg.norm(q)
    backward, forward = np.log(np.linalg.norm(p.T @ q)), np.log(np.linalg.norm(p @ q))
    assert abs(backward - forward) > 0.05  # the check below can tell the directions apart
    assert float(ly["local"][0, :, 0].sum()) == pytest.approx(backward, abs=1e-4)


# --- sweeps: fitted rate vs Lyapunov reference -----------------------------------------------

H, T, B = 64, 200, 8
SEEDS = (0, 1, 2)


def _xs(seed, time=T):
    return jax.random.normal(jax.random.key(100 + seed), (B, time, 4))


def _agrees(fit, ref):
    return abs(fit - ref) <= max(0.15 * abs(ref), 0.01)


def _tanh_cell():
    """The tanh cell of the sweeps and the Pascanu tests (one compilation for all of them)."""
    return cells.make("rnn_tanh", H, recurrent_init="spectral", spectral_radius=0.9)


def _with_w_hh(cell, seed, kind, r):
    """cell.init(key(seed)) with W_hh = recurrent_matrix(key(1000 + seed), H, kind, r): the
    matrix make(..., recurrent_init=kind, spectral_radius=r).init draws, swapped into one cell's
    params so that a sweep compiles once."""
    return dict(cell.init(jax.random.key(seed), 4),
                w_hh=recurrent_matrix(jax.random.key(1000 + seed), H, kind, r))


def _sweep(cell, radii, seeds, time=T):
    """{radius: [(fitted rate, lyapunov, mean grad norm at lag 100) per seed]}, "spectral" W_hh."""
    out = {}
    for r in radii:
        out[r] = []
        for seed in seeds:
            flow = D.gradient_flow(cell, _with_w_hh(cell, seed, "spectral", r), _xs(seed, time))
            assert bool(flow["finite"]), (cell, r, seed)
            out[r].append((float(flow["rate"]), float(flow["lyapunov"]),
                           float(flow["grad_norm_mean"][min(100, time)])))
    return out


@pytest.fixture(scope="module")
def tanh_sweep():
    return _sweep(_tanh_cell(), (0.5, 0.9, 1.0, 1.1, 1.5), SEEDS)


def test_tanh_fitted_rate_agrees_with_lyapunov(tanh_sweep):
    for r, runs in tanh_sweep.items():
        for fit, ref, _ in runs:
            assert _agrees(fit, ref), (r, fit, ref)


def test_tanh_rate_rises_monotonically_with_spectral_radius(tanh_sweep):
    mean = [np.mean([run[0] for run in runs]) for runs in tanh_sweep.values()]
    assert np.all(np.diff(mean) > 0), dict(zip(tanh_sweep, mean))
    assert mean[0] < -0.5 and mean[1] < -0.1  # radius 0.5 and 0.9: clearly vanishing


def test_relu_sweep_crosses_zero():
    """ReLU states grow at the same rate as the gradient once it explodes, so the sequences are
    kept at 60 steps, short enough for float32 at radius 2 (seed 0: crossing at radius ≈ 1.35)."""
    radii = (0.5, 1.0, 1.25, 1.5, 2.0)
    sweep = _sweep(cells.make("rnn_relu", H), radii, (0,), time=60)
    rates = np.array([runs[0][0] for runs in sweep.values()])
    for r, runs in sweep.items():
        assert _agrees(*runs[0][:2]), (r, runs)
    assert np.all(np.diff(rates) > 0), rates
    assert rates[0] < 0 < rates[-1], rates
    i = int(np.argmax(rates > 0))
    crossing = radii[i - 1] + (radii[i] - radii[i - 1]) * -rates[i - 1] / (rates[i] - rates[i - 1])
    assert 1.0 < crossing < 2.0, crossing


def test_lstm_forget_bias_moves_rate_towards_zero_and_beats_tanh_at_lag_100(tanh_sweep):
    cell = cells.make("lstm", H, forget_bias=0.0)
    base = cell.init(jax.random.key(0), 4)
    rates, at_100 = [], []
    for fb in (0.0, 1.0, 3.0):
        # forget_bias only shifts the forget block of b; one cell keeps one compilation
        params = dict(base, b=base["b"].at[H:2 * H].add(fb))
        made = cells.make("lstm", H, forget_bias=fb).init(jax.random.key(0), 4)
        np.testing.assert_array_equal(params["b"], made["b"])
        flow = D.gradient_flow(cell, params, _xs(0))
        assert _agrees(float(flow["rate"]), float(flow["lyapunov"])), fb
        rates.append(float(flow["rate"]))
        at_100.append(float(flow["grad_norm_mean"][100]))
    assert abs(rates[0]) > abs(rates[1]) > abs(rates[2]), rates
    tanh_at_100 = tanh_sweep[0.9][0][2]  # tanh RNN, spectral radius 0.9, same inputs
    assert at_100[2] > 1e3 * tanh_at_100, (at_100, tanh_at_100)


# --- Pascanu et al. 2013 ----------------------------------------------------------------------


def test_pascanu_holds_for_scaled_orthogonal_and_bounds_the_gradient():
    cell = _tanh_cell()
    params = _with_w_hh(cell, 0, "orthogonal", 0.9)
    pc = D.pascanu_condition(cell, params)
    assert float(pc["sigma_max"]) == pytest.approx(0.9, rel=1e-4)
    assert float(pc["gamma"]) == 1.0 and bool(pc["holds"])
    flow = D.gradient_flow(cell, params, _xs(0))
    bound = 0.9 ** np.arange(T + 1)  # ‖∂L/∂h_{T-k}‖ ≤ (γ σ_max)^k ‖u‖, ‖u‖ = 1
    assert np.all(np.asarray(flow["grad_norm_mean"]) <= bound * (1 + 1e-4))
    assert float(flow["rate"]) < np.log(0.9)


def test_pascanu_fails_for_gaussian_radius_0_9_yet_gradient_vanishes():
    cell = _tanh_cell()  # W_hh Gaussian N(0, 1/H) rescaled to spectral radius 0.9
    params = cell.init(jax.random.key(0), 4)
    pc = D.pascanu_condition(cell, params)
    assert float(pc["spectral_radius"]) == pytest.approx(0.9, rel=1e-3)
    assert float(pc["sigma_max"]) > 1.0 and not bool(pc["holds"])
    flow = D.gradient_flow(cell, params, _xs(0))
    assert float(flow["rate"]) < -0.1 and float(flow["lyapunov"]) < -0.1
    assert float(flow["grad_norm_mean"][100]) < 1e-5


def test_pascanu_rejects_gated_cells_and_handles_esn_leak():
    cell, params, _ = _small("lstm")
    with pytest.raises(ValueError, match="Elman-family"):
        D.pascanu_condition(cell, params)
    esn = cells.make("esn", 16, leak_rate=0.5)
    pc = D.pascanu_condition(esn, esn.init(jax.random.key(0), 2))
    assert float(pc["bound"]) == pytest.approx(0.5 + 0.5 * float(pc["sigma_max"]), rel=1e-6)


# --- the training-loop hook, errors, plots -----------------------------------------------------


def test_gradient_flow_metrics_is_json_ready():
    cell = _tanh_cell()  # the configuration of the Pascanu tests: compiled once
    rec = D.gradient_flow_metrics(cell, cell.init(jax.random.key(0), 4), {"inputs": _xs(0)},
                                  lags=(1, 10, 100, 1000), max_samples=B)
    json.dumps(rec, allow_nan=False)
    assert {"gf/rate", "gf/lyapunov", "gf/grad_norm@100", "gf/pascanu_holds",
            "gf/finite"} <= set(rec)
    assert "gf/grad_norm@1000" not in rec  # beyond the sequence
    assert all(isinstance(v, (float, bool)) for v in rec.values())
    assert rec["gf/rate"] == pytest.approx(rec["gf/lyapunov"], rel=0.15)


def test_summarize_with_spectra_and_nan_is_json_ready():
    cell, params, xs = _small("rnn_tanh", hidden=4, time=12, batch=2)
    flow = D.gradient_flow(cell, params, xs, lag_min=1, lag_max=5, spectra_lags=(1, 5))
    rec = D.to_jsonable(D.summarize(flow, lags=(0, 5)))
    assert {"log_sigma_max@1", "log_sigma_min@5", "grad_norm@5"} <= set(rec)
    assert rec["log_sigma_max@5"] == pytest.approx(float(flow["log_sv_mean"][1, 0]))
    assert D.to_jsonable({"x": jnp.array([1.0, jnp.nan]), "y": float("inf")}) == {
        "x": [1.0, None], "y": None}


def test_bad_inputs_give_clear_errors():
    cell, params, xs = _small("rnn_tanh")
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        D.state_gradients(cell, params, xs[0])
    with pytest.raises(ValueError, match="input feature size"):
        D.state_gradients(cell, params, xs[..., :2])
    with pytest.raises(ValueError, match="unknown loss"):
        D.state_gradients(cell, params, xs, loss="mean")
    with pytest.raises(ValueError, match="lag must be"):
        D.jacobian_spectra(cell, params, xs, lags=(3, 99))
    with pytest.raises(ValueError, match="no 'inputs'"):
        D.gradient_flow(cell, params, {"targets": xs})


def test_plots_write_png_files(tmp_path):
    lags = np.arange(51)
    curves = {"tanh ρ=0.9": 0.8 ** lags, "lstm fb=3": 0.99 ** lags, "zero tail": np.zeros(51)}
    p1 = plots.plot_grad_norm_vs_lag(curves, str(tmp_path / "lag.png"),
                                     rates={"tanh ρ=0.9": np.log(0.8)})
    spectra = {"a": {"lags": [1, 10], "log_sv": np.random.randn(2, 6)},
               "b": {"spectra_lags": [5], "log_sv_mean": np.random.randn(1, 6)}}
    p2 = plots.plot_spectra(spectra, str(tmp_path / "sub" / "spectra.png"))
    runs = {"no clip": {"step": np.arange(20), "loss": np.exp(-np.arange(20) / 5)},
            "clip 1": {"step": np.arange(20), "loss": np.exp(-np.arange(20) / 7),
                       "clipped": np.arange(20) % 3 == 0}}
    p3 = plots.plot_training_curves(runs, str(tmp_path / "train.png"))
    for p in (p1, p2, p3):
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / p).stat().st_size > 5000
    with pytest.raises(ValueError, match="needs 'step'"):
        plots.plot_training_curves({"x": {"loss": [1.0]}}, str(tmp_path / "bad.png"))
