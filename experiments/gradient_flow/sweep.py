"""Measurements at initialisation: every swept cell family, initialisation and length on
Gaussian inputs, with the Lyapunov reference and the Jacobian spectra (`config.sweep`)."""

from __future__ import annotations

import jax
import numpy as np

from experiments.gradient_flow.common import agrees, as_float, long_lag
from rnnlab import cells
from rnnlab import diagnostics as D
from rnnlab.cells.base import recurrent_matrix


def _inputs(s, seed, length):
    return jax.random.normal(jax.random.key(100 + seed), (s.batch, length, s.input_size))


def _sweep_points(s):
    """(family, label, cell, params_fn(seed), lengths, extra fields) per configuration.

    One cell object per family: W_hh (or the LSTM forget bias) is swapped into its params, so
    each family compiles once per length."""
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


def measure_init_sweep(config, say) -> list[dict]:
    """One entry per (configuration, length): curves and rates averaged over the seeds."""
    s = config.sweep
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
                 "lags": list(range(length + 1)), "grad_norm": [as_float(v) for v in curve],
                 "log_grad_norm": [as_float(v) for v in log_curve],
                 "rate": as_float(np.mean(rates)), "rates": [as_float(v) for v in rates],
                 "lyapunov": as_float(np.mean(lyap)), "lyapunovs": [as_float(v) for v in lyap],
                 "rel_diff": as_float(abs(np.mean(rates) - np.mean(lyap)) / abs(np.mean(lyap))),
                 "agrees": all(agrees(r, ly, config.findings) for r, ly in zip(rates, lyap)),
                 "rate_window": [int(flows[0]["rate_lag_lo"]), int(flows[0]["rate_lag_hi"])],
                 "finite": all(bool(f["finite"]) for f in flows),
                 "grad_norm_at_max_lag": as_float(np.exp(log_curve[-1])),
                 "long_lag": long_lag(length),
                 "grad_norm_at_long_lag": as_float(np.exp(log_curve[long_lag(length)])),
                 "grad_norm_at_compare_lag": (as_float(np.exp(log_curve[s.compare_lag]))
                                              if s.compare_lag < length else None)}
            if "pascanu" in flows[0]:
                pc = [f["pascanu"] for f in flows]
                e["sigma_max"] = as_float(np.mean([p["sigma_max"] for p in pc]))
                e["spectral_radius_measured"] = as_float(
                    np.mean([p["spectral_radius"] for p in pc]))
                e["pascanu_holds"] = all(bool(p["holds"]) for p in pc)
            if length == max(lengths) and (length == longest or family == "rnn_relu"):
                lags = [k for k in s.spectra_lags if k <= length]
                if lags:
                    _, params, xs = per_seed[0]
                    sp = jax.device_get(D.jacobian_spectra(cell, params, xs, lags))
                    e["spectra"] = {"lags": [int(k) for k in sp["lags"]],
                                    "log_sigma_max": [as_float(v) for v in sp["log_sv_mean"][:, 0]],
                                    "log_sigma_min": [as_float(v)
                                                      for v in sp["log_sv_mean"][:, -1]],
                                    "log_sv_mean": [[as_float(v) for v in row]
                                                    for row in sp["log_sv_mean"]]}
            entries.append(e)
            say(f"init  {e['name']:24s} rate {e['rate']:+.4f}  lyapunov {e['lyapunov']:+.4f}")
    return entries
