"""Comparison of runs: per-run tables and overlays, and, for runs with a config.json, an ablation
report over seeds (groups, 95% intervals, steps to a threshold, tests against a baseline).

    python -m experiments.compare DIR1 DIR2 ... --out=OUT
    python -m experiments.compare 'runs/sweep/*' --out=OUT --solve='eval.mse<0.01' \
        --baseline=model.cell=lstm [--metrics=eval.mse,train.loss]
    python -m experiments.compare 'gs://BUCKET/sweeps/adding/*' --out=OUT ...

Directories may be local or gs:// (read through etils.epath; a quoted `*` pattern is expanded
by the same layer). Writes into the local directory OUT:
  runs.md, runs.csv                 one row per run: last train/eval values per key
  gradient_flow.md/.csv             one row per (run, configuration) of each gradient-flow study
  loss.png, grad_norm_vs_lag.png    every run's loss curves; every study's norm-vs-lag curve
and, when the training runs have config.json (experiments.train writes it):
  report.md                         the tables below and the plots, readable on GitHub
  status.csv                        each run: its group, seed, last step of train.steps, status
  metric_<SPLIT.KEY>.csv            per group: n seeds, mean, std, 95% interval of the final and
                                    of the best value (rnnlab.stats; Student's t over seeds)
  solve_<SPLIT.KEY>.csv             per group (--solve): median steps to the threshold, solved/n
  baseline.csv                      per group and metric (--baseline): difference, Welch p,
                                    interval overlap, resolved / not resolved / too few seeds
  gradient_flow_init.csv            per group: fitted rate and gradient norms at step 0
  curves_<SPLIT.KEY>.png            mean learning curve per group with its interval band
  grad_flow_init.png, _final.png    gradient norm against lag at init / after training, banded
  outcome_vs_rate.png               final metric against the fitted rate at init, per group
Runs are grouped by their configs: the keys whose values differ between runs are the table's
columns, and runs differing only in `seed` form one group. A run whose last logged step falls
short of its train.steps (still running, preempted, failed) is marked and left out of every
statistic. A directory that holds neither metrics.jsonl nor gradient_flow.json is an error
naming it.
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags

from experiments.compare_groups import markdown, plan, series, write_csv, write_report
from rnnlab import stats
from rnnlab.train import runs as runs_lib

def _table(path_md: str, path_csv: str, rows: list[dict], columns: list[str]) -> None:
    write_csv(path_csv, rows, columns)
    with open(path_md, "w") as f:
        f.write(markdown(rows, columns))


def load_run(workdir: str) -> dict:
    """{'name', 'dir', 'metrics', 'study', 'config', 'status', ...} (rnnlab.train.runs)."""
    return runs_lib.load_run(workdir)


def run_rows(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per run with the last logged value of every numeric key, per split."""
    rows, columns = [], ["run"]
    for run in runs:
        row = {"run": run["name"]}
        for rec in run["metrics"]:
            split = rec.get("split", "train")
            row[f"{split}/step"] = rec.get("step")
            for k, v in rec.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    row[f"{split}/{k}"] = v
        if run["metrics"]:
            rows.append(row)
            columns += [c for c in row if c not in columns]
    return rows, columns


STUDY_COLUMNS = ["run", "name", "phase", "cell", "rate", "lyapunov", "rel_diff",
                 "grad_norm_at_max_lag", "sigma_max", "pascanu_holds", "final_metric"]


def study_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        for entry in (run["study"] or {}).get("configurations", []):
            rows.append({"run": run["name"], **{k: entry.get(k) for k in STUDY_COLUMNS[1:]}})
    return rows


def plot_overlays(runs: list[dict], out: str) -> list[str]:
    from rnnlab.diagnostics import plots

    written = []
    curves = {}
    for run in runs:
        for split in ("train", "eval"):
            steps, values = series(run, split, "loss")
            if steps:
                curves[f"{run['name']} {split}"] = {"step": steps, "loss": values}
    if curves:
        written.append(plots.plot_training_curves(curves, os.path.join(out, "loss.png"),
                                                  title="loss of every run"))
    study = {f"{run['name']}: {e['name']} ({e.get('phase', '')})": (e["lags"], e["grad_norm"])
             for run in runs for e in (run["study"] or {}).get("configurations", [])
             if e.get("grad_norm")}
    if study:
        written.append(plots.plot_grad_norm_vs_lag(
            study, os.path.join(out, "grad_norm_vs_lag.png"), ylabel="mean ||dL/dh_t||"))
    return written


def compare(workdirs: list[str], out: str, *, solve: list[str] = (), baseline: list[str] = (),
            metrics: list[str] | None = None, command: str | None = None) -> list[str]:
    """Writes the comparison of `workdirs` into `out`; returns the files written."""
    if not workdirs:
        raise ValueError("no run directories given: python -m experiments.compare DIR1 DIR2 ...")
    conds = [stats.condition(s) for s in solve]  # bad input stops before any reading
    runs = [load_run(d) for d in runs_lib.expand_sources(list(workdirs))]
    trained = [r for r in runs if r["metrics"] and r["config"] is not None]
    if trained:  # ... and before any writing
        report = plan(trained, conds=conds, baseline=baseline, metrics=metrics)
    elif conds or baseline:
        raise ValueError("--solve/--baseline need training runs with config.json (written by "
                         "experiments.train); none of the directories has one")
    os.makedirs(out, exist_ok=True)
    written = []
    rows, columns = run_rows(runs)
    if rows:
        _table(os.path.join(out, "runs.md"), os.path.join(out, "runs.csv"), rows, columns)
        written += [os.path.join(out, "runs.md"), os.path.join(out, "runs.csv")]
    srows = study_rows(runs)
    if srows:
        _table(os.path.join(out, "gradient_flow.md"), os.path.join(out, "gradient_flow.csv"),
               srows, STUDY_COLUMNS)
        written += [os.path.join(out, "gradient_flow.md"), os.path.join(out, "gradient_flow.csv")]
    written += plot_overlays(runs, out)
    if trained:
        written += write_report(report, [r for r in runs if r["metrics"] and not r["config"]],
                                out, command=command)
    return written


def main(argv):
    f = flags.FLAGS
    command = shlex.join(["python", "-m", "experiments.compare", *sys.argv[1:]])
    try:
        written = compare(argv[1:], f.out, solve=f.solve, baseline=f.baseline,
                          metrics=f.metrics, command=command)
    except ValueError as e:
        sys.exit(f"compare: {e}")
    for path in written:
        print(path)


if __name__ == "__main__":
    # defined here, not at import: `import experiments.compare` must not collide with another
    # entry point's --out in the same process (tests import several)
    flags.DEFINE_string("out", "compare", "Output directory (local).")
    flags.DEFINE_multi_string("solve", [], "SPLIT.METRIC<VALUE (or <=, >, >=; repeatable): "
                              "report the steps each group needs to reach it.")
    flags.DEFINE_multi_string("baseline", [], "KEY=VALUE (repeatable, together picking one "
                              "group): test every group's final metrics against it.")
    flags.DEFINE_list("metrics", None, "SPLIT.KEY outcomes to report (default: every eval "
                      "metric and train.loss).")
    app.run(main)
