"""The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015 form): any cell, length T.

    python -m experiments.train --config=experiments/configs/adding.py --workdir=runs/adding_lstm
    python -m experiments.train --config=experiments/configs/adding.py --workdir=runs/adding_irnn \
        --config.model.cell=irnn --config.optim.lr=1e-4
    python -m experiments.train --config=experiments/configs/adding.py --workdir=runs/adding_tanh \
        --config.model.cell=rnn_tanh
    # T = 200: add --config.task.length=200 (LSTM: also --config.model.cell_kwargs=chrono_init=200);
    # a seconds-long smoke run: adding.py:smoke

Expected (CPU, 2 cores; see the README's results table for the measured figures): LSTM and IRNN
reach validation MSE < 0.01 at T = 100 and T = 200, the tanh RNN stays near the 0.167 baseline
(always predicting 1). The metric is `mse` in metrics.jsonl (split "eval").

Measured here (shared, heavily loaded 2-core CPU, T = 100, default config otherwise):
  lstm      eval MSE 0.177 @1000, 0.177 @2000, 0.0144 @3000, 0.0025 @4000 steps (~23 min wall)
  rnn_tanh  eval MSE 0.178 @1000, 0.179 @2000, 0.178 @3000 steps (--config.train.steps=3000)
  irnn      (lr 1e-4, 20k steps) eval MSE 0.0063 @4000, 0.0013 @8000, 6e-5 @20000 (5 min, quiet)
  (baseline on the eval batches: 0.176).
T = 200 (load ~12): irnn (lr 3e-5; lr 1e-4 overflows at step 251) eval MSE 0.0143 @8000,
  0.0072 @10000, 0.0078 @15000; rnn_tanh 0.157 @2000; lstm (forget bias 1) still 0.151 @5000.
  lstm with chrono initialisation (Tallec & Ollivier 2018; --config.model.cell_kwargs=
  chrono_init=200): eval MSE 0.153 @1000, 0.0165 @2000, 0.0046 @3000, 0.0027 @4000 (31 min,
  load ~2).

Setting: base_config() but for the task: LSTM 128, Adam lr 1e-3 (IRNN: 1e-4 at T = 100, 3e-5 at
T = 200: the ReLU recurrence overflows), global-norm clipping 1, 10,000 steps, validation and a
checkpoint every 1,000.
"""

from rnnlab.config import base_config, parse_variant, synthetic_smoke


def get_config(variant: str = ""):
    variant = parse_variant(variant, ("", "smoke"), "adding.py")
    c = base_config()
    c.task.name = "adding"  # rnnlab.tasks: inputs [B, T, 2], target = sum of marked values
    c.task.length = 100  # T, the sequence length (the span the model must bridge)
    c.task.batch_size = 50  # sequences per train step
    c.task.eval_batches = 10  # fixed validation batches (of batch_size) drawn from a held-out key
    c.task.steps_per_epoch = 1000  # steps per "epoch" (step-decay schedules only)
    c.task.marks = "anywhere"  # marked positions: anywhere (Le et al.) | halves (coRNN, LEM code)

    if variant == "smoke":  # seconds on a laptop: tiny model, short sequences
        synthetic_smoke(c, length=10)
    return c
