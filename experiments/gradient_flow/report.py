"""The study's plots (through `rnnlab.diagnostics.plots`) and its report.md."""

from __future__ import annotations

import os

import numpy as np

from experiments.gradient_flow.common import TRAIN_TASKS, fmt_norm, fmt_rate, where
from rnnlab.data.synthetic import ADDING_BASELINE_MSE
from rnnlab.diagnostics import plots


def _curve(e):
    return np.exp(np.asarray([np.nan if v is None else v for v in e["log_grad_norm"]], float))


def _rate_series(sweep) -> dict:
    """{"tanh"/"ReLU": radius, fitted rate and Lyapunov exponent of the Gaussian-W_hh sweep at
    the family's longest length}."""
    out = {}
    for family, label in (("rnn_tanh", "tanh"), ("rnn_relu", "ReLU")):
        pts = sorted(((e["radius"], e["rate"], e["lyapunov"], e["length"]) for e in sweep
                      if e["cell"] == family and e.get("init") == "spectral"
                      and e["length"] == max(x["length"] for x in sweep
                                             if x["cell"] == family)))
        if pts:
            r, fit, ly, t = zip(*pts)
            out[label] = {"radius": r, "rate": fit, "lyapunov": ly, "length": t[0]}
    return out


def make_plots(config, entries, runs, derived, workdir) -> dict:
    sweep = where(entries, group="init_sweep")
    longest = max(config.sweep.lengths)
    out = {}
    main = [e for e in sweep if e["length"] == longest]
    if main:
        out["grad_norm_vs_lag"] = plots.plot_grad_norm_vs_lag(
            {e["label"]: _curve(e) for e in main}, os.path.join(workdir, "grad_norm_vs_lag.png"),
            rates={e["label"]: e["rate"] for e in main},
            title=f"Gradient norm vs lag at initialisation (T={longest}, geometric mean)")
    relu = where(sweep, cell="rnn_relu")
    if relu:
        out["relu_sweep"] = plots.plot_grad_norm_vs_lag(
            {e["label"]: _curve(e) for e in relu}, os.path.join(workdir, "relu_sweep.png"),
            rates={e["label"]: e["rate"] for e in relu},
            title=f"ReLU RNN: gradient norm vs lag (T={config.sweep.relu_length})")
    series = _rate_series(sweep)
    if series:
        out["rate_vs_radius"] = plots.plot_rate_vs_radius(
            series, os.path.join(workdir, "rate_vs_radius.png"),
            crossing=derived.get("relu_crossing"))
    spectra = {e["name"]: e["spectra"] for e in sweep if "spectra" in e
               and (e["cell"] != "rnn_tanh" or e.get("radius") in (0.9, 1.5)
                    or e.get("init") == "orthogonal")}
    if spectra:
        out["spectra"] = plots.plot_spectra(dict(list(spectra.items())[:9]),
                                            os.path.join(workdir, "spectra.png"))
    for task in TRAIN_TASKS:
        curves = {r["name"]: r["curves"]["train"] for r in runs
                  if r["task"] == task and r["curves"]["train"]["step"]}
        if curves:
            out[f"training_{task}"] = plots.plot_training_curves(
                curves, os.path.join(workdir, f"training_{task}.png"),
                title=f"{task}: train loss (ticks: clipped steps)")
    during = {r["name"]: {"step": [g["step"] for g in r["curves"]["gradient_flow"]],
                          "rate": [np.nan if g.get("rate") is None else g["rate"]
                                   for g in r["curves"]["gradient_flow"]]}
              for r in runs if r["curves"]["gradient_flow"]}
    if during:
        out["rate_during_training"] = plots.plot_training_curves(
            during, os.path.join(workdir, "rate_during_training.png"), metric="rate",
            logy=False, title="Fitted gradient rate during training (diagnostics hook)")
    points = {}
    for o in derived.get("outcome", []):  # the seeds' median and range
        if o["rate"] is None or o["final_mse"] is None:
            continue
        finite = [v for v in o["final_mse_seeds"] if v is not None]
        many = len(o["final_mse_seeds"]) > 1
        points[f"{o['run']} ({o['outcome']})"] = {
            "x": o["rate"], "y": o["final_mse"],
            "x_lo": o["rate_range"][0] if many else np.nan,
            "x_hi": o["rate_range"][1] if many else np.nan,
            "y_lo": min(finite) if many else np.nan, "y_hi": max(finite) if many else np.nan}
    if points:
        t = config.train
        out["outcome_vs_rate"] = plots.plot_outcome_vs_rate(
            points, os.path.join(workdir, "outcome_vs_rate.png"),
            xlabel="fitted gradient rate at initialisation (per step)",
            ylabel="final validation MSE",
            title=f"adding T={t.outcome_length}, {t.outcome_steps} steps: median of "
                  f"{len(t.outcome_seeds)} seeds (bars: their range)",
            levels={f"baseline {ADDING_BASELINE_MSE:.3f}": ADDING_BASELINE_MSE,
                    f"solved below {config.findings.solved_fraction:g} × baseline":
                    config.findings.solved_fraction * ADDING_BASELINE_MSE})
    pairs = {}
    for e in entries:
        if (e.get("run") and e["group"] == "adding"
                and where(entries, run=e["run"], phase="trained")):
            pairs[f"{e['run']} ({e['phase']})"] = _curve(e)
    if pairs:
        out["trained_vs_init"] = plots.plot_grad_norm_vs_lag(
            pairs, os.path.join(workdir, "trained_vs_init.png"),
            title="adding task: gradient norm vs lag at init and after training")
    return out


def write_report(config, result, path) -> None:
    entries, runs, findings = result["configurations"], result["runs"], result["findings"]
    s = config.sweep
    lines = ["# Gradient-flow study", "",
             f"Command: `{result['command']}`  ",
             f"Wall time: {result['wall_time_s']:.0f} s (sweep {result['sweep_time_s']:.0f} s, "
             f"training {result['train_time_s']:.0f} s"
             + (f" in {result['train_workers']} worker processes alongside the sweep"
                if result.get("train_workers", 1) > 1 else "")
             + f") on {result['device']}.", "",
             "Gradient norms are ‖∂L/∂h_{T−k}‖ for a last-step loss L = u·s_T (u a fixed random "
             "unit readout of the whole carry, [h, c] for an LSTM), averaged over the batch; the "
             "rate is the least-squares slope of the mean log-norm against lag k (negative: "
             "vanishing, positive: exploding), the Lyapunov reference the largest exponent of "
             "the same backward Jacobian product by QR iteration over the same lags.", "",
             "## Findings", ""]
    for f in findings:
        mark = {True: "**holds**", False: "**does not hold**", None: "measured"}[f["holds"]]
        lines += [f"- {f['title']} — {mark}. {f['text']}", ""]
    lines += ["## At initialisation", "",
              f"Gaussian inputs N(0, 1) [{s.batch}, T, {s.input_size}], hidden {s.hidden}, "
              f"means over seeds {list(s.seeds)}. Rates are fitted over lags T/10 … T − T/10 "
              "(fewer where a norm underflows float32); \"agrees\": every seed within 15% (or "
              f"0.01/step) of its Lyapunov exponent. ‖g‖@{s.compare_lag} (for T > "
              f"{s.compare_lag}) and ‖g‖@(T − T/10) are geometric means over batch and seeds "
              "(“<1e-37”: underflowed). σ_max and Pascanu's condition (γ·σ_max(W_hh) < 1, γ = 1) "
              "for Elman cells.", "",
              "| configuration | T | fitted rate | Lyapunov | rel. diff | agrees | "
              f"‖g‖@{s.compare_lag} | ‖g‖@(T − T/10) | σ_max(W_hh) | Pascanu holds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in where(entries, group="init_sweep"):
        lines.append(
            f"| {e['label']} | {e['length']} | {fmt_rate(e['rate'])} | {fmt_rate(e['lyapunov'])} | "
            f"{fmt_rate(e['rel_diff'], '{:.1%}')} | {'yes' if e['agrees'] else 'NO'} | "
            f"{fmt_norm(e['grad_norm_at_compare_lag'])} | {fmt_norm(e['grad_norm_at_long_lag'])} | "
            f"{fmt_rate(e.get('sigma_max'), '{:.3f}')} | "
            f"{'—' if 'pascanu_holds' not in e else ('yes' if e['pascanu_holds'] else 'no')} |")
    spectra = [e for e in entries if "spectra" in e]
    if spectra:
        lags = spectra[0]["spectra"]["lags"]
        lines += ["", "Singular values of ∂h_T/∂h_{T−k} (seed 0, log10, largest / smallest):", "",
                  "| configuration | " + " | ".join(f"k={k}" for k in lags) + " |",
                  "|---|" + "---|" * len(lags)]
        for e in spectra:
            sp = e["spectra"]
            cells_ = [f"{fmt_rate(a and a / np.log(10), '{:.2f}')} / "
                      f"{fmt_rate(b and b / np.log(10), '{:.2f}')}"
                      for a, b in zip(sp["log_sigma_max"], sp["log_sigma_min"])]
            lines.append(f"| {e['name']} | " + " | ".join(cells_) + " |")
    if runs:
        t = config.train
        lines += ["", "## Training runs", "",
                  f"Hidden {t.hidden}, batch {t.batch_size}, {t.steps} steps, adding T = "
                  f"{t.adding_length}, copy T = {t.copy_length} (sequences of T + 20); the "
                  "outcome runs' setting and seeds are in the next section, and this table "
                  "has their first seed. The "
                  "metric is the final validation MSE (adding) or recall accuracy (copy); "
                  f"baseline: adding MSE {ADDING_BASELINE_MSE:.3f}, copy cross-entropy "
                  "10·ln 8/(T + 20). Gradient norms at lag T − T/10 measured on "
                  f"{t.measure_samples} validation sequences at "
                  "initialisation and after training; clip events counted over the logged "
                  f"steps (every {t.log_every}; outcome runs: every {t.outcome_log_every}).",
                  "",
                  "| run | cell | optimiser, clip | status | metric | final loss (baseline) | "
                  "clip events | rate init → trained | ‖g‖@(T − T/10) init → trained |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            e0 = where(entries, run=r["name"], phase="init")
            e1 = where(entries, run=r["name"], phase="trained")
            rate = (f"{fmt_rate(e0[0]['rate'])} → {fmt_rate(e1[0]['rate']) if e1 else '—'}"
                    if e0 else "—")
            gn = (f"{fmt_norm(e0[0]['grad_norm_at_long_lag'])} → "
                  f"{fmt_norm(e1[0]['grad_norm_at_long_lag']) if e1 else '—'}") if e0 else "—"
            clip = r["clip"] if r["clip"] == "none" else f"{r['clip']} {r['clip_value']:g}"
            kw = f" ({r['cell_kwargs']})" if r["cell_kwargs"] else ""
            lines.append(
                f"| {r['name']} | {r['cell']}{kw} | {r['optim']} {r['lr']:g}, {clip} | "
                f"{r['status']} | {r['metric']} {fmt_norm(r['final_metric'])} | "
                f"{fmt_norm(r['final_loss'])} ({r['baseline_loss']:.3g}) | "
                f"{r['clip_events']}/{r['logged_steps']} | {rate} | {gn} |")
    outcome = result.get("outcome", [])
    if outcome:
        t, f = config.train, config.findings
        lines += ["", "## Outcome against gradient flow at initialisation", "",
                  f"The outcome runs: adding T = {t.outcome_length}, {t.outcome_steps} steps, "
                  f"hidden {t.outcome_hidden}, batch {t.outcome_batch_size}, marks "
                  f"{t.outcome_marks}, seeds {list(t.outcome_seeds)}. Each verdict is decided by "
                  "the median over the seeds of the final validation MSE. Solved: below "
                  f"{f.solved_fraction:g} × the baseline {ADDING_BASELINE_MSE:.3f}; at baseline: "
                  f"above {1 - f.baseline_margin:g} × it. Rate and ‖g‖ at lag T − T/10 at "
                  "initialisation, on the run's own validation inputs (rate: mean over the "
                  "seeds; ‖g‖: the first seed).", "",
                  "| run | cell | rate at init | ‖g‖@(T − T/10) at init | final MSE per seed | "
                  "median | outcome |",
                  "|---|---|---|---|---|---|---|"]
        for o in outcome:
            kw = f" ({o['cell_kwargs']})" if o["cell_kwargs"] else ""
            per_seed = ", ".join(f"{fmt_norm(v)}" for v in o["final_mse_seeds"])
            lines.append(f"| {o['run']} | {o['cell']}{kw} | {fmt_rate(o['rate'])} | "
                         f"{fmt_norm(o['grad_norm_at_long_lag'])} | {per_seed} | "
                         f"{fmt_norm(o['final_mse'])} | {o['outcome']} |")
    lines += ["", "## Plots", ""]
    captions = {
        "grad_norm_vs_lag": "Gradient norm against lag at initialisation, one line per "
                            "configuration (legend: fitted rate)",
        "rate_vs_radius": "Fitted rate (dots) and Lyapunov reference (lines) against the "
                          "spectral radius",
        "relu_sweep": "ReLU RNN radius sweep: vanishing below the crossing, exploding above",
        "spectra": "Singular values of the Jacobian product at chosen lags",
        "training_adding": "Adding task training loss, clip events marked",
        "training_copy": "Copy task training loss, clip events marked",
        "rate_during_training": "Fitted gradient rate measured every "
                                f"{config.train.diagnostics_every} steps during training",
        "trained_vs_init": "Adding task: gradient norm vs lag before and after training",
        "outcome_vs_rate": "Outcome runs: final validation MSE against the fitted gradient rate "
                           "at initialisation"}
    for key, p in result["plots"].items():
        lines += [f"### {captions.get(key, key)}", "", f"![{key}]({os.path.basename(p)})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
