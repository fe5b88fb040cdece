"""The Task interface: everything task-specific the training engine needs, and nothing else.

`Task` is a `typing.Protocol` whose optional members have defaults: a task family subclasses it
(`class Adding(SyntheticTask)`, `class SyntheticTask(Task)`) and overrides what it has; the
engine calls every member without probing for it. Batches are numpy or jax arrays with the
batch on the leading axis (scalars allowed) and hold this process's rows only
(`rnnlab.data.hosts.process_rows`; all of it on one host). `batch_size` and the shapes `loss`
sees inside the jitted steps are global; the engine assembles and shards them
(`rnnlab.train.mesh`).

A task family is registered by name with `register(name, factory)`: `factory(config)` builds the
task and `factory.validate(config)` checks `config.task` (raising `ConfigError`).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import flax.linen as nn
import jax

from rnnlab.config import ConfigError
from rnnlab.models.recurrent import Recurrent


class Task(Protocol):
    """What the loop, the steps and the checkpoints ask of a task."""

    metric: str  # the task metric's key in `metrics(...)`, e.g. "mse", "accuracy", "bpc"
    metric_mode: str = "min"  # "min" or "max": which way is better (best checkpoint)
    carries_state: bool = False  # stream task: the hidden state is carried across consecutive
    #                              train batches (truncated BPTT), reset every steps_per_epoch
    resets_carry: bool = False  # True: loss() resets the carry itself at epoch starts (from
    #   its batches), and the engine's reset every `steps_per_epoch` steps is off (epochs of
    #   varying length: the LM task with random BPTT lengths)
    steps_per_epoch: int  # train batches per epoch (step-decay schedules, carry reset)
    batch_size: int  # train batch size (shape of the carried state)

    def init(self, rng) -> Any:
        """The model's parameter pytree."""
        ...

    def loss(self, params, batch, carry, rng, train: bool) -> tuple:
        """-> (loss, (stats, new_carry)). Pure and jittable. loss: scalar mean to
        differentiate; stats: dict of scalar sums over the batch (adding them over batches
        gives the sums over the union); carry is None for per-sequence tasks; rng is None when
        train is False (no dropout)."""
        ...

    def metrics(self, stats) -> dict:
        """Sums -> reported metrics, "loss" included; works on jax and numpy values."""
        ...

    def train_batch(self, step: int) -> Any:
        """Deterministic in step: the step counter is the data position, so resume is exact."""
        ...

    def eval_batches(self) -> Iterable:
        """The whole validation set, once; for stream tasks in stream order (the carry
        crosses batches)."""
        ...

    def initial_carry(self, batch_size: int) -> Any:
        """Zeros; used when `carries_state`."""
        return None

    def test_batches(self) -> Iterable | None:
        """The test set, evaluated once when training completes (metrics.jsonl split
        "test"); None: the task has no test split."""
        return None

    def prepare(self, workdir: str) -> None:
        """Called once by `train_and_evaluate` before the state is built: read or write run
        files (the LM task's vocabulary)."""

    def update_scale(self, batch) -> Any:
        """Multiplies this train step's update after clipping, i.e. its learning rate
        (jittable; LM with random window lengths: length / bptt, AWD-LSTM's
        lr2 = lr * seq_len / bptt); None: 1."""
        return None

    def recurrent_probe(self, params, batch, carry=None) -> tuple:
        """(cell, cell_params, xs, carry): the model's first recurrent layer and its inputs
        xs [batch, time, features] on `batch` (after any embedding), for `rnnlab.diagnostics`.

        `carry` is the state entering `batch` for tasks that carry it across batches (the train
        state's carry), else the task's initial carry is used. By default the task's loss is
        run until its first `rnnlab.models.Recurrent` layer is called."""
        return _first_recurrent_layer(self, params, batch, carry)


class _Probed(Exception):
    pass


def _first_recurrent_layer(task, params, batch, carry) -> tuple:
    found = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, Recurrent) and context.method_name == "__call__":
            carry = args[1] if len(args) > 1 else kwargs.get("carry")
            found.append((context.module.cell, context.module.variables["params"]["cell"],
                          args[0], carry))
            raise _Probed
        return next_fun(*args, **kwargs)

    leading = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if carry is None and task.carries_state:
        carry = task.initial_carry(leading)
    try:
        with nn.intercept_methods(interceptor):
            task.loss(params, batch, carry, None, False)
    except _Probed:
        pass
    if not found:
        raise ValueError(f"diagnostics: {type(task).__name__}'s model has no "
                         "rnnlab.models.Recurrent layer; give the task a "
                         "recurrent_probe(params, batch, carry) -> (cell, cell_params, xs, carry)")
    return found[0]


TASKS: dict = {}


def register(name: str, factory) -> None:
    """Adds a task family: `factory(config) -> task`, `factory.validate(config)`."""
    TASKS[name] = factory


def make_task(config) -> Task:
    """Builds the task `config.task.name` (config must already be validated)."""
    if config.task.name not in TASKS:
        raise ConfigError(f"config.task.name={config.task.name!r} is not valid; valid choices: "
                          f"{sorted(TASKS)}")
    return TASKS[config.task.name](config)


def dropout_rngs(rng, train: bool) -> dict:
    """The `rngs` argument of a model's `apply`: dropout keys in training, none in evaluation."""
    return {"dropout": rng} if (train and rng is not None) else {}
