"""Conditional generation from an image (one-to-many, the image-captioning shape): a small CNN
reads a noisy strip of 1-4 rendered digits, its features initialise a recurrent decoder that
writes the digits (`rnnlab.tasks.caption`).

    python -m experiments.train --config=experiments/configs/caption.py --workdir=runs/caption
    python -m experiments.train --config=experiments/configs/caption.py --workdir=runs/caption \
        --config.model.cell=lstm --config.model.attention=bahdanau --config.task.beam_width=4
    # a seconds-long smoke run: caption.py:smoke

Metric: `exact_match` (the greedy caption equals the digits + EOS exactly) on splits "eval"
and "test"; also `token_accuracy`, `tf_accuracy` and the teacher-forced `loss`.
Measured with the first command (default config: GRU 64, 1,500 steps of 64 images; shared
2-core CPU, load average ~11, 13 min 33 s wall): validation exact match 0.705 @500 steps,
0.904 @1000, 0.953 @1500 (token accuracy 0.974); test exact match 0.965 (token accuracy 0.983).
"""

from rnnlab.tasks.caption import caption_config
from rnnlab.config import smoke_schedule


def get_config(variant: str = ""):
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of caption.py; valid: '' or 'smoke'")
    c = caption_config()
    c.task.min_digits = 1
    c.task.max_digits = 4  # images 16 x 64 pixels
    c.task.noise = 0.3
    c.task.max_shift = 2
    c.task.batch_size = 64
    c.task.eval_batches = 8  # 512 validation (and 512 test) images

    c.model.cell = "gru"  # decoder cell
    c.model.hidden = 64
    c.model.embed_dim = 16
    c.model.conv_features = (16, 32)
    c.model.feature_dim = 64

    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.optim.clip = "global_norm"
    c.optim.clip_value = 1.0
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.1

    c.train.steps = 1_500
    c.train.log_every = 100
    c.train.eval_every = 500
    c.checkpoint.every_steps = 500

    if variant == "smoke":  # seconds: two digits at most, a tiny CNN and decoder
        c.task.max_digits = 2
        c.task.batch_size = 8
        c.task.eval_batches = 2
        c.task.beam_width = 0  # beam search is exercised by seq2seq.py:smoke
        c.model.embed_dim = 4
        c.model.conv_features = (4,)
        c.model.feature_dim = 8
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
