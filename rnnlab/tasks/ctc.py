"""Alignment-free sequence labelling with CTC ("ctc", the speech-recognition shape): label
sequences spoken as variable-length runs of noisy frames (`rnnlab.data.ctc`), a (bidirectional)
recurrent frame classifier (`rnnlab.models.ctc.CTCModel`), `optax.ctc_loss`.

    config = ctc_config()
    result = train_and_evaluate(config, workdir)

Train loss: the CTC loss -log p(labels | frames) averaged over sequences. Evaluation (splits
"eval" and "test") reports

    loss              the CTC loss per sequence (nats)
    ler               label error rate of greedy (best-path) decoding: total edit distance /
                      total reference labels (the task metric; lower is better)
    sequence_accuracy fraction of sequences decoded exactly
    beam_ler          label error rate of prefix beam search (with task.beam_width > 0)

Data position: train batch `step` is drawn from `np.random.default_rng([seed, 0, step])`;
validation and test are `eval_batches` fixed batches each.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rnnlab.data import ctc as data
from rnnlab.models import ctc as ctc_lib
from rnnlab.tasks.base import Task, dropout_rngs, register
from rnnlab.tasks.seq2seq import GeneratedBatches
from rnnlab.config import ConfigError, base_config, check_fields, check_positive_fields, make_cells


def ctc_config() -> ml_collections.ConfigDict:
    """`base_config()` plus every field the CTC task reads (each declared here)."""
    c = base_config()
    t = c.task
    t.name = "ctc"
    t.num_classes = 8  # label symbols 1..C (0 is the CTC blank)
    t.feature_dim = 16  # features per frame
    t.min_labels = 2  # shortest label sequence
    t.max_labels = 6  # longest label sequence
    t.min_run = 2  # fewest frames per label
    t.max_run = 5  # most frames per label
    t.max_gap = 2  # most silence frames between labels (and at either end)
    t.noise = 1.5  # standard deviation of the frame noise (prototypes are N(0, I))
    t.batch_size = 32  # sequences per train step (and per eval batch)
    t.eval_batches = 8  # validation batches (and as many test batches)
    t.steps_per_epoch = 1000  # steps per "epoch" (schedules only)
    t.beam_width = 0  # evaluation also runs CTC prefix beam search of this width (0 = off)

    m = c.model
    m.hidden = 64  # units per direction
    m.bidirectional = True  # a backward layer beside every forward one, outputs concatenated
    return c


class CTCTask(GeneratedBatches, Task):
    """Frames -> labels with CTC (see the module docstring)."""

    carries_state = False
    metric, metric_mode = "ler", "min"

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, ctc_config(), "ctc", "rnnlab.tasks.ctc.ctc_config()")
        t = config.task
        try:
            data.check(t.num_classes, t.min_labels, t.max_labels, t.min_run, t.max_run,
                       t.max_gap, t.noise)
        except ValueError as e:
            raise ConfigError(f"config.task: {e}") from None
        check_positive_fields("task", t, ("feature_dim", "batch_size", "eval_batches",
                                         "steps_per_epoch"))
        if t.beam_width < 0:
            raise ConfigError(f"config.task.beam_width={t.beam_width!r} must be >= 0")

    def __init__(self, config):
        t, m = config.task, config.model
        self.seed, self.batch_size = config.seed, t.batch_size
        self.num_eval_batches, self.steps_per_epoch = t.eval_batches, t.steps_per_epoch
        self.prototypes = data.make_prototypes(t.num_classes, t.feature_dim)
        self._shape = dict(min_labels=t.min_labels, max_labels=t.max_labels, min_run=t.min_run,
                           max_run=t.max_run, max_gap=t.max_gap, noise=t.noise)
        self.beam_width = int(t.beam_width)
        self.model = ctc_lib.CTCModel(make_cells(m), t.num_classes + 1, m.bidirectional,
                                      m.dropout, m.unroll)

    def _generate(self, rng) -> dict:
        frames, mask, labels = data.generate(rng, self.prototypes, self.batch_size,
                                             **self._shape)
        return {"frames": frames, "mask": mask, "labels": labels}

    def init(self, rng):
        b = self.train_batch(0)
        init = jax.jit(lambda r, x, m: self.model.init({"params": r}, x, m))
        return init(rng, b["frames"], b["mask"])["params"]

    def initial_carry(self, batch_size: int):
        return None

    def loss(self, params, batch, carry, rng, train):
        mask, labels = batch["mask"], batch["labels"]
        rngs = dropout_rngs(rng, train)
        logits = self.model.apply({"params": params}, batch["frames"], mask, train=train,
                                  rngs=rngs)
        per_seq = ctc_lib.ctc_loss(logits, mask, labels, labels != ctc_lib.BLANK)
        ref_len = (labels != ctc_lib.BLANK).sum(1)
        stats = {"nll": per_seq.sum(), "sequences": jnp.float32(per_seq.shape[0])}
        if not train:
            tokens, lengths = ctc_lib.greedy_ctc_decode(logits, mask)
            errors = ctc_lib.edit_distance(tokens, lengths, labels, ref_len)
            stats.update(labels=ref_len.sum().astype(jnp.float32),
                         errors=errors.sum().astype(jnp.float32),
                         exact=(errors == 0).sum().astype(jnp.float32))
            if self.beam_width:
                prefixes, plen, _ = ctc_lib.prefix_beam_search(
                    jax.nn.log_softmax(logits), mask, self.beam_width, labels.shape[1] + 1)
                stats["beam_errors"] = ctc_lib.edit_distance(
                    prefixes[:, 0], plen[:, 0], labels, ref_len).sum().astype(jnp.float32)
        return jnp.mean(per_seq), (stats, None)

    def metrics(self, stats) -> dict:
        out = {"loss": stats["nll"] / jnp.maximum(stats["sequences"], 1.0)}
        if "errors" in stats:
            labels = jnp.maximum(stats["labels"], 1.0)
            out["ler"] = stats["errors"] / labels
            out["sequence_accuracy"] = stats["exact"] / jnp.maximum(stats["sequences"], 1.0)
        if "beam_errors" in stats:
            out["beam_ler"] = stats["beam_errors"] / jnp.maximum(stats["labels"], 1.0)
        return out


register("ctc", CTCTask)

__all__ = ["CTCTask", "ctc_config"]
