"""The gradient-flow study: measures vanishing/exploding gradients across cells, initialisations,
sequence lengths and clipping, at initialisation and along short training runs.

    python -m experiments.gradient_flow --workdir=DIR \
        [--config=experiments/configs/gradient_flow.py[:smoke]] [--config.key=value ...]

Writes DIR/gradient_flow.json (every configuration's lag -> gradient-norm curve, fitted rate,
Lyapunov reference, spectra summary, final task metric, clip events), DIR/report.md (tables and
the headline findings, each decided from the measured numbers), DIR/*.png and the training runs
in DIR/runs/<name>. `run_study(config, workdir)` does all of it and returns the JSON's content.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

TRAIN_TASKS = ("adding", "copy")


def _agrees(rate, ref) -> bool:
    """The issue's criterion: within 15% of the reference, or 0.01/step near zero."""
    return bool(np.isfinite(rate) and np.isfinite(ref)
                and abs(rate - ref) <= max(0.15 * abs(ref), 0.01))


def _f(x):
    """A JSON-ready float (None for NaN/inf)."""
    x = float(x)
    return x if np.isfinite(x) else None


def check_config(config) -> None:
    """ValueError naming the first bad field of a study config."""
    s, t = config.sweep, config.train
    from experiments.configs.gradient_flow import SWEEP_CELLS

    bad = sorted(set(s.cells) - set(SWEEP_CELLS))
    if bad:
        raise ValueError(f"config.sweep.cells has unknown families {bad}; valid: "
                         f"{list(SWEEP_CELLS)}")
    if not s.seeds or not s.lengths:
        raise ValueError("config.sweep.seeds and config.sweep.lengths need at least one value")
    if min(s.lengths) < 10 or s.relu_length < 10:
        raise ValueError(f"sequence lengths must be >= 10 (sweep.lengths={s.lengths!r}, "
                         f"sweep.relu_length={s.relu_length!r})")
    if not 1 <= s.compare_lag <= max(s.lengths):
        raise ValueError(f"config.sweep.compare_lag={s.compare_lag!r} must be in "
                         f"[1, max(sweep.lengths)={max(s.lengths)}]")
    if any(not 0 <= k <= max(s.lengths) for k in s.spectra_lags):
        raise ValueError(f"config.sweep.spectra_lags={s.spectra_lags!r} must lie in "
                         f"[0, {max(s.lengths)}]")
    for name, run in t.runs.items():
        if run.task not in TRAIN_TASKS:
            raise ValueError(f"config.train.runs.{name}.task={run.task!r}; valid: "
                             f"{list(TRAIN_TASKS)}")


# --- measurements at initialisation ------------------------------------------------------------


def _inputs(s, seed, length):
    return jax.random.normal(jax.random.key(100 + seed), (s.batch, length, s.input_size))


def _long_lag(length: int) -> int:
    """The lag that stands for "long range": the end of the default fit window, T − T//10
    (the last lags reach back to the first steps, where the trajectory leaves the zero carry)."""
    return length - length // 10


def _sweep_points(s):
    """(family, label, cell, params_fn(seed), lengths, extra fields) per configuration.

    One cell object per family: W_hh (or the LSTM forget bias) is swapped into its params, so
    each family compiles once per length."""
    from rnnlab import cells
    from rnnlab.cells.base import recurrent_matrix

    h, n_in = s.hidden, s.input_size
    points = []

    def with_w_hh(cell, kind, r):
        return lambda seed: dict(cell.init(jax.random.key(seed), n_in),
                                 w_hh=recurrent_matrix(jax.random.key(1000 + seed), h, kind, r))

    if "rnn_tanh" in s.cells:
        tanh = cells.make("rnn_tanh", h, recurrent_init="spectral", spectral_radius=0.9)
        for r in s.radii:
            points.append(("rnn_tanh", f"tanh gauss r={r:g}", tanh, with_w_hh(tanh, "spectral", r),
                           s.lengths, {"init": "spectral", "radius": float(r)}))
        for kind in s.inits:
            points.append(("rnn_tanh", f"tanh {kind}", tanh, with_w_hh(tanh, kind, 1.0),
                           s.lengths, {"init": kind, "radius": 1.0}))
    if "rnn_relu" in s.cells:
        relu = cells.make("rnn_relu", h)
        for r in s.relu_radii:
            points.append(("rnn_relu", f"relu gauss r={r:g}", relu,
                           with_w_hh(relu, "spectral", r), (s.relu_length,),
                           {"init": "spectral", "radius": float(r)}))
    if "irnn" in s.cells:
        irnn = cells.make("irnn", h)
        points.append(("irnn", "irnn", irnn, lambda seed: irnn.init(jax.random.key(seed), n_in),
                       s.lengths, {"init": "identity", "radius": 1.0}))
    if "lstm" in s.cells:
        lstm = cells.make("lstm", h, forget_bias=0.0)
        for fb in s.forget_biases:
            def lstm_params(seed, fb=fb):  # forget_bias only shifts the forget block of b
                p = lstm.init(jax.random.key(seed), n_in)
                return dict(p, b=p["b"].at[h:2 * h].add(fb))
            points.append(("lstm", f"lstm fb={fb:g}", lstm, lstm_params, s.lengths,
                           {"forget_bias": float(fb)}))
    if "gru" in s.cells:
        gru = cells.make("gru", h)
        points.append(("gru", "gru", gru, lambda seed: gru.init(jax.random.key(seed), n_in),
                       s.lengths, {}))
    return points


def measure_init_sweep(s, say) -> list[dict]:
    """One entry per (configuration, length): curves and rates averaged over the seeds."""
    from rnnlab import diagnostics as D

    entries = []
    longest = max(s.lengths)
    for family, label, cell, params_fn, lengths, extra in _sweep_points(s):
        for length in lengths:
            per_seed = []
            for seed in s.seeds:
                params = params_fn(seed)
                xs = _inputs(s, seed, length)
                flow = jax.device_get(D.gradient_flow(cell, params, xs))
                per_seed.append((flow, params, xs))
            flows = [f for f, _, _ in per_seed]
            rates = [float(f["rate"]) for f in flows]
            lyap = [float(f["lyapunov"]) for f in flows]
            log_curve = np.mean([f["log_grad_norm_mean"] for f in flows], 0)
            curve = np.mean([f["grad_norm_mean"] for f in flows], 0)
            e = {"name": f"{label} T={length}", "label": label, "group": "init_sweep",
                 "phase": "init", "cell": family, **extra, "length": length,
                 "hidden": s.hidden, "seeds": list(s.seeds), "inputs": "gaussian",
                 "lags": list(range(length + 1)), "grad_norm": [_f(v) for v in curve],
                 "log_grad_norm": [_f(v) for v in log_curve],
                 "rate": _f(np.mean(rates)), "rates": [_f(v) for v in rates],
                 "lyapunov": _f(np.mean(lyap)), "lyapunovs": [_f(v) for v in lyap],
                 "rel_diff": _f(abs(np.mean(rates) - np.mean(lyap)) / abs(np.mean(lyap))),
                 "agrees": all(_agrees(r, ly) for r, ly in zip(rates, lyap)),
                 "rate_window": [int(flows[0]["rate_lag_lo"]), int(flows[0]["rate_lag_hi"])],
                 "finite": all(bool(f["finite"]) for f in flows),
                 "grad_norm_at_max_lag": _f(np.exp(log_curve[-1])),
                 "long_lag": _long_lag(length),
                 "grad_norm_at_long_lag": _f(np.exp(log_curve[_long_lag(length)])),
                 "grad_norm_at_compare_lag": (_f(np.exp(log_curve[s.compare_lag]))
                                              if s.compare_lag < length else None)}
            if "pascanu" in flows[0]:
                pc = [f["pascanu"] for f in flows]
                e["sigma_max"] = _f(np.mean([p["sigma_max"] for p in pc]))
                e["spectral_radius_measured"] = _f(np.mean([p["spectral_radius"] for p in pc]))
                e["pascanu_holds"] = all(bool(p["holds"]) for p in pc)
            if length == max(lengths) and (length == longest or family == "rnn_relu"):
                lags = [k for k in s.spectra_lags if k <= length]
                if lags:
                    _, params, xs = per_seed[0]
                    sp = jax.device_get(D.jacobian_spectra(cell, params, xs, lags))
                    e["spectra"] = {"lags": [int(k) for k in sp["lags"]],
                                    "log_sigma_max": [_f(v) for v in sp["log_sv_mean"][:, 0]],
                                    "log_sigma_min": [_f(v) for v in sp["log_sv_mean"][:, -1]],
                                    "log_sv_mean": [[_f(v) for v in row]
                                                    for row in sp["log_sv_mean"]]}
            entries.append(e)
            say(f"init  {e['name']:24s} rate {e['rate']:+.4f}  lyapunov {e['lyapunov']:+.4f}")
    return entries


# --- training runs -----------------------------------------------------------------------------


def train_config(config, name: str):
    """The training-engine config of run `name` (from experiments/configs/<task>.py)."""
    t, run = config.train, config.train.runs[name]
    c = importlib.import_module(f"experiments.configs.{run.task}").get_config()
    c.seed = config.seed
    c.task.length = t.adding_length if run.task == "adding" else t.copy_length
    c.task.batch_size, c.task.eval_batches = t.batch_size, t.eval_batches
    c.model.cell, c.model.cell_kwargs, c.model.hidden = run.cell, run.cell_kwargs, t.hidden
    c.optim.name, c.optim.lr, c.optim.clip = run.optim, run.lr, run.clip
    c.optim.clip_value = run.clip_value
    c.train.steps, c.train.log_every, c.train.eval_every = t.steps, t.log_every, t.eval_every
    c.train.nonfinite = "stop"
    seq = c.task.length + (20 if run.task == "copy" else 0)
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
         "grad_norm": [_f(v) for v in curve], "log_grad_norm": [_f(v) for v in log_curve],
         "rate": _f(flow["rate"]), "lyapunov": _f(flow["lyapunov"]),
         "rel_diff": (_f(abs(flow["rate"] - flow["lyapunov"]) / abs(flow["lyapunov"]))
                      if np.isfinite(flow["lyapunov"]) and flow["lyapunov"] != 0 else None),
         "finite": bool(flow["finite"]), "grad_norm_at_max_lag": _f(np.exp(log_curve[-1])),
         "long_lag": _long_lag(seq), "grad_norm_at_long_lag": _f(np.exp(log_curve[_long_lag(seq)])),
         **extra}
    if "pascanu" in flow:
        e["sigma_max"] = _f(flow["pascanu"]["sigma_max"])
        e["pascanu_holds"] = bool(flow["pascanu"]["holds"])
    return e


def train_runs(config, workdir: str, say) -> tuple[list[dict], list[dict]]:
    """Trains every `config.train.runs` entry; returns (run summaries, init/trained entries)."""
    from rnnlab import diagnostics as D
    from rnnlab.data import synthetic
    from rnnlab.tasks import make_task
    from rnnlab.train import NonFiniteError, train_and_evaluate
    from rnnlab.train.loop import recurrent_probe
    from rnnlab.train.metrics import read_metrics
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.state import create_state

    summaries, entries = [], []
    for name, run in config.train.runs.items():
        cfg = train_config(config, name)
        rundir = os.path.join(workdir, "runs", name)
        shutil.rmtree(rundir, ignore_errors=True)  # a fresh run, never a stale resume
        task = make_task(cfg)
        state0 = create_state(task, make_optimizer(cfg.optim, task.steps_per_epoch,
                                                   cfg.train.steps), cfg.seed)
        batch = task.eval_batches()[0]
        seq = cfg.task.length + (20 if run.task == "copy" else 0)

        def measure(params, task=task, batch=batch):
            cell, cp, xs, carry = recurrent_probe(task, params, batch)
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
        summary = {"name": name, "task": run.task, "cell": run.cell,
                   "cell_kwargs": run.cell_kwargs, "optim": run.optim, "lr": run.lr,
                   "clip": run.clip, "clip_value": run.clip_value, "length": seq,
                   "steps": cfg.train.steps, "seconds": seconds, "status": status,
                   "first_loss": _f(train_recs[0]["loss"]) if train_recs else None,
                   "metric": task.metric, "final_metric": None, "final_loss": None,
                   "baseline_loss": baseline, "beats_baseline": False,
                   "clip_events": int(sum(bool(r.get("clipped")) for r in train_recs)),
                   "logged_steps": len(train_recs), "log_every": cfg.train.log_every,
                   "workdir": rundir}
        if final is not None:
            summary["final_metric"] = _f(final[task.metric])
            summary["final_loss"] = _f(final["loss"])
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
        entries.append(_flow_entry(name, run, "init", flow0, seq, extra))
        if trained is not None:
            entries.append(_flow_entry(name, run, "trained", measure(trained), seq, extra))
        summaries.append(summary)
        say(f"train {name:24s} {summary['status']}: {task.metric} "
            f"{summary['final_metric']}, {summary['clip_events']} clip events, {seconds:.1f}s")
    return summaries, entries


# --- findings, decided from the numbers --------------------------------------------------------


def _crossing(radii, rates):
    """Radius where the rate first crosses zero (linear interpolation), or None."""
    for i in range(1, len(radii)):
        a, b = rates[i - 1], rates[i]
        if a is not None and b is not None and a < 0 <= b:
            return float(radii[i - 1] + (radii[i] - radii[i - 1]) * -a / (b - a))
    return None


def _finding(key, title, holds, text):
    return {"key": key, "title": title, "holds": holds, "text": text}


def _e(entries, **match):
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def compute_findings(config, entries, runs) -> tuple[list[dict], dict]:
    s = config.sweep
    longest = max(s.lengths)
    out, derived = [], {}
    sweep = _e(entries, group="init_sweep")

    tanh = _e(sweep, cell="rnn_tanh")
    if tanh:
        pairs = [(e["name"], r, ly) for e in tanh for r, ly in zip(e["rates"], e["lyapunovs"])]
        bad = [(n, r, ly) for n, r, ly in pairs if not _agrees(r, ly)]
        worst = max(tanh, key=lambda e: e["rel_diff"] or 0)
        text = (f"{len(pairs) - len(bad)} of {len(pairs)} tanh measurements (configurations × "
                f"lengths × seeds) agree with the Lyapunov reference within 15% (or 0.01/step); "
                f"largest relative difference of the seed means: {worst['rel_diff']:.1%} "
                f"({worst['name']}).")
        if bad:
            text += " Disagreeing: " + "; ".join(f"{n} fit {r:+.4f} vs {ly:+.4f}"
                                                 for n, r, ly in bad[:5])
        out.append(_finding("tanh_agreement", "tanh RNN: fitted rate vs Lyapunov exponent",
                            not bad, text))

        parts, ok = [], True
        for length in s.lengths:
            pts = sorted((e["radius"], e["rate"]) for e in
                         _e(tanh, init="spectral", length=length))
            rates = [r for _, r in pts]
            mono = len(rates) > 1 and all(b > a for a, b in zip(rates, rates[1:]))
            ok &= mono
            parts.append(f"T={length}: " + ", ".join(f"r={r:g}: {v:+.3f}" for r, v in pts)
                         + ("" if mono else " (NOT monotone)"))
        out.append(_finding("tanh_monotone", "tanh RNN: rate rises with the spectral radius", ok,
                            "Mean fitted rate per step over seeds " + list(s.seeds).__repr__()
                            + ": " + "; ".join(parts) + "."))

        g09 = _e(tanh, init="spectral", radius=0.9, length=longest)
        if g09:
            e = g09[0]
            vanish = (e["rate"] < 0 and e["lyapunov"] < 0
                      and e["grad_norm_at_long_lag"] < 1e-3 * e["grad_norm"][0])
            holds = (not e["pascanu_holds"]) and e["sigma_max"] > 1 and vanish
            out.append(_finding(
                "pascanu_gaussian_0_9",
                "Gaussian W_hh at radius 0.9: Pascanu's condition fails, yet gradients vanish",
                holds,
                f"σ_max(W_hh) = {e['sigma_max']:.3f} (spectral radius "
                f"{e['spectral_radius_measured']:.3f}), so γ·σ_max < 1 "
                f"{'holds' if e['pascanu_holds'] else 'does not hold'}; the gradient "
                f"{'vanishes' if vanish else 'does not vanish'}: rate {e['rate']:+.4f}/step, "
                f"Lyapunov {e['lyapunov']:+.4f}, ‖∂L/∂h‖ {e['grad_norm'][0]:.3g} at lag 0 → "
                f"{_g(e['grad_norm_at_long_lag'])} at lag {e['long_lag']}."))

    relu = sorted(_e(sweep, cell="rnn_relu"), key=lambda e: e["radius"])
    if relu:
        radii = [e["radius"] for e in relu]
        rates = [e["rate"] for e in relu]
        cross = _crossing(radii, rates)
        per_seed = [_crossing(radii, [e["rates"][i] for e in relu]) for i in range(len(s.seeds))]
        mono = all(b > a for a, b in zip(rates, rates[1:]))
        derived["relu_crossing"] = cross
        derived["relu_crossing_per_seed"] = per_seed
        text = (f"ReLU RNN (T={s.relu_length}) mean rate by radius: "
                + ", ".join(f"{r:g}: {v:+.3f}" for r, v in zip(radii, rates))
                + (" (monotone)" if mono else " (NOT monotone)") + "; "
                + (f"it crosses zero at radius ≈ {cross:.3f}" if cross is not None
                   else "it does not cross zero in the swept range")
                + " (per seed: " + ", ".join("—" if c is None else f"{c:.3f}" for c in per_seed)
                + "); agreement with Lyapunov: "
                + f"{sum(e['agrees'] for e in relu)}/{len(relu)} radii.")
        out.append(_finding("relu_crossing", "ReLU RNN: vanishing → exploding transition",
                            cross is not None and mono, text))

    lstm = sorted(_e(sweep, cell="lstm", length=longest), key=lambda e: e["forget_bias"])
    if len(lstm) > 1:
        rates = [e["rate"] for e in lstm]
        toward_zero = all(abs(b) < abs(a) for a, b in zip(rates, rates[1:]))
        text = ("LSTM rate by forget bias: " + ", ".join(
            f"{e['forget_bias']:g}: {e['rate']:+.4f} (Lyapunov {e['lyapunov']:+.4f})"
            for e in lstm) + (" — moves towards 0" if toward_zero else " — NOT towards 0"))
        holds = toward_zero
        t09 = _e(sweep, cell="rnn_tanh", init="spectral", radius=0.9, length=longest)
        k = s.compare_lag
        if t09 and lstm[-1]["grad_norm_at_compare_lag"] and t09[0]["grad_norm_at_compare_lag"]:
            a, b = lstm[-1]["grad_norm_at_compare_lag"], t09[0]["grad_norm_at_compare_lag"]
            decades = np.log10(a / b)
            holds = holds and decades >= 2
            text += (f"; at lag {k} the gradient with forget bias {lstm[-1]['forget_bias']:g} is "
                     f"{a:.3g} vs {b:.3g} for the tanh RNN at radius 0.9: 10^{decades:.1f} times "
                     "larger")
        out.append(_finding("lstm_forget_bias",
                            "LSTM: forget bias 0 → 1 → 3 moves the rate towards 0", holds,
                            text + "."))

    clip_runs = [r for r in runs if r["cell"] == "rnn_relu"]
    noclip = [r for r in clip_runs if r["clip"] == "none"]
    clipped = [r for r in clip_runs if r["clip"] == "global_norm"]
    if noclip and clipped:
        radius = config.train.relu_radius
        cross = derived.get("relu_crossing")
        init = _e(entries, run=noclip[0]["name"], phase="init")
        init_rate = init[0]["rate"] if init else None
        past = init_rate is not None and init_rate > 0  # exploding on its own task inputs
        fails = all(not r["beats_baseline"] for r in noclip)
        trains = [r for r in clipped if r["beats_baseline"]]

        def describe(r):
            first = "" if r["first_loss"] is None else f"train loss {r['first_loss']:.3g} → "
            return (f"{r['name']} ({r['clip']}"
                    f"{'' if r['clip'] == 'none' else ' at ' + format(r['clip_value'], 'g')}): "
                    f"{r['status']}, {first}final validation MSE "
                    f"{_g(r['final_loss'])}, {r['clip_events']} clip events")

        out.append(_finding(
            "relu_clipping",
            "Past the ReLU crossing: no clipping diverges or stalls, global-norm clipping trains",
            past and fails and bool(trains),
            f"ReLU RNN with Gaussian W_hh at radius {radius:g}: at initialisation its gradient "
            f"rate on the adding inputs is {_n(init_rate)}/step ("
            + ("exploding" if past else "NOT exploding") + "; the Gaussian-input sweep puts "
            f"the crossing at radius {_n(cross, '{:.3f}')}); "
            f"adding T={config.train.adding_length}, "
            f"{config.train.steps} SGD steps, "
            f"baseline MSE {noclip[0]['baseline_loss']:.3f}: "
            + "; ".join(describe(r) for r in noclip + clipped) + "."))

    changes = []
    trained = {e["run"]: e for e in entries if e.get("phase") == "trained"}
    for e0 in (e for e in entries if e.get("phase") == "init" and "run" in e):
        e1 = trained.get(e0["run"])
        if e1 is None:
            changes.append(f"{e0['run']}: no trained model ({e0['status']})")
            continue
        a, b = e0["grad_norm_at_long_lag"], e1["grad_norm_at_long_lag"]
        ratio = f" (×{b / a:.3g})" if a and b else ""
        changes.append(f"{e0['run']}: lag {e0['long_lag']} gradient {_g(a)} → {_g(b)}{ratio}, "
                       f"rate {e0['rate']:+.4f} → {e1['rate']:+.4f}")
    if changes:
        out.append(_finding("trained", "After training: long-lag gradient per cell", None,
                            "; ".join(changes) + "."))
    return out, derived


# --- plots and report --------------------------------------------------------------------------


def _curve(e):
    return np.exp(np.asarray([np.nan if v is None else v for v in e["log_grad_norm"]], float))


def _rate_vs_radius(entries, path, crossing):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (family, label) in enumerate((("rnn_tanh", "tanh"), ("rnn_relu", "ReLU"))):
        pts = sorted(((e["radius"], e["rate"], e["lyapunov"], e["length"]) for e in entries
                      if e["cell"] == family and e.get("init") == "spectral"
                      and e["length"] == max(x["length"] for x in entries
                                             if x["cell"] == family)))
        if not pts:
            continue
        r, fit, ly, t = zip(*pts)
        ax.plot(r, ly, "-", color=f"C{i}", label=f"{label} Lyapunov (T={t[0]})")
        ax.plot(r, fit, "o", color=f"C{i}", label=f"{label} fitted rate")
    ax.axhline(0, color="k", lw=0.8)
    if crossing is not None:
        ax.axvline(crossing, color="C1", ls=":", label=f"ReLU crossing ≈ {crossing:.2f}")
    ax.set_xlabel("spectral radius of W_hh (Gaussian)")
    ax.set_ylabel("rate per step (log-norm slope)")
    ax.set_title("Gradient growth rate vs spectral radius")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(config, entries, runs, derived, workdir) -> dict:
    from rnnlab.diagnostics import plots

    sweep = _e(entries, group="init_sweep")
    longest = max(config.sweep.lengths)
    out = {}
    main = [e for e in sweep if e["length"] == longest]
    if main:
        out["grad_norm_vs_lag"] = plots.plot_grad_norm_vs_lag(
            {e["label"]: _curve(e) for e in main}, os.path.join(workdir, "grad_norm_vs_lag.png"),
            rates={e["label"]: e["rate"] for e in main},
            title=f"Gradient norm vs lag at initialisation (T={longest}, geometric mean)")
    relu = _e(sweep, cell="rnn_relu")
    if relu:
        out["relu_sweep"] = plots.plot_grad_norm_vs_lag(
            {e["label"]: _curve(e) for e in relu}, os.path.join(workdir, "relu_sweep.png"),
            rates={e["label"]: e["rate"] for e in relu},
            title=f"ReLU RNN: gradient norm vs lag (T={config.sweep.relu_length})")
    if any(e.get("init") == "spectral" for e in sweep):
        out["rate_vs_radius"] = _rate_vs_radius(
            sweep, os.path.join(workdir, "rate_vs_radius.png"), derived.get("relu_crossing"))
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
    pairs = {}
    for e in entries:
        if e.get("run") and e["group"] == "adding" and _e(entries, run=e["run"], phase="trained"):
            pairs[f"{e['run']} ({e['phase']})"] = _curve(e)
    if pairs:
        out["trained_vs_init"] = plots.plot_grad_norm_vs_lag(
            pairs, os.path.join(workdir, "trained_vs_init.png"),
            title="adding task: gradient norm vs lag at init and after training")
    return out


def _n(v, fmt="{:+.4f}"):
    return "—" if v is None else fmt.format(v)


def _g(v):
    if v is None:
        return "—"
    return "<1e-37" if v <= 1.01e-37 else f"{v:.3g}"


def write_report(config, result, path) -> None:
    entries, runs, findings = result["configurations"], result["runs"], result["findings"]
    s = config.sweep
    lines = ["# Gradient-flow study", "",
             f"Command: `{result['command']}`  ",
             f"Wall time: {result['wall_time_s']:.0f} s (sweep {result['sweep_time_s']:.0f} s, "
             f"training {result['train_time_s']:.0f} s) on {result['device']}.", "",
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
    for e in _e(entries, group="init_sweep"):
        lines.append(
            f"| {e['label']} | {e['length']} | {_n(e['rate'])} | {_n(e['lyapunov'])} | "
            f"{_n(e['rel_diff'], '{:.1%}')} | {'yes' if e['agrees'] else 'NO'} | "
            f"{_g(e['grad_norm_at_compare_lag'])} | {_g(e['grad_norm_at_long_lag'])} | "
            f"{_n(e.get('sigma_max'), '{:.3f}')} | "
            f"{'—' if 'pascanu_holds' not in e else ('yes' if e['pascanu_holds'] else 'no')} |")
    spectra = [e for e in entries if "spectra" in e]
    if spectra:
        lags = spectra[0]["spectra"]["lags"]
        lines += ["", "Singular values of ∂h_T/∂h_{T−k} (seed 0, log10, largest / smallest):", "",
                  "| configuration | " + " | ".join(f"k={k}" for k in lags) + " |",
                  "|---|" + "---|" * len(lags)]
        for e in spectra:
            sp = e["spectra"]
            cells_ = [f"{_n(a and a / np.log(10), '{:.2f}')} / {_n(b and b / np.log(10), '{:.2f}')}"
                      for a, b in zip(sp["log_sigma_max"], sp["log_sigma_min"])]
            lines.append(f"| {e['name']} | " + " | ".join(cells_) + " |")
    if runs:
        t = config.train
        lines += ["", "## Training runs", "",
                  f"Hidden {t.hidden}, batch {t.batch_size}, {t.steps} steps, adding T = "
                  f"{t.adding_length}, copy T = {t.copy_length} (sequences of T + 20). The "
                  "metric is the final validation MSE (adding) or recall accuracy (copy); "
                  "baseline: adding MSE 0.167, copy cross-entropy 10·ln 8/(T + 20). Gradient "
                  f"norms at lag T − T/10 measured on {t.measure_samples} validation sequences at "
                  "initialisation and after training; clip events counted over the logged "
                  f"steps (every {t.log_every}).", "",
                  "| run | cell | optimiser, clip | status | metric | final loss (baseline) | "
                  "clip events | rate init → trained | ‖g‖@(T − T/10) init → trained |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            e0 = _e(entries, run=r["name"], phase="init")
            e1 = _e(entries, run=r["name"], phase="trained")
            rate = f"{_n(e0[0]['rate'])} → {_n(e1[0]['rate']) if e1 else '—'}" if e0 else "—"
            gn = (f"{_g(e0[0]['grad_norm_at_long_lag'])} → "
                  f"{_g(e1[0]['grad_norm_at_long_lag']) if e1 else '—'}") if e0 else "—"
            clip = r["clip"] if r["clip"] == "none" else f"{r['clip']} {r['clip_value']:g}"
            kw = f" ({r['cell_kwargs']})" if r["cell_kwargs"] else ""
            lines.append(
                f"| {r['name']} | {r['cell']}{kw} | {r['optim']} {r['lr']:g}, {clip} | "
                f"{r['status']} | {r['metric']} {_g(r['final_metric'])} | "
                f"{_g(r['final_loss'])} ({r['baseline_loss']:.3g}) | "
                f"{r['clip_events']}/{r['logged_steps']} | {rate} | {gn} |")
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
        "trained_vs_init": "Adding task: gradient norm vs lag before and after training"}
    for key, p in result["plots"].items():
        lines += [f"### {captions.get(key, key)}", "", f"![{key}]({os.path.basename(p)})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_study(config, workdir: str, *, progress=None) -> dict:
    """Runs the whole study into `workdir`; returns what it writes to gradient_flow.json."""
    import json

    check_config(config)
    say = progress or (lambda line: None)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    entries = measure_init_sweep(config.sweep, say)
    t1 = time.perf_counter()
    runs, train_entries = train_runs(config, workdir, say)
    t2 = time.perf_counter()
    entries += train_entries
    findings, derived = compute_findings(config, entries, runs)
    result = {"configurations": entries, "runs": runs, "findings": findings, **derived,
              "config": config.to_dict(), "device": f"{jax.devices()[0].platform} "
              f"({os.cpu_count()} CPUs visible)",
              "command": "python -m experiments.gradient_flow " + " ".join(sys.argv[1:])
              if sys.argv and sys.argv[0].endswith("gradient_flow.py") else
              "experiments.gradient_flow.run_study(config, workdir)"}
    result["plots"] = make_plots(config, entries, runs, derived, workdir)
    result.update(sweep_time_s=t1 - t0, train_time_s=t2 - t1,
                  wall_time_s=time.perf_counter() - t0)
    with open(os.path.join(workdir, "gradient_flow.json"), "w") as f:
        json.dump(result, f, indent=1, allow_nan=False, default=_json_default)
    write_report(config, result, os.path.join(workdir, "report.md"))
    return result


def _json_default(v):
    if isinstance(v, (np.generic, jnp.ndarray)):
        return _f(v) if np.asarray(v).dtype.kind == "f" else np.asarray(v).item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def define_flags() -> None:
    """--config and --workdir; defined only when run as a program, so that importing this
    module (tests, notebooks) never collides with another entry point's flags."""
    config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(__file__), "configs", "gradient_flow.py"),
        "Study config, experiments/configs/gradient_flow.py[:variant].", lock_config=True)
    flags.DEFINE_string("workdir", None, "Output directory (created).")
    flags.mark_flags_as_required(["workdir"])


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        sys.exit(f"gradient_flow: bad override: the config has no field {e} (see "
                 "experiments/configs/gradient_flow.py for the fields)")
    except flags.Error as e:
        sys.exit(f"gradient_flow: {e}")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"gradient_flow: unexpected arguments {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    try:
        check_config(config)
    except ValueError as e:
        sys.exit(f"gradient_flow: bad config: {e}")
    from rnnlab.train import RunError

    try:
        result = run_study(config, workdir, progress=lambda s: print(s, flush=True))
    except RunError as e:  # a run's workdir, checkpoints, a diverged run
        sys.exit(f"gradient_flow: {e}")
    for f in result["findings"]:
        mark = {True: "HOLDS", False: "DOES NOT HOLD", None: "measured"}[f["holds"]]
        print(f"[{mark}] {f['title']}: {f['text']}")
    print(f"wrote {os.path.join(workdir, 'report.md')} in {result['wall_time_s']:.0f} s")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=_parse_flags)
