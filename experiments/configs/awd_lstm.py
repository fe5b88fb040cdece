"""AWD-LSTM (Merity, Keskar & Socher 2017, "Regularizing and optimizing LSTM language models"):
3-layer LSTM with DropConnect on the recurrent weights, locked dropouts, tied weights, AR/TAR and
random BPTT lengths; variants ptb (default) and wt2.

    python -m experiments.train --config=experiments/configs/awd_lstm.py:ptb --workdir=runs/awd_ptb
    python -m experiments.train --config=experiments/configs/awd_lstm.py:wt2 --workdir=runs/awd_wt2
    # offline: put the corpus files in DIR/manual (ptb.{train,valid,test}.txt, or
    #   wikitext-2-v1.zip / wiki.{train,valid,test}.tokens) and add
    #   --config.task.download_dir=DIR --config.task.download=False   (or RNNLAB_DATA_DIR=DIR)
    # a seconds-long smoke run on a built-in toy corpus: awd_lstm.py:smoke

Published test perplexity (the numbers this config targets): PTB 57.3 (valid 60.0) and
WikiText-2 65.8 (valid 68.6), both after NT-ASGD and a fine-tuning run; without fine-tuning
58.8 (PTB) and 66.0 (WT2); with plain SGD instead of NT-ASGD (their Table 3) 63.7 on PTB.
metrics.jsonl: `perplexity` on "eval" (validation, every epoch) and "test" (once, at the end);
eval records also hold `average_start` (the step NT-ASGD started averaging, -1 = not yet) and
`averaged_iterates` (0 = the plain weights were evaluated).

Setting: embedding 400, LSTM layers 1150, 1150, 400 (the last as wide as the embedding, for
tying), forget-gate bias 0 (PyTorch's LSTM); dropouts: output 0.4, between layers 0.25 (WT2 0.2),
inputs 0.4 (WT2 0.65), embedding (whole words) 0.1, all locked (one mask per window), weight drop
0.5 on every recurrent matrix; AR alpha 2, TAR beta 1; SGD lr 30 scaled per step by window
length / 70, global-norm clipping 0.25, weight decay 1.2e-6; NT-ASGD: validation every epoch,
averaging starts when the validation loss is worse than the best of the evaluations more than 5
epochs before, and from then on validation, the best checkpoint, the test split and generation
use the averaged weights; BPTT length max(5, N(70 or 35 w.p. 0.05, 5)); batch 20 (PTB) / 80
(WT2), validation batch 10, test batch 1; 500 (PTB) / 750 (WT2) epochs.

Differences from the published setup:
  - not reproduced: the fine-tuning run (a second ASGD run restarted from the best model) and
    the neural cache, so expect the no-fine-tuning figures (58.8 PTB, 66.0 WT2);
  - the per-step lr scale uses the window's real length: it differs from AWD's sampled length
    only for the last window of an epoch (cut by the end of the data) and for the ~0.1% of
    draws longer than 85 = 70 + 3 std, which are cut to 85;
  - the average runs over w_T .. w_k from the weights at the trigger step T (Algorithm 1 of
    the paper); PyTorch's ASGD, which their code uses, averages w_{T+2} .. w_k;
  - not measured here: the PTB training split and WikiText-2 cannot be downloaded on the
    development machine, and 500 epochs of this 24M-parameter model need a GPU for days.
"""

from experiments.configs._common import lm_smoke, train_schedule
from rnnlab.config import parse_variant
from rnnlab.data.lm import epoch_steps
from rnnlab.tasks.lm import lm_config

# variant: (corpus, train tokens, batch, dropout_hidden, dropout_input, epochs)
VARIANTS = {
    "ptb": ("ptb", 929_589, 20, 0.25, 0.4, 500),
    "wt2": ("wikitext2", 2_088_628, 80, 0.2, 0.65, 750),
}


def get_config(variant: str = "ptb"):
    variant = parse_variant(variant, (*VARIANTS, "smoke"), "awd_lstm.py")
    corpus, tokens, batch, dropout_hidden, dropout_input, epochs = VARIANTS.get(
        variant, VARIANTS["ptb"])
    per_epoch = epoch_steps(tokens, batch, 70, random_length=True)  # epoch 0: 687 PTB, 386 WT2

    c = lm_config()
    c.task.corpus = corpus  # TFDS builders rnnlab_ptb/word, rnnlab_wikitext/wikitext2
    c.task.batch_size = batch  # rows of the train stream
    c.task.bptt = 70  # mean window length
    c.task.random_length = True  # AWD: max(5, N(70, 5)), N(35, 5) with probability 0.05
    c.task.test_batch_size = 1
    c.task.eval_bptt = 70
    c.task.ar_alpha = 2.0  # AR on the dropped last-layer output
    c.task.tar_beta = 1.0  # TAR on the undropped last-layer output

    c.model.cell_kwargs = "forget_bias=0.0"  # PyTorch-style LSTM: weights U(±1/sqrt(hidden))
    c.model.hidden = 1150  # layers 1 and 2
    c.model.num_layers = 3
    c.model.last_hidden = 400  # layer 3 = embedding width, so the readout can be tied
    c.model.embed_dim = 400
    c.model.tie_weights = True  # (lm_config: embedding ~ U(±0.1), readout bias 0)
    c.model.dropout_output = 0.4
    c.model.dropout_hidden = dropout_hidden
    c.model.dropout_input = dropout_input
    c.model.dropout_embedding = 0.1
    c.model.variational = True  # locked dropout: one mask per window
    c.model.weight_drop = 0.5  # DropConnect on the recurrent matrices

    c.optim.name = "sgd"
    c.optim.lr = 30.0  # constant, x window length / 70 per step (LMTask.update_scale)
    c.optim.clip_value = 0.25
    c.optim.weight_decay = 1.2e-6  # L2 term added to the gradient (after clipping, as PyTorch)
    c.optim.average = "nt_asgd"  # averaged SGD once validation is worse than the best of the
    # evaluations > 5 epochs ago (lm_config's nt_asgd_nonmono)

    # validation (NT-ASGD's logging interval) and a checkpoint every epoch (the best is kept)
    train_schedule(c, epochs * per_epoch, per_epoch, log_every=200)
    c.checkpoint.every_secs = 1800.0

    if variant == "smoke":  # seconds: tiny model on the built-in toy corpus
        # test batch = eval batch: one compiled eval step
        lm_smoke(c, 8, bptt_std=2.0, test_batch_size=4, eval_bptt=8)
        c.model.hidden = 12
        c.model.num_layers = 2
        c.model.last_hidden = 8
        c.optim.nt_asgd_nonmono = 1  # with lr 30, NT-ASGD starts averaging at step 5 (CPU)
        train_schedule(c, 8, 1, checkpoint_every=3, log_every=2)
    return c
