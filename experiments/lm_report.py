"""An LM run's figures for docs/results: validation perplexity (or bpc) per epoch with published
values drawn as lines, the gradient norm against lag over training (runs with
`diagnostics.every`), a summary.json, and a copy of metrics.jsonl.

    python -m experiments.lm_report --workdir=runs/ptb_small --out=docs/results/ptb_zaremba_small \
        --published="paper valid=120.7,paper test=114.5,TF tutorial valid=121.4,TF tutorial test=115.9"
"""

from __future__ import annotations

import json
import os
import shutil

from absl import app, flags

from rnnlab.diagnostics import plots
from rnnlab.train.metrics import read_metrics



def define_flags() -> None:
    """Defined only when run as a program, so importing this module (tests) never collides
    with another entry point's flags."""
    flags.DEFINE_string("workdir", None, "the run's workdir (metrics.jsonl, config.json)")
    flags.DEFINE_string("out", None, "output folder")
    flags.DEFINE_string("published", "", "label=value,... reference lines")
    flags.DEFINE_float("wall_minutes", 0.0, "the run's wall time, recorded in summary.json")


def parse_published(text: str) -> dict:
    """'paper valid=120.7,paper test=114.5' -> {'paper valid': 120.7, 'paper test': 114.5}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        label, sep, value = item.rpartition("=")
        try:
            out[label.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--published: {item!r} is not label=number") from None
        if not sep or not label.strip():
            raise ValueError(f"--published: {item!r} is not label=number")
    return out


def gradient_flow_curves(records: list, max_curves: int = 8) -> dict:
    """'step N' -> (lags, mean gradient norms) from a run's gradient_flow records: at most
    `max_curves` of them, evenly spaced over training, the first and the last included."""
    flow = [r for r in records if r["split"] == "gradient_flow"]
    if len(flow) > max_curves:
        picks = {round(i * (len(flow) - 1) / (max_curves - 1)) for i in range(max_curves)}
        flow = [r for i, r in enumerate(flow) if i in picks]
    curves = {}
    for r in flow:
        lags = sorted(int(k.split("@")[1]) for k in r if k.startswith("grad_norm@"))
        curves[f"step {r['step']}"] = (lags, [r[f"grad_norm@{k}"] for k in lags])
    return curves


def report(workdir: str, out: str, published: dict, wall_minutes: float = 0.0) -> dict:
    records = read_metrics(workdir)
    if not records:
        raise ValueError(f"{workdir} has no metrics.jsonl records: not a run directory")
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    per_epoch = int(config["train"]["eval_every"])
    metric = "perplexity" if any("perplexity" in r for r in records) else "bpc"
    evals = [r for r in records if r["split"] == "eval"]
    tests = [r for r in records if r["split"] == "test"]
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(workdir, "metrics.jsonl"), os.path.join(out, "metrics.jsonl"))
    summary = {
        "config": f"{config['task']['corpus']}, {config['model']['num_layers']}x"
                  f"{config['model']['hidden']} {config['model']['cell']}",
        "metric": metric, "steps": max(r["step"] for r in records),
        "train_steps": int(config["train"]["steps"]),
        "valid_per_epoch": [r[metric] for r in evals],
        "valid_final": evals[-1][metric] if evals else None,
        "test": tests[-1][metric] if tests else None, "published": published,
        "wall_minutes": wall_minutes or None}
    if evals:
        plots.plot_training_curves(
            {"rnnlab valid": {"step": [r["step"] / per_epoch for r in evals],
                              metric: [r[metric] for r in evals]}},
            os.path.join(out, f"valid_{metric}.png"), metric=metric, hlines=published,
            xlabel="epoch", title=f"Validation {metric} per epoch ({summary['config']})")
    curves = gradient_flow_curves(records)
    if curves:
        plots.plot_grad_norm_vs_lag(
            curves, os.path.join(out, "grad_norm_vs_lag.png"),
            rates={f"step {r['step']}": r["rate"] for r in records
                   if r["split"] == "gradient_flow" and r.get("rate") is not None},
            title="Gradient norm through the BPTT window, first LSTM layer, over training")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv):
    del argv
    f = flags.FLAGS
    if not f.workdir or not f.out:
        raise app.UsageError("--workdir and --out are required")
    try:
        summary = report(f.workdir, f.out, parse_published(f.published), f.wall_minutes)
    except (OSError, ValueError) as e:
        raise SystemExit(f"lm_report: {e}") from None
    print(json.dumps({k: v for k, v in summary.items() if k != "valid_per_epoch"}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
