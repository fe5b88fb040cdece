"""The grouped half of `experiments.compare`: runs that differ only in their seed become one
group; per group and metric the statistics of rnnlab.stats (Student's t intervals over seeds,
steps to a threshold, Welch tests against a baseline group); the banded plots; report.md.

Only complete runs enter a statistic; incomplete ones are listed with the step they reached.
"""

from __future__ import annotations

import csv
import math
import os
import re

from rnnlab import stats
from rnnlab.train import runs as runs_lib

# bookkeeping keys of train/eval records: not outcomes
_SKIP = {"steps_per_sec", "learning_rate", "nonfinite_count", "average_start",
         "averaged_iterates", "finite", "clipped"}
_MAXIMIZE = ("acc", "bleu", "f1", "auc", "precision", "recall")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def series(run: dict, split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in the run's `split` records (non-numbers left out)."""
    pts = [(r["step"], float(r[key])) for r in run["metrics"]
           if r.get("split") == split and isinstance(r.get(key), (int, float))
           and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_names(runs: list[dict], requested: list[str] | None) -> list[str]:
    """SPLIT.KEY of the outcomes to report: `requested`, or every eval key plus train.loss."""
    present = {f"{r['split']}.{k}" for run in runs for r in run["metrics"]
               for k, v in r.items() if k not in ("step", "split") and isinstance(v, float)}
    if requested:
        unknown = [m for m in requested if m not in present]
        if unknown:
            raise ValueError(f"--metrics: {unknown[0]!r} is in no run's metrics.jsonl; "
                             f"present: {', '.join(sorted(present))}")
        return list(requested)
    names = sorted(m for m in present if m.startswith("eval.")
                   and m.split(".", 1)[1] not in _SKIP)
    return names + (["train.loss"] if "train.loss" in present else [])


def _maximize(metric: str) -> bool:
    return any(s in metric.split(".", 1)[1].lower() for s in _MAXIMIZE)


def _seed(run):
    return run["config"].get(runs_lib.SEED_KEY)


def _complete(group):
    return [r for r in group["runs"] if r["status"] == "complete"]


def _keys(keys, group) -> dict:
    """The group's varying-key values as text ('' stays empty in CSVs; markdown shows '')."""
    return {k: "" if v == "" else runs_lib.format_value(v) for k, v in group["values"].items()}


def _left_out(group) -> str:
    return "; ".join(f"seed {_seed(r)}: step {r['last_step']}/{r['total_steps']}"
                     for r in group["runs"] if r["status"] != "complete")


def status_rows(groups) -> list[dict]:
    return [{"run": r["name"], "group": g["label"], "seed": _seed(r), "last_step": r["last_step"],
             "train_steps": r["total_steps"],
             "status": r["status"] if r["status"] == "complete" else
             "INCOMPLETE (still running or cut short): left out of the statistics"}
            for g in groups for r in g["runs"]]


def metric_rows(keys, groups, metric: str) -> list[dict]:
    """Per group: the final and the best value of `metric` over the complete seeds."""
    split, key = metric.split(".", 1)
    pick = max if _maximize(metric) else min
    rows = []
    for g in groups:
        final, best = [], []
        for r in _complete(g):
            _, values = series(r, split, key)
            if values:
                final.append(values[-1])
                finite = [v for v in values if math.isfinite(v)]
                best.append(pick(finite) if finite else math.nan)
        row = {**_keys(keys, g), "n": len(final), "runs": len(g["runs"]),
               "left_out": _left_out(g)}
        for name, values in (("final", final), ("best", best)):
            s = stats.summary(values)
            row.update({f"{name}_{k}": s[k] for k in ("mean", "std", "lo", "hi")})
        rows.append(row)
    return rows


def solve_rows(keys, groups, cond: stats.Condition) -> list[dict]:
    rows = []
    for g in groups:
        per_seed = [stats.steps_to_threshold(*series(r, cond.split, cond.key), cond)
                    for r in _complete(g)]
        med, solved, n = stats.median_steps(per_seed)
        last = max((r["last_step"] for r in _complete(g)), default=None)
        rows.append({**_keys(keys, g), "median_steps": (f"> {last}" if med == math.inf
                                                        else _fmt(med)),
                     "solved": f"{solved}/{n}",
                     "per_seed": " ".join("-" if s is None else str(s) for s in per_seed),
                     "left_out": _left_out(g)})
    return rows


def find_baseline(groups, specs: list[str]) -> dict:
    """The one group whose config matches every KEY=VALUE of `specs`."""
    conds = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --baseline {spec!r}: expected KEY=VALUE, e.g. "
                             "--baseline=model.cell=lstm")
        conds.append((key.strip(), value.strip()))
    found = [g for g in groups
             if all(runs_lib.matches(g["runs"][0]["config"].get(k), v) for k, v in conds)]
    if len(found) != 1:
        labels = "; ".join(g["label"] for g in (found or groups))
        what = "matches no group" if not found else f"matches {len(found)} groups"
        raise ValueError(f"--baseline={','.join(specs)} {what} ({labels}); give KEY=VALUE "
                         "(repeatable) that picks exactly one")
    return found[0]


def baseline_rows(keys, groups, base, metrics: list[str]) -> list[dict]:
    """Each group's final value of each metric against the baseline group's."""
    rows = []
    for metric in metrics:
        split, key = metric.split(".", 1)

        def finals(g):
            return [series(r, split, key)[1][-1] for r in _complete(g)
                    if series(r, split, key)[1]]
        for g in groups:
            if g is base:
                continue
            d = stats.compare_to_baseline(finals(g), finals(base))
            rows.append({**_keys(keys, g), "metric": f"{metric} (final)",
                         "n": len(finals(g)), "n_baseline": len(finals(base)),
                         "diff": d["diff"], "welch_p": d["p"],
                         "intervals_overlap": {None: "", True: "yes", False: "no"}[d["overlap"]],
                         "verdict": d["verdict"]})
    return rows


def _gf_init(run) -> dict | None:
    """The run's gradient_flow record at step 0 (None without diagnostics)."""
    recs = [r for r in run["metrics"] if r.get("split") == "gradient_flow" and r["step"] == 0]
    return recs[0] if recs else None


def _gf_final(run) -> dict | None:
    """The run's gradient_flow record at its last training step, if it logged one there."""
    recs = [r for r in run["metrics"] if r.get("split") == "gradient_flow"
            and r["step"] == run["last_step"] and r["step"] > 0]
    return recs[0] if recs else None


def _lags(rec) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in rec if re.fullmatch(r"grad_norm@\d+", k))


def gradient_rows(keys, groups) -> list[dict]:
    """Per group with step-0 gradient_flow records: fitted rate and norms at each lag."""
    rows = []
    for g in groups:
        recs = [rec for r in _complete(g) if (rec := _gf_init(r))]
        if not recs:
            continue
        s = stats.summary([r.get("rate") for r in recs])
        row = {**_keys(keys, g), "n": s["n"], "rate_mean": s["mean"], "rate_lo": s["lo"],
               "rate_hi": s["hi"]}
        for k in _lags(recs[0]):
            row[f"grad_norm@{k}"] = stats.summary([r.get(f"grad_norm@{k}") for r in recs])["mean"]
        rows.append(row)
    return rows


def plot_groups(keys, groups, metrics, outcome, out) -> list[str]:
    """The banded learning curves, gradient flow at init and after training, and the outcome
    against the rate at init."""
    import numpy as np

    from rnnlab.diagnostics import plots

    written = []
    for metric in metrics:
        split, key = metric.split(".", 1)
        curves, extra = {}, {}
        for g in groups:
            done = [series(r, split, key) for r in _complete(g)]
            done = [c for c in done if c[0]]
            partial = [c for r in g["runs"] if r["status"] != "complete"
                       and (c := series(r, split, key))[0]]
            if done or partial:
                step, mean, lo, hi = stats.mean_curve(done)
                name = f"{g['label']} (n={len(done)})"
                curves[name] = {"step": step, "mean": mean, "lo": lo, "hi": hi}
                extra[name] = partial
        if curves:
            written.append(plots.plot_mean_curves(
                curves, os.path.join(out, f"curves_{_file(metric)}.png"), ylabel=metric,
                title=f"{metric}; dotted: incomplete runs (not in the mean)",
                logy=not _maximize(metric), band_label=f"95% {stats.INTERVAL} interval"))
    osplit, okey = outcome.split(".", 1) if outcome else (None, None)
    points = {}
    for name, pick, when in (("init", _gf_init, "at step 0"),
                             ("final", _gf_final, "after training")):
        norms, bands, rates = {}, {}, {}
        for g in groups:
            recs = [(r, rec) for r in _complete(g) if (rec := pick(r))]
            if not recs:
                continue
            lags = _lags(recs[0][1])
            logs = np.array([[math.log(max(rec[f"grad_norm@{k}"] or 0.0, 1e-300)) for k in lags]
                             for _, rec in recs])  # geometric mean over seeds, band on log scale
            ci = [stats.t_interval(col) for col in logs.T]
            norms[g["label"]] = (lags, np.exp(logs.mean(0)))
            bands[g["label"]] = (np.exp([c[0] for c in ci]), np.exp([c[1] for c in ci]))
            rate = stats.summary([rec.get("rate") for _, rec in recs])
            rates[g["label"]] = rate["mean"]
            ys = [series(r, osplit, okey)[1][-1] for r, _ in recs if outcome
                  and series(r, osplit, okey)[1]]
            if ys and name == "init":
                y = stats.summary(ys)
                points[f"{g['label']} (n={y['n']})"] = {
                    "x": rate["mean"], "x_lo": rate["lo"], "x_hi": rate["hi"], "y": y["mean"],
                    "y_lo": y["lo"], "y_hi": y["hi"]}
        if norms:
            written.append(plots.plot_grad_norm_vs_lag(
                norms, os.path.join(out, f"grad_flow_{name}.png"), rates=rates, bands=bands,
                title=f"gradient norm vs lag {when} (geometric mean over seeds, 95% band)"))
    if points:
        written.append(plots.plot_outcome_vs_rate(
            points, os.path.join(out, "outcome_vs_rate.png"),
            xlabel="fitted gradient rate λ at init (per step; log-norm slope against lag)",
            ylabel=f"final {outcome}", logy=not _maximize(outcome),
            title=f"final {outcome} against the gradient rate at init (mean ± 95% interval)"))
    return written


def _file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def _fmt_interval(row, name) -> str:
    m, s, lo, hi = (row[f"{name}_{k}"] for k in ("mean", "std", "lo", "hi"))
    if not math.isfinite(m):
        return "-"
    text = f"{_fmt(m)}" + (f" ± {_fmt(s)}" if math.isfinite(s) else "")
    return text + (f" [{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else " (1 seed: no interval)")


def plan(runs, *, conds=(), baseline=(), metrics=None) -> dict:
    """Groups `runs` (each with a config) and checks the request against them (before any
    output is written): {"runs", "keys", "groups", "metrics", "base", "conds"}."""
    keys, groups = runs_lib.group_runs(runs)
    metrics = metric_names(runs, metrics)
    base = find_baseline(groups, list(baseline)) if baseline else None
    for c in conds:
        if not any(series(r, c.split, c.key)[0] for r in runs):
            raise ValueError(f"--solve={c}: no run logs {c.split}.{c.key}")
    return {"runs": runs, "keys": keys, "groups": groups, "metrics": metrics, "base": base,
            "conds": list(conds)}


def write_report(p: dict, unconfigured, out, *, command=None) -> list[str]:
    """Writes report.md, its CSVs and plots for the `plan` p into `out`."""
    runs, keys, groups, metrics, base, conds = (
        p[k] for k in ("runs", "keys", "groups", "metrics", "base", "conds"))
    written, md = [], []
    short = runs_lib.short_names(keys)
    kcols = list(keys)
    n_complete = sum(r["status"] == "complete" for r in runs)
    md.append(f"# Comparison of {len(runs)} runs in {len(groups)} groups\n")
    if command:
        md.append(f"Made by `{command}`.\n")
    md.append(f"Varying config keys (the groups): {', '.join(f'`{k}`' for k in keys) or 'none'}; "
              "runs that differ only in `seed` form one group. Intervals: 95% "
              f"{stats.INTERVAL} interval of the mean over seeds (mean ± t·s/√n, "
              "so with 3 seeds ±4.30 s/√3); `± s` is the standard deviation over seeds. "
              f"Statistics use complete runs only ({n_complete} of {len(runs)}).\n")
    incomplete = [r for r in runs if r["status"] != "complete"]
    if incomplete:
        md.append("**Incomplete runs (still running or cut short), left out of every "
                  "statistic:** " + "; ".join(f"`{r['name']}` at step {r['last_step']} of "
                                              f"{r['total_steps']}" for r in incomplete) + "\n")
    dups = [g["label"] for g in groups
            if len({repr(_seed(r)) for r in g["runs"]}) < len(g["runs"])]
    if dups:
        md.append("**Warning: a seed occurs twice in** " + "; ".join(dups) + " (the same "
                  "config run twice; both copies are counted)\n")
    if unconfigured:
        md.append("Runs without config.json (not grouped): "
                  + ", ".join(f"`{r['name']}`" for r in unconfigured) + "\n")

    def table(title, name, rows, csv_cols, md_rows=None, md_cols=None, note=""):
        path = os.path.join(out, f"{_file(name)}.csv")
        write_csv(path, rows, csv_cols)
        written.append(path)
        md.append(f"## {title}\n\n{note}{markdown(md_rows or rows, md_cols or csv_cols)}"
                  f"\n(CSV: [{os.path.basename(path)}]({os.path.basename(path)}))\n")

    srows = status_rows(groups)
    table("Runs", "status", srows, ["run", "group", "seed", "last_step", "train_steps", "status"])
    for metric in metrics:
        rows = metric_rows(keys, groups, metric)
        cols = kcols + ["n", "runs"] + [f"{a}_{b}" for a in ("final", "best")
                                        for b in ("mean", "std", "lo", "hi")] + ["left_out"]
        mrows = [{**{short[k]: r[k] or "''" for k in keys}, "seeds": f"{r['n']}/{r['runs']}",
                  "final: mean ± std [95% CI]": _fmt_interval(r, "final"),
                  "best: mean ± std [95% CI]": _fmt_interval(r, "best"),
                  "left out": r["left_out"]} for r in rows]
        mcols = [short[k] for k in keys] + ["seeds", "final: mean ± std [95% CI]",
                                             "best: mean ± std [95% CI]"]
        mcols += ["left out"] if any(r["left_out"] for r in rows) else []
        best = "max" if _maximize(metric) else "min"
        table(f"{metric}: final and best", f"metric_{metric}", rows, cols, mrows, mcols,
              f"final = the last logged value; best = the {best} over the run; seeds = "
              "complete/all.\n\n")
    for c in conds:
        rows = solve_rows(keys, groups, c)
        op = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[c.op]
        table(f"Steps to {c}", f"solve_{c.split}.{c.key}_{op}_{c.value:g}", rows,
              kcols + ["median_steps", "solved", "per_seed", "left_out"],
              [{**{short[k]: r[k] or "''" for k in keys}, **r} for r in rows],
              [short[k] for k in keys] + ["median_steps", "solved", "per_seed"],
              "The first logged step that meets the threshold, per seed ('-' = never); the "
              "median is over all complete seeds with an unsolved seed counted as never, so "
              "it reads '> last step' when half or more did not solve.\n\n")
    if base is not None:
        rows = baseline_rows(keys, groups, base, metrics)
        table(f"Against the baseline ({base['label']})", "baseline", rows,
              kcols + ["metric", "n", "n_baseline", "diff", "welch_p", "intervals_overlap",
                       "verdict"],
              [{**{short[k]: r[k] or "''" for k in keys}, **r} for r in rows],
              [short[k] for k in keys] + ["metric", "n", "n_baseline", "diff", "welch_p",
                                          "intervals_overlap", "verdict"],
              "diff = group mean − baseline mean of the final value. Resolved = Welch's "
              "two-sided t-test p < 0.05; the interval-overlap column is the stricter visual "
              "check. 'too few seeds' = fewer than 2 complete seeds on a side, or no spread at "
              "all: nothing can be said. With 2–3 seeds only large differences resolve.\n\n")
    grows = gradient_rows(keys, groups)
    if grows:
        gcols = kcols + ["n", "rate_mean", "rate_lo", "rate_hi"] + [
            c for c in grows[0] if c.startswith("grad_norm@")]
        table("Gradient flow at initialisation", "gradient_flow_init", grows, gcols,
              [{**{short[k]: r[k] or "''" for k in keys}, **r} for r in grows],
              [short[k] for k in keys] + gcols[len(kcols):],
              "From each run's step-0 `gradient_flow` record (config.diagnostics): rate = the "
              "fitted slope of log ‖∂L/∂h_{T−k}‖ against lag k (per step; < 0 vanishing), "
              "with its 95% interval over seeds; grad_norm@k = mean over seeds.\n\n")
    outcome = f"{conds[0].split}.{conds[0].key}" if conds else (metrics[0] if metrics else None)
    plots_written = plot_groups(keys, groups, metrics, outcome, out)
    written += plots_written
    if plots_written:
        md.append("## Plots\n")
        md += [f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in plots_written]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    return [path] + written
