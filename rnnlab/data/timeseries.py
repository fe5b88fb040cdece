"""Time series for forecasting: generators, CSV input, windows, normalisation, baselines.

    series = noisy_sines(5000, seed=0)        # or ar_process(...), mackey_glass(...),
                                              # read_csv_column("data.csv", "load")
    data = prepare_forecast(series, lookback=50, horizon=1, stride=1)
    data.splits["train"].inputs               # [windows, lookback]  (normalised)
    data.splits["validation"].targets         # [windows, horizon]
    data.normalizer.invert(z)                 # back to the series' units

Windows: window i starting at s_i = i · stride has inputs series[s_i : s_i + lookback] and
targets series[s_i + lookback : s_i + lookback + horizon] (`windows`). The series is split in
time order into train / validation / test parts; a window belongs to the split that holds all
of its targets, so every target value is forecast in exactly one split (validation and test
windows may read their inputs from the end of the previous part: the past is known at forecast
time). Train windows use `stride`; validation and test windows start at every step.

Normalisation: mean and standard deviation of the train part only (`Normalizer.fit`), applied
to every split. Baselines, per window and horizon step, in the same normalised units:
naive = the last input value; linear = least squares on the lookback window plus a bias,
one output per horizon step, fitted on the train windows (`fit_linear`).
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

SPLITS = ("train", "validation", "test")


# --- generators --------------------------------------------------------------------------------


def noisy_sines(length: int, periods=(20.0, 53.0), amplitudes=None, noise: float = 0.1,
                seed: int = 0) -> np.ndarray:
    """Σ_k a_k sin(2π t / p_k + φ_k) + N(0, noise²) for t = 0..length-1 (random phases φ_k;
    amplitudes a_k default to 1/(k+1))."""
    if amplitudes is None:
        amplitudes = [1.0 / (k + 1) for k in range(len(periods))]
    if len(periods) != len(amplitudes) or not len(periods):
        raise ValueError(f"{len(periods)} periods but {len(amplitudes)} amplitudes (need the "
                         "same number, at least one)")
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    x = sum(a * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi))
            for p, a in zip(periods, amplitudes))
    return (x + noise * rng.standard_normal(length)).astype(np.float32)


def ar_process(length: int, coeffs=(0.5, -0.3, 0.4), noise: float = 1.0, burn_in: int = 200,
               seed: int = 0) -> np.ndarray:
    """x_t = Σ_k coeffs[k] x_{t-1-k} + N(0, noise²) after `burn_in` discarded steps; raises if
    the coefficients give a non-stationary process (a root of the characteristic polynomial on
    or outside the unit circle)."""
    coeffs = np.asarray(coeffs, np.float64)
    roots = np.roots(np.concatenate([[1.0], -coeffs]))
    if len(roots) and np.abs(roots).max() >= 1.0:
        raise ValueError(f"AR coefficients {coeffs.tolist()} are not stationary: a root of the "
                         f"characteristic polynomial has modulus {np.abs(roots).max():.3f} >= 1")
    rng = np.random.default_rng(seed)
    p = len(coeffs)
    x = np.zeros(length + burn_in + p)
    eps = noise * rng.standard_normal(len(x))
    for t in range(p, len(x)):
        x[t] = coeffs @ x[t - p:t][::-1] + eps[t]
    return x[-length:].astype(np.float32)


def mackey_glass(length: int, tau: float = 17.0, beta: float = 0.2, gamma: float = 0.1,
                 n: float = 10.0, dt: float = 0.1, sample_every: float = 1.0, x0: float = 1.2,
                 discard: int = 500) -> np.ndarray:
    """The Mackey-Glass delay differential equation (chaotic for tau = 17)

        dx/dt = beta x(t - tau) / (1 + x(t - tau)^n) - gamma x(t),   x(t <= 0) = x0,

    integrated with 4th-order Runge-Kutta at step `dt` (the delayed value at half steps is the
    mean of its grid neighbours), sampled every `sample_every` time units; the first `discard`
    samples (the transient) are dropped."""
    delay, per = round(tau / dt), round(sample_every / dt)
    if abs(delay * dt - tau) > 1e-9 or abs(per * dt - sample_every) > 1e-9:
        raise ValueError(f"tau={tau} and sample_every={sample_every} must be multiples of "
                         f"dt={dt}")
    total = (length + discard) * per
    x = np.full(delay + total + 1, x0, np.float64)

    def f(x_t, x_d):
        return beta * x_d / (1.0 + x_d**n) - gamma * x_t

    for i in range(delay, delay + total):
        d0, d1 = x[i - delay], x[i - delay + 1]
        dm = 0.5 * (d0 + d1)
        k1 = f(x[i], d0)
        k2 = f(x[i] + 0.5 * dt * k1, dm)
        k3 = f(x[i] + 0.5 * dt * k2, dm)
        k4 = f(x[i] + dt * k3, d1)
        x[i + 1] = x[i] + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[delay::per][discard:discard + length].astype(np.float32)


def read_csv_column(path: str, column: str) -> np.ndarray:
    """The values of column `column` (by header name) of a CSV file, as float32 [rows]."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"the CSV file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if column not in header:
            raise ValueError(f"{path} has no column {column!r}; its columns: {header}")
        j = header.index(column)
        values = []
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                values.append(float(row[j]))
            except (ValueError, IndexError):
                cell = row[j] if j < len(row) else "<missing>"
                raise ValueError(f"{path}:{n}: column {column!r} holds {cell!r}, not a "
                                 "number") from None
    if not values:
        raise ValueError(f"{path} has no data rows")
    return np.asarray(values, np.float32)


# --- windows, splits, normalisation -------------------------------------------------------------


def window_starts(length: int, lookback: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Start indices of every full window (lookback inputs + horizon targets) of a series of
    `length` steps, every `stride` steps from 0."""
    for name, v in (("lookback", lookback), ("horizon", horizon), ("stride", stride)):
        if v < 1:
            raise ValueError(f"{name}={v!r} must be >= 1")
    return np.arange(0, max(length - lookback - horizon + 1, 0), stride)


def windows(series: np.ndarray, lookback: int, horizon: int, stride: int = 1):
    """(inputs [N, lookback, ...], targets [N, horizon, ...]) of a series [time, ...]."""
    starts = window_starts(len(series), lookback, horizon, stride)
    return _gather(series, starts, lookback, horizon)


def _gather(series, starts, lookback, horizon):
    if not len(starts):
        empty = np.zeros((0,) + series.shape[1:], series.dtype)
        return empty[:, None].repeat(lookback, 1), empty[:, None].repeat(horizon, 1)
    view = np.lib.stride_tricks.sliding_window_view(series, lookback + horizon, axis=0)
    view = np.moveaxis(view, -1, 1)[starts]  # [N, lookback + horizon, ...]
    return view[:, :lookback], view[:, lookback:]


def split_bounds(length: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(a, b): train is [0, a), validation [a, b), test [b, length)."""
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"valid_fraction={valid_fraction} and test_fraction={test_fraction} "
                         "must be > 0 with a sum < 1")
    b = length - round(test_fraction * length)
    a = b - round(valid_fraction * length)
    return a, b


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """z = (x - mean) / std, with statistics of the train part only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Normalizer:
        std = float(np.std(train_values))
        return cls(float(np.mean(train_values)), std if std > 0 else 1.0)

    def __call__(self, x):
        return (x - self.mean) / self.std

    def invert(self, z):
        return z * self.std + self.mean


# --- baselines ----------------------------------------------------------------------------------


def naive_forecast(inputs: np.ndarray, horizon: int) -> np.ndarray:
    """The last input value for every horizon step: inputs [N, lookback] -> [N, horizon]."""
    return np.repeat(inputs[:, -1:], horizon, axis=1)


def fit_linear(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least squares targets ≈ [inputs, 1] @ W: inputs [N, lookback], targets [N, horizon] ->
    W [lookback + 1, horizon] (the last row is the bias)."""
    x = np.concatenate([inputs, np.ones((len(inputs), 1))], axis=1).astype(np.float64)
    w, *_ = np.linalg.lstsq(x, targets.astype(np.float64), rcond=None)
    return w


def linear_forecast(w: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    return (inputs.astype(np.float64) @ w[:-1] + w[-1]).astype(np.float32)


# --- everything a forecasting task needs ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitWindows:
    inputs: np.ndarray  # [N, lookback] normalised
    targets: np.ndarray  # [N, horizon] normalised
    naive: np.ndarray  # [N, horizon] the naive baseline's forecasts
    linear: np.ndarray  # [N, horizon] the linear baseline's forecasts
    starts: np.ndarray  # [N] window start indices into the series


@dataclasses.dataclass(frozen=True)
class ForecastData:
    splits: dict  # split -> SplitWindows
    normalizer: Normalizer
    linear_weights: np.ndarray  # [lookback + 1, horizon]
    bounds: tuple  # (a, b): validation starts at a, test at b


def prepare_forecast(series: np.ndarray, lookback: int, horizon: int, stride: int = 1,
                     valid_fraction: float = 0.15, test_fraction: float = 0.15) -> ForecastData:
    """Split, normalise (train statistics), window and compute both baselines (see the module
    docstring)."""
    series = np.asarray(series, np.float32)
    if series.ndim != 1:
        raise ValueError(f"a univariate series [time] is expected, got shape {series.shape}")
    a, b = split_bounds(len(series), valid_fraction, test_fraction)
    norm = Normalizer.fit(series[:a])
    z = norm(series).astype(np.float32)
    ranges = {"train": (0, a, stride), "validation": (a, b, 1), "test": (b, len(series), 1)}
    raw = {}
    for split, (lo, hi, step) in ranges.items():
        starts = window_starts(len(series), lookback, horizon, step)
        first_target = starts + lookback
        starts = starts[(first_target >= lo) & (first_target + horizon <= hi)]
        if not len(starts):
            raise ValueError(f"the {split} part [{lo}, {hi}) of a series of {len(series)} steps "
                             f"holds no window of lookback {lookback} + horizon {horizon}; use "
                             "a longer series, a shorter lookback/horizon or larger fractions")
        raw[split] = (*_gather(z, starts, lookback, horizon), starts)
    w = fit_linear(raw["train"][0], raw["train"][1])
    splits = {s: SplitWindows(x, y, naive_forecast(x, horizon), linear_forecast(w, x), st)
              for s, (x, y, st) in raw.items()}
    return ForecastData(splits, norm, w, (a, b))
