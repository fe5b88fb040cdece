"""Side-by-side comparison of runs: tables (markdown + CSV) and overlay plots.

    python -m experiments.compare DIR1 DIR2 ... --out=OUT

Reads each run's `metrics.jsonl` (training runs) and/or `gradient_flow.json` (gradient-flow
studies) and writes
  OUT/runs.md, OUT/runs.csv                 one row per run: final train/eval values per key
  OUT/gradient_flow.md, OUT/gradient_flow.csv  one row per (run, configuration) of each study
  OUT/loss.png                              train (solid) and eval (dashed) loss against step
  OUT/grad_norm_vs_lag.png                  log gradient norm against lag, every configuration
A directory that holds neither file is an error naming it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys

from absl import app, flags



def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def _table(path_md: str, path_csv: str, rows: list[dict], columns: list[str]) -> None:
    with open(path_csv, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(path_md, "w") as f:
        f.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        for r in rows:
            f.write("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |\n")


def load_run(workdir: str) -> dict:
    """{'name', 'metrics': [records], 'study': dict or None}; ValueError if nothing to read."""
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    study_path = os.path.join(workdir, "gradient_flow.json")
    if not os.path.exists(metrics_path) and not os.path.exists(study_path):
        raise ValueError(f"{workdir!r} holds neither metrics.jsonl nor gradient_flow.json; "
                         "pass the workdir of a training run or gradient-flow study")
    metrics = []
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = [json.loads(line) for line in f if line.strip()]
    study = None
    if os.path.exists(study_path):
        with open(study_path) as f:
            study = json.load(f)
    return {"name": os.path.basename(os.path.normpath(workdir)) or workdir, "dir": workdir,
            "metrics": metrics, "study": study}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if any(r["metrics"] for r in runs):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            for split, style in (("train", "-"), ("eval", "--")):
                pts = [(r["step"], r["loss"]) for r in run["metrics"]
                       if r.get("split") == split and isinstance(r.get("loss"), (int, float))]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=f"{run['name']} {split}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(os.path.join(out, "loss.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    curves = [(run["name"], e) for run in runs
              for e in (run["study"] or {}).get("configurations", []) if e.get("grad_norm")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (name, e) in enumerate(curves):
            ax.semilogy(e["lags"], e["grad_norm"], color=f"C{i % 10}",
                        ls=("-", "--", ":", "-.")[(i // 10) % 4],
                        label=f"{name}: {e['name']} ({e.get('phase', '')})")
        ax.set_xlabel("lag T - t")
        ax.set_ylabel("mean ||dL/dh_t||")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        written.append(os.path.join(out, "grad_norm_vs_lag.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def compare(workdirs: list[str], out: str) -> list[str]:
    """Writes the comparison of `workdirs` into `out`; returns the files written."""
    if not workdirs:
        raise ValueError("no run directories given: python -m experiments.compare DIR1 DIR2 ...")
    runs = [load_run(d) for d in workdirs]
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
    return written + plot_overlays(runs, out)


def main(argv):
    try:
        written = compare(argv[1:], flags.FLAGS.out)
    except ValueError as e:
        sys.exit(f"compare: {e}")
    for path in written:
        print(path)


if __name__ == "__main__":
    # defined here, not at import: `import experiments.compare` must not collide with another
    # entry point's --out in the same process (tests import several)
    flags.DEFINE_string("out", "compare", "Output directory.")
    app.run(main)
