"""Shared base of the tasks on variable-length token sequences in padded, length-bucketed
batches (`rnnlab.data.buckets`): many-to-one classification (`classify`) and per-token tagging
(`tagging`). Not a task family itself (it registers nothing).

A subclass builds three `PaddedExamples` (train, validation, test) and calls `_setup`; the base
provides the rest of the Task interface:

    train_batch(step)      epoch e = step // steps_per_epoch, batch step % steps_per_epoch of
                           `PaddedExamples.epoch_order(batch_size, e, seed)`: exact on resume
    eval_batches()         every validation example once, length-sorted, `eval_batch_size` rows
                           (the last batch filled with weight-0 rows)
    test_batches()         the same for the test split
    loss / metrics         masked cross-entropy and accuracy over real examples (per-example
                           labels) or real tokens (per-token labels); "baseline" is the accuracy
                           of always predicting the train split's most frequent class

Metrics: loss (mean cross-entropy in nats), accuracy, baseline.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from rnnlab.data.buckets import PaddedExamples, bucket_lengths
from rnnlab.data.hosts import local_batch
from rnnlab.data.splits import CachedSplits
from rnnlab.data.vocab import VOCAB_FILE, Vocab
from rnnlab.models.sequence import SequenceModel
from rnnlab.tasks.base import Task, dropout_rngs
from rnnlab.config import ConfigError, check_positive_fields, make_cells


def add_padded_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The batching and model fields every padded-sequence task reads (declared once here)."""
    t = c.task
    t.batch_size = 32  # train sequences per step
    t.eval_batch_size = 128  # rows of a validation / test batch
    t.max_length = 200  # tokens kept per sequence (longer ones are truncated)
    t.buckets = 4  # padded lengths max_length / 2^k, k < buckets: one compiled step each
    t.pool = 50  # train batches whose examples are sorted by length together
    c.model.bidirectional = False  # every layer reads forwards and backwards (concatenated)
    return c


def check_padded(config) -> None:
    check_positive_fields("task", config.task,
                          ("batch_size", "eval_batch_size", "max_length", "buckets", "pool"))


LABELS_FILE = "labels.json"


def save_or_check_run_files(workdir: str, vocab: Vocab, label_names) -> None:
    """Writes the vocabulary (`<workdir>/vocab.json`) and the class names (`labels.json`), or,
    when a resumed run wrote them already, checks they are the same (else ValueError)."""
    path = os.path.join(workdir, VOCAB_FILE)
    if not epath.Path(path).exists():
        vocab.save(path)
    elif (saved := Vocab.load(path)) != vocab:
        raise ValueError(f"the vocabulary saved in {path} ({len(saved)} tokens) differs from the "
                         f"one built from this data ({len(vocab)} tokens): the run's data or "
                         "vocabulary settings changed; use a new workdir")
    labels = epath.Path(workdir) / LABELS_FILE
    if not labels.exists():
        labels.write_text(json.dumps(list(label_names)))
    elif tuple(json.loads(labels.read_text())) != tuple(label_names):
        raise ValueError(f"the class names in {labels} differ from this data's "
                         f"{list(label_names)}; use a new workdir")


class PaddedTask(CachedSplits, Task):
    """Base class; see the module docstring."""

    carries_state = False
    metric, metric_mode = "accuracy", "max"

    def _setup(self, config, train: PaddedExamples, valid: PaddedExamples,
               test: PaddedExamples, vocab_size: int, num_classes: int, readout: str) -> None:
        t, m = config.task, config.model
        self.batch_size, self.eval_batch_size = t.batch_size, t.eval_batch_size
        self.seed, self.pool = config.seed, t.pool
        self.splits = {"train": train, "validation": valid, "test": test}
        if len(train) < t.batch_size:
            raise ConfigError(f"config.task.batch_size={t.batch_size} is larger than the "
                              f"{len(train)} train examples")
        for name, data in self.splits.items():
            if not len(data):
                raise ValueError(f"the {name} split has no examples")
        self.steps_per_epoch = len(train) // t.batch_size
        self.num_classes = num_classes
        labels = np.concatenate(train.labels) if train.per_token else train.labels
        self.majority_class = int(np.bincount(labels, minlength=num_classes).argmax())
        self.model = SequenceModel(
            cells=make_cells(m), output_size=num_classes, readout=readout,
            vocab_size=vocab_size, embed_dim=m.embed_dim, dropout=m.dropout, unroll=m.unroll,
            bidirectional=m.bidirectional)
        self._order_cache: dict = {}

    @staticmethod
    def lengths(t) -> tuple[int, ...]:
        return bucket_lengths(t.max_length, t.buckets)

    # --- data -----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> list:
        if epoch not in self._order_cache:
            self._order_cache = {epoch: self.splits["train"].epoch_order(
                self.batch_size, epoch, self.seed, self.pool)}
        return self._order_cache[epoch]

    def train_batch(self, step: int) -> dict:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        return local_batch(self.splits["train"].batch(self._epoch_order(epoch)[i], self.batch_size))

    def split_batches(self, name: str) -> list:
        data = self.splits[name]
        return [local_batch(data.batch(idx, self.eval_batch_size))
                for idx in data.eval_order(self.eval_batch_size)]

    # --- model ----------------------------------------------------------------------------
    def init(self, rng):
        batch = self.splits["train"].batch(np.arange(min(2, len(self.splits["train"]))), 2)
        return self.model.init({"params": rng}, jnp.asarray(batch["inputs"]),
                               mask=jnp.asarray(batch["mask"]))["params"]

    def initial_carry(self, batch_size: int):
        return self.model.initial_carry(batch_size)

    def loss(self, params, batch, carry, rng, train):
        rngs = dropout_rngs(rng, train)
        logits, _ = self.model.apply({"params": params}, batch["inputs"], train=train,
                                     mask=batch["mask"], rngs=rngs)
        targets = batch["targets"]
        w = batch["weights"]
        if targets.ndim == 2:  # per-token labels: real tokens of real rows
            w = w[:, None] * batch["mask"].astype(w.dtype)
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        correct = (jnp.argmax(logits, -1) == targets).astype(w.dtype)
        stats = {"count": jnp.sum(w), "xent": jnp.sum(w * xent), "correct": jnp.sum(w * correct),
                 "majority": jnp.sum(w * (targets == self.majority_class))}
        return stats["xent"] / jnp.maximum(stats["count"], 1.0), (stats, None)

    def metrics(self, stats) -> dict:
        count = jnp.maximum(stats["count"], 1.0)
        return {"loss": stats["xent"] / count, "accuracy": stats["correct"] / count,
                "baseline": stats["majority"] / count}
