"""Gradient-flow plots (matplotlib, Agg backend). Each function takes plain dicts of arrays or
lists — e.g. what `gradient_flow` returns or what was read back from JSON — writes one PNG and
returns its path. Nothing is shown on screen.
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
                          floor: float = 1e-30) -> str:
    """One line per configuration: gradient norm (log scale) against lag k = T − t.

    curves: name -> norms [T+1] indexed by lag (e.g. `gradient_flow(...)["grad_norm_mean"]`, or
      exp of "log_grad_norm_mean" for the geometric mean), or name -> (lags, norms).
    rates: optional name -> fitted rate per step, shown in the legend.
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
        ax.semilogy(lags, norms, label=label, ls=("-", "--", ":")[(i // 10) % 3])  # > 10 lines
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
