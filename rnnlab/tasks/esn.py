"""Echo-state network forecasting with a closed-form readout, on the forecasting task's windows
(`rnnlab.tasks.forecast`), so that it is scored exactly like a trained model.

    feats = esn_features(cell, params, split.inputs)           # [windows, hidden + 1]
    readout, alpha, val = fit_readout(cell, params, data, alphas=(1e-8, 1e-6, 1e-4))
    metrics = esn_metrics(cell, params, readout, data, "test")

The reservoir (`rnnlab.cells.ESN`, fixed random weights) is driven by each window's lookback
values from a zero state; the features of a window are its final state and last input value
[h_T, u_T]. The readout maps them to the `horizon` targets by ridge regression
(`rnnlab.cells.ridge_readout`, closed form, bias not penalised); the ridge penalty is the one
of `alphas` with the lowest validation MSE. No gradient descent is involved.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells import ridge_readout
from rnnlab.data.timeseries import ForecastData, SplitWindows
from rnnlab.tasks.forecast import forecast_metrics, forecast_stats
from rnnlab.unroll import unroll


@functools.partial(jax.jit, static_argnums=0)
def _final_states(cell, params, xs):
    carry, _ = unroll(cell, params, xs)
    return carry


_ridge = jax.jit(ridge_readout)


def esn_features(cell, params, inputs: np.ndarray, chunk: int = 512) -> np.ndarray:
    """[h_T, u_T] per window: inputs [windows, lookback] -> [windows, hidden + 1] (float64).
    The reservoir runs on chunks of `chunk` windows (the last one zero-padded: one compile)."""
    n = len(inputs)
    padded = np.zeros((-(-n // chunk) * chunk, inputs.shape[1], 1), np.float32)
    padded[:n, :, 0] = inputs
    states = [np.asarray(_final_states(cell, params, jnp.asarray(padded[i:i + chunk])),
                         np.float64) for i in range(0, len(padded), chunk)]
    return np.concatenate([np.concatenate(states)[:n], inputs[:, -1:].astype(np.float64)],
                          axis=1)


def predict(readout, features: np.ndarray) -> np.ndarray:
    """features [windows, F] -> forecasts [windows, horizon]."""
    return features @ np.asarray(readout["w"], np.float64) + np.asarray(readout["b"], np.float64)


def split_metrics(pred: np.ndarray, split: SplitWindows, std: float) -> dict:
    """The forecasting task's metrics of forecasts pred [windows, horizon] on `split`."""
    batch = {"targets": split.targets, "naive": split.naive, "linear": split.linear,
             "weights": np.ones(len(pred))}
    stats = forecast_stats(pred, batch, xp=np)
    return {k: float(v) for k, v in forecast_metrics(stats, std, xp=np).items()}


def fit_readout(cell, params, data: ForecastData, alphas=(1e-8, 1e-6, 1e-4, 1e-2)):
    """Ridge readouts for every alpha on the train windows; returns (the readout with the lowest
    validation MSE, its alpha, {alpha: validation mse})."""
    if not alphas or any(a < 0 for a in alphas):
        raise ValueError(f"alphas={alphas!r} must be a non-empty list of values >= 0")
    train, valid = data.splits["train"], data.splits["validation"]
    feats = esn_features(cell, params, train.inputs)
    valid_feats = esn_features(cell, params, valid.inputs)
    best, scores = None, {}
    for alpha in alphas:
        with jax.enable_x64(True):  # the normal equations need float64
            readout = jax.tree_util.tree_map(np.asarray, _ridge(
                jnp.asarray(feats), jnp.asarray(train.targets, jnp.float64), alpha))
        scores[alpha] = split_metrics(predict(readout, valid_feats), valid,
                                      data.normalizer.std)["mse"]
        if best is None or scores[alpha] < scores[best[1]]:
            best = (readout, alpha)
    return best[0], best[1], scores


def esn_metrics(cell, params, readout, data: ForecastData, split: str) -> dict:
    """The forecasting metrics of the fitted ESN on one split."""
    windows = data.splits[split]
    feats = esn_features(cell, params, windows.inputs)
    return split_metrics(predict(readout, feats), windows, data.normalizer.std)
