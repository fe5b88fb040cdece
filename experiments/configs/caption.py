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
Setting: caption_config()'s task and CNN (images 16 x 64 pixels; 512 validation and 512 test
images), a GRU decoder, Adam 3e-3 with cosine decay to 0.1 lr.
"""

from experiments.configs._common import adam_cosine, train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.tasks.caption import caption_config


def get_config(variant: str = ""):
    variant = parse_variant(variant, ("", "smoke"), "caption.py")
    c = caption_config()
    c.model.cell = "gru"  # decoder cell
    c.model.embed_dim = 16
    adam_cosine(c)
    train_schedule(c, 1_500, 500)

    if variant == "smoke":  # seconds: two digits at most, a tiny CNN and decoder
        c.task.max_digits = 2
        c.task.batch_size = 8
        c.task.eval_batches = 2
        c.model.embed_dim = 4
        c.model.conv_features = (4,)
        c.model.feature_dim = 8
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
