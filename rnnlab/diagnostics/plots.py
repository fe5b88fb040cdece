"""Gradient-flow and comparison plots (matplotlib, Agg backend). Each function takes plain dicts
of arrays or lists — e.g. what `gradient_flow` returns or what was read back from JSON — writes
one PNG and returns its path. Nothing is shown on screen.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grad_norm_vs_lag(curves: dict, path: str, *, rates: dict | None = None,
                          title: str = "Gradient norm vs lag", ylabel: str = "‖∂L/∂h_{T−k}‖",
                          floor: float = 1e-30, bands: dict | None = None) -> str:
    """One line per configuration: gradient norm (log scale) against lag k = T − t.

    curves: name -> norms [T+1] indexed by lag (e.g. `gradient_flow(...)["grad_norm_mean"]`, or
      exp of "log_grad_norm_mean" for the geometric mean), or name -> (lags, norms).
    rates: optional name -> fitted rate per step, shown in the legend.
    bands: optional name -> (lo, hi) norms on the same lags, drawn as a shaded band (e.g. an
      interval over seeds).
    Values below `floor` (float32 underflow) are not drawn.
    """
    if not curves:
        raise ValueError("plot_grad_norm_vs_lag needs at least one curve")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, curve) in enumerate(curves.items()):
        if isinstance(curve, (tuple, list)) and len(curve) == 2:
            lags, norms = (np.asarray(c, float) for c in curve)
        else:
            norms = np.asarray(curve, float)
            lags = np.arange(norms.shape[-1])
        norms = np.where(norms > floor, norms, np.nan)
        label = name if not rates or name not in rates else f"{name} (λ={float(rates[name]):+.3f})"
        (line,) = ax.semilogy(lags, norms, label=label, ls=("-", "--", ":")[(i // 10) % 3],
                              marker="." if lags.size < 30 else None)  # > 10 lines: styles
        if bands and name in bands:
            lo, hi = (np.asarray(b, float) for b in bands[name])
            ax.fill_between(lags, np.where(lo > floor, lo, floor), np.where(hi > floor, hi, np.nan),
                            color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("lag k = T − t (steps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(curves) > 8 else 1)
    return _save(fig, path)


def plot_spectra(spectra: dict, path: str, *, title: str = "Singular values of ∂h_T/∂h_{T−k}"
                 ) -> str:
    """One panel per configuration: log σ_i of the Jacobian product against index i, one line
    per lag.

    spectra: name -> {"lags": [L], "log_sv": [L, D]} (e.g. `jacobian_spectra(...)` with
      "log_sv_mean", or `gradient_flow`'s "spectra_lags"/"log_sv_mean"); the keys "log_sv_mean"
      and "spectra_lags" are accepted too.
    """
    if not spectra:
        raise ValueError("plot_spectra needs at least one configuration")
    n = len(spectra)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, (name, sp) in zip(axes.flat, spectra.items()):
        lags = np.asarray(sp.get("lags", sp.get("spectra_lags")))
        log_sv = np.asarray(sp["log_sv"] if "log_sv" in sp else sp["log_sv_mean"], float)
        if log_sv.ndim == 3:
            log_sv = log_sv.mean(0)
        for k, row in zip(lags, log_sv):
            ax.plot(np.arange(1, row.shape[-1] + 1), row / np.log(10), label=f"k={int(k)}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("index i")
        ax.set_ylabel("log10 σ_i")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def plot_training_curves(runs: dict, path: str, *, metric: str = "loss", logy: bool = True,
                         title: str | None = None, hlines: dict | None = None,
                         xlabel: str = "step") -> str:
    """Training curves, one line per run, with gradient-clipping events marked.

    runs: name -> {"step": [N], metric: [N], and optionally "clipped": [N] bools (a step whose
      gradient was clipped, e.g. grad_norm > threshold) or "clip_steps": steps to mark}.
    Clip events are drawn as small ticks on the curve.
    hlines: optional label -> value, drawn as dashed horizontal reference lines (e.g. the
      published final values).
    """
    if not runs:
        raise ValueError("plot_training_curves needs at least one run")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, run in runs.items():
        if metric not in run or "step" not in run:
            raise ValueError(f"run {name!r} needs 'step' and {metric!r}; has {sorted(run)}")
        step = np.asarray(run["step"], float)
        y = np.asarray(run[metric], float)
        (line,) = ax.plot(step, y, label=name)
        if "clipped" in run:
            mark = np.asarray(run["clipped"], bool)
        elif "clip_steps" in run:
            mark = np.isin(step, np.asarray(run["clip_steps"], float))
        else:
            mark = np.zeros_like(step, bool)
        if mark.any():
            ax.plot(step[mark], y[mark], "|", color=line.get_color(), markersize=9,
                    label=f"{name}: clipped ({int(mark.sum())})")
    for i, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(float(value), ls="--", lw=1, color=f"C{(i + len(runs)) % 10}",
                   label=f"{label}: {float(value):g}")
    if logy and np.all([np.nanmin(np.asarray(r[metric], float)) > 0 for r in runs.values()]):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(title or f"Training {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_mean_curves(curves: dict, path: str, *, ylabel: str, title: str, logy: bool = True,
                     extra: dict | None = None, band_label: str = "95% interval") -> str:
    """Mean curves with interval bands, one colour per group.

    curves: name -> {"step": [N], "mean": [N], "lo": [N], "hi": [N]} (lo/hi may be NaN: no band).
    extra: optional name -> list of (steps, values) drawn thin and dotted in the group's colour
      (e.g. runs left out of the mean because they did not finish).
    """
    if not curves:
        raise ValueError("plot_mean_curves needs at least one curve")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    positive = True
    for i, (name, c) in enumerate(curves.items()):
        step, mean = np.asarray(c["step"], float), np.asarray(c["mean"], float)
        lo, hi = np.asarray(c["lo"], float), np.asarray(c["hi"], float)
        color = f"C{i % 10}"
        ax.plot(step, mean, color=color, label=name, ls=("-", "--", ":")[(i // 10) % 3])
        if np.isfinite(lo).any():
            ax.fill_between(step, lo, hi, color=color, alpha=0.2, lw=0)
        positive &= bool(np.all(mean[np.isfinite(mean)] > 0))
        for steps, values in (extra or {}).get(name, []):
            ax.plot(steps, values, color=color, ls=":", lw=0.8)
            positive &= bool(np.all(np.asarray(values, float) > 0))
    if logy and positive:
        ax.set_yscale("log")
        lows = [np.nanmin(np.asarray(c["mean"], float)) for c in curves.values()
                if np.isfinite(np.asarray(c["mean"], float)).any()]
        if lows:  # a band reaching below 0 would swallow the axis
            ax.set_ylim(bottom=0.3 * min(lows))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (mean over seeds, band: {band_label})" if band_label else title,
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_outcome_vs_rate(points: dict, path: str, *, xlabel: str, ylabel: str, title: str,
                         logy: bool = True, levels: dict | None = None) -> str:
    """One point per group with error bars in both directions.

    points: name -> {"x", "x_lo", "x_hi", "y", "y_lo", "y_hi"} (interval ends may be NaN).
    levels: label -> y of dashed horizontal reference lines (e.g. a baseline, a threshold).
    """
    if not points:
        raise ValueError("plot_outcome_vs_rate needs at least one point")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for i, (name, p) in enumerate(points.items()):
        x, y = float(p["x"]), float(p["y"])
        xerr = [[max(x - p["x_lo"], 0.0)], [max(p["x_hi"] - x, 0.0)]]
        yerr = [[max(y - p["y_lo"], 0.0)], [max(p["y_hi"] - y, 0.0)]]
        xerr = None if not np.isfinite(xerr).all() else xerr
        yerr = None if not np.isfinite(yerr).all() else yerr
        if logy and yerr is not None:
            yerr[0][0] = min(yerr[0][0], 0.9 * y)  # the log axis cannot show a bar below 0
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", color=f"C{i % 10}", capsize=4,
                    label=name)
    if logy and all(float(p["y"]) > 0 for p in points.values()):
        ax.set_yscale("log")
    ax.axvline(0.0, color="0.6", lw=0.8)
    for j, (label, level) in enumerate((levels or {}).items()):
        ax.axhline(level, color="0.4", lw=0.8, ls=("--", ":", "-.")[j % 3], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_rate_vs_radius(series: dict, path: str, *, crossing: float | None = None,
                        title: str = "Gradient growth rate vs spectral radius") -> str:
    """Fitted rates (dots) and the Lyapunov reference (lines) against the spectral radius.

    series: label -> {"radius", "rate", "lyapunov"} (lists of the same length) and "length"
      (the sequence length T, shown in the legend).
    crossing: optional radius where the rate crosses zero, drawn as a dotted vertical line.
    """
    if not series:
        raise ValueError("plot_rate_vs_radius needs at least one series")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (label, s) in enumerate(series.items()):
        ax.plot(s["radius"], s["lyapunov"], "-", color=f"C{i}",
                label=f"{label} Lyapunov (T={s['length']})")
        ax.plot(s["radius"], s["rate"], "o", color=f"C{i}", label=f"{label} fitted rate")
    ax.axhline(0, color="k", lw=0.8)
    if crossing is not None:
        ax.axvline(crossing, color="C1", ls=":", label=f"ReLU crossing ≈ {crossing:.2f}")
    ax.set_xlabel("spectral radius of W_hh (Gaussian)")
    ax.set_ylabel("rate per step (log-norm slope)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
