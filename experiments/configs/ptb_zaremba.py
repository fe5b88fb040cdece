"""Zaremba, Sutskever & Vinyals 2014, "Recurrent neural network regularization": word-level
Penn Treebank with a 2-layer LSTM, SGD and a per-epoch step decay; variants small / medium / large.

    python -m experiments.train --config=experiments/configs/ptb_zaremba.py:small \
        --workdir=runs/ptb_small
    python -m experiments.train --config=experiments/configs/ptb_zaremba.py:medium \
        --workdir=runs/ptb_medium
    python -m experiments.train --config=experiments/configs/ptb_zaremba.py:large \
        --workdir=runs/ptb_large
    # offline: put ptb.{train,valid,test}.txt (Mikolov split) in DIR/manual and add
    #   --config.task.download_dir=DIR --config.task.download=False   (or RNNLAB_DATA_DIR=DIR)
    # plain files instead of TFDS: --config.task.corpus=files --config.task.files.train=... \
    #   --config.task.files.valid=... --config.task.files.test=...
    # a seconds-long smoke run on a built-in toy corpus: ptb_zaremba.py:smoke

Published (valid / test perplexity): small 120.7 / 114.5, medium 86.2 / 82.7, large 82.2 / 78.4.
metrics.jsonl: `perplexity` on split "eval" (validation, every epoch) and "test" (once, at the end).

Setting (all variants): 2 LSTM layers, embedding width = hidden, batch 20, SGD lr 1, gradient
global-norm clipping, every weight (LSTM, embedding, softmax) ~ U(±init), forget-gate bias 0,
non-recurrent dropout on the embedded inputs, between the layers and before the softmax, the
carry passed across BPTT windows and reset every epoch; the loss is summed over the window's
time steps and averaged over the batch, as in their code (lr 1 is tuned for that scale). The
schedule keeps lr 1 for k epochs and then multiplies it by `factor` every epoch (the TensorFlow
tutorial's medium/large use 0.8 instead of 1/1.2 and 1/1.15).

| variant | hidden | BPTT | dropout | init  | clip | k  | factor | epochs |
|---------|--------|------|---------|-------|------|----|--------|--------|
| small   | 200    | 20   | 0       | 0.1   | 5    | 4  | 0.5    | 13     |
| medium  | 650    | 35   | 0.5     | 0.05  | 5    | 6  | 1/1.2  | 39     |
| large   | 1500   | 35   | 0.65    | 0.04  | 10   | 14 | 1/1.15 | 55     |
"""

from experiments.configs._common import lm_smoke, train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.data.lm import epoch_steps
from rnnlab.tasks.lm import lm_config

PTB_TRAIN_TOKENS = 929_589  # words + one <eos> per line in ptb.train.txt (Mikolov split)

# variant: (hidden, bptt, dropout, init scale, clip, decay after k epochs, factor, epochs)
VARIANTS = {
    "small": (200, 20, 0.0, 0.1, 5.0, 4, 0.5, 13),
    "medium": (650, 35, 0.5, 0.05, 5.0, 6, 1 / 1.2, 39),
    "large": (1500, 35, 0.65, 0.04, 10.0, 14, 1 / 1.15, 55),
}


def get_config(variant: str = "small"):
    variant = parse_variant(variant, (*VARIANTS, "smoke"), "ptb_zaremba.py")
    hidden, bptt, dropout, init, clip, k, factor, epochs = VARIANTS.get(variant, VARIANTS["small"])
    per_epoch = epoch_steps(PTB_TRAIN_TOKENS, 20, bptt)  # 2324 (BPTT 20) / 1328 (BPTT 35)

    c = lm_config()
    c.task.corpus = "ptb"  # TFDS builder rnnlab_ptb/word (10k vocabulary, <unk>, <eos>)
    c.task.bptt = bptt  # unrolled steps per window (truncated BPTT)
    c.task.eval_batch_size = 20  # validation as in training
    c.task.test_batch_size = 1  # test as one stream (Zaremba's test setting)
    c.task.loss_reduction = "sum_time"  # NLL summed over the window, mean over rows: the
    # gradient scale of Zaremba's code (and the TensorFlow tutorial), for which lr 1 is tuned

    c.model.cell_kwargs = f"init_scale={init},forget_bias=0.0"  # every LSTM weight ~ U(±init)
    c.model.hidden = hidden  # LSTM units per layer
    c.model.num_layers = 2
    c.model.embed_dim = hidden  # embedding width = hidden
    c.model.embed_init_scale = init  # embedding and softmax ~ U(±init)
    c.model.dropout = dropout  # non-recurrent: inputs, between layers, before the softmax

    c.optim.name = "sgd"
    c.optim.lr = 1.0
    c.optim.clip_value = clip  # global norm
    c.optim.schedule = "step"  # lr · factor^max(0, epoch - k + 1)
    c.optim.decay_after_epochs = k
    c.optim.decay_factor = factor

    train_schedule(c, epochs * per_epoch, per_epoch)  # validate once per epoch

    if variant == "smoke":  # seconds: tiny model on the built-in toy corpus
        lm_smoke(c, 5, test_batch_size=4)
        c.optim.decay_after_epochs = 1
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
