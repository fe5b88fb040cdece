"""One call that takes the gradient-flow measurements on a batch: for studies and for logging
them every N steps of a training run.

    flow = gradient_flow(cell, params, batch)             # dict of arrays (jit-able pieces)
    record = to_jsonable(summarize(flow, lags=(1, 10, 100)))  # small dict of floats -> JSON
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells import ESN, Elman
from rnnlab.diagnostics._common import batch_inputs
from rnnlab.diagnostics.gradients import fit_rate, gradient_norms_by_lag
from rnnlab.diagnostics.jacobians import (jacobian_spectra, lyapunov_exponents,
                                          pascanu_condition, window_mean)


def gradient_flow(cell, params, batch, *, lag_min: int | None = None,
                  lag_max: int | None = None, spectra_lags=(), lyapunov: bool = True,
                  num_exponents: int = 1, max_samples: int | None = None, loss: str = "last",
                  loss_fn=None, seed: int = 0, carry=None) -> dict:
    """Every measurement of one configuration on one batch, as arrays.

    Args:
      cell, params: the cell and its parameters (at initialisation or mid-training).
      batch: [batch, time, features] inputs or a batch dict with "inputs".
      lag_min, lag_max: the fit window in lags, default max(1, T // 10) .. T − T // 10: the
        first lags are skipped while the gradient aligns with the leading backward direction,
        the last ones (the first time steps) while the trajectory leaves the zero initial
        carry. Lags whose gradient norm has underflowed in float32 are dropped (`fit_rate`).
      spectra_lags: lags at which to take the singular values of ∂s_T/∂s_{T-k} (none by
        default: they cost an SVD per sample per lag).
      lyapunov: run the QR iteration for the reference exponent(s), averaged over exactly the
        lags the fit used.
      num_exponents: how many Lyapunov exponents (D for the full spectrum).
      max_samples: measure on only the first samples of the batch (cheaper during training).
      loss, loss_fn, seed: see `state_gradients` (seed also seeds the Lyapunov basis).
      carry: initial carry [batch, ...] (e.g. the hidden state a stateful LM run carries over);
        zeros if None. Sliced with the batch when max_samples is set.

    Returns a dict: "lags" [T+1]; "grad_norm_mean", "log_grad_norm_mean" [T+1]; "rate",
    "rate_lag_lo", "rate_lag_hi", "rate_num_lags"; "finite" (False when a norm overflowed
    or is NaN, e.g. an exploding ReLU trajectory left float32's range); with lyapunov
    "lyapunov" (λ_1) and "lyapunov_spectrum" [num_exponents]; with spectra_lags "spectra_lags" [L] and
    "log_sv_mean" [L, D]; for Elman/ESN cells "pascanu" (see `pascanu_condition`).
    """
    xs = jnp.asarray(batch_inputs(batch))
    if xs.ndim != 3:
        raise ValueError(f"inputs must be [batch, time, features], got shape {tuple(xs.shape)}")
    if max_samples is not None:
        xs = xs[:max_samples]
        if carry is not None:
            carry = jax.tree_util.tree_map(lambda a: a[:max_samples], carry)
    t = xs.shape[-2]
    lag_min = max(1, t // 10) if lag_min is None else lag_min
    lag_max = t - t // 10 if lag_max is None else lag_max
    spectra_lags = tuple(int(k) for k in spectra_lags)
    return _gradient_flow(cell, params, xs, carry, lag_min, lag_max, spectra_lags, lyapunov,
                          num_exponents, loss, loss_fn, seed)


@functools.partial(jax.jit, static_argnums=(0, *range(4, 12)))
def _gradient_flow(cell, params, xs, carry, lag_min, lag_max, spectra_lags, lyapunov,
                   num_exponents, loss, loss_fn, seed):
    t = xs.shape[-2]
    norms = gradient_norms_by_lag(cell, params, xs, carry=carry, loss=loss, loss_fn=loss_fn,
                                  readout_seed=seed)
    fit = fit_rate(norms["log_norms"], lag_min, lag_max)
    out = {"lags": jnp.arange(t + 1), "grad_norm_mean": norms["mean"],
           "log_grad_norm_mean": norms["log_mean"], "rate": fit["rate"],
           "rate_lag_lo": fit["lag_lo"], "rate_lag_hi": fit["lag_hi"],
           "rate_num_lags": fit["num_lags"], "finite": jnp.isfinite(norms["norms"]).all()}
    if lyapunov:
        ly = lyapunov_exponents(cell, params, xs, num=num_exponents, seed=seed, carry=carry)
        spectrum = window_mean(ly["local"], fit["lag_lo"], fit["lag_hi"])
        out["lyapunov"] = spectrum[0]
        out["lyapunov_spectrum"] = spectrum
    if spectra_lags:
        sp = jacobian_spectra(cell, params, xs, spectra_lags, carry=carry)
        out["spectra_lags"] = sp["lags"]
        out["log_sv_mean"] = sp["log_sv_mean"]
    if isinstance(cell, (Elman, ESN)):
        out["pascanu"] = pascanu_condition(cell, params)
    return out


def summarize(flow: dict, lags=(1, 10, 100)) -> dict:
    """A small record of `gradient_flow`'s output for logging: scalars plus the mean gradient
    norm at a few lags (those beyond the sequence are skipped) instead of the whole curve.

    Keys: "rate", "lyapunov" (if measured), "grad_norm@K" and "log_grad_norm@K" per lag K,
    "log_sigma_max@K"/"log_sigma_min@K" per spectra lag, "pascanu_sigma_max"/"pascanu_holds".
    """
    t = int(flow["lags"].shape[0]) - 1
    rec = {"rate": flow["rate"], "rate_lag_lo": flow["rate_lag_lo"],
           "rate_lag_hi": flow["rate_lag_hi"], "finite": flow["finite"]}
    if "lyapunov" in flow:
        rec["lyapunov"] = flow["lyapunov"]
    for k in lags:
        if 0 <= k <= t:
            rec[f"grad_norm@{k}"] = flow["grad_norm_mean"][k]
            rec[f"log_grad_norm@{k}"] = flow["log_grad_norm_mean"][k]
    if "spectra_lags" in flow:
        for i, k in enumerate(np.asarray(flow["spectra_lags"])):
            rec[f"log_sigma_max@{int(k)}"] = flow["log_sv_mean"][i, 0]
            rec[f"log_sigma_min@{int(k)}"] = flow["log_sv_mean"][i, -1]
    if "pascanu" in flow:
        rec["pascanu_sigma_max"] = flow["pascanu"]["sigma_max"]
        rec["pascanu_holds"] = flow["pascanu"]["holds"]
    return rec


def gradient_flow_metrics(cell, params, batch, *, lags=(1, 10, 100), prefix: str = "gf/",
                          max_samples: int | None = 16, **kwargs) -> dict:
    """The training-loop hook: measure on (the first `max_samples` of) a batch and return a
    flat dict of Python floats/bools keyed `prefix + name`, ready for a JSON-lines log.

    Call it every N steps: `metrics.update(gradient_flow_metrics(cell, state.params, batch))`.
    kwargs go to `gradient_flow`.
    """
    rec = to_jsonable(summarize(gradient_flow(cell, params, batch, max_samples=max_samples,
                                              **kwargs), lags))
    return {prefix + k: v for k, v in rec.items()}


def to_jsonable(tree):
    """Arrays -> Python floats/bools/ints/lists (NaN/inf become None), recursively."""
    if isinstance(tree, dict):
        return {str(k): to_jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_jsonable(v) for v in tree]
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(tree)
        if a.dtype == bool:
            return a.tolist()
        if np.issubdtype(a.dtype, np.integer):
            return a.tolist()
        return _finite(a.astype(np.float64).tolist())
    if isinstance(tree, float):
        return _finite(tree)
    return tree


def _finite(x):
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x if np.isfinite(x) else None
