"""Character-level Penn Treebank (Mikolov's ptb.char.* format: characters separated by spaces,
"_" between words, one end-of-line token per line; 50 symbols): a CPU-sized LSTM (`cpu`, the
default) and AWD-LSTM's character setting for a GPU (`awd`).

    python -m experiments.train --config=experiments/configs/ptb_char.py:cpu --workdir=runs/ptb_char
    python -m experiments.train --config=experiments/configs/ptb_char.py:awd \
        --workdir=runs/ptb_char_awd                                        # a GPU, for days
    # offline: put ptb.{train,valid,test}.txt (the word files; the character form is derived
    #   from them, token for token as in ptb.char.*.txt) in DIR/manual and add
    #   --config.task.download_dir=DIR --config.task.download=False   (or RNNLAB_DATA_DIR=DIR)
    # a seconds-long smoke run on a built-in toy corpus: ptb_char.py:smoke

Metric: `bpc` (bits per symbol = loss / ln 2, end-of-line tokens included, as the published
numbers count them) on split "eval" (validation) and "test".

Published (test bpc): AWD-LSTM 3 layers 1.175 (3 x 1000 hidden, embedding 200, BPTT 150,
batch 128, Adam 2e-3; Merity et al. 2018, "An analysis of neural language modeling at multiple
scales"); Mogrifier LSTM 1.120; Pascanu et al. 2013 tanh RNN 1.42 with clipping.

`cpu`: 2 x 256 LSTM, embedding 64, BPTT 100, batch 32, Adam 2e-3 with cosine decay to 0.1 lr,
clipping 1, 3,000 steps (1.9 epochs of the 5.0M-symbol train stream): the char_shakespeare
model and schedule on PTB, sized for about half an hour on a 2-core CPU. Not a published
setting; the README's LM table gives its measured bpc.

`awd`: the AWD character setting as published (their `-model LSTM -emsize 200 -nhid 1000
-nlayers 3 -dropout 0.1 -dropouth 0.25 -dropouti 0.1 -dropoute 0 -wdrop 0.5 -bptt 150
-batch_size 128 -optimizer adam -lr 2e-3 -epochs 500 -when 300 400 -alpha 0 -beta 0`: lr / 10
at epochs 300 and 400, weight decay 1.2e-6, clip 0.25, tied weights (last layer = embedding
width 200), no AR/TAR). Unrun here: 500 epochs need a GPU.
"""

from experiments.configs._common import adam_cosine, lm_smoke, train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.data.lm import epoch_steps
from rnnlab.tasks.lm import lm_config

PTB_CHAR_TRAIN_TOKENS = 5_017_482  # symbols + one end-of-line token per line, ptb.train.txt


def get_config(variant: str = "cpu"):
    variant = parse_variant(variant, ("cpu", "awd", "smoke"), "ptb_char.py")
    c = lm_config()
    c.task.corpus = "ptb_char"  # TFDS builder rnnlab_ptb/char (derived from the word files)

    if variant == "awd":
        per_epoch = epoch_steps(PTB_CHAR_TRAIN_TOKENS, 128, 150, random_length=True)
        c.task.batch_size = 128
        c.task.bptt = 150
        c.task.random_length = True  # AWD: max(5, N(150, 5)), N(75, 5) w.p. 0.05
        c.task.test_batch_size = 1
        c.task.eval_bptt = 150
        c.model.cell_kwargs = "forget_bias=0.0"  # PyTorch-style LSTM
        c.model.hidden = 1000
        c.model.num_layers = 3
        c.model.last_hidden = 200  # = embedding width, for tying
        c.model.embed_dim = 200
        c.model.tie_weights = True
        c.model.dropout_output = 0.1
        c.model.dropout_hidden = 0.25
        c.model.dropout_input = 0.1
        c.model.variational = True
        c.model.weight_drop = 0.5
        c.optim.lr = 2e-3
        c.optim.clip_value = 0.25
        c.optim.weight_decay = 1.2e-6
        c.optim.schedule = "multistep"  # lr / 10 at the start of epochs 300 and 400
        c.optim.milestone_epochs = (300, 400)
        c.optim.decay_factor = 0.1
        train_schedule(c, 500 * per_epoch, per_epoch, log_every=200)
        c.checkpoint.every_secs = 1800.0
        return c

    c.task.batch_size = 32  # rows of the train stream
    c.task.bptt = 100  # symbols per window (truncated BPTT)
    c.task.eval_batch_size = 16
    c.task.eval_bptt = 200
    c.model.hidden = 256
    c.model.num_layers = 2
    c.model.embed_dim = 64
    adam_cosine(c, lr=2e-3)
    train_schedule(c, 3_000, 500, log_every=50)  # 1.9 epochs of 1,568 windows

    if variant == "smoke":  # seconds: tiny model on the built-in toy corpus, characters
        smoke_schedule(lm_smoke(c, 10, vocab_level="char", eval_bptt=20))
    return c
