"""Per-step hidden-state gradients ‖∂L/∂h_t‖ as a function of lag, and the exponential-rate fit.

The state gradient is read off an additive perturbation: the carry is unrolled as

    s_t = F(s_{t-1}, x_t) + δ_t,    δ_t = 0,

so that ∂L/∂δ_t = ∂L/∂s_t exactly (and ∂L/∂s_0 is the gradient w.r.t. the initial carry).
s_t is one sample's carry flattened to a vector of size D: h_t for Elman/GRU/ESN/Jordan, the
concatenation [h_t, c_t] (D = 2·hidden) for an LSTM — the LSTM's "hidden state" is its whole
carry, since the memory cell c is what carries long-range gradient — and all layers' carries
for a Stack. The lag of step t is k = T − t, so lag 0 is the last step and lag T the initial
carry.

With a loss at the last step only, ∂L/∂s_{T-k} = (∂s_T/∂s_{T-k})^T ∂L/∂s_T, so the log-norm
against lag grows at the rate of the *transposed* (backward) Jacobian product; see
`rnnlab.diagnostics.jacobians.lyapunov_exponents`, which iterates that same product.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnlab.diagnostics._common import TINY, check_inputs, check_lag, flat_step, safe_norm

LOSSES = ("last", "every")


def readout_direction(size: int, seed: int = 0) -> jax.Array:
    """The default loss's fixed readout u [size] (size = D): a Gaussian vector of unit norm."""
    u = jax.random.normal(jax.random.key(seed), (size,))
    return u / jnp.linalg.norm(u)


@functools.partial(jax.jit, static_argnames=("cell", "loss", "loss_fn", "readout_seed"))
def _state_gradients(cell, params, xs, carry, loss, loss_fn, readout_seed):
    xp, carry = check_inputs(cell, params, xs, carry)

    def sample(c0, xp_b):
        s0, f, unravel = flat_step(cell, params, c0)
        u = readout_direction(s0.shape[0], readout_seed).astype(s0.dtype)

        def total_loss(s0, deltas):
            def body(s, inp):
                xp_t, d = inp
                s = f(s, xp_t)[0] + d
                return s, s

            _, ss = jax.lax.scan(body, s0, (xp_b, deltas))  # s_1..s_T, perturbed
            if loss_fn is not None:
                return loss_fn(jax.vmap(unravel)(ss))
            if loss == "last":
                return ss[-1] @ u
            return jnp.sum(ss @ u)

        deltas = jnp.zeros((xp_b.shape[0], s0.shape[0]), s0.dtype)
        g0, gd = jax.grad(total_loss, argnums=(0, 1))(s0, deltas)
        return jnp.concatenate([g0[None], gd], axis=0)

    return jax.vmap(sample)(carry, xp)


def state_gradients(cell, params, xs, *, carry=None, loss: str = "last", loss_fn=None,
                    readout_seed: int = 0) -> jax.Array:
    """∂L/∂s_t for every step t = 0..T of every sample, in time order.

    The loss is a function of the (perturbed) carries s_1..s_T, so ∂L/∂s_T is the loss's own
    gradient (lag 0) and earlier steps get theirs by back-propagation through the cell.

    Args:
      cell: any rnnlab cell (or Stack); params: its parameters.
      xs: [batch, time, features] inputs (or a batch dict with "inputs").
      carry: initial carry with batch shape [batch]; zeros if None.
      loss: the default loss, a fixed random unit readout u ∈ R^D (`readout_direction`) of the
        flattened carry: "last" L = u·s_T; "every" L = Σ_t u·s_t. It is linear, so at
        initialisation the measurement needs no targets; for an LSTM it reads [h_T, c_T].
      loss_fn: optional per-sample loss `loss_fn(carries) -> scalar` replacing the default;
        `carries` is the cell's carry pytree for one sample with a leading time axis (s_1..s_T),
        e.g. `lambda cs: cs.h[-1] @ w` for an LSTM's h_T. It is a static argument of `jit`
        (hashable; a fresh lambda per call recompiles).
      readout_seed: seed of u.

    Returns:
      [batch, time + 1, D]: entry [:, t] is ∂L/∂s_t (t = 0 the initial carry); D is the
      flattened carry size (2·hidden for an LSTM: [∂L/∂h_t, ∂L/∂c_t]).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid choices: {list(LOSSES)} "
                         "(or pass loss_fn)")
    return _state_gradients(cell, params, xs, carry, loss, loss_fn, readout_seed)


def gradient_norms_by_lag(cell, params, xs, **kwargs) -> dict:
    """Gradient norms ‖∂L/∂s_{T-k}‖ indexed by lag k = 0..T, and their batch averages.

    kwargs are those of `state_gradients`. Returns a dict of arrays:
      "norms"     [batch, T+1]  per-sample ‖∂L/∂s_{T-k}‖ (column k = lag k);
      "log_norms" [batch, T+1]  log of those, clamped at log(1e-37) where float32 underflows;
      "mean"      [T+1]         arithmetic mean over the batch of the norms;
      "log_mean"  [T+1]         mean over the batch of the log-norms (what a rate fit uses);
      "geo_mean"  [T+1]         exp(log_mean), the geometric mean.
    """
    g = state_gradients(cell, params, xs, **kwargs)
    norms = safe_norm(g, axis=-1)[:, ::-1]
    return summarize_norms(norms)


def summarize_norms(norms: jax.Array) -> dict:
    """The batch averages of `gradient_norms_by_lag` from norms [batch, T+1] (column = lag)."""
    log_norms = jnp.log(jnp.maximum(norms, TINY))
    log_mean = log_norms.mean(0)
    return {"norms": norms, "log_norms": log_norms, "mean": norms.mean(0),
            "log_mean": log_mean, "geo_mean": jnp.exp(log_mean)}


def valid_lags(log_norms: jax.Array, floor: float = 1e-30) -> jax.Array:
    """[T+1] bool: lags before any sample's norm first drops below `floor` (float32 underflow)
    or stops being finite (overflow: an exploding trajectory).

    log_norms is [T+1] or [batch, T+1]; the mask is a prefix (once invalid, invalid for good),
    so an underflowed tail never bends the fit.
    """
    ok = (log_norms > jnp.log(floor)) & jnp.isfinite(log_norms)
    if ok.ndim == 2:
        ok = ok.all(0)
    return jnp.cumprod(ok.astype(jnp.int32)).astype(bool)


def fit_rate(log_norms: jax.Array, lag_min: int = 1, lag_max: int | None = None,
             floor: float = 1e-30) -> dict:
    """Least-squares exponential rate per step: log‖∂L/∂s_{T-k}‖ ≈ a + λ·k over a lag window.

    log_norms: [T+1] (already batch-averaged log-norms) or [batch, T+1] (averaged here: the
    fit is on the mean log-norm, i.e. the geometric mean, not the log of the mean). Lags
    k in [lag_min, lag_max] enter, minus any past the first underflow (`valid_lags`). λ < 0 is
    vanishing, λ > 0 exploding, e^λ the factor per step. Jit-able (lag_min, lag_max static).

    Returns {"rate": λ, "intercept": a, "num_lags": lags used, "lag_lo", "lag_hi": the window
    actually used}; rate is NaN when fewer than 2 lags are usable.
    """
    log_norms = jnp.asarray(log_norms)
    if log_norms.ndim not in (1, 2):
        raise ValueError(f"log_norms must be [T+1] or [batch, T+1], got {tuple(log_norms.shape)}")
    n = log_norms.shape[-1]
    lag_max = n - 1 if lag_max is None else lag_max
    lag_min = check_lag("lag_min", lag_min, n - 1)
    lag_max = check_lag("lag_max", lag_max, n - 1)
    if lag_max <= lag_min:
        raise ValueError(f"lag_max ({lag_max}) must be larger than lag_min ({lag_min})")
    return _fit_rate(log_norms, lag_min, lag_max, floor)


@functools.partial(jax.jit, static_argnames=("lag_min", "lag_max", "floor"))
def _fit_rate(log_norms, lag_min, lag_max, floor):
    n = log_norms.shape[-1]
    valid = valid_lags(log_norms, floor)
    y = log_norms.mean(0) if log_norms.ndim == 2 else log_norms
    k = jnp.arange(n, dtype=y.dtype)
    w = (valid & (k >= lag_min) & (k <= lag_max)).astype(y.dtype)
    count = w.sum()
    k_bar = (w * k).sum() / count
    y_bar = (w * jnp.where(w > 0, y, 0.0)).sum() / count
    dk = k - k_bar
    var = (w * dk * dk).sum()
    rate = (w * dk * jnp.where(w > 0, y - y_bar, 0.0)).sum() / var
    rate = jnp.where(count >= 2, rate, jnp.nan)
    used = jnp.where(w > 0, k, jnp.nan)
    return {"rate": rate, "intercept": y_bar - rate * k_bar, "num_lags": count,
            "lag_lo": jnp.nanmin(used), "lag_hi": jnp.nanmax(used)}
