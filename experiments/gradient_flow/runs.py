"""Training runs through the engine (`config.train.runs`): each trained by
`rnnlab.train.train_and_evaluate` on the adding or copy task, with its gradient flow measured at
initialisation and after training on a validation batch."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time

import jax
import numpy as np

from experiments.cli import prepare_process
from experiments.gradient_flow.common import as_float, long_lag, sequence_length
from rnnlab import diagnostics as D
from rnnlab.data import synthetic
from rnnlab.tasks import make_task
from rnnlab.train import NonFiniteError, train_and_evaluate
from rnnlab.train.metrics import read_metrics
from rnnlab.train.optim import make_optimizer
from rnnlab.train.state import create_state


def train_config(config, name: str):
    """The training-engine config of run `name` (from experiments/configs/<task>.py)."""
    t, run = config.train, config.train.runs[name]
    c = importlib.import_module(f"experiments.configs.{run.task}").get_config()
    c.seed = config.seed
    c.task.length = (t.outcome_length if run.outcome else
                     t.adding_length if run.task == "adding" else t.copy_length)
    c.task.batch_size, c.task.eval_batches, c.model.hidden = (
        (t.outcome_batch_size, t.outcome_eval_batches, t.outcome_hidden) if run.outcome else
        (t.batch_size, t.eval_batches, t.hidden))
    if run.outcome:
        c.task.marks = t.outcome_marks
    c.model.cell, c.model.cell_kwargs = run.cell, run.cell_kwargs
    c.optim.name, c.optim.lr, c.optim.clip = run.optim, run.lr, run.clip
    c.optim.clip_value = run.clip_value
    c.train.steps = t.outcome_steps if run.outcome else t.steps
    c.train.log_every = t.outcome_log_every if run.outcome else t.log_every
    c.train.eval_every = t.eval_every
    c.train.nonfinite = "stop"
    seq = sequence_length(run.task, c.task.length)
    c.diagnostics.every, c.diagnostics.max_samples = t.diagnostics_every, t.measure_samples
    c.diagnostics.lags = (1, 10, seq)
    c.checkpoint.every_steps, c.checkpoint.every_secs = 0, 0.0  # only the final one
    c.checkpoint.keep, c.checkpoint.keep_best, c.checkpoint.async_save = 1, False, False
    return c


def _flow_entry(name, run, phase, flow, seq, extra):
    curve = np.asarray(flow["grad_norm_mean"], float)
    log_curve = np.asarray(flow["log_grad_norm_mean"], float)
    e = {"name": f"{name} ({phase})", "run": name, "group": run.task, "phase": phase,
         "cell": run.cell, "cell_kwargs": run.cell_kwargs, "optim": run.optim,
         "clip": run.clip if run.clip == "none" else f"{run.clip}@{run.clip_value:g}",
         "length": seq, "inputs": f"{run.task} validation batch", "lags": list(range(seq + 1)),
         "grad_norm": [as_float(v) for v in curve],
         "log_grad_norm": [as_float(v) for v in log_curve],
         "rate": as_float(flow["rate"]), "lyapunov": as_float(flow["lyapunov"]),
         "rel_diff": (as_float(abs(flow["rate"] - flow["lyapunov"]) / abs(flow["lyapunov"]))
                      if np.isfinite(flow["lyapunov"]) and flow["lyapunov"] != 0 else None),
         "finite": bool(flow["finite"]), "grad_norm_at_max_lag": as_float(np.exp(log_curve[-1])),
         "long_lag": long_lag(seq),
         "grad_norm_at_long_lag": as_float(np.exp(log_curve[long_lag(seq)])),
         **extra}
    if "pascanu" in flow:
        e["sigma_max"] = as_float(flow["pascanu"]["sigma_max"])
        e["pascanu_holds"] = bool(flow["pascanu"]["holds"])
    return e


def run_seeds(config, name: str) -> tuple:
    """The seeds run `name` is trained with: every `train.outcome_seeds` for an outcome run
    (its verdict is decided over them), `config.seed` otherwise."""
    return tuple(config.train.outcome_seeds) if config.train.runs[name].outcome else (
        config.seed,)


def run_dir(workdir: str, name: str, seed: int, seeds: tuple) -> str:
    """runs/<name> for a run's first seed, runs/<name>.seed<k> for its further seeds."""
    return os.path.join(workdir, "runs", name if seed == seeds[0] else f"{name}.seed{seed}")


def train_one(config, name: str, seed: int, workdir: str) -> tuple[dict, list[dict]]:
    """Trains run `name` with `seed` (a fresh run directory); returns (its summary, its
    init/trained gradient-flow entries)."""
    run, seeds = config.train.runs[name], run_seeds(config, name)
    config = config.copy_and_resolve_references()
    config.seed = seed
    cfg = train_config(config, name)
    if seed != seeds[0]:  # a further seed adds only its final metrics: no per-step records or
        cfg.diagnostics.every = 0  # diagnostics hook (neither changes the training itself)
        cfg.train.log_every = cfg.train.eval_every
    rundir = run_dir(workdir, name, seed, seeds)
    shutil.rmtree(rundir, ignore_errors=True)  # a fresh run, never a stale resume
    task = make_task(cfg)
    state0 = create_state(task, make_optimizer(cfg.optim, task.steps_per_epoch,
                                               cfg.train.steps), cfg.seed)
    batch = task.eval_batches()[0]
    seq = sequence_length(run.task, cfg.task.length)

    def measure(params):
        cell, cp, xs, carry = task.recurrent_probe(params, batch)
        return jax.device_get(D.gradient_flow(cell, cp, xs, carry=carry,
                                              max_samples=config.train.measure_samples))

    flow0 = measure(state0.params)
    t0 = time.perf_counter()
    status, final, trained = "ok", None, None
    try:
        result = train_and_evaluate(cfg, rundir, task=task)
        final, trained = result.eval_metrics, result.state.params
    except NonFiniteError as e:
        m = re.search(r"at step (\d+)", str(e))
        status = f"diverged (non-finite at step {m.group(1) if m else '?'})"
    seconds = time.perf_counter() - t0
    records = read_metrics(rundir)
    train_recs = [r for r in records if r["split"] == "train"]
    baseline = (synthetic.ADDING_BASELINE_MSE if run.task == "adding"
                else synthetic.copy_memory_baseline(cfg.task.length))
    summary = {"name": name, "seed": seed, "task": run.task, "cell": run.cell,
               "cell_kwargs": run.cell_kwargs, "optim": run.optim, "lr": run.lr,
               "clip": run.clip, "clip_value": run.clip_value, "length": seq,
               "steps": cfg.train.steps, "seconds": seconds, "status": status,
               "first_loss": as_float(train_recs[0]["loss"]) if train_recs else None,
               "metric": task.metric, "final_metric": None, "final_loss": None,
               "baseline_loss": baseline, "beats_baseline": False,
               "clip_events": int(sum(bool(r.get("clipped")) for r in train_recs)),
               "logged_steps": len(train_recs), "log_every": cfg.train.log_every,
               "outcome": bool(run.outcome), "workdir": rundir}
    if final is not None:
        summary["final_metric"] = as_float(final[task.metric])
        summary["final_loss"] = as_float(final["loss"])
        summary["beats_baseline"] = bool(np.isfinite(final["loss"])
                                         and final["loss"] < baseline)
        if not summary["beats_baseline"]:
            summary["status"] = "stalled (final loss >= baseline)"
    summary["curves"] = {
        "train": {"step": [r["step"] for r in train_recs],
                  "loss": [r["loss"] for r in train_recs],
                  "clipped": [bool(r.get("clipped")) for r in train_recs]},
        "gradient_flow": [r for r in records if r["split"] == "gradient_flow"],
        "eval": [r for r in records if r["split"] == "eval"]}
    extra = {k: summary[k] for k in ("final_metric", "final_loss", "clip_events", "status")}
    entries = [_flow_entry(name, run, "init", flow0, seq, extra)]
    if trained is not None and seed == seeds[0]:  # (a further seed's is not reported)
        entries.append(_flow_entry(name, run, "trained", measure(trained), seq, extra))
    return summary, entries


class TrainRuns:
    """Every `config.train.runs` entry, each with its seeds (`run_seeds`), trained by
    `train_one`: in `train.workers` spawned processes, started on entering (so the caller can
    measure the sweep meanwhile), or in this process at `results` when `workers` is 1.

        with TrainRuns(config, workdir) as pool:
            ...
            runs, entries = pool.results(say)
    """

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir
        self.jobs = [(name, seed) for name in config.train.runs
                     for seed in run_seeds(config, name)]
        self._pool, self._futures = None, {}

    def __enter__(self):
        if self.config.train.workers > 1 and self.jobs:
            import concurrent.futures as cf
            import multiprocessing

            self._pool = cf.ProcessPoolExecutor(
                min(self.config.train.workers, len(self.jobs)),
                mp_context=multiprocessing.get_context("spawn"), initializer=prepare_process)
            self._futures = {job: self._pool.submit(train_one, self.config, *job,
                                                    self.workdir) for job in self.jobs}
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def results(self, say) -> tuple[list[dict], list[dict]]:
        """(one summary per run, with its further seeds under "seed_runs"; the init/trained
        entries of each run's first seed), in `config.train.runs` order."""
        done = {}
        for job in self.jobs:
            if self._pool is None:
                done[job] = train_one(self.config, *job, self.workdir)
            else:
                done[job] = self._futures[job].result()
            s, seeds = done[job][0], run_seeds(self.config, job[0])
            label = s["name"] + (f" seed {s['seed']}" if len(seeds) > 1 else "")
            # a further seed logs no per-step records, so it has no clip count to show
            clips = f"{s['clip_events']} clip events, " if s["seed"] == seeds[0] else ""
            say(f"train {label:30s} {s['status']}: {s['metric']} {s['final_metric']}, "
                f"{clips}{s['seconds']:.1f}s")
        summaries, entries = [], []
        for name in self.config.train.runs:
            seeds = run_seeds(self.config, name)
            summary, first_entries = done[(name, seeds[0])]
            summary["seed_runs"] = [_seed_record(done[(name, k)]) for k in seeds]
            summaries.append(summary)
            entries += first_entries
        return summaries, entries


def _seed_record(result) -> dict:
    """What the outcome verdict needs of one seed's run."""
    s, es = result
    init = [e for e in es if e["phase"] == "init"]
    return {"seed": s["seed"], "status": s["status"], "final_loss": s["final_loss"],
            "final_metric": s["final_metric"], "seconds": s["seconds"], "workdir": s["workdir"],
            "rate_init": init[0]["rate"] if init else None}
