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

import os

import jax.numpy as jnp
import numpy as np

from rnnlab.data import timeseries as ts
from rnnlab.models.sequence import SequenceModel
from rnnlab.tasks.base import Task, dropout_rngs, register
from rnnlab.data.hosts import local_batch
from rnnlab.config import ConfigError, base_config, check_fields, check_positive_fields, make_cells

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


class ForecastTask(Task):
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
        self._eval = {}

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

    def _split_batches(self, name: str) -> list:
        if name not in self._eval:
            split, rows = self.data.splits[name], self.eval_batch_size
            n = len(split.inputs)
            self._eval[name] = [local_batch(window_batch(split, np.arange(i, min(i + rows, n)), rows))
                                for i in range(0, n, rows)]
        return self._eval[name]

    def eval_batches(self) -> list:
        return self._split_batches("validation")

    def test_batches(self) -> list:
        return self._split_batches("test")

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

__all__ = ["ForecastTask", "forecast_config", "forecast_metrics", "forecast_stats",
           "load_series", "window_batch"]
