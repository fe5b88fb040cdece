"""State-Jacobian products along a trajectory: singular values, Lyapunov exponents, Pascanu.

Notation (one sample, carry flattened to s_t ∈ R^D as in `gradients`): the step Jacobian is

    J_t = ∂s_t/∂s_{t-1} = ∂F(s_{t-1}, x_t)/∂s_{t-1}          [D, D], J[i, j] = ∂s_t[i]/∂s_{t-1}[j]

and the product over the last k steps (lag k) is

    P_k = ∂s_T/∂s_{T-k} = J_T J_{T-1} ... J_{T-k+1},          P_0 = I.

A last-step loss back-propagates as ∂L/∂s_{T-k} = P_k^T ∂L/∂s_T, i.e. by the backward
iteration g_{k} = J_{T-k+1}^T g_{k-1}. Everything here walks the trajectory backwards from T,
one step Jacobian (or vector-Jacobian product) at a time, so at most one [D, D] matrix per
sample is alive (never the [T, D, D] stack).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells import ESN, Elman
from rnnlab.cells import spectral_radius as _spectral_radius
from rnnlab.diagnostics._common import TINY, check_inputs, check_lag, flat_step, safe_norm


def _trajectory(cell, params, xp, carry):
    """Per-sample states [B, T+1, D] (s_0..s_T) and the flat step function."""
    s0, f, _ = flat_step(cell, params, jax.tree_util.tree_map(lambda a: a[0], carry))

    def sample(c0, xp_b):
        s0_b, _, _ = flat_step(cell, params, c0)

        def body(s, xp_t):
            s, _ = f(s, xp_t)
            return s, s

        _, ss = jax.lax.scan(body, s0_b, xp_b)
        return jnp.concatenate([s0_b[None], ss], axis=0)

    return jax.vmap(sample)(carry, xp), f


@functools.partial(jax.jit, static_argnames=("cell",))
def trajectory(cell, params, xs, carry=None) -> jax.Array:
    """States s_0..s_T of every sample, flattened: [batch, time + 1, D]."""
    xp, carry = check_inputs(cell, params, xs, carry)
    return _trajectory(cell, params, xp, carry)[0]


def _backward_steps(states, xp):
    """Reversed (s_{t-1}, x_t) pairs, t = T..1, time-major: [T, B, D], [T, B, G]."""
    s_prev = jnp.moveaxis(states[:, :-1], 1, 0)[::-1]
    xp_t = jnp.moveaxis(xp, 1, 0)[::-1]
    return s_prev, xp_t


@functools.partial(jax.jit, static_argnames=("cell",))
def step_jacobians(cell, params, xs, carry=None) -> jax.Array:
    """Every step Jacobian J_t, t = 1..T: [batch, time, D, D]. Materialises all of them, so it
    is meant for small references and tests; the spectra below never do."""
    xp, carry = check_inputs(cell, params, xs, carry)
    states, f = _trajectory(cell, params, xp, carry)
    jac = jax.jacfwd(lambda s, x: f(s, x)[0])
    return jax.vmap(jax.vmap(jac))(states[:, :-1], xp)


@functools.partial(jax.jit, static_argnames=("cell", "lags"))
def _spectra(cell, params, xs, carry, lags):
    xp, carry = check_inputs(cell, params, xs, carry)
    states, f = _trajectory(cell, params, xp, carry)
    b, t, d = states.shape[0], xp.shape[1], states.shape[-1]
    jac = jax.vmap(jax.jacfwd(lambda s, x: f(s, x)[0]))
    selected = np.zeros(t + 1, bool)
    selected[list(lags)] = True
    s_prev, xp_t = _backward_steps(states, xp)

    def body(state, inp):
        p, log_scale = state
        s, x, sel = inp
        p = p @ jac(s, x)  # P_k = P_{k-1} J_{T-k+1}
        n = jnp.maximum(safe_norm(p, axis=(-2, -1)), TINY)
        p = p / n[:, None, None]
        log_scale = log_scale + jnp.log(n)
        log_sv = jax.lax.cond(
            sel, lambda m: jnp.log(jnp.maximum(jnp.linalg.svd(m, compute_uv=False), TINY)),
            lambda m: jnp.zeros((b, d), m.dtype), p)
        return (p, log_scale), log_sv + log_scale[:, None]

    eye = jnp.broadcast_to(jnp.eye(d, dtype=states.dtype), (b, d, d))
    init = (eye, jnp.zeros((b,), states.dtype))
    _, log_sv = jax.lax.scan(body, init, (s_prev, xp_t, jnp.asarray(selected[1:])))
    log_sv = jnp.concatenate([jnp.zeros((1, b, d), log_sv.dtype), log_sv], axis=0)
    return jnp.moveaxis(log_sv[np.asarray(lags)], 0, 1)  # [B, L, D]


def jacobian_spectra(cell, params, xs, lags=None, *, carry=None) -> dict:
    """Singular values of P_k = ∂s_T/∂s_{T-k} at the chosen lags, for every sample.

    P_k is accumulated backwards one step Jacobian (jacfwd of the cell step) at a time and
    renormalised by its Frobenius norm after every step (the scale is kept in log space), so
    long lags neither overflow nor underflow. σ(P_k) = σ(P_k^T), so these are also the
    singular values of the map ∂L/∂s_T -> ∂L/∂s_{T-k}. The SVD is taken only at the chosen lags.

    Precision: float32 resolves singular values down to ~1e-7 of the largest; smaller ones
    (log σ_max − log σ_min beyond ~15) are noise — use `lyapunov_exponents(num=D)` for the
    full spectrum's rates at long lags.

    Args:
      xs: [batch, time, features] inputs; a single sequence is xs[None].
      lags: int lags in [0, T] (default: all of 0..T).

    Returns a dict of arrays: "lags" [L]; "log_sv" [batch, L, D] (log σ_i descending);
    "log_sv_mean" [L, D] (batch mean of log σ_i, i.e. geometric mean); "log_sigma_max" and
    "log_sigma_min" [batch, L].
    """
    t = jnp.asarray(xs["inputs"] if isinstance(xs, dict) else xs).shape[-2]
    lags = tuple(range(t + 1)) if lags is None else tuple(
        sorted({check_lag("lag", k, t) for k in lags}))
    if not lags:
        raise ValueError("lags must name at least one lag")
    log_sv = _spectra(cell, params, xs, carry, lags)
    return {"lags": jnp.asarray(lags), "log_sv": log_sv, "log_sv_mean": log_sv.mean(0),
            "log_sigma_max": log_sv[..., 0], "log_sigma_min": log_sv[..., -1]}


@functools.partial(jax.jit, static_argnames=("cell", "num", "seed"))
def _lyapunov_local(cell, params, xs, carry, basis, num, seed):
    xp, carry = check_inputs(cell, params, xs, carry)
    states, f = _trajectory(cell, params, xp, carry)
    d = states.shape[-1]
    if basis is None:
        if not 1 <= num <= d:
            raise ValueError(f"num must be in [1, {d}] (the flattened carry size), got {num!r}")
        basis = jax.random.normal(jax.random.key(seed), (d, num), states.dtype)
    elif basis.ndim != 2 or basis.shape[0] != d or basis.shape[1] > d:
        raise ValueError(f"basis must be [D, num] with D = {d} (the flattened carry size) and "
                         f"num <= D, got shape {tuple(basis.shape)}")
    q0, _ = jnp.linalg.qr(basis.astype(states.dtype))
    s_prev, xp_t = _backward_steps(states, xp)

    def transpose_apply(s, x, q):  # J^T q for the columns of q [D, num], via VJPs
        _, vjp = jax.vjp(lambda s_: f(s_, x)[0], s)
        return jax.vmap(lambda v: vjp(v)[0], in_axes=1, out_axes=1)(q)

    def body(q, inp):
        s, x = inp
        m = jax.vmap(transpose_apply)(s, x, q)  # [B, D, num]
        q, r = jnp.linalg.qr(m)
        local = jnp.log(jnp.maximum(jnp.abs(jnp.diagonal(r, axis1=-2, axis2=-1)), TINY))
        return q, local

    q = jnp.broadcast_to(q0, (states.shape[0], d, num))
    _, local = jax.lax.scan(body, q, (s_prev, xp_t))
    return jnp.moveaxis(local, 0, 1)  # [B, T, num]


def lyapunov_exponents(cell, params, xs, *, num: int = 1, lag_min: int = 0,
                       lag_max: int | None = None, carry=None, seed: int = 0,
                       basis=None) -> dict:
    """Finite-time Lyapunov exponents of the backward product P_k^T by QR (Benettin) iteration.

    Starting from a random orthonormal Q_0 [D, num] (seeded, independent of any loss; or the
    orthonormalised columns of `basis` [D, num] when given), walk the trajectory backwards,
    k = 1..T:

        Q_k R_k = J_{T-k+1}^T Q_{k-1}     (J^T Q by vector-Jacobian products, then a thin QR)

    log|R_k[i, i]| is the local growth of the i-th direction from lag k−1 to k (the first
    column tracks one vector: Σ_{k≤K} log|R_k[1, 1]| = log‖P_K^T q_1‖, q_1 = Q_0[:, 0]), and

        λ_i = mean over k in (lag_min, lag_max] of log|R_k[i, i]|      (per step).

    This is the same product, in the same direction, that carries a last-step loss's gradient
    (∂L/∂s_{T-k} = P_k^T ∂L/∂s_T), so λ_1 is the reference for the rate `fit_rate` reads off
    the gradient norms over the same window; skipping lags ≤ lag_min discards the transient in
    which Q_0 (and the loss's gradient) aligns with the leading backward direction.

    The forward product P_k has the same singular values, so asymptotically the same
    exponents, but over a finite window its vectors align with other directions; the backward
    iteration is the one whose transient matches the gradient's.

    Returns a dict of arrays: "local" [batch, T, num] (column k−1 = step from lag k−1 to k);
    "exponents" [batch, num] (λ_1 ≥ λ_2 ≥ ... only asymptotically); "mean" [num] (batch mean).
    """
    t = jnp.asarray(xs["inputs"] if isinstance(xs, dict) else xs).shape[-2]
    lag_max = t if lag_max is None else lag_max
    lag_min, lag_max = check_lag("lag_min", lag_min, t), check_lag("lag_max", lag_max, t)
    if lag_max <= lag_min:
        raise ValueError(f"lag_max ({lag_max}) must be larger than lag_min ({lag_min})")
    basis = None if basis is None else jnp.asarray(basis)
    local = _lyapunov_local(cell, params, xs, carry, basis, num, seed)
    exps = local[:, lag_min:lag_max].mean(1)
    return {"local": local, "exponents": exps, "mean": exps.mean(0)}


def window_mean(local: jax.Array, lag_lo, lag_hi) -> jax.Array:
    """Mean of local growth rates [batch, T, num] over steps k in (lag_lo, lag_hi], then over
    the batch: [num]. lag_lo/lag_hi may be traced (e.g. `fit_rate`'s window)."""
    k = jnp.arange(1, local.shape[1] + 1)
    w = ((k > lag_lo) & (k <= lag_hi)).astype(local.dtype)
    return (local * w[None, :, None]).sum(1).mean(0) / w.sum()


def pascanu_condition(cell, params) -> dict:
    """Pascanu, Mikolov & Bengio 2013's sufficient condition for vanishing gradients.

    For h_t = f(x_t W_ih + h_{t-1} W_hh + b), J_t = diag(f'(·)) W_hh^T, so
    ‖J_t‖ ≤ γ σ_max(W_hh) with γ = sup|f'| (1 for tanh and for ReLU), and

        γ · σ_max(W_hh) < 1   ⇒   ‖∂h_T/∂h_{T-k}‖ ≤ (γ σ_max)^k -> 0.

    For a leaky ESN (h_t = (1−a) h_{t-1} + a f(...)) the bound is (1−a) + a γ σ_max.
    The condition is sufficient, not necessary: a Gaussian W_hh scaled to spectral radius 0.9
    has σ_max well above 1, so it fails, yet the gradient still vanishes.

    Defined for Elman-family cells (elman, rnn_tanh, rnn_relu, irnn) and esn.

    Returns a dict of arrays: "sigma_max" σ_max(W_hh); "spectral_radius" max|eig W_hh|;
    "gamma"; "bound" (the per-step norm bound); "holds" (bool: bound < 1).
    """
    if isinstance(cell, Elman):
        leak = 1.0
    elif isinstance(cell, ESN):
        leak = cell.leak_rate
    else:
        raise ValueError(f"pascanu_condition is defined for Elman-family cells (elman, rnn_tanh, "
                         f"rnn_relu, irnn) and esn; got {type(cell).__name__}")
    w = params["w_hh"]
    sigma = jnp.linalg.norm(w, ord=2)
    gamma = jnp.asarray(1.0, w.dtype)  # sup|tanh'| = sup|relu'| = 1
    bound = (1.0 - leak) + leak * gamma * sigma
    return {"sigma_max": sigma, "spectral_radius": _spectral_radius(w), "gamma": gamma,
            "bound": bound, "holds": bound < 1.0}
