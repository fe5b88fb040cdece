"""The study's findings, each decided from the measured numbers by the thresholds in
`config.findings` (none is typed into the text)."""

from __future__ import annotations

import numpy as np

from experiments.gradient_flow.common import agrees, as_float, fmt_norm, fmt_rate, where


def _crossing(radii, rates):
    """Radius where the rate first crosses zero (linear interpolation), or None."""
    for i in range(1, len(radii)):
        a, b = rates[i - 1], rates[i]
        if a is not None and b is not None and a < 0 <= b:
            return float(radii[i - 1] + (radii[i] - radii[i - 1]) * -a / (b - a))
    return None


def _finding(key, title, holds, text):
    return {"key": key, "title": title, "holds": holds, "text": text}


def compute_findings(config, entries, runs) -> tuple[list[dict], dict]:
    """(findings, derived numbers): each finding states what was measured and whether the
    expected result holds, by the thresholds of `config.findings`."""
    s, f = config.sweep, config.findings
    r0 = f.reference_radius
    longest = max(s.lengths)
    out, derived = [], {}
    sweep = where(entries, group="init_sweep")

    tanh = where(sweep, cell="rnn_tanh")
    if tanh:
        pairs = [(e["name"], r, ly) for e in tanh for r, ly in zip(e["rates"], e["lyapunovs"])]
        bad = [(n, r, ly) for n, r, ly in pairs if not agrees(r, ly, f)]
        worst = max(tanh, key=lambda e: e["rel_diff"] or 0)
        text = (f"{len(pairs) - len(bad)} of {len(pairs)} tanh measurements (configurations × "
                f"lengths × seeds) agree with the Lyapunov reference within {f.agree_rel:.0%} (or "
                f"{f.agree_abs:g}/step); "
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
                         where(tanh, init="spectral", length=length))
            rates = [r for _, r in pts]
            mono = len(rates) > 1 and all(b > a for a, b in zip(rates, rates[1:]))
            ok &= mono
            parts.append(f"T={length}: " + ", ".join(f"r={r:g}: {v:+.3f}" for r, v in pts)
                         + ("" if mono else " (NOT monotone)"))
        out.append(_finding("tanh_monotone", "tanh RNN: rate rises with the spectral radius", ok,
                            "Mean fitted rate per step over seeds " + list(s.seeds).__repr__()
                            + ": " + "; ".join(parts) + "."))

        g09 = where(tanh, init="spectral", radius=r0, length=longest)
        if g09:
            e = g09[0]
            vanish = (e["rate"] < 0 and e["lyapunov"] < 0
                      and e["grad_norm_at_long_lag"] < f.vanish_factor * e["grad_norm"][0])
            holds = (not e["pascanu_holds"]) and e["sigma_max"] > 1 and vanish
            out.append(_finding(
                "pascanu_gaussian_0_9",
                f"Gaussian W_hh at radius {r0:g}: Pascanu's condition fails, yet gradients "
                "vanish",
                holds,
                f"σ_max(W_hh) = {e['sigma_max']:.3f} (spectral radius "
                f"{e['spectral_radius_measured']:.3f}), so γ·σ_max < 1 "
                f"{'holds' if e['pascanu_holds'] else 'does not hold'}; the gradient "
                f"{'vanishes' if vanish else 'does not vanish'}: rate {e['rate']:+.4f}/step, "
                f"Lyapunov {e['lyapunov']:+.4f}, ‖∂L/∂h‖ {e['grad_norm'][0]:.3g} at lag 0 → "
                f"{fmt_norm(e['grad_norm_at_long_lag'])} at lag {e['long_lag']}."))

    relu = sorted(where(sweep, cell="rnn_relu"), key=lambda e: e["radius"])
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

    lstm = sorted(where(sweep, cell="lstm", length=longest), key=lambda e: e["forget_bias"])
    if len(lstm) > 1:
        rates = [e["rate"] for e in lstm]
        toward_zero = all(abs(b) < abs(a) for a, b in zip(rates, rates[1:]))
        text = ("LSTM rate by forget bias: " + ", ".join(
            f"{e['forget_bias']:g}: {e['rate']:+.4f} (Lyapunov {e['lyapunov']:+.4f})"
            for e in lstm) + (" — moves towards 0" if toward_zero else " — NOT towards 0"))
        holds = toward_zero
        t09 = where(sweep, cell="rnn_tanh", init="spectral", radius=r0, length=longest)
        k = s.compare_lag
        if t09 and lstm[-1]["grad_norm_at_compare_lag"] and t09[0]["grad_norm_at_compare_lag"]:
            a, b = lstm[-1]["grad_norm_at_compare_lag"], t09[0]["grad_norm_at_compare_lag"]
            decades = np.log10(a / b)
            holds = holds and decades >= f.lstm_min_decades
            text += (f"; at lag {k} the gradient with forget bias {lstm[-1]['forget_bias']:g} is "
                     f"{a:.3g} vs {b:.3g} for the tanh RNN at radius {r0:g}: "
                     f"10^{decades:.1f} times "
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
        init = where(entries, run=noclip[0]["name"], phase="init")
        init_rate = init[0]["rate"] if init else None
        past = init_rate is not None and init_rate > 0  # exploding on its own task inputs
        fails = all(not r["beats_baseline"] for r in noclip)
        trains = [r for r in clipped if r["beats_baseline"]]

        def describe(r):
            first = "" if r["first_loss"] is None else f"train loss {r['first_loss']:.3g} → "
            return (f"{r['name']} ({r['clip']}"
                    f"{'' if r['clip'] == 'none' else ' at ' + format(r['clip_value'], 'g')}): "
                    f"{r['status']}, {first}final validation MSE "
                    f"{fmt_norm(r['final_loss'])}, {r['clip_events']} clip events")

        out.append(_finding(
            "relu_clipping",
            "Past the ReLU crossing: no clipping diverges or stalls, global-norm clipping trains",
            past and fails and bool(trains),
            f"ReLU RNN with Gaussian W_hh at radius {radius:g}: at initialisation its gradient "
            f"rate on the adding inputs is {fmt_rate(init_rate)}/step ("
            + ("exploding" if past else "NOT exploding") + "; the Gaussian-input sweep puts "
            f"the crossing at radius {fmt_rate(cross, '{:.3f}')}); "
            f"adding T={config.train.adding_length}, "
            f"{config.train.steps} SGD steps, "
            f"baseline MSE {noclip[0]['baseline_loss']:.3f}: "
            + "; ".join(describe(r) for r in noclip + clipped) + "."))

    outcome = derived["outcome"] = outcome_table(config, entries, runs)
    if outcome:
        solved = [o for o in outcome if o["outcome"] == "solved" and o["rate"] is not None]
        stuck = [o for o in outcome if o["outcome"] == "at baseline" and o["rate"] is not None]
        ranks = (bool(solved) and bool(stuck)
                 and min(o["rate"] for o in solved) > max(o["rate"] for o in stuck))
        verdicts = {o["run"]: o["outcome"] for o in outcome}
        expected = [verdicts.get(name) == "at baseline" for name in f.expected_at_baseline]
        holds = len(solved) >= f.min_solved and all(expected)
        trained = {e["run"]: e["rate"] for e in entries if e.get("phase") == "trained"}
        t = config.train
        text = (f"adding T={t.outcome_length}, {t.outcome_steps} steps, seeds "
                f"{list(t.outcome_seeds)} (verdicts on the median final MSE), baseline MSE "
                f"{outcome[0]['baseline']:.3f}; solved means final validation MSE below "
                f"{f.solved_fraction:g} × baseline, at baseline means above "
                f"{1 - f.baseline_margin:g} × baseline. "
                + "; ".join(f"{o['run']}: MSE {_seed_mses(o)} ({o['outcome']}), "
                            f"rate at init {fmt_rate(o['rate'])}/step" for o in outcome)
                + f". {len(solved)} solved, {len(stuck)} at baseline (expected at baseline: "
                + ", ".join(f"{n} {verdicts.get(n, 'not run')}" for n in f.expected_at_baseline)
                + "). The rate at initialisation "
                + ("ranks every solved cell above every stuck one." if ranks else
                   "does not rank them alone: solved cells' rates at init → after training: "
                   + ", ".join(f"{o['run']} {fmt_rate(o['rate'])} → "
                               f"{fmt_rate(trained.get(o['run']))}" for o in solved)
                   + " (gated cells whose gradient vanishes at init learn to keep it)."))
        out.append(_finding("outcome_separation",
                            f"Who learns adding T={config.train.outcome_length}: at least "
                            f"{f.min_solved} cells solve it, "
                            f"{' and '.join(f.expected_at_baseline)} stay at the baseline",
                            holds, text))

    changes = []
    trained = {e["run"]: e for e in entries if e.get("phase") == "trained"}
    for e0 in (e for e in entries if e.get("phase") == "init" and "run" in e):
        e1 = trained.get(e0["run"])
        if e1 is None:
            changes.append(f"{e0['run']}: no trained model ({e0['status']})")
            continue
        a, b = e0["grad_norm_at_long_lag"], e1["grad_norm_at_long_lag"]
        ratio = f" (×{b / a:.3g})" if a and b else ""
        changes.append(f"{e0['run']}: lag {e0['long_lag']} gradient {fmt_norm(a)} → "
                       f"{fmt_norm(b)}{ratio}, "
                       f"rate {e0['rate']:+.4f} → {e1['rate']:+.4f}")
    if changes:
        out.append(_finding("trained", "After training: long-lag gradient per cell", None,
                            "; ".join(changes) + "."))
    return out, derived


def _seed_mses(o) -> str:
    """'0.150 (median of 0.137, 0.150, 0.182)', or the one value of a single seed."""
    if len(o["final_mse_seeds"]) == 1:
        return fmt_norm(o["final_mse"])
    return (f"{fmt_norm(o['final_mse'])} (median of "
            + ", ".join(fmt_norm(v) for v in o["final_mse_seeds"]) + ")")


def outcome_table(config, entries, runs) -> list[dict]:
    """One row per outcome run, ordered by rate: its fitted gradient rate at initialisation
    (on its task's validation inputs; the mean over its seeds), the final validation MSE of
    each seed and their median, and the outcome the median decides ("solved", "at baseline",
    "between"; a seed that did not finish counts as above every other, and a median on such a
    seed gives that seed's status)."""
    f, rows = config.findings, []
    for r in (r for r in runs if r.get("outcome")):
        init = where(entries, run=r["name"], phase="init")
        seeds = r.get("seed_runs") or [{"seed": r.get("seed"), "status": r["status"],
                                        "final_loss": r["final_loss"],
                                        "rate_init": init[0]["rate"] if init else None}]
        losses = [np.inf if s["final_loss"] is None else s["final_loss"] for s in seeds]
        mse, base = float(np.median(losses)), r["baseline_loss"]
        rates = [s["rate_init"] for s in seeds if s["rate_init"] is not None]
        if not np.isfinite(mse):
            verdict = next(s["status"] for s in seeds if s["final_loss"] is None)
        elif mse < f.solved_fraction * base:
            verdict = "solved"
        elif mse >= (1 - f.baseline_margin) * base:
            verdict = "at baseline"
        else:
            verdict = "between"
        rows.append({"run": r["name"], "cell": r["cell"], "cell_kwargs": r["cell_kwargs"],
                     "rate": float(np.mean(rates)) if rates else None,
                     "rate_range": [min(rates), max(rates)] if rates else None,
                     "grad_norm_at_long_lag": init[0]["grad_norm_at_long_lag"] if init else None,
                     "seeds": [s["seed"] for s in seeds],
                     "final_mse_seeds": [s["final_loss"] for s in seeds],
                     "final_mse": as_float(mse), "baseline": base, "outcome": verdict})
    return sorted(rows, key=lambda o: -np.inf if o["rate"] is None else o["rate"])
