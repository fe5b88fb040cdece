"""Time-series forecasting ("forecast"): from a window of `lookback` past values, predict the
next `horizon` values at once (direct multi-output; horizon 1 = one-step forecasting).

    config = forecast_config()                 # base_config() + the task fields
    config.task.series = "csv"                 # or sines, ar, mackey_glass
    result = train_and_evaluate(config, workdir)

Data (`rnnlab.data.timeseries.prepare_forecast`): a generated series (noisy sines, an AR
process, Mackey-Glass) or one column of a CSV file, split in time order into train /
validation / test, z-normalised with train statistics only, cut into windows (train windows
every `stride` steps, validation and test windows at every step). The model reads the window
[batch, lookback, 1] and its "last" readout gives [batch, horizon].

Metrics (normalised units, i.e. the train part's standard deviation is 1):
  mse, loss      mean squared error over windows and horizon steps
  nrmse          sqrt(mse): RMSE relative to the train standard deviation
  mse_first      MSE of the first horizon step (the one-step forecast)
  mse_last       MSE of the last horizon step (the horizon-step forecast)
  mse_naive      the naive baseline's MSE (last input value), same windows
  mse_linear     the linear baseline's MSE (least squares on the window, fitted on train)
  mse_raw        mse in the series' own units (mse · std²)
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells import ridge_readout
from rnnlab.data import timeseries as ts
from rnnlab.data.timeseries import ForecastData, SplitWindows
from rnnlab.models.sequence import SequenceModel
from rnnlab.tasks.base import Task, dropout_rngs, register
from rnnlab.data.hosts import local_batch
from rnnlab.data.splits import CachedSplits
from rnnlab.config import (ConfigError, base_config, check_fields, check_positive_fields,
                           make_cells)
from rnnlab.unroll import unroll

SERIES = ("sines", "ar", "mackey_glass", "csv")


def forecast_config():
    """`base_config()` plus every field the forecasting task reads (each with a comment)."""
    c = base_config()
    t = c.task
    t.name = "forecast"
    t.series = "sines"  # sines | ar | mackey_glass | csv (task.csv_path, task.csv_column)
    t.length = 5_000  # generated series: number of steps
    t.noise = 0.1  # sines / ar: standard deviation of the Gaussian noise
    t.periods = (20.0, 53.0)  # sines: periods in steps (amplitudes 1, 1/2, ...)
    t.ar_coeffs = (0.5, -0.3, 0.4)  # ar: x_t = Σ_k c_k x_{t-1-k} + noise (must be stationary)
    t.mg_tau = 17.0  # mackey_glass: the delay (17: chaotic), sampled every time unit
    t.csv_path = ""  # csv: the file (with a header row)
    t.csv_column = ""  # csv: the column to forecast, by header name
    t.lookback = 50  # input window length
    t.horizon = 1  # steps forecast at once (1 = one-step)
    t.stride = 1  # train windows start every `stride` steps
    t.valid_fraction = 0.15  # the series' middle part for validation ...
    t.test_fraction = 0.15  # ... and its last part for test
    t.batch_size = 64  # train windows per step
    t.eval_batch_size = 256  # windows per validation / test batch
    return c


def load_series(config) -> np.ndarray:
    """The series [time] that `config.task` names."""
    t = config.task
    if t.series == "sines":
        return ts.noisy_sines(t.length, tuple(t.periods), noise=t.noise, seed=config.seed)
    if t.series == "ar":
        return ts.ar_process(t.length, tuple(t.ar_coeffs), noise=t.noise, seed=config.seed)
    if t.series == "mackey_glass":
        return ts.mackey_glass(t.length, tau=t.mg_tau)
    if not t.csv_path or not t.csv_column:
        raise ConfigError("config.task.series='csv' needs config.task.csv_path and "
                          "config.task.csv_column (the column's header name)")
    return ts.read_csv_column(os.path.expanduser(t.csv_path), t.csv_column)


def forecast_stats(pred, batch, xp=jnp) -> dict:
    """Summed statistics of forecasts pred [batch, horizon] on `batch` (targets, naive, linear
    [batch, horizon], weights [batch]); `xp` is jax.numpy or numpy."""
    w = batch["weights"]
    sq = lambda p: xp.square(p - batch["targets"])  # noqa: E731
    se = sq(pred)
    return {"windows": xp.sum(w), "count": xp.sum(w) * se.shape[-1],
            "se": xp.sum(w[:, None] * se), "se_first": xp.sum(w * se[:, 0]),
            "se_last": xp.sum(w * se[:, -1]),
            "se_naive": xp.sum(w[:, None] * sq(batch["naive"])),
            "se_linear": xp.sum(w[:, None] * sq(batch["linear"]))}


def forecast_metrics(stats, std: float, xp=jnp) -> dict:
    """The metrics of the module docstring from summed `forecast_stats`."""
    count, windows = xp.maximum(stats["count"], 1.0), xp.maximum(stats["windows"], 1.0)
    mse = stats["se"] / count
    return {"loss": mse, "mse": mse, "nrmse": xp.sqrt(mse),
            "mse_first": stats["se_first"] / windows, "mse_last": stats["se_last"] / windows,
            "mse_naive": stats["se_naive"] / count, "mse_linear": stats["se_linear"] / count,
            "mse_raw": mse * std**2}


def window_batch(split: ts.SplitWindows, indices, rows: int) -> dict:
    """Windows `indices` of a split as a batch of `rows` rows (extra rows: weight 0)."""
    indices = np.asarray(indices, np.int64)
    pad = rows - len(indices)

    def take(a):
        return np.concatenate([a[indices], np.zeros((pad,) + a.shape[1:], a.dtype)])

    return {"inputs": take(split.inputs)[..., None], "targets": take(split.targets),
            "naive": take(split.naive), "linear": take(split.linear),
            "weights": (np.arange(rows) < len(indices)).astype(np.float32)}


class ForecastTask(CachedSplits, Task):
    """Direct multi-step forecasting of one series (see the module docstring)."""

    carries_state = False
    metric, metric_mode = "mse", "min"

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, forecast_config(), "forecast",
                     "rnnlab.tasks.forecast.forecast_config()")
        t = config.task
        if t.series not in SERIES:
            raise ConfigError(f"config.task.series={t.series!r} is not valid; valid choices: "
                              f"{list(SERIES)}")
        check_positive_fields("task", t, ("length", "lookback", "horizon", "stride", "batch_size",
                                         "eval_batch_size"))
        if t.noise < 0:
            raise ConfigError(f"config.task.noise={t.noise!r} must be >= 0")
        if not t.periods or min(t.periods) <= 0:
            raise ConfigError(f"config.task.periods={t.periods!r} must be one or more positive "
                              "numbers of steps")
        if not (0 < t.valid_fraction and 0 < t.test_fraction
                and t.valid_fraction + t.test_fraction < 1):
            raise ConfigError(f"config.task.valid_fraction={t.valid_fraction!r} and "
                              f"test_fraction={t.test_fraction!r} must be > 0 with a sum < 1")

    def __init__(self, config):
        t, m = config.task, config.model
        self.data = ts.prepare_forecast(load_series(config), t.lookback, t.horizon, t.stride,
                                        t.valid_fraction, t.test_fraction)
        self.batch_size, self.eval_batch_size = t.batch_size, t.eval_batch_size
        self.seed = config.seed
        n_train = len(self.data.splits["train"].inputs)
        self.steps_per_epoch = n_train // t.batch_size
        if not self.steps_per_epoch:
            raise ConfigError(f"config.task.batch_size={t.batch_size} is larger than the "
                              f"{n_train} train windows")
        self.model = SequenceModel(cells=make_cells(m), output_size=t.horizon, readout="last",
                                   dropout=m.dropout, unroll=m.unroll)
        self._order = {}

    # --- data -----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._order:
            n = len(self.data.splits["train"].inputs)
            self._order = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return self._order[epoch]

    def train_batch(self, step: int) -> dict:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        idx = self._epoch_order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return local_batch(window_batch(self.data.splits["train"], idx, self.batch_size))

    def split_batches(self, name: str) -> list:
        split, rows = self.data.splits[name], self.eval_batch_size
        n = len(split.inputs)
        return [local_batch(window_batch(split, np.arange(i, min(i + rows, n)), rows))
                for i in range(0, n, rows)]

    # --- model ----------------------------------------------------------------------------
    def init(self, rng):
        inputs = jnp.asarray(self.data.splits["train"].inputs[:2, :, None])
        return self.model.init({"params": rng}, inputs)["params"]

    def initial_carry(self, batch_size: int):
        return self.model.initial_carry(batch_size)

    def predict(self, params, inputs, rng=None, train=False):
        """inputs [batch, lookback, 1] -> forecasts [batch, horizon] (normalised units)."""
        rngs = dropout_rngs(rng, train)
        return self.model.apply({"params": params}, inputs, train=train, rngs=rngs)[0]

    def loss(self, params, batch, carry, rng, train):
        stats = forecast_stats(self.predict(params, batch["inputs"], rng, train), batch)
        return stats["se"] / jnp.maximum(stats["count"], 1.0), (stats, None)

    def metrics(self, stats) -> dict:
        return forecast_metrics(stats, self.data.normalizer.std)


register("forecast", ForecastTask)

# --- the echo-state baseline -------------------------------------------------------------------
# Echo-state network forecasting with a closed-form readout, on the forecasting task's windows
# (`rnnlab.tasks.forecast`), so that it is scored exactly like a trained model.
# 
#     feats = esn_features(cell, params, split.inputs)           # [windows, hidden + 1]
#     readout, alpha, val = fit_readout(cell, params, data, alphas=(1e-8, 1e-6, 1e-4))
#     metrics = esn_metrics(cell, params, readout, data, "test")
# 
# The reservoir (`rnnlab.cells.ESN`, fixed random weights) is driven by each window's lookback
# values from a zero state; the features of a window are its final state and last input value
# [h_T, u_T]. The readout maps them to the `horizon` targets by ridge regression
# (`rnnlab.cells.ridge_readout`, closed form, bias not penalised); the ridge penalty is the one
# of `alphas` with the lowest validation MSE. No gradient descent is involved.


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


__all__ = ["ForecastTask", "esn_features", "esn_metrics", "fit_readout", "forecast_config",
           "forecast_metrics", "forecast_stats",
           "load_series", "window_batch"]
