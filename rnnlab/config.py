"""The bottom floor of every config: the errors, the sections every experiment shares, the
field checks every task uses, cell building and the variant parser of `experiments/configs/`.

It imports nothing above `rnnlab.cells`, so `rnnlab.tasks`, `rnnlab.train` and the entry points
all build on it without importing each other. An experiment config starts from `base_config()`
(or a task's `*_config()`, which starts from it), states what differs, and returns:

    def get_config(variant: str = ""):
        variant = parse_variant(variant, ("", "smoke"), "adding.py")
        c = base_config()
        c.task = ml_collections.ConfigDict(dict(name="adding", length=100, ...))
        ...

`rnnlab.train.config.validate(config)` checks every engine field and then the task's own
`validate`; all of them raise `ConfigError`, naming the field, the bad value and what is valid.
"""

from __future__ import annotations

import ast

import ml_collections

import rnnlab.cells


class RunError(Exception):
    """The run cannot start or go on for a reason the user fixes (a config field, a data file,
    the workdir, its checkpoints, a diverged run): the message names it and the fix, and the
    entry points print it as one line, without a traceback."""


class ConfigError(RunError, ValueError):
    """A config field holds a value that is not valid; the message names field and choices."""


def base_config() -> ml_collections.ConfigDict:
    """Defaults for the sections every experiment shares: seed, model, optim, train, diagnostics,
    checkpoint, mesh."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # initialisation, dropout and data all derive from this seed

    c.task = ml_collections.ConfigDict()  # filled by the experiment config (name = a task in
    c.task.name = ""  # rnnlab.tasks.TASKS)

    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"  # any name in rnnlab.cells.names()
    c.model.hidden = 128  # hidden units per layer
    c.model.num_layers = 1  # stacked recurrent layers
    c.model.cell_kwargs = ""  # extra cell fields: "forget_bias=1.0,peepholes=True"
    c.model.embed_dim = 0  # token tasks: 0 = one-hot inputs, > 0 = embedding width
    c.model.dropout = 0.0  # dropout between layers and before the readout
    c.model.unroll = 1  # scan steps per compiled loop iteration (speed only; 0 = picked per
    #                     shape by rnnlab.unroll.auto_unroll)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # sgd | adam | adamw | rmsprop
    c.optim.lr = 1e-3  # peak learning rate
    c.optim.momentum = 0.0  # sgd: momentum (0 = plain SGD); rmsprop: momentum
    c.optim.nesterov = False  # sgd with momentum: Nesterov's variant
    c.optim.b1 = 0.9  # adam/adamw first-moment decay
    c.optim.b2 = 0.999  # adam/adamw second-moment decay
    c.optim.eps = 1e-8  # adam/adamw/rmsprop epsilon
    c.optim.rms_decay = 0.9  # rmsprop: decay of the squared-gradient average
    c.optim.weight_decay = 0.0  # adamw: decoupled; others: L2 term added to the gradient
    c.optim.clip = "global_norm"  # none | global_norm | value | adaptive (Brock et al. 2021)
    c.optim.clip_value = 1.0  # max global norm / max |g| / adaptive ratio, per `clip`
    c.optim.lr_scales = ""  # per-parameter lr factors by key name: "skew=0.1" (expRNN's generator
    #                         at lr/10); a cell's own bounds (IndRNN |u| <= 2^{1/T}) need no key
    c.optim.schedule = "constant"  # constant | step (Zaremba-style decay) | multistep | cosine
    c.optim.warmup_steps = 0  # linear warmup from 0 to lr before the schedule (0 = none)
    c.optim.decay_after_epochs = 4  # step: keep lr for this many epochs, then decay per epoch
    c.optim.decay_factor = 0.5  # step: lr multiplier per epoch after decay_after_epochs;
    #                             multistep: lr multiplier at each milestone
    c.optim.milestone_epochs = ()  # multistep: epochs at whose start lr is multiplied by
    #                                decay_factor (AWD's --when 300 400)
    c.optim.final_lr_fraction = 0.0  # cosine: final lr as a fraction of lr
    c.optim.average = "none"  # iterate averaging: none | from_step | nt_asgd (Merity et al.
    #   2017: starts when the validation loss is worse than the best of the evaluations more than
    #   nt_asgd_nonmono evaluations ago); evaluation, test and best checkpoint use the average
    c.optim.nt_asgd_nonmono = 5  # nt_asgd: the non-monotone interval n, in evaluations
    c.optim.average_start = 0  # from_step: the optimiser step where averaging starts

    c.train = ml_collections.ConfigDict()
    c.train.steps = 10_000  # total optimiser steps
    c.train.log_every = 100  # write train metrics (jsonl, TensorBoard, console) every N steps
    c.train.eval_every = 1000  # evaluate on the validation batches every N steps (and at the end)
    c.train.nonfinite = "stop"  # non-finite loss/grad: stop (error naming the step) | skip update
    c.train.max_consecutive_skips = 10  # nonfinite=skip: stop once this many updates in a row
    #                                     were skipped (the run has diverged; 0 = never stop)

    c.diagnostics = ml_collections.ConfigDict()  # gradient flow logged during training
    c.diagnostics.every = 0  # measure at step 0 and every N steps (0 = off); split
    #                          "gradient_flow" in metrics.jsonl (rnnlab.diagnostics)
    c.diagnostics.lags = (1, 10, 100)  # log the mean ‖∂L/∂h_{T-k}‖ at these lags k (k ≤ T)
    c.diagnostics.max_samples = 16  # measure on the first samples of the train batch

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000  # save every N steps (0 = off); always at the end
    c.checkpoint.every_secs = 600.0  # and/or when this many seconds passed since the last (0 = off)
    c.checkpoint.keep = 3  # keep the last K checkpoints ...
    c.checkpoint.keep_best = True  # ... plus the best by the task's validation metric
    c.checkpoint.async_save = True  # write checkpoints in a background thread

    c.mesh = ml_collections.ConfigDict()  # device mesh (rnnlab.train.mesh): data parallelism
    c.mesh.data = -1  # devices on the "data" axis that splits every batch (-1 = all visible)
    c.mesh.fsdp = False  # also shard params and optimiser state along "data" (else replicated)
    c.mesh.fsdp_min_size = 2**14  # fsdp: leaves with fewer elements stay replicated
    return c


def synthetic_smoke(c: ml_collections.ConfigDict, length: int) -> ml_collections.ConfigDict:
    """The `:smoke` variant shared by the synthetic-task configs: a tiny model on short
    sequences for 6 steps, logging, evaluating and checkpointing every few steps (seconds)."""
    c.task.length = length
    c.task.batch_size = 8
    c.task.eval_batches = 2
    return smoke_schedule(c)


def smoke_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run schedule of every config's `:smoke` variant: hidden size 8, 6 train steps,
    logging every 2, evaluating and checkpointing every 3 (the tests expect evaluations at
    steps 3 and 6)."""
    c.model.hidden = 8
    c.train.steps = 6
    c.train.log_every = 2
    c.train.eval_every = 3
    c.checkpoint.every_steps = 3
    return c


def parse_cell_kwargs(spec: str) -> dict:
    """'forget_bias=1.0,peepholes=True' -> {'forget_bias': 1.0, 'peepholes': True}."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"model.cell_kwargs: bad item {item!r}; expected key=value pairs "
                              "separated by commas, e.g. 'forget_bias=1.0,peepholes=True'")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()  # a bare word such as recurrent_init=identity
    return out


def make_cells(model_cfg) -> tuple:
    """The per-layer cells for `config.model`."""
    kwargs = parse_cell_kwargs(model_cfg.cell_kwargs)
    n = model_cfg.num_layers
    return tuple(rnnlab.cells.make(model_cfg.cell, model_cfg.hidden, **kwargs).for_layer(l, n)
                 for l in range(n))


def param_bounds(model_cfg) -> dict:
    """{parameter name: max |value|} the cells of `config.model` ask the optimiser to keep
    after every update (`Cell.param_bounds`; e.g. IndRNN's u_hh)."""
    return {k: v for cell in make_cells(model_cfg) for k, v in cell.param_bounds().items()}


def check_choice(field: str, value, choices) -> None:
    """ConfigError unless `value` is one of `choices` (`field` as in "task.kind")."""
    if value not in choices:
        raise ConfigError(f"config.{field}={value!r} is not valid; valid choices: "
                          f"{sorted(choices)}")


def check_positive(field: str, value, allow_zero: bool = False) -> None:
    """ConfigError unless `value` > 0 (>= 0 with allow_zero)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(f"config.{field}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def check_positive_fields(section: str, cfg, fields, allow_zero: bool = False) -> None:
    """`check_positive` for each of `fields` of `config.<section>` (`cfg`)."""
    for f in fields:
        check_positive(f"{section}.{f}", cfg[f], allow_zero)


def check_fields(config, reference: ml_collections.ConfigDict, task_name: str,
                 factory: str) -> None:
    """ConfigError naming the task/model fields `config` lacks compared with `reference` (the
    task's defaults, made by `factory`)."""
    for section in ("task", "model"):
        missing = sorted(set(reference[section].keys()) - set(config[section].keys()))
        if missing:
            raise ConfigError(f"config.{section} has no field(s) {missing} (task {task_name!r}); "
                              f"start from {factory}")


def parse_variant(arg: str, choices, where: str, multiple: bool = False):
    """The variant after `:` in `--config=FILE.py:VARIANT`, checked against `choices`.

    `multiple=True` reads comma-separated words (any subset of `choices`, e.g. seq2seq's
    "sort,attention") and returns them as a tuple; else the one variant. An unknown variant is a
    ConfigError naming `where` (the config file) and the valid choices."""
    words = tuple(w for w in arg.split(",") if w) if multiple else (arg,)
    bad = [w for w in words if w not in choices]
    if bad:
        valid = ", ".join(repr(c) for c in choices)
        how = "comma-separated, any of " if multiple else ""
        raise ConfigError(f"unknown variant {arg!r} of {where}; valid: {how}{valid}")
    return words if multiple else arg

