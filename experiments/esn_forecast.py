"""Echo-state network (ridge readout) vs a trained model on one forecasting config's windows.

    python -m experiments.esn_forecast --config=experiments/configs/esn_mackey_glass.py \
        --workdir=DIR [--config.esn.hidden=1000 --config.model.cell=gru ...]

The config is a forecasting config (`rnnlab.tasks.forecast`) with an extra `esn` section. Both
models see exactly the same train / validation / test windows:

  DIR/esn/      the ESN: reservoir `rnnlab.cells.ESN` driven by each window, readout fitted
                in closed form (`rnnlab.tasks.forecast.fit_readout`); metrics.jsonl holds its
                "eval" (validation) and "test" records at step 0, in the forecasting task's
                metric names, plus `ridge_alpha` and `fit_seconds`
  DIR/<cell>/   `train_and_evaluate` of the config's model, e.g. DIR/lstm (any cell; a normal
                run that resumes)
  DIR/comparison.json   test metrics of both, with NRMSE at the first and last horizon step

`python -m experiments.compare DIR/esn DIR/lstm` puts the two runs side by side.
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import flags

from experiments import cli



def define_flags() -> None:
    cli.define_config("Forecasting config with an `esn` section, e.g. "
                      "experiments/configs/esn_mackey_glass.py[:smoke].")
    flags.DEFINE_string("workdir", None, "Output directory (created).")
    flags.mark_flags_as_required(["config", "workdir"])


ESN_FIELDS = ("hidden", "spectral_radius", "input_scaling", "bias_scaling", "leak_rate",
              "sparsity", "ridge_alphas")


def validate_esn(config) -> None:
    """ConfigError for a missing or invalid `esn` section (the rest: `rnnlab.train.validate`)."""
    from rnnlab.train import ConfigError

    if "esn" not in config or sorted(config.esn.keys()) != sorted(ESN_FIELDS):
        have = sorted(config.esn.keys()) if "esn" in config else None
        raise ConfigError(f"config.esn must hold exactly the fields {sorted(ESN_FIELDS)}, got "
                          f"{have}; see experiments/configs/esn_mackey_glass.py")
    if config.task.name != "forecast":
        raise ConfigError(f"config.task.name={config.task.name!r}: the ESN comparison needs a "
                          "'forecast' config")
    if not config.esn.ridge_alphas or any(a < 0 for a in config.esn.ridge_alphas):
        raise ConfigError(f"config.esn.ridge_alphas={config.esn.ridge_alphas!r} must be a "
                          "non-empty tuple of values >= 0")


def _nrmse(metrics: dict) -> dict:
    return {"nrmse_first": math.sqrt(metrics["mse_first"]),
            "nrmse_last": math.sqrt(metrics["mse_last"])}


def run(config, workdir: str, progress=lambda line: None) -> dict:
    """Fits the ESN, trains the config's model, writes the files of the module docstring and
    returns the comparison {"esn": test metrics, <model.cell>: test metrics, "horizon": H,
    "series": name}."""
    import jax

    import rnnlab
    from rnnlab.tasks import forecast
    from rnnlab.tasks import make_task
    from rnnlab.train import metrics as metrics_lib
    from rnnlab.train import train_and_evaluate, validate

    validate(config)
    validate_esn(config)
    task = make_task(config)
    e = config.esn
    cell = rnnlab.cells.make("esn", e.hidden, spectral_radius=e.spectral_radius,
                             input_scaling=e.input_scaling, bias_scaling=e.bias_scaling,
                             leak_rate=e.leak_rate, sparsity=e.sparsity)
    t0 = time.perf_counter()
    params = cell.init(jax.random.fold_in(jax.random.PRNGKey(config.seed), 7), 1)
    readout, alpha, scores = forecast.fit_readout(cell, params, task.data, tuple(e.ridge_alphas))
    fit_seconds = time.perf_counter() - t0
    progress(f"ESN: {e.hidden} units, ridge alpha {alpha:g} (validation MSE by alpha: "
             + ", ".join(f"{a:g}: {s:.4g}" for a, s in scores.items()) + f"), {fit_seconds:.1f} s")

    esn_dir = os.path.join(workdir, "esn")
    os.makedirs(esn_dir, exist_ok=True)
    metrics_lib.write_config(esn_dir, config)
    writer = metrics_lib.MetricsWriter(esn_dir)
    results = {}
    try:
        for split, name in (("validation", "eval"), ("test", "test")):
            results[name] = forecast.esn_metrics(cell, params, readout, task.data, split)
            record = writer.write({"step": 0, "split": name, **results[name],
                                   "ridge_alpha": alpha, "fit_seconds": fit_seconds})
            progress("ESN " + metrics_lib.progress_line(record, 0, task.metric))
    finally:
        writer.close()

    model_dir = os.path.join(workdir, config.model.cell)
    train_and_evaluate(config, model_dir, task=task, progress=progress)
    model_test = [r for r in metrics_lib.read_metrics(model_dir) if r["split"] == "test"][-1]
    keys = ("mse", "mse_first", "mse_last", "mse_naive", "mse_linear")
    comparison = {
        "horizon": config.task.horizon, "series": config.task.series,
        "esn": {**{k: results["test"][k] for k in keys}, **_nrmse(results["test"]),
                "ridge_alpha": alpha, "fit_seconds": fit_seconds},
        config.model.cell: {**{k: model_test[k] for k in keys}, **_nrmse(model_test)},
    }
    with open(os.path.join(workdir, "comparison.json"), "w") as f:
        json.dump(comparison, f, indent=2)
    return comparison


def main(argv):
    comparison = run(flags.FLAGS.config, flags.FLAGS.workdir,
                     progress=lambda s: print(s, flush=True))
    print(json.dumps(comparison, indent=2))


if __name__ == "__main__":
    cli.run("esn_forecast", main, define_flags)
