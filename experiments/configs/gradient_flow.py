"""The gradient-flow study (the README's main job): vanishing and exploding gradients across cells,
recurrent initialisations, sequence lengths and gradient clipping, at initialisation and along
short training runs on the adding and copy tasks. No download; a few minutes on 2 CPU cores.

    python -m experiments.gradient_flow --workdir=runs/gradient_flow
    python -m experiments.gradient_flow --workdir=/tmp/gf_smoke \
        --config=experiments/configs/gradient_flow.py:smoke          # seconds (tests)
    python -m experiments.gradient_flow --workdir=runs/gradient_flow_full \
        --config=experiments/configs/gradient_flow.py:full   # outcome runs at adding T = 1000,
    #   4000 steps, hidden 128, batch 50, LEM/coRNN/IndRNN with their papers' settings, three
    #   seeds each: ~15 h on 2 CPU cores, a GPU job
    # e.g. --config.sweep.seeds=0,1,2,3 --config.train.steps=500 --config.sweep.hidden=128

Writes DIR/gradient_flow.json, DIR/report.md, DIR/*.png and one training run per entry of
`train.runs` and seed in DIR/runs/<name>[.seed<k>] (metrics.jsonl with "gradient_flow" records
every `train.diagnostics_every` steps).

Expected result (default config; report.md states each one as measured, holds / does not hold):
- tanh RNN: ‖∂L/∂h_{T-k}‖ decays exponentially in k; the fitted rate agrees with the Lyapunov
  reference within 15% (or 0.01/step) for every radius, init, length and seed;
- the mean fitted rate rises monotonically with the spectral radius 0.5 → 1.5 (tanh and ReLU);
  the ReLU rate crosses zero near radius 1.3 (vanishing below, exploding above);
- Gaussian W_hh at spectral radius 0.9: σ_max(W_hh) > 1, so Pascanu et al.'s sufficient
  condition fails, yet the gradient vanishes (rate ≈ −0.15/step);
- LSTM: the rate moves towards 0 as the forget bias goes 0 → 1 → 3, and at forget bias 3 the
  lag-100 gradient is several orders of magnitude above the tanh RNN's at radius 0.9;
- ReLU RNN at radius 1.5 (past the crossing) on the adding task with plain SGD: without
  clipping the first updates overflow (non-finite → stopped); global-norm clipping trains it
  below the 0.167 baseline MSE;
- who learns adding T = 100 (marks in each half, 3,000 Adam steps, seeds 0, 1, 2, decided on
  the median): LEM, GRU and the chrono/forget-bias-3 LSTMs solve it, the tanh RNN and the
  forget-bias-1 LSTM stay at the baseline, each shown next to its rate at initialisation;
- after training, each cell's long-lag gradient is shown against its value at initialisation.

The training runs go to `train.workers` spawned processes alongside the sweep: a script that
calls `experiments.gradient_flow.run_study` needs the `if __name__ == "__main__":` guard (or
`train.workers=1`).
"""

import ml_collections

from rnnlab.config import parse_variant

SWEEP_CELLS = ("rnn_tanh", "rnn_relu", "irnn", "lstm", "gru")


def _run(task, cell, cell_kwargs="", optim="adam", lr=1e-3, clip="global_norm",
         clip_value=1.0, outcome=False):
    """One training run of the study, trained by rnnlab.train.train_and_evaluate."""
    r = ml_collections.ConfigDict()
    r.task = task  # adding | copy (rnnlab.tasks)
    r.cell = cell  # a name in rnnlab.cells.names()
    r.cell_kwargs = cell_kwargs  # e.g. "recurrent_init=spectral,spectral_radius=1.5"
    r.optim = optim  # sgd | adam | adamw | rmsprop
    r.lr = lr  # learning rate
    r.clip = clip  # none | global_norm | value | adaptive
    r.clip_value = clip_value  # clipping threshold (global norm for global_norm)
    r.outcome = outcome  # True: an outcome run (train.outcome_length, train.outcome_steps),
    #                      whose final MSE is put next to its gradient rate at initialisation
    return r


def _outcome_runs(length, published=False):
    """The outcome runs on adding T = `length`: who learns, next to the rate at init.
    `published`: LEM with its paper's Δt, learning rate and no clipping (their
    T = 1000-10000 settings, experiments/configs/long_range.py), plus coRNN and IndRNN."""
    spectral = "recurrent_init=spectral,spectral_radius=0.9"
    runs = {
        "adding_tanh": _run("adding", "rnn_tanh", spectral, outcome=True),
        "adding_irnn": _run("adding", "irnn", lr=1e-4, outcome=True),
        "adding_lstm_fb1": _run("adding", "lstm", "forget_bias=1.0", outcome=True),
        "adding_lstm_fb3": _run("adding", "lstm", "forget_bias=3.0", outcome=True),
        "adding_lstm_chrono": _run("adding", "lstm", f"chrono_init={length}",
                                   outcome=True),  # Tallec & Ollivier 2018
        "adding_gru": _run("adding", "gru", outcome=True),
        "adding_lem": _run("adding", "lem", lr=2.6e-3, outcome=True),  # Rusch et al. 2022
    }
    if published:
        runs["adding_lem"] = _run("adding", "lem", "dt=0.0242", lr=2.6e-3, clip="none",
                                  outcome=True)
        runs["adding_cornn"] = _run("adding", "cornn", "dt=0.06,gamma=66.0,epsilon=15.0",
                                    lr=2e-2, clip="none", outcome=True)  # Rusch & Mishra 2021
        runs["adding_indrnn"] = _run(  # Li et al. 2018: their clipping is the cell's own
            "adding", "indrnn", f"max_length={length},input_std=0.001,grad_clip=10.0",
            lr=2e-4, clip="none", outcome=True)
    return runs


def get_config(variant: str = ""):
    variant = parse_variant(variant, ("", "smoke", "full"), "gradient_flow.py")
    c = ml_collections.ConfigDict()
    c.seed = 0  # seed of the training runs (weights and data)

    # --- measurements at initialisation on Gaussian inputs N(0, 1) [batch, T, input_size] ---
    s = c.sweep = ml_collections.ConfigDict()
    s.cells = SWEEP_CELLS  # families measured: any of rnn_tanh, rnn_relu, irnn, lstm, gru
    s.hidden = 64  # hidden units of every swept cell
    s.input_size = 4  # input features
    s.batch = 8  # sequences averaged per measurement
    s.seeds = (0, 1, 2)  # weights key(seed), W_hh key(1000 + seed), inputs key(100 + seed)
    s.lengths = (100, 200)  # sequence lengths T for every family but the ReLU radius sweep
    s.radii = (0.5, 0.9, 1.0, 1.1, 1.5)  # tanh: Gaussian W_hh rescaled to these radii
    s.inits = ("orthogonal", "identity")  # tanh: further W_hh inits at scale 1
    s.relu_radii = (0.5, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)  # ReLU: Gaussian W_hh radii
    s.relu_length = 60  # ReLU sweep T: exploding ReLU states overflow float32 past ~100 steps
    s.forget_biases = (0.0, 1.0, 3.0)  # LSTM forget-gate biases
    s.spectra_lags = (1, 10, 50)  # lags of the Jacobian-product singular values (seed 0)
    s.compare_lag = 100  # lag at which the LSTM and tanh gradients are compared (<= max T)

    # --- short training runs through the training engine ---
    t = c.train = ml_collections.ConfigDict()
    t.adding_length = 50  # adding task T
    t.copy_length = 20  # copy task delay T (sequences of T + 20)
    t.hidden = 32  # hidden units of the trained models
    t.batch_size = 32  # train batch size
    t.eval_batches = 8  # validation batches (of batch_size) for the final task metric
    t.steps = 300  # optimiser steps per run (outcome runs: outcome_steps)
    t.outcome_length = 100  # adding T of the outcome runs: who learns a long-range task
    t.outcome_steps = 3000  # their optimiser steps
    t.outcome_hidden = 32  # their hidden units
    t.outcome_batch_size = 32  # their train batch size
    t.outcome_eval_batches = 8  # their validation batches (of outcome_batch_size)
    t.outcome_marks = "halves"  # one mark in each half, as the LEM, coRNN and IndRNN code draw
    #                             them (experiments/configs/long_range.py): no pair of marks
    #                             within the last few steps, which a forgetful cell could learn
    t.outcome_seeds = (0, 1, 2)  # each outcome run is trained once per seed; its verdict is
    #                              decided by the median final MSE over them
    t.workers = 2  # processes training the runs, alongside the sweep (1: this process, after it)
    t.log_every = 1  # train records (loss, grad_norm, clipped) every N steps: clip events
    t.outcome_log_every = 10  # ... of the outcome runs (clip events counted on these steps;
    #                           a record every step would double their time)
    t.eval_every = 100  # validation every N steps
    t.diagnostics_every = 50  # gradient-flow record in metrics.jsonl every N steps
    t.measure_samples = 16  # validation sequences for the init/trained curves
    t.relu_radius = 1.5  # radius of the clipping ablation's ReLU RNN (past the crossing)
    relu = f"recurrent_init=spectral,spectral_radius={t.relu_radius}"
    t.runs = ml_collections.ConfigDict({  # name -> _run(...); the clipping ablation is the
        # relu_* runs: plain SGD as in Pascanu et al. 2013 (Adam rescales every gradient,
        # which hides an explosion)
        **_outcome_runs(t.outcome_length),
        "adding_relu_noclip": _run("adding", "rnn_relu", relu, "sgd", 0.01, "none"),
        "adding_relu_clip1": _run("adding", "rnn_relu", relu, "sgd", 0.01, "global_norm", 1.0),
        "adding_relu_clip10": _run("adding", "rnn_relu", relu, "sgd", 0.01, "global_norm", 10.0),
        "copy_tanh": _run("copy", "rnn_tanh", "recurrent_init=spectral,spectral_radius=0.9",
                          "rmsprop"),
        "copy_lstm_fb1": _run("copy", "lstm", "forget_bias=1.0", "rmsprop"),
        "copy_gru": _run("copy", "gru", optim="rmsprop"),
    })

    # --- the thresholds by which report.md decides each finding (experiments.gradient_flow) ---
    f = c.findings = ml_collections.ConfigDict()
    f.agree_rel = 0.15  # a fitted rate agrees with its Lyapunov exponent within this fraction
    f.agree_abs = 0.01  # ... or within this many nats per step (rates near zero)
    f.reference_radius = 0.9  # tanh Gaussian W_hh radius of the Pascanu finding and the LSTM
    #                           comparison (one of sweep.radii)
    f.vanish_factor = 1e-3  # "vanishes": ‖g‖ at lag T − T/10 below this fraction of lag 0's
    f.solved_fraction = 0.1  # outcome runs: "solved" below this fraction of the baseline MSE
    f.baseline_margin = 0.1  # ... "at baseline" above (1 - this) x the baseline MSE
    f.min_solved = 2  # the outcome finding needs at least this many solved cells ...
    f.expected_at_baseline = ("adding_tanh", "adding_lstm_fb1")  # ... and these at baseline
    f.lstm_min_decades = 2.0  # LSTM finding: its lag-compare_lag gradient at the largest forget
    #                           bias is at least 10^this above the reference tanh RNN's

    if variant == "full":  # the published length and settings: hours on 2 CPU cores, a GPU job
        t.outcome_length, t.outcome_steps = 1000, 4000
        t.outcome_hidden, t.outcome_batch_size, t.outcome_eval_batches = 128, 50, 20
        t.diagnostics_every = 250
        t.runs.update(_outcome_runs(t.outcome_length, published=True))
    if variant == "smoke":  # seconds: tiny cells, one seed, short sequences, 4 training steps
        s.cells = ("rnn_tanh", "rnn_relu", "lstm")
        s.hidden, s.batch, s.seeds, s.lengths = 8, 2, (0,), (12,)
        s.radii, s.inits, s.relu_radii, s.relu_length = (0.5, 1.5), ("orthogonal",), (0.5, 2.0), 10
        s.forget_biases, s.spectra_lags, s.compare_lag = (0.0, 3.0), (1, 5), 10
        t.adding_length, t.copy_length, t.hidden, t.batch_size = 8, 4, 8, 8
        t.eval_batches, t.steps, t.eval_every, t.diagnostics_every = 1, 4, 2, 2
        t.measure_samples = 4
        t.runs = ml_collections.ConfigDict({
            "adding_relu_noclip": _run("adding", "rnn_relu", relu, "sgd", 0.01, "none"),
            "adding_relu_clip1": _run("adding", "rnn_relu", relu, "sgd", 0.01, "global_norm"),
        })
    return c
