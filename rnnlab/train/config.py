"""The engine's field choices and the one place where a whole experiment config is validated.

The sections and their defaults are declared in `rnnlab.config.base_config` (every field with a
comment). `validate(config)` checks every engine field against its valid values and then the
task's own `validate` (registered in `rnnlab.tasks`), raising `ConfigError` naming the field,
the bad value and what would be valid; `train_and_evaluate` calls it before any work.
"""

from __future__ import annotations

import ml_collections

import rnnlab
import rnnlab.tasks as tasks
from rnnlab.config import ConfigError, check_choice, check_positive, make_cells
from rnnlab.train.optim import parse_lr_scales

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
CLIPPING = ("none", "global_norm", "value", "adaptive")
SCHEDULES = ("constant", "step", "multistep", "cosine")
AVERAGING = ("none", "from_step", "nt_asgd")
NONFINITE = ("stop", "skip")
BEST_MODES = ("min", "max")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first invalid field (the task section is checked by the task's
    own `validate`, registered in `rnnlab.tasks`)."""
    for section in ("task", "model", "optim", "train", "diagnostics", "checkpoint", "mesh"):
        if section not in config:
            raise ConfigError(f"config has no section {section!r}; start from "
                              "rnnlab.config.base_config()")
    check_choice("task.name", config.task.name, tasks.TASKS)
    m = config.model
    check_choice("model.cell", m.cell, rnnlab.cells.names())
    for f in ("hidden", "num_layers"):
        check_positive(f"model.{f}", m[f])
    check_positive("model.unroll", m.unroll, allow_zero=True)
    check_positive("model.embed_dim", m.embed_dim, allow_zero=True)
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"config.model.dropout={m.dropout!r} must be in [0, 1)")
    try:
        make_cells(m)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        where = f"config.model.cell_kwargs={m.cell_kwargs!r}" if m.cell_kwargs else "config.model"
        raise ConfigError(f"{where}: {e}") from None

    o = config.optim
    check_choice("optim.name", o.name, OPTIMIZERS)
    check_choice("optim.clip", o.clip, CLIPPING)
    check_choice("optim.schedule", o.schedule, SCHEDULES)
    check_positive("optim.lr", o.lr)
    if o.clip != "none":
        check_positive("optim.clip_value", o.clip_value)
    for f in ("momentum", "weight_decay", "warmup_steps", "decay_after_epochs",
              "final_lr_fraction"):
        check_positive(f"optim.{f}", o[f], allow_zero=True)
    check_positive("optim.decay_factor", o.decay_factor)
    if not all(isinstance(m, int) and m > 0 for m in o.milestone_epochs):
        raise ConfigError(f"config.optim.milestone_epochs={tuple(o.milestone_epochs)!r} must "
                          "be positive integers (epochs), e.g. (300, 400)")
    if o.schedule == "multistep" and not o.milestone_epochs:
        raise ConfigError("config.optim.schedule='multistep' needs optim.milestone_epochs, "
                          "e.g. --config.optim.milestone_epochs='(300, 400)'")

    try:
        parse_lr_scales(o.lr_scales)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    check_choice("optim.average", o.average, AVERAGING)
    check_positive("optim.nt_asgd_nonmono", o.nt_asgd_nonmono)
    check_positive("optim.average_start", o.average_start, allow_zero=True)

    t = config.train
    check_positive("train.steps", t.steps)
    check_positive("train.log_every", t.log_every)
    check_positive("train.eval_every", t.eval_every)
    check_choice("train.nonfinite", t.nonfinite, NONFINITE)
    if not isinstance(t.max_consecutive_skips, int) or t.max_consecutive_skips < 0:
        raise ConfigError(f"config.train.max_consecutive_skips={t.max_consecutive_skips!r} must "
                          "be an integer >= 0 (0 = never stop)")

    d = config.diagnostics
    check_positive("diagnostics.every", d.every, allow_zero=True)
    check_positive("diagnostics.max_samples", d.max_samples)
    if not all(isinstance(k, int) and k >= 0 for k in d.lags):
        raise ConfigError(f"config.diagnostics.lags={d.lags!r} must be non-negative integers")

    k = config.checkpoint
    check_positive("checkpoint.every_steps", k.every_steps, allow_zero=True)
    check_positive("checkpoint.every_secs", k.every_secs, allow_zero=True)
    check_positive("checkpoint.keep", k.keep)

    mesh = config.mesh
    if not (mesh.data == -1 or mesh.data > 0):
        raise ConfigError(f"config.mesh.data={mesh.data!r} must be -1 (all devices) or > 0")
    check_positive("mesh.fsdp_min_size", mesh.fsdp_min_size, allow_zero=True)

    tasks.TASKS[config.task.name].validate(config)
