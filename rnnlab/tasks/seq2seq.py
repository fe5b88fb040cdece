"""Encoder-decoder sequence-to-sequence tasks ("seq2seq", many-to-many delayed): a generated
string task (reverse, sort, add) or parallel text files, trained with teacher forcing and
evaluated by decoding.

    config = seq2seq_config()               # base_config() + every field this task reads
    config.task.kind = "reverse"            # reverse | sort | add | files
    config.model.attention = "bahdanau"     # none | bahdanau | luong_dot | luong_general
    result = train_and_evaluate(config, workdir)

Train loss: the teacher-forced cross-entropy per target token (EOS included, padding left out).
Evaluation (splits "eval" and "test") decodes every source greedily inside the jitted eval step
(`rnnlab.models.seq2seq.decode`, up to the target width) and reports

    loss            teacher-forced cross-entropy per target token (nats)
    tf_accuracy     teacher-forced next-token accuracy
    exact_match     fraction of sequences whose greedy decode equals the target exactly (the
                    task metric; higher is better)
    token_accuracy  fraction of target tokens (EOS included) the greedy decode has at the same
                    position
    beam_exact_match  exact match of the best beam (with task.beam_width > 0)

Data position: train batch `step` is drawn from `np.random.default_rng([seed, 0, step])`
(generated) or is batch `step % steps_per_epoch` of epoch `step // steps_per_epoch`'s
permutation (files), so a resumed run reads the batches an uninterrupted one would. Validation
and test sets are fixed (generated: `eval_batches` batches from their own seeds; files: every
pair, the last batch filled with empty rows that the metrics leave out).

`DecoderTask` and `GeneratedBatches` here are the shared base of every task whose model has a
`rnnlab.models.seq2seq.Decoder` (also `rnnlab.tasks.caption`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rnnlab
from rnnlab.data import seq2seq as data
from rnnlab.data.hosts import local_batch
from rnnlab.data.splits import CachedSplits
from rnnlab.data.vocab import Vocab
from rnnlab.models import seq2seq as s2s
from rnnlab.models.decoding import match_stats
from rnnlab.models.lm import masked_sum_count, token_nll
from rnnlab.tasks.base import Task, dropout_rngs, register
from rnnlab.config import (ConfigError, base_config, check_fields, check_positive_fields,
                           make_cells, parse_cell_kwargs)

KINDS = data.KINDS + ("files",)
SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE = "source_vocab.json", "target_vocab.json"
TRAIN, VALID, TEST = 0, 1, 2  # split ids in the data seeds


def decoder_model_fields(m: ml_collections.ConfigDict) -> None:
    """The model fields of every decoder task (declared here, once, with their comments)."""
    m.embed_dim = 32  # width of the token embeddings (source and output tokens)
    m.attention = "none"  # none | bahdanau (additive, context at the decoder input) |
    # luong_dot | luong_general (multiplicative, context at the output)
    m.attention_dim = 0  # bahdanau: width of the scoring layer (0 = decoder hidden)


def decoder_task_fields(t: ml_collections.ConfigDict) -> None:
    """The evaluation fields of every decoder task."""
    t.beam_width = 0  # evaluation also decodes by beam search of this width (0 = greedy only)
    t.length_penalty = 0.0  # beam search: GNMT's alpha in lp(n) = ((5 + n) / 6)^alpha


def seq2seq_config() -> ml_collections.ConfigDict:
    """`base_config()` plus every field the seq2seq task reads (each declared here)."""
    c = base_config()
    t = c.task
    t.name = "seq2seq"
    t.kind = "reverse"  # reverse | sort | add (generated) | files (parallel text, task.files)
    t.min_length = 1  # generated: shortest source (add: fewest digits per operand)
    t.max_length = 10  # generated: longest source (add: most digits per operand)
    t.batch_size = 64  # sequences per train step (and per eval batch)
    t.eval_batches = 8  # generated: validation batches (and as many test batches)
    t.steps_per_epoch = 1000  # generated: steps per "epoch" (schedules only); files: computed
    t.files = ml_collections.ConfigDict()  # kind "files": aligned UTF-8 files, one pair a line
    t.files.train_source = ""
    t.files.train_target = ""
    t.files.valid_source = ""
    t.files.valid_target = ""
    t.files.test_source = ""
    t.files.test_target = ""
    t.level = "word"  # files: tokens are words (split on whitespace) | char
    t.max_vocab = 0  # files: keep the most frequent tokens per side (specials included; 0 = all)
    t.max_source_length = 0  # files: longer sources are dropped (0 = the longest in the files)
    t.max_target_length = 0  # files: longer targets are dropped (0 = the longest in the files)
    decoder_task_fields(t)

    m = c.model
    m.hidden = 128
    decoder_model_fields(m)
    m.decoder_cell = ""  # decoder cell ("" = model.cell); the encoder uses model.cell
    m.decoder_hidden = 0  # decoder hidden units (0 = model.hidden)
    m.bridge = "auto"  # decoder's first carry: copy (the encoder's final carry) | project |
    # none (zeros) | auto (copy when the carry shapes agree, else project)
    return c


def check_decoder_fields(config) -> None:
    t, m = config.task, config.model
    if m.attention not in s2s.ATTENTIONS:
        raise ConfigError(f"config.model.attention={m.attention!r} is not valid; valid "
                          f"choices: {list(s2s.ATTENTIONS)}")
    if m.embed_dim <= 0:
        raise ConfigError(f"config.model.embed_dim={m.embed_dim!r} must be > 0")
    if t.beam_width < 0 or m.attention_dim < 0:
        raise ConfigError(f"config.task.beam_width={t.beam_width!r} and config.model."
                          f"attention_dim={m.attention_dim!r} must be >= 0")
    if t.length_penalty < 0:
        raise ConfigError(f"config.task.length_penalty={t.length_penalty!r} must be >= 0")
    for f in ("batch_size", "eval_batches", "steps_per_epoch"):
        if f in t and t[f] <= 0:
            raise ConfigError(f"config.task.{f}={t[f]!r} must be > 0")


def decoder_cells(config) -> tuple:
    m = config.model
    return tuple(rnnlab.cells.make(m.decoder_cell or m.cell, m.decoder_hidden or m.hidden,
                                   **parse_cell_kwargs(m.cell_kwargs))
                 for _ in range(m.num_layers))


def make_model(config, source_vocab: int, target_vocab: int) -> s2s.Seq2Seq:
    """The `Seq2Seq` of `config.model` (encoder: model.cell; decoder: model.decoder_cell)."""
    m = config.model
    enc, dec = make_cells(m), decoder_cells(config)
    bridge = s2s.resolve_bridge(m.bridge, enc, dec)
    decoder = s2s.Decoder(dec, target_vocab, m.embed_dim, m.attention,
                          memory_size=enc[-1].output_size, attention_dim=m.attention_dim,
                          init_size=s2s.bridge_width(enc) if bridge == "project" else 0)
    return s2s.Seq2Seq(enc, decoder, source_vocab, m.embed_dim, bridge, m.dropout, m.unroll)


class GeneratedBatches(CachedSplits):
    """Batches drawn from `np.random.default_rng([seed, split, index])`: train batch `step`,
    `eval_batches` fixed validation and as many test batches. Subclasses define
    `_generate(rng) -> batch dict` and set `seed`, `num_eval_batches`."""

    seed = 0
    num_eval_batches = 1

    def _batch(self, split: int, index: int) -> dict:
        # every process draws the whole global batch (cheap) and keeps its own rows
        return local_batch(self._generate(np.random.default_rng([self.seed, split, int(index)])))

    def train_batch(self, step: int) -> dict:
        return self._batch(TRAIN, step)

    def split_batches(self, name: str) -> list:
        split = VALID if name == "validation" else TEST
        return [self._batch(split, i) for i in range(self.num_eval_batches)]


class DecoderTask(Task):
    """Base of the tasks whose model has a `Decoder`: teacher-forced loss, decoding metrics.

    Subclasses set `model`, `input_key` (the batch entry the model encodes) and
    `target_width`; batches hold `input_key` and "target" [batch, target_width] (tokens, EOS,
    then PAD)."""

    carries_state = False
    metric, metric_mode = "exact_match", "max"
    input_key = "source"

    def _set_decoding(self, t) -> None:
        self.beam_width, self.length_penalty = int(t.beam_width), float(t.length_penalty)

    def init(self, rng):
        # `encode` creates every parameter (the decoder's in setup) without tracing the decoder
        init = jax.jit(lambda r, x: self.model.init({"params": r}, x, method="encode"))
        return init(rng, self.train_batch(0)[self.input_key])["params"]

    def initial_carry(self, batch_size: int):
        return None

    def decode(self, params, inputs, beam_width: int = 0):
        """Greedy tokens [batch, target_width] (or beams: see `rnnlab.models.seq2seq.decode`)."""
        return s2s.decode(self.model, params, inputs, self.target_width, beam_width,
                          self.length_penalty)

    def loss(self, params, batch, carry, rng, train):
        inputs, target = batch[self.input_key], batch["target"]
        rngs = dropout_rngs(rng, train)
        logits = self.model.apply({"params": params}, inputs, s2s.shift_right(target),
                                  train=train, rngs=rngs)
        real = target != data.PAD
        nll, count = masked_sum_count(token_nll(logits, target), real)
        hit = (jnp.argmax(logits, -1) == target) & real
        stats = {"nll": nll, "tokens": count, "tf_correct": hit.sum().astype(jnp.float32)}
        if not train:  # decoding metrics (eval and test only)
            stats.update(match_stats(self.decode(params, inputs), target))
            if self.beam_width:
                beams, _ = self.decode(params, inputs, self.beam_width)
                stats["beam_exact"] = match_stats(beams[:, 0], target)["exact"]
        return nll / jnp.maximum(count, 1.0), (stats, None)

    def metrics(self, stats) -> dict:
        tokens = jnp.maximum(stats["tokens"], 1.0)
        out = {"loss": stats["nll"] / tokens, "tf_accuracy": stats["tf_correct"] / tokens}
        if "exact" in stats:
            seqs = jnp.maximum(stats["sequences"], 1.0)
            out["exact_match"] = stats["exact"] / seqs
            out["token_accuracy"] = stats["correct"] / tokens
        if "beam_exact" in stats:
            out["beam_exact_match"] = stats["beam_exact"] / jnp.maximum(stats["sequences"], 1.0)
        return out


class Seq2SeqTask(GeneratedBatches, DecoderTask):
    """Generated string tasks or parallel text files (see the module docstring)."""

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, seq2seq_config(), "seq2seq",
                     "rnnlab.tasks.seq2seq.seq2seq_config()")
        t, m = config.task, config.model
        if t.kind not in KINDS:
            raise ConfigError(f"config.task.kind={t.kind!r} is not valid; valid choices: "
                              f"{list(KINDS)}")
        check_decoder_fields(config)
        if t.kind == "files":
            missing = [k for k, v in t.files.items() if not v]
            if missing:
                raise ConfigError(f"config.task.kind='files' needs config.task.files."
                                  f"{{{','.join(missing)}}} (paths to aligned UTF-8 files)")
            if t.level not in data.LEVELS:
                raise ConfigError(f"config.task.level={t.level!r} is not valid; valid choices: "
                                  f"{list(data.LEVELS)}")
            check_positive_fields("task", t, ("max_vocab", "max_source_length",
                                             "max_target_length"), allow_zero=True)
        elif not 1 <= t.min_length <= t.max_length:
            raise ConfigError(f"need 1 <= config.task.min_length <= config.task.max_length, "
                              f"got {t.min_length!r} and {t.max_length!r}")
        if m.bridge not in s2s.BRIDGES:
            raise ConfigError(f"config.model.bridge={m.bridge!r} is not valid; valid choices: "
                              f"{list(s2s.BRIDGES)}")
        if not m.decoder_hidden >= 0:
            raise ConfigError(f"config.model.decoder_hidden={m.decoder_hidden!r} must be >= 0")
        if m.decoder_cell and m.decoder_cell not in rnnlab.cells.names():
            raise ConfigError(f"config.model.decoder_cell={m.decoder_cell!r} is not valid; "
                              f"valid choices: {rnnlab.cells.names()} or '' (= model.cell)")
        try:
            make_model(config, 4, 4)
        except ValueError as e:
            raise ConfigError(f"config.model: {e}") from None

    def __init__(self, config):
        t = config.task
        self.seed, self.kind, self.batch_size = config.seed, t.kind, t.batch_size
        self.num_eval_batches = t.eval_batches
        self._set_decoding(t)
        if t.kind == "files":
            self._load_files(t)
        else:
            self.source_vocab = self.target_vocab = data.GENERATED_VOCAB
            self.source_width, self.target_width = data.widths(t.kind, t.max_length)
            self.min_length, self.max_length = t.min_length, t.max_length
            self.steps_per_epoch = t.steps_per_epoch
        self.model = make_model(config, len(self.source_vocab), len(self.target_vocab))

    # --- data -----------------------------------------------------------------------------
    def _generate(self, rng) -> dict:
        source, target = data.generate(self.kind, rng, self.batch_size, self.min_length,
                                       self.max_length)
        return {"source": source, "target": target}

    def _load_files(self, t) -> None:
        f = t.files
        pairs = {s: data.read_parallel(f[f"{s}_source"], f[f"{s}_target"], t.level)
                 for s in ("train", "valid", "test")}
        if not pairs["train"]:
            raise ValueError(f"no non-empty line pairs in {f.train_source} / {f.train_target}")
        self.source_vocab = data.build_vocab(pairs["train"], 0, t.level, t.max_vocab)
        self.target_vocab = data.build_vocab(pairs["train"], 1, t.level, t.max_vocab)
        every = [p for ps in pairs.values() for p in ps]
        self.source_width = t.max_source_length or max(len(s) for s, _ in every)
        self.target_width = (t.max_target_length or max(len(g) for _, g in every)) + 1
        self.arrays, self.dropped = {}, {}
        for split, ps in pairs.items():
            src, tgt, dropped = data.encode_pairs(ps, self.source_vocab, self.target_vocab,
                                                  self.source_width, self.target_width)
            self.arrays[split], self.dropped[split] = (src, tgt), dropped
        n = len(self.arrays["train"][0])
        if n < self.batch_size:
            raise ValueError(f"the train files hold {n} usable pairs, fewer than "
                             f"task.batch_size={self.batch_size}")
        self.steps_per_epoch = n // self.batch_size

    def train_batch(self, step: int) -> dict:
        if self.kind != "files":
            return super().train_batch(step)
        epoch, i = divmod(int(step), self.steps_per_epoch)
        src, tgt = self.arrays["train"]
        order = np.random.default_rng([self.seed, TRAIN, epoch]).permutation(len(src))
        rows = order[i * self.batch_size:(i + 1) * self.batch_size]
        return local_batch({"source": src[rows], "target": tgt[rows]})

    def _file_batches(self, split: str) -> list:
        src, tgt = self.arrays[split]
        b, out = self.batch_size, []
        for i in range(0, len(src), b):
            s, g = src[i:i + b], tgt[i:i + b]
            fill = b - len(s)  # empty rows (all PAD): left out of every metric
            out.append(local_batch({"source": np.pad(s, ((0, fill), (0, 0))),
                                    "target": np.pad(g, ((0, fill), (0, 0)))}))
        return out

    def split_batches(self, name: str) -> list:
        if self.kind != "files":
            return super().split_batches(name)
        return self._file_batches("valid" if name == "validation" else "test")

    # --- run files ------------------------------------------------------------------------
    def prepare(self, workdir: str) -> None:
        """Saves the source and target vocabularies in the workdir (decoding outputs later);
        a resumed run checks that they did not change."""
        for name, vocab in ((SOURCE_VOCAB_FILE, self.source_vocab),
                            (TARGET_VOCAB_FILE, self.target_vocab)):
            path = os.path.join(workdir, name)
            if os.path.exists(path):
                if Vocab.load(path) != vocab:
                    raise ValueError(f"the vocabulary saved in {path} differs from the one "
                                     "built from this run's data; use a new workdir")
            else:
                vocab.save(path)


register("seq2seq", Seq2SeqTask)

__all__ = ["DecoderTask", "GeneratedBatches", "KINDS", "Seq2SeqTask", "make_model",
           "seq2seq_config"]
