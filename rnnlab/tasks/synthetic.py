"""The long-range synthetic tasks (adding, copy memory, temporal order), generated on the fly
from `rnnlab.data.synthetic`: the reference implementation of the Task interface
(`rnnlab.tasks`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rnnlab.data import synthetic
from rnnlab.data.hosts import process_rows
from rnnlab.data.splits import CachedSplits
from rnnlab.models.sequence import SequenceModel
from rnnlab.tasks.base import Task, dropout_rngs, register
from rnnlab.config import ConfigError, check_choice, check_positive_fields, make_cells

class SyntheticTask(CachedSplits, Task):
    """Base for the tasks of `rnnlab.data.synthetic`: batches drawn from fold_in(key, step).

    config.task fields: name, length (T), batch_size, eval_batches (fixed validation batches
    drawn from a separate key), steps_per_epoch.
    """

    kind = ""  # key in synthetic.GENERATORS
    min_length = 1
    carries_state = False
    metric = "loss"
    metric_mode = "min"
    output_size = 1
    readout = "last"
    vocab_size = 0

    @classmethod
    def validate(cls, config) -> None:
        t = config.task
        for field in ("length", "batch_size", "eval_batches", "steps_per_epoch"):
            if field not in t:
                raise ConfigError(f"config.task has no field {field!r} (task {t.name!r} needs "
                                  "length, batch_size, eval_batches, steps_per_epoch)")
        if t.length < cls.min_length:
            raise ConfigError(f"config.task.length={t.length!r} must be >= {cls.min_length} "
                              f"for task {t.name!r}")
        check_positive_fields("task", t, ("batch_size", "eval_batches", "steps_per_epoch"))

    def __init__(self, config):
        t, m = config.task, config.model
        self.length, self.batch_size = t.length, t.batch_size
        self.steps_per_epoch = t.steps_per_epoch
        self.num_eval_batches = t.eval_batches
        data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
        self._train_key = jax.random.fold_in(data_key, 0)
        self._eval_key = jax.random.fold_in(data_key, 1)
        self.model = SequenceModel(
            cells=make_cells(m), output_size=self.output_size, readout=self.readout,
            vocab_size=self.vocab_size, embed_dim=m.embed_dim, dropout=m.dropout, unroll=m.unroll)
        gen = synthetic.GENERATORS[self.kind]
        length, batch, kwargs = self.length, self.batch_size, self.generator_kwargs(t)
        mine = process_rows(batch, jax.process_index(), jax.process_count())  # multi-host
        self._generate = jax.jit(lambda key, i: {  # this process's rows of the global batch
            k: v[mine] for k, v in zip(("inputs", "targets"),
                                       gen(jax.random.fold_in(key, i), batch, length, **kwargs))})

    @classmethod
    def generator_kwargs(cls, task_config) -> dict:
        """Keyword arguments of the task's generator from config.task (none by default)."""
        return {}

    def train_batch(self, step: int):
        return self._generate(self._train_key, step)

    def split_batches(self, name: str):
        if name != "validation":
            return None  # no test split: the validation batches are held out already
        return [self._generate(self._eval_key, i)
                for i in range(self.num_eval_batches)]

    def init(self, rng):
        return self.model.init({"params": rng}, self.train_batch(0)["inputs"])["params"]

    def initial_carry(self, batch_size: int):
        return self.model.initial_carry(batch_size)

    def apply(self, params, inputs, rng, train):
        rngs = dropout_rngs(rng, train)
        outputs, _ = self.model.apply({"params": params}, inputs, train=train, rngs=rngs)
        return outputs


SOLVED_ERROR = 0.04  # Hochreiter & Schmidhuber 1997: a sequence is right when |error| < 0.04
SOLVED_FRACTION = 0.95  # ... and the task is solved when at least 95% of the test ones are


class Adding(SyntheticTask):
    """Adding problem: regression of the sum of the two marked values; metric MSE (baseline
    `synthetic.ADDING_BASELINE_MSE` ≈ 0.167). Also Hochreiter & Schmidhuber's criterion:
    `within_tol` is the fraction of sequences with |error| < 0.04, `solved` is 1 when that
    fraction is >= 0.95 (on the evaluation batches: the test set)."""

    kind, min_length, metric = "adding", 2, "mse"

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        check_choice("task.marks", cls.generator_kwargs(config.task)["marks"],
                     synthetic.ADDING_MARKS)

    @classmethod
    def generator_kwargs(cls, task_config) -> dict:
        return {"marks": task_config.get("marks", "anywhere")}  # synthetic.adding's marks

    def loss(self, params, batch, carry, rng, train):
        pred = self.apply(params, batch["inputs"], rng, train)[:, 0]
        err = pred - batch["targets"]
        se = jnp.square(err)
        stats = {"count": jnp.float32(se.shape[0]), "se": jnp.sum(se),
                 "within": jnp.sum(jnp.abs(err) < SOLVED_ERROR).astype(jnp.float32)}
        return jnp.mean(se), (stats, None)

    def metrics(self, stats):
        mse = stats["se"] / stats["count"]
        within = stats["within"] / stats["count"]
        return {"loss": mse, "mse": mse, "within_tol": within,
                "solved": (within >= SOLVED_FRACTION).astype(jnp.float32)}


class CopyMemory(SyntheticTask):
    """Copy memory: per-step cross-entropy over T + 20 steps (baseline 10·ln 8/(T + 20)); metric
    accuracy on the 10 recalled symbols (chance 1/8)."""

    kind, metric, metric_mode = "copy", "accuracy", "max"
    readout, output_size, vocab_size = "all", synthetic.COPY_VOCAB, synthetic.COPY_VOCAB

    def loss(self, params, batch, carry, rng, train):
        logits = self.apply(params, batch["inputs"], rng, train)
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        recall = slice(-synthetic.COPY_RECALL, None)
        correct = jnp.argmax(logits[:, recall], -1) == batch["targets"][:, recall]
        stats = {"count": jnp.float32(xent.size), "xent": jnp.sum(xent),
                 "recalled": jnp.float32(correct.size), "correct": jnp.sum(correct)}
        return jnp.mean(xent), (stats, None)

    def metrics(self, stats):
        return {"loss": stats["xent"] / stats["count"],
                "accuracy": stats["correct"] / stats["recalled"],
                "baseline": synthetic.copy_memory_baseline(self.length)}


class TemporalOrder(SyntheticTask):
    """Temporal order: 4-way classification of the order of X/Y; metric accuracy (chance 0.25,
    cross-entropy baseline ln 4)."""

    kind, min_length, metric, metric_mode = "temporal_order", 20, "accuracy", "max"
    output_size, vocab_size = synthetic.ORDER_CLASSES, synthetic.ORDER_VOCAB

    def loss(self, params, batch, carry, rng, train):
        logits = self.apply(params, batch["inputs"], rng, train)
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = jnp.argmax(logits, -1) == batch["targets"]
        stats = {"count": jnp.float32(xent.size), "xent": jnp.sum(xent),
                 "correct": jnp.sum(correct)}
        return jnp.mean(xent), (stats, None)

    def metrics(self, stats):
        return {"loss": stats["xent"] / stats["count"],
                "accuracy": stats["correct"] / stats["count"]}


register("adding", Adding)
register("copy", CopyMemory)
register("temporal_order", TemporalOrder)

__all__ = ["Adding", "CopyMemory", "SyntheticTask", "TemporalOrder"]
