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

Setting: ctc_config()'s task and model (16 features per frame, noise 1.5: a single frame is
often misread, a run of 2-5 frames rarely; 256 validation and 256 test sequences; LSTM 64 per
direction), Adam 3e-3 with cosine decay to 0.1 lr over 1,500 steps.
"""

from experiments.configs._common import adam_cosine, train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.tasks.ctc import ctc_config


def get_config(variant: str = ""):
    variant = parse_variant(variant, ("", "smoke"), "ctc.py")
    c = ctc_config()
    c.task.beam_width = 4
    adam_cosine(c)
    train_schedule(c, 1_500, 500)

    if variant == "smoke":  # seconds: short sequences, a tiny model
        c.task.max_labels = 3
        c.task.max_run = 3
        c.task.batch_size = 8
        c.task.eval_batches = 2
        c.task.beam_width = 0  # beam search is exercised by seq2seq.py:smoke
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
