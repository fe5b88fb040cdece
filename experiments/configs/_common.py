"""Blocks that several experiment configs share, written once. Not a config (no `get_config`):
experiments/smoke_metrics.py skips files whose name starts with "_"."""


def adam_cosine(c, lr: float = 3e-3, final_lr_fraction: float = 0.1):
    """base_config's Adam (global-norm clipping 1) at peak `lr`, cosine-decayed to
    `final_lr_fraction` · lr over train.steps: the optimiser of the small task configs."""
    c.optim.lr = lr
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = final_lr_fraction
    return c


def train_schedule(c, steps: int, eval_every: int, checkpoint_every: int | None = None,
                   log_every: int | None = None):
    """`steps` optimiser steps, validation every `eval_every` steps and a checkpoint at each
    validation (else every `checkpoint_every`); train logs every `log_every` (None: as before)."""
    c.train.steps = steps
    c.train.eval_every = eval_every
    c.checkpoint.every_steps = eval_every if checkpoint_every is None else checkpoint_every
    if log_every is not None:
        c.train.log_every = log_every
    return c


def lm_smoke(c, bptt: int, **task):
    """The data and embedding of the LM configs' `:smoke` variants: the built-in toy corpus in
    4 rows (train and validation), windows of `bptt`, embedding width 8; `task`: further
    task fields (e.g. vocab_level="char")."""
    c.task.corpus = "generated"
    c.task.batch_size = 4
    c.task.bptt = bptt
    c.task.eval_batch_size = 4
    for key, value in task.items():
        c.task[key] = value
    c.model.embed_dim = 8
    return c
