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

from experiments.configs._common import train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.tasks.tagging import tagging_config

VARIANTS = ("", "lag", "conll", "smoke")


def get_config(variant: str = ""):
    variant = parse_variant(variant, VARIANTS, "tagging.py")
    c = tagging_config()  # rule count of 8 symbols into 2 tags, 10,000 train sequences
    c.task.max_length = 50  # sequence lengths uniform in [10, 50]
    c.task.buckets = 2  # padded lengths 25, 50
    c.task.eval_batch_size = 250
    c.model.hidden = 32
    c.model.embed_dim = 0  # one-hot symbols
    c.optim.lr = 3e-3
    train_schedule(c, 1_500, 500)  # ~4.8 epochs of 312 batches

    if variant == "lag":
        c.task.rule = "lag"  # tagging_config's lag 3
    elif variant == "conll":
        c.task.source = "conll"
        c.task.max_length = 128  # longer sentences are cut into pieces
        c.task.buckets = 4
        c.task.vocab_size = 20_000
        c.model.embed_dim = 100
        c.model.hidden = 128
        c.model.bidirectional = True
        c.model.dropout = 0.3
        c.optim.lr = 1e-3
        train_schedule(c, 5_000, 1_000)
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
