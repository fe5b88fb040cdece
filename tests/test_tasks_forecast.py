"""rnnlab.tasks.forecast, rnnlab.data.timeseries and the ESN experiment: windowing indices
against a plain loop, train-only normalisation (no leak), the baselines, the generators, CSV
input, the ridge readout against numpy's lstsq, and smoke runs of forecast.py through
`train_and_evaluate` and of experiments/esn_forecast.py, with their metrics."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.cells import ridge_readout
from rnnlab.data import timeseries as ts
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.loop import evaluate
from rnnlab.train.metrics import read_metrics
from _config_helpers import smoke_config


@pytest.mark.parametrize("lookback,horizon,stride", [(5, 1, 1), (3, 4, 2), (7, 2, 5), (4, 3, 6)])
def test_windows_against_a_plain_loop(lookback, horizon, stride):
    series = np.arange(40, dtype=np.float32) * 10 + np.random.default_rng(0).random(40)
    x, y = ts.windows(series, lookback, horizon, stride)
    want_x, want_y = [], []
    s = 0
    while s + lookback + horizon <= len(series):
        want_x.append(series[s:s + lookback])
        want_y.append(series[s + lookback:s + lookback + horizon])
        s += stride
    np.testing.assert_array_equal(x, np.array(want_x))
    np.testing.assert_array_equal(y, np.array(want_y))
    features = np.stack([series, -series], axis=1)  # [time, 2]: windows keep the feature axis
    x2, y2 = ts.windows(features, lookback, horizon, stride)
    assert x2.shape == (len(want_x), lookback, 2) and y2.shape == (len(want_y), horizon, 2)
    np.testing.assert_array_equal(x2[..., 1], -np.array(want_x))
    assert ts.windows(series[:5], 4, 2)[0].shape[0] == 0
    with pytest.raises(ValueError, match="stride=0 must be >= 1"):
        ts.windows(series, 3, 1, 0)


def test_splits_normalise_with_train_statistics_only():
    """Changing the validation and test parts changes neither the statistics nor any train
    window; every target step is forecast in exactly one split."""
    series = ts.noisy_sines(600, seed=1)
    data = ts.prepare_forecast(series, lookback=20, horizon=3, stride=2, valid_fraction=0.2,
                               test_fraction=0.1)
    a, b = data.bounds
    assert (a, b) == (420, 540)
    assert data.normalizer.mean == pytest.approx(float(np.mean(series[:a])), abs=1e-6)
    assert data.normalizer.std == pytest.approx(float(np.std(series[:a])), rel=1e-5)
    changed = series.copy()
    changed[a:] = 100.0 + 5 * changed[a:]
    other = ts.prepare_forecast(changed, 20, 3, 2, 0.2, 0.1)
    assert other.normalizer == data.normalizer
    np.testing.assert_array_equal(other.splits["train"].inputs, data.splits["train"].inputs)
    np.testing.assert_array_equal(other.linear_weights, data.linear_weights)
    # which target steps each split forecasts
    for name, (lo, hi) in (("train", (0, a)), ("validation", (a, b)), ("test", (b, 600))):
        starts = data.splits[name].starts
        assert (starts + 20 >= lo).all() and (starts + 23 <= hi).all()
        z = data.normalizer(series)
        for s, x, y in zip(starts[:5], data.splits[name].inputs, data.splits[name].targets):
            np.testing.assert_allclose(x, z[s:s + 20], rtol=1e-6)
            np.testing.assert_allclose(y, z[s + 20:s + 23], rtol=1e-6)
    assert np.all(np.diff(data.splits["train"].starts) == 2)
    assert data.splits["validation"].starts[0] == a - 20  # inputs may reach into train
    assert len(data.splits["validation"].starts) == (b - a) - 3 + 1
    with pytest.raises(ValueError, match="holds no window"):
        ts.prepare_forecast(series, 100, 70, 1, 0.1, 0.1)  # 70 targets > 60 test steps


def test_baselines():
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((200, 6))
    w_true = rng.standard_normal((6, 2))
    targets = inputs @ w_true + np.array([0.5, -1.0])
    np.testing.assert_array_equal(ts.naive_forecast(inputs, 3), np.repeat(inputs[:, -1:], 3, 1))
    w = ts.fit_linear(inputs, targets)
    x1 = np.concatenate([inputs, np.ones((200, 1))], axis=1)  # normal equations as reference
    np.testing.assert_allclose(w, np.linalg.solve(x1.T @ x1, x1.T @ targets), atol=1e-8)
    np.testing.assert_allclose(w[-1], [0.5, -1.0], atol=1e-8)
    np.testing.assert_allclose(ts.linear_forecast(w, inputs), targets, atol=1e-4)


def test_generators():
    ar = ts.ar_process(20_000, coeffs=(0.6, -0.2), noise=1.0, seed=0)
    x = ar.astype(np.float64)
    lagged = np.stack([x[1:-1], x[:-2]], axis=1)
    fit, *_ = np.linalg.lstsq(lagged, x[2:], rcond=None)
    np.testing.assert_allclose(fit, [0.6, -0.2], atol=0.03)
    with pytest.raises(ValueError, match="not stationary"):
        ts.ar_process(10, coeffs=(1.2,))
    sines = ts.noisy_sines(1000, periods=(25.0,), noise=0.0)
    np.testing.assert_allclose(sines[25:], sines[:-25], atol=1e-4)


def test_mackey_glass_against_fine_euler():
    """RK4 at dt 0.1 against forward Euler at dt 0.001 (an independent, much finer
    integration) over the first 40 time units, where chaos has not yet separated them."""
    mg = ts.mackey_glass(40, tau=17.0, dt=0.1, discard=0)
    dt, delay = 0.001, 17_000
    x = np.full(delay + 40_000 + 1, 1.2)
    for i in range(delay, delay + 40_000):
        xd = x[i - delay]
        x[i + 1] = x[i] + dt * (0.2 * xd / (1 + xd**10) - 0.1 * x[i])
    np.testing.assert_allclose(mg, x[delay::1000][:40], atol=2e-3)
    long = ts.mackey_glass(2000)
    assert 0.2 < long.min() and long.max() < 1.5 and long.std() > 0.15  # the chaotic attractor
    with pytest.raises(ValueError, match="multiples of dt"):
        ts.mackey_glass(10, tau=17.05)


def test_read_csv_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("date,load,temp\n2024-01-01,1.5,3\n2024-01-02,2.5,4\n\n2024-01-03,-1,5\n")
    np.testing.assert_array_equal(ts.read_csv_column(str(path), "load"), [1.5, 2.5, -1.0])
    with pytest.raises(ValueError, match=r"no column 'lod'; its columns: \['date', 'load'"):
        ts.read_csv_column(str(path), "lod")
    path.write_text("load\n1\nn/a\n")
    with pytest.raises(ValueError, match=r"data.csv:3: column 'load' holds 'n/a'"):
        ts.read_csv_column(str(path), "load")


def test_ridge_readout_against_numpy_lstsq():
    """ridge_readout (closed form, unpenalised bias) = lstsq of the augmented system
    [[S, 1], [sqrt(alpha) I, 0]] w = [[Y], [0]]."""
    rng = np.random.default_rng(0)
    s = rng.standard_normal((300, 8))
    y = s @ rng.standard_normal((8, 3)) + 0.3 * rng.standard_normal((300, 3)) + 2.0
    for alpha in (1e-6, 0.5, 30.0):
        aug = np.block([[s, np.ones((300, 1))], [np.sqrt(alpha) * np.eye(8), np.zeros((8, 1))]])
        want, *_ = np.linalg.lstsq(aug, np.concatenate([y, np.zeros((8, 3))]), rcond=None)
        got = ridge_readout(jnp.asarray(s, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
        np.testing.assert_allclose(np.asarray(got["w"]), want[:-1], atol=2e-4)
        np.testing.assert_allclose(np.asarray(got["b"]), want[-1], atol=2e-4)


def test_forecast_smoke_run_through_train_and_evaluate(tmp_path):
    config = smoke_config("forecast", **{"checkpoint.every_steps": 0})
    result = train_and_evaluate(config, str(tmp_path))
    assert int(result.state.step) == config.train.steps
    records = read_metrics(str(tmp_path))
    assert [(r["step"], r["split"]) for r in records if r["split"] != "train"] == [
        (3, "eval"), (6, "eval"), (6, "test")]
    assert records[-1]["mse_linear"] < records[-1]["mse_naive"]


def test_forecast_metrics_over_the_test_split():
    """The engine's `evaluate` over the test batches (the last one padded with weight-0 rows):
    the baselines against plain loops over the raw series, and the derived metrics."""
    config = smoke_config("forecast")
    task = make_task(config)
    params = task.init(jax.random.key(0))
    eval_fn = jax.jit(lambda p, c, b: task.loss(p, b, c, None, False)[1])
    test = evaluate(task, eval_fn, params, task.test_batches())
    assert len(task.data.splits["test"].inputs) % config.task.eval_batch_size  # padding used
    # baselines from the raw series with plain loops (weight-0 padding rows must not count)
    series = ts.noisy_sines(config.task.length, tuple(config.task.periods),
                            noise=config.task.noise, seed=config.seed)
    a, start_test = task.data.bounds
    mean, std = series[:a].mean(), series[:a].std()
    z = (series - mean) / std
    L, H = config.task.lookback, config.task.horizon
    naive = [(z[s + L + h] - z[s + L - 1]) ** 2 for s in range(start_test - L, len(z) - L - H + 1)
             for h in range(H)]
    assert test["mse_naive"] == pytest.approx(np.mean(naive), rel=1e-4)
    assert test["mse_raw"] == pytest.approx(test["mse"] * std**2, rel=1e-4)
    assert test["nrmse"] == pytest.approx(np.sqrt(test["mse"]), rel=1e-6)
    assert test["mse_linear"] < test["mse_naive"]  # noisy sines: the window predicts well
    predict = jax.jit(task.predict)
    pred = np.concatenate([np.asarray(predict(params, b["inputs"]))[b["weights"] > 0]
                           for b in task.test_batches()])
    targets = task.data.splits["test"].targets
    assert test["mse"] == pytest.approx(np.mean((pred - targets) ** 2), rel=1e-5)
    assert test["mse_last"] == pytest.approx(np.mean((pred - targets)[:, -1] ** 2), rel=1e-5)


def test_esn_readout_on_mackey_glass_windows():
    """The ESN pipeline of the experiment: the chosen ridge penalty is the best on validation,
    its metrics equal a direct numpy evaluation, and it beats the naive forecast."""
    import rnnlab
    from experiments.configs.esn_mackey_glass import get_config
    from rnnlab.tasks import forecast

    config = get_config("smoke")
    data = make_task(config).data
    cell = rnnlab.cells.make("esn", 30, spectral_radius=1.1, leak_rate=0.3, input_scaling=0.5)
    params = cell.init(jax.random.key(0), 1)
    readout, alpha, scores = forecast.fit_readout(cell, params, data, (1e-8, 1e-4, 1.0))
    assert scores[alpha] == min(scores.values()) and len(scores) == 3
    test = data.splits["test"]
    feats = forecast.esn_features(cell, params, test.inputs, chunk=64)  # 86: 2 chunks, padded
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for i in (0, 85):  # the reservoir equations as a numpy loop, from a zero state
        h = np.zeros(30)
        for u in test.inputs[i]:
            h = 0.7 * h + 0.3 * np.tanh(u * p["w_ih"][0] + p["b"] + h @ p["w_hh"])
        np.testing.assert_allclose(feats[i, :30], h, atol=1e-5)
    np.testing.assert_array_equal(feats[:, -1], test.inputs[:, -1])
    pred = feats @ readout["w"] + readout["b"]
    metrics = forecast.esn_metrics(cell, params, readout, data, "test")
    assert metrics["mse"] == pytest.approx(np.mean((pred - test.targets) ** 2), rel=1e-6)
    assert metrics["mse_last"] == pytest.approx(np.mean((pred - test.targets)[:, -1] ** 2),
                                                rel=1e-6)
    assert metrics["mse"] < 0.1 * metrics["mse_naive"]


def test_esn_experiment_smoke(tmp_path):
    from experiments import esn_forecast
    from experiments.configs.esn_mackey_glass import get_config

    config = get_config("smoke")
    config.checkpoint.async_save = False
    comparison = esn_forecast.run(config, str(tmp_path))
    esn_records = read_metrics(str(tmp_path / "esn"))
    assert [r["split"] for r in esn_records] == ["eval", "test"]
    lstm_records = read_metrics(str(tmp_path / "lstm"))
    assert lstm_records[-1]["split"] == "test"
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved == comparison and set(saved) == {"horizon", "series", "esn", "lstm"}
    esn = saved["esn"]
    assert esn["mse"] == pytest.approx(esn_records[-1]["mse"])
    assert esn["nrmse_last"] == pytest.approx(np.sqrt(esn["mse_last"]))
    # same windows for both: identical baselines
    assert esn["mse_linear"] == pytest.approx(saved["lstm"]["mse_linear"], rel=1e-5)
    assert esn["mse"] < esn["mse_naive"]  # the fitted readout beats the last value
    bad = get_config("smoke")
    del bad.esn["leak_rate"]
    with pytest.raises(ConfigError, match="config.esn must hold exactly the fields"):
        esn_forecast.run(bad, str(tmp_path / "bad"))


@pytest.mark.parametrize("overrides,match", [
    ({"task.series": "lorenz"}, r"task.series='lorenz'.*'sines', 'ar', 'mackey_glass', 'csv'"),
    ({"task.horizon": 0}, r"task.horizon=0 must be > 0"),
    ({"task.valid_fraction": 0.9}, r"valid_fraction=0.9 and test_fraction=0.15"),
    ({"task.periods": (20.0, -1.0)}, r"task.periods=\(20.0, -1.0\) must be one or more"),
])
def test_bad_config_fields(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(smoke_config("forecast", **overrides))


def test_configs_validate_and_csv_input(tmp_path):
    for variant in ("", "multistep", "ar", "csv", "smoke"):
        validate(smoke_config("forecast", variant))
    validate(smoke_config("esn_mackey_glass", ""))
    with pytest.raises(ConfigError, match="csv_path and config.task.csv_column"):
        make_task(smoke_config("forecast", "csv"))
    path = tmp_path / "series.csv"
    path.write_text("t,value\n" + "".join(f"{i},{np.sin(i / 5):.5f}\n" for i in range(300)))
    task = make_task(smoke_config("forecast", "smoke", **{
        "task.series": "csv", "task.csv_path": str(path), "task.csv_column": "value"}))
    assert task.data.bounds == (210, 255)
    np.testing.assert_allclose(task.data.normalizer.invert(task.data.splits["train"].inputs[0]),
                               np.sin(np.arange(12) / 5), atol=1e-4)
