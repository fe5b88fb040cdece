"""Alignment-free sequence labelling with CTC (the speech-recognition shape): 2-6 labels from
8 symbols, each spoken as 2-5 noisy frames with 0-2 silent frames between, read by a
bidirectional LSTM trained with `optax.ctc_loss` (`rnnlab.tasks.ctc`).

    python -m experiments.train --config=experiments/configs/ctc.py --workdir=runs/ctc
    python -m experiments.train --config=experiments/configs/ctc.py --workdir=runs/ctc_beam \
        --config.task.beam_width=8 --config.model.bidirectional=False
    # a seconds-long smoke run: ctc.py:smoke

Metric: `ler` (label error rate of greedy best-path decoding: edit distance / reference labels)
on splits "eval" and "test"; also `sequence_accuracy`, the CTC `loss` per sequence and, with
--config.task.beam_width=K, `beam_ler` (prefix beam search; this config: K = 4).

Measured with the first command (default config, 1,500 steps of 32 sequences; shared 2-core
CPU, load average ~10, 4 min 19 s wall): validation LER 0.084 @500 steps, 0.070 @1000, 0.063
@1500 (beam 0.055, sequence accuracy 0.78); test LER 0.081 (beam 0.070, sequence accuracy
0.70).
"""

from rnnlab.tasks.ctc import ctc_config
from rnnlab.config import smoke_schedule


def get_config(variant: str = ""):
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown variant {variant!r} of ctc.py; valid: '' or 'smoke'")
    c = ctc_config()
    c.task.num_classes = 8
    c.task.feature_dim = 16
    c.task.min_labels, c.task.max_labels = 2, 6
    c.task.min_run, c.task.max_run = 2, 5
    c.task.max_gap = 2
    c.task.noise = 1.5  # a single frame is often misread; a run of 2-5 frames rarely
    c.task.batch_size = 32
    c.task.eval_batches = 8  # 256 validation (and 256 test) sequences
    c.task.beam_width = 4

    c.model.cell = "lstm"
    c.model.hidden = 64  # per direction
    c.model.bidirectional = True

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

    if variant == "smoke":  # seconds: short sequences, a tiny model
        c.task.max_labels = 3
        c.task.max_run = 3
        c.task.batch_size = 8
        c.task.eval_batches = 2
        c.task.beam_width = 0  # beam search is exercised by seq2seq.py:smoke
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
