"""The temporal-order problem (Hochreiter & Schmidhuber 1997, experiment 6a), length T.

    python -m experiments.train --config=experiments/configs/temporal_order.py \
        --workdir=runs/order_lstm
    # a seconds-long smoke run: temporal_order.py:smoke

Four classes (order of the X/Y symbols at t1 ∈ [0.1T, 0.2T), t2 ∈ [0.5T, 0.6T)); chance
accuracy 0.25. Expected: LSTM solves it (validation accuracy near 1); not yet measured here.
Setting: LSTM 64 on one-hot inputs over the 8 symbols, base_config's Adam lr 1e-3.
"""

from rnnlab.config import base_config, parse_variant, synthetic_smoke


def get_config(variant: str = ""):
    variant = parse_variant(variant, ("", "smoke"), "temporal_order.py")
    c = base_config()
    c.task.name = "temporal_order"  # rnnlab.tasks: tokens [B, T] -> class in 0..3
    c.task.length = 100  # T, the sequence length
    c.task.batch_size = 32  # sequences per train step
    c.task.eval_batches = 8  # fixed validation batches drawn from a held-out key
    c.task.steps_per_epoch = 1000  # steps per "epoch" (step-decay schedules only)

    c.model.hidden = 64  # hidden units
    c.train.steps = 5_000
    c.train.eval_every = 500

    if variant == "smoke":
        synthetic_smoke(c, length=20)
    return c
