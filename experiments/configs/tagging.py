"""Per-token tagging (many-to-many, synchronised): a synthetic rule with a known answer, or
CoNLL-style token/tag files.

    python -m experiments.train --config=experiments/configs/tagging.py --workdir=runs/tag_count
    python -m experiments.train --config=experiments/configs/tagging.py:lag --workdir=runs/tag_lag
    python -m experiments.train --config=experiments/configs/tagging.py:conll \
        --workdir=runs/conll --config.task.files.train=train.txt \
        --config.task.files.valid=valid.txt --config.task.files.test=test.txt
    # the non-recurrent baseline: --config.model.cell=tdnn --config.model.cell_kwargs=window=4
    # a seconds-long smoke run: tagging.py:smoke

Variants:
  ""     rule "count": tag_t = (number of 1s in x_0..x_t) mod 2, the running parity of one
         of 8 symbols, sequences of 10-50 steps (needs memory of the whole prefix);
  lag    rule "lag": tag_t = x_{t-3} mod 2 (needs the last 4 steps: a TDNN with window 4
         solves it exactly, one with window 3 cannot);
  conll  CoNLL-2003-style files (token first, tag last; e.g. NER or POS tags), a
         bidirectional LSTM over word embeddings;
  smoke  seconds.

Metric: `accuracy` per real (unpadded) token on split "eval" and "test"; `baseline` = always
the train split's most frequent tag.

Measured (test split, 1,500 steps, shared 2-core CPU at load average ~12, 1.5-3 min each):
  ""   LSTM 1.000 (from step 1000 on)    TDNN window 4: 0.608    baseline 0.542
  lag  LSTM 1.000    TDNN window 4: 1.000    TDNN window 3: 0.541    baseline 0.553
CoNLL not measured: no CoNLL data on the development machine.
"""

from rnnlab.tasks.tagging import tagging_config
from rnnlab.config import smoke_schedule

VARIANTS = ("", "lag", "conll", "smoke")


def get_config(variant: str = ""):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of tagging.py; valid: {list(VARIANTS)}")
    c = tagging_config()
    c.task.source = "synthetic"
    c.task.rule = "count"  # tag = running count of symbol 1, mod num_tags
    c.task.symbols = 8  # symbols 1..8
    c.task.num_tags = 2  # running parity
    c.task.min_length = 10  # sequence lengths uniform in [10, 50]
    c.task.max_length = 50
    c.task.buckets = 2  # padded lengths 25, 50
    c.task.train_examples = 10_000
    c.task.eval_examples = 1_000
    c.task.batch_size = 32
    c.task.eval_batch_size = 250

    c.model.cell = "lstm"  # any name in rnnlab.cells.names() (tdnn: the non-recurrent baseline)
    c.model.hidden = 32
    c.model.embed_dim = 0  # one-hot symbols

    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.optim.clip = "global_norm"
    c.optim.clip_value = 1.0

    c.train.steps = 1_500  # ~4.8 epochs of 312 batches
    c.train.log_every = 100
    c.train.eval_every = 500
    c.checkpoint.every_steps = 500

    if variant == "lag":
        c.task.rule = "lag"
        c.task.lag = 3  # tag = x_{t-3} mod 2
    elif variant == "conll":
        c.task.source = "conll"
        c.task.max_length = 128  # longer sentences are cut into pieces
        c.task.buckets = 4
        c.task.vocab_size = 20_000
        c.task.lowercase = False
        c.model.embed_dim = 100
        c.model.hidden = 128
        c.model.bidirectional = True
        c.model.dropout = 0.3
        c.optim.lr = 1e-3
        c.train.steps = 5_000
        c.train.eval_every = 1_000
        c.checkpoint.every_steps = 1_000
    elif variant == "smoke":
        c.task.max_length = 16
        c.task.min_length = 4
        c.task.buckets = 1
        c.task.train_examples = 64
        c.task.eval_examples = 20
        c.task.batch_size = 8
        c.task.eval_batch_size = 16
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
