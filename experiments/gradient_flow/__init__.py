"""The gradient-flow study: measures vanishing/exploding gradients across cells, initialisations,
sequence lengths and clipping, at initialisation and along short training runs.

    python -m experiments.gradient_flow --workdir=DIR \
        [--config=experiments/configs/gradient_flow.py[:smoke]] [--config.key=value ...]

Writes DIR/gradient_flow.json (every configuration's lag -> gradient-norm curve, fitted rate,
Lyapunov reference, spectra summary, final task metric, clip events), DIR/report.md (tables and
the findings, each decided from the measured numbers), DIR/*.png and the training runs in
DIR/runs/<name>[.seed<k>]. `run_study(config, workdir)` does all of it and returns the JSON's
content.

Parts: `sweep` (measurements at initialisation), `runs` (training runs through the engine),
`findings` (verdicts, thresholds from `config.findings`), `report` (plots and report.md),
`common` (what they share), `__main__` (the command line).
"""

from __future__ import annotations

import json
import os
import time

import jax

from experiments.gradient_flow.common import TRAIN_TASKS, json_default
from experiments.gradient_flow.findings import compute_findings
from experiments.gradient_flow.report import make_plots, write_report
from experiments.gradient_flow.runs import TrainRuns, train_config
from experiments.gradient_flow.sweep import measure_init_sweep
from rnnlab.config import ConfigError


def check_config(config) -> None:
    """ConfigError naming the first bad field of a study config."""
    from experiments.configs.gradient_flow import SWEEP_CELLS

    s, t, f = config.sweep, config.train, config.findings
    bad = sorted(set(s.cells) - set(SWEEP_CELLS))
    if bad:
        raise ConfigError(f"config.sweep.cells has unknown families {bad}; valid: "
                          f"{list(SWEEP_CELLS)}")
    if not s.seeds or not s.lengths:
        raise ConfigError("config.sweep.seeds and config.sweep.lengths need at least one value")
    if min(s.lengths) < 10 or s.relu_length < 10:
        raise ConfigError(f"sequence lengths must be >= 10 (sweep.lengths={s.lengths!r}, "
                          f"sweep.relu_length={s.relu_length!r})")
    if not 1 <= s.compare_lag <= max(s.lengths):
        raise ConfigError(f"config.sweep.compare_lag={s.compare_lag!r} must be in "
                          f"[1, max(sweep.lengths)={max(s.lengths)}]")
    if any(not 0 <= k <= max(s.lengths) for k in s.spectra_lags):
        raise ConfigError(f"config.sweep.spectra_lags={s.spectra_lags!r} must lie in "
                          f"[0, {max(s.lengths)}]")
    seeds = list(t.outcome_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"config.train.outcome_seeds={t.outcome_seeds!r} needs at least one "
                          "seed and no repeats, e.g. --config.train.outcome_seeds='(0, 1, 2)'")
    if not isinstance(t.workers, int) or t.workers < 1:
        raise ConfigError(f"config.train.workers={t.workers!r} must be an integer >= 1 "
                          "(processes training the runs; 1: this process)")
    for name, run in t.runs.items():
        if run.task not in TRAIN_TASKS:
            raise ConfigError(f"config.train.runs.{name}.task={run.task!r}; valid: "
                              f"{list(TRAIN_TASKS)}")
    for field in ("agree_rel", "agree_abs", "reference_radius", "vanish_factor"):
        if not f[field] > 0:
            raise ConfigError(f"config.findings.{field}={f[field]!r} must be > 0")


def run_study(config, workdir: str, *, progress=None,
              command: str = "experiments.gradient_flow.run_study(config, workdir)") -> dict:
    """Runs the whole study into `workdir`; returns what it writes to gradient_flow.json."""
    check_config(config)
    say = progress or (lambda line: None)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    with TrainRuns(config, workdir) as training:  # workers > 1: training starts now
        entries = measure_init_sweep(config, say)
        t1 = time.perf_counter()
        runs, train_entries = training.results(say)
    t2 = time.perf_counter()
    entries += train_entries
    findings, derived = compute_findings(config, entries, runs)
    result = {"configurations": entries, "runs": runs, "findings": findings, **derived,
              "config": config.to_dict(), "device": f"{jax.devices()[0].platform} "
              f"({os.cpu_count()} CPUs visible)", "command": command}
    result["plots"] = make_plots(config, entries, runs, derived, workdir)
    workers = config.train.workers
    result.update(sweep_time_s=t1 - t0, train_time_s=t2 - (t0 if workers > 1 else t1),
                  train_workers=workers,
                  wall_time_s=time.perf_counter() - t0)
    with open(os.path.join(workdir, "gradient_flow.json"), "w") as f:
        json.dump(result, f, indent=1, allow_nan=False, default=json_default)
    write_report(config, result, os.path.join(workdir, "report.md"))
    return result


__all__ = ["check_config", "compute_findings", "run_study", "train_config"]
