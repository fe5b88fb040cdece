"""The language-model task ("lm"): a token stream cut into BPTT windows, the hidden state carried
from window to window (truncated BPTT), perplexity or bits per character on validation and test.

    config = lm_config()                      # base_config() + the LM task and model fields
    config.task.corpus = "ptb"                # or tiny_shakespeare, wikitext2, files, generated
    result = train_and_evaluate(config, workdir)

Data position: the train step counter. Step s belongs to epoch e and is that epoch's i-th window,
`LMStream.positions(e)[i]`; with AWD-LSTM's random window lengths every epoch has its own window
list (deterministic in seed and epoch), so a resumed run reads exactly the windows the
uninterrupted run would have read. The carry is reset at the first window of every epoch from
each batch's `reset` flag (`resets_carry`: the engine's reset every `steps_per_epoch` steps is
off, so this holds when random lengths give epochs of different window counts;
`steps_per_epoch` is then epoch 0's count, used only by step-decay schedules). With random
lengths the step's learning rate is scaled by window length / bptt (`update_scale`, AWD-LSTM's
`lr2 = lr * seq_len / bptt`).

Evaluation covers every token of the validation split once, in stream order, with the carry
crossing windows (`eval_batches`); the test split is evaluated the same way once at the end of
training (`test_batches`, written to metrics.jsonl with split "test").

Metrics: `loss` (mean NLL in nats per token), `perplexity` (word level) or `bpc` (character
level, loss / ln 2). The train loss that is differentiated is the per-token mean or, with
`task.loss_reduction="sum_time"`, the sum over the window's steps averaged over rows (the scale
Zaremba et al.'s SGD lr 1 was tuned for), plus AR/TAR (`task.ar_alpha`, `task.tar_beta`); the
reported `loss` is always the mean NLL per token.

Document boundaries (`task.reset_at`, off by default): with a token such as "<eos>" (word level:
one per line, so every line of the corpus becomes its own document) or "\n" (char level), the
carry restarts from zeros before every real step whose input is that token, in training,
validation and test alike (`rnnlab.unroll(..., resets=...)`): the token then reads as the next
document's start, and nothing of the previous document reaches its predictions. The prediction
of the token itself still sees its own document. The layers run on the scan then.

The vocabulary is written to `<workdir>/vocab.json` (`prepare`), so evaluation and generation
(`python -m experiments.generate`) use the same id mapping without the corpus.
"""

from __future__ import annotations

import bisect
import codecs
import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rnnlab
from rnnlab.data import text as text_lib
from rnnlab.data import lm as lm_data
from rnnlab.data.lm import LMStream
from rnnlab.data.splits import CachedSplits
from rnnlab.data.vocab import VOCAB_FILE, Vocab
from rnnlab.models import lm as lm_model
from rnnlab.config import ConfigError, base_config, check_positive_fields, parse_cell_kwargs
from rnnlab.tasks.base import Task, dropout_rngs, register

CORPORA = tuple(text_lib.names()) + ("generated",)  # "files" is in text_lib.names()
DATA_DIR_ENV = "RNNLAB_DATA_DIR"  # default TFDS download_dir when task.download_dir is ""
LOSS_REDUCTIONS = ("mean", "sum_time")


def lm_config() -> ml_collections.ConfigDict:
    """`base_config()` plus every field the LM task reads (each declared here, with a comment)."""
    c = base_config()
    t = c.task
    t.name = "lm"
    t.corpus = "generated"  # tiny_shakespeare | ptb | ptb_char | wikitext2 | wikitext103 |
    # files (task.files) | generated (a small built-in text, for smoke runs)
    t.data_dir = ""  # TFDS data dir ("" = TFDS's default, ~/tensorflow_datasets)
    t.download_dir = ""  # TFDS download dir ("" = $RNNLAB_DATA_DIR if set, else TFDS's default)
    t.manual_dir = ""  # where downloaded files already lie ("" = <download_dir>/manual)
    t.download = True  # allow network downloads (False: a missing file is a clear error)
    t.files = ml_collections.ConfigDict()  # corpus "files": one text file per split
    t.files.train = ""
    t.files.valid = ""
    t.files.test = ""
    t.encoding = "utf-8"  # corpus "files": their text encoding (e.g. latin-1; Python's names)
    t.vocab_level = ""  # "" = the corpus's own (char for tiny_shakespeare) | word | char
    t.vocab_max_size = 0  # word level: keep the most frequent tokens (0 = all)
    t.batch_size = 20  # rows of the train stream (contiguous token streams)
    t.bptt = 35  # train window length (the mean with random_length)
    t.random_length = False  # AWD-LSTM window lengths: N(bptt or bptt/2 w.p. 0.05, bptt_std)
    t.bptt_std = 5.0  # standard deviation of the random window length
    t.eval_batch_size = 10  # rows of the validation stream
    t.test_batch_size = 0  # rows of the test stream (0 = eval_batch_size)
    t.eval_bptt = 0  # validation/test window length (0 = bptt)
    t.loss_reduction = "mean"  # train loss: mean NLL per token (AWD-LSTM) | sum_time: summed over
    # the window's steps, averaged over rows (Zaremba et al.: their lr 1 assumes this scale)
    t.ar_alpha = 0.0  # AR: alpha * mean(dropped last-layer output^2) added to the train loss
    t.tar_beta = 0.0  # TAR: beta * mean((h_t - h_{t-1})^2) added to the train loss
    t.reset_at = ""  # "" = off; a token (e.g. "<eos>", "\n" at char level) that starts a
    # document: the carry restarts before every step whose input it is (module docstring)

    m = c.model
    m.embed_dim = 128  # embedding width (LM: must be > 0)
    m.last_hidden = 0  # width of the last layer (0 = hidden; AWD-LSTM: = embed_dim, for tying)
    m.tie_weights = False  # readout uses the embedding matrix (Inan et al.; Press & Wolf)
    m.embed_init_scale = 0.1  # embedding and untied readout ~ U(±scale)
    m.dropout = 0.0  # non-recurrent dropout (Zaremba et al. 2014): inputs, between layers, output
    m.dropout_input = -1.0  # on the embedded inputs (-1 = model.dropout)
    m.dropout_hidden = -1.0  # between recurrent layers (-1 = model.dropout)
    m.dropout_output = -1.0  # on the last layer's output, before the readout (-1 = model.dropout)
    m.dropout_embedding = 0.0  # drops whole words (rows of the embedding matrix)
    m.variational = False  # one dropout mask per sequence, shared across time (locked dropout)
    m.weight_drop = 0.0  # DropConnect on every layer's recurrent matrix (Merity et al. 2017)
    m.remat = False  # recompute activations in the backward pass (memory for speed)
    return c


def load_corpus(t) -> text_lib.Corpus:
    """The corpus `config.task` names (see the field comments of `lm_config`)."""
    level = t.vocab_level or None
    if t.corpus == "generated":
        corpus = lm_data.generated_corpus()
        if level == "char":
            corpus = dataclasses.replace(corpus, vocab_level="char", unit="char")
        return corpus
    if t.corpus == "files":
        files = {"train": t.files.train, "validation": t.files.valid, "test": t.files.test}
        missing = [k for k, v in zip(("train", "valid", "test"), files.values()) if not v]
        if missing:
            raise ConfigError(f"config.task.corpus='files' needs config.task.files."
                              f"{{{','.join(missing)}}} (paths to text files)")
        for key, path in zip(("train", "valid", "test"), files.values()):
            path = os.path.expanduser(path)
            if not os.path.exists(path):
                raise ConfigError(f"config.task.files.{key}={path!r}: no such file")
            if not os.path.isfile(path):
                raise ConfigError(f"config.task.files.{key}={path!r} is a directory; give the "
                                  "path of a text file")
        try:
            return text_lib.load_corpus("files", files=files, vocab_level=level,
                                        encoding=t.encoding)
        except text_lib.CorpusDecodeError as e:
            raise ConfigError(f"config.task.files: {e}; give its encoding, e.g. "
                              "--config.task.encoding=latin-1") from None
        except PermissionError as e:
            raise ConfigError(f"config.task.files: cannot read {e.filename} (permission "
                              "denied)") from None
    download_dir = t.download_dir or os.environ.get(DATA_DIR_ENV) or None
    return text_lib.load_corpus(t.corpus, data_dir=t.data_dir or None, download_dir=download_dir,
                                manual_dir=t.manual_dir or None, download=t.download,
                                vocab_level=level)


def _rate(m, name):
    p = m[name]
    return m.dropout if p < 0 else p


def make_model(config, vocab_size: int) -> lm_model.LanguageModel:
    """The `LanguageModel` of `config.model` over `vocab_size` tokens (also used to rebuild the
    model from a run's config.json for generation)."""
    m = config.model
    kwargs = parse_cell_kwargs(m.cell_kwargs)
    widths = [m.hidden] * m.num_layers
    if m.last_hidden:
        widths[-1] = m.last_hidden
    cells = tuple(rnnlab.cells.make(m.cell, w, **kwargs) for w in widths)
    return lm_model.LanguageModel(
        vocab_size=vocab_size, cells=cells, embed_size=m.embed_dim, tie_weights=m.tie_weights,
        embed_init_scale=m.embed_init_scale, dropout_embedding=m.dropout_embedding,
        dropout_input=_rate(m, "dropout_input"), dropout_hidden=_rate(m, "dropout_hidden"),
        dropout_output=_rate(m, "dropout_output"), variational=m.variational,
        weight_drop=m.weight_drop, unroll=m.unroll, remat=m.remat)


class LMTask(CachedSplits, Task):
    """Word- or character-level language modelling on one corpus (see the module docstring)."""

    carries_state = True
    resets_carry = True  # loss() resets at each batch's `reset` flag (epochs vary in length)
    metric_mode = "min"

    @classmethod
    def validate(cls, config) -> None:
        t, m = config.task, config.model
        reference = lm_config()
        for section, ref in (("task", reference.task), ("model", reference.model)):
            missing = sorted(set(ref.keys()) - set(config[section].keys()))
            if missing:
                raise ConfigError(f"config.{section} has no field(s) {missing} (task 'lm'); "
                                  "start from rnnlab.tasks.lm.lm_config()")
        if t.corpus not in CORPORA:
            raise ConfigError(f"config.task.corpus={t.corpus!r} is not valid; valid choices: "
                              f"{sorted(CORPORA)}")
        if t.loss_reduction not in LOSS_REDUCTIONS:
            raise ConfigError(f"config.task.loss_reduction={t.loss_reduction!r} is not valid; "
                              f"valid choices: {list(LOSS_REDUCTIONS)}")
        if t.vocab_level not in ("", "word", "char"):
            raise ConfigError(f"config.task.vocab_level={t.vocab_level!r} is not valid; valid "
                              "choices: '', 'word', 'char'")
        check_positive_fields("task", t, ("batch_size", "bptt", "eval_batch_size"))
        check_positive_fields("task", t, ("test_batch_size", "eval_bptt", "vocab_max_size",
                                         "ar_alpha", "tar_beta", "bptt_std"), allow_zero=True)
        if not isinstance(t.reset_at, str):
            raise ConfigError(f"config.task.reset_at={t.reset_at!r} must be a token string "
                              "(\"\" = off)")
        if m.embed_dim <= 0:
            raise ConfigError(f"config.model.embed_dim={m.embed_dim!r} must be > 0 for task 'lm'")
        if m.last_hidden < 0:
            raise ConfigError(f"config.model.last_hidden={m.last_hidden!r} must be >= 0")
        for f in ("dropout_input", "dropout_hidden", "dropout_output"):
            if not (m[f] == -1.0 or 0.0 <= m[f] < 1.0):
                raise ConfigError(f"config.model.{f}={m[f]!r} must be in [0, 1) or -1 "
                                  "(= model.dropout)")
        for f in ("dropout_embedding", "weight_drop"):
            if not 0.0 <= m[f] < 1.0:
                raise ConfigError(f"config.model.{f}={m[f]!r} must be in [0, 1)")
        try:
            codecs.lookup(t.encoding)
        except LookupError:
            raise ConfigError(f"config.task.encoding={t.encoding!r} is not a known text "
                              "encoding; e.g. utf-8, latin-1, cp1252") from None

    def __init__(self, config):
        t = config.task
        self.config = config
        corpus = load_corpus(t)
        self.unit = corpus.unit
        self.metric = "perplexity" if self.unit == "word" else "bpc"
        build = {"max_size": t.vocab_max_size or None} if corpus.vocab_level == "word" else {}
        self.vocab = Vocab.build(corpus.train, corpus.vocab_level, **build)
        self.reset_id = None  # the token id that starts a document (task.reset_at)
        if t.reset_at:
            if t.reset_at not in self.vocab.index:
                shown = sorted(self.vocab.index, key=self.vocab.index.get)[:5]
                raise ConfigError(f"config.task.reset_at={t.reset_at!r} is not a token of the "
                                  f"{corpus.vocab_level}-level vocabulary (its first tokens: "
                                  f"{shown}); use one of its tokens, e.g. "
                                  f"{self.vocab.eos or chr(10)!r}, or \"\" (off)")
            self.reset_id = self.vocab.index[t.reset_at]
        self._build_kwargs = build
        self._train_text = corpus.train
        ids = {s: self.vocab.encode(corpus.split(s)) for s in text_lib.SPLITS}
        self.batch_size = t.batch_size
        # multi-host: each process keeps its own rows of every stream (batch sizes are global)
        hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
        where = {"train": "train", "validation": "valid", "test": "test"}
        source = (lambda s: f"config.task.files.{where[s]}={t.files[where[s]]!r}"
                  if t.corpus == "files" else f"corpus {t.corpus!r}")

        def stream(split, batch, bptt, bptt_field, **kw):
            try:
                s = LMStream(ids[split], batch, bptt, **kw, **hosts)
            except ValueError as e:  # too few tokens for the rows
                raise ConfigError(f"the {split} split ({source(split)}, {ids[split].size} "
                                  f"tokens): {e}") from None
            if bptt > s.span:
                raise ConfigError(
                    f"config.task.{bptt_field}={bptt} is longer than the {split} stream: "
                    f"{ids[split].size} tokens in {batch} rows leave {s.span} steps per row; "
                    f"valid: 1..{s.span}")
            return s

        self.train_stream = stream("train", t.batch_size, t.bptt, "bptt",
                                   random_length=t.random_length, std=t.bptt_std,
                                   seed=config.seed)
        eval_bptt = t.eval_bptt or t.bptt
        field = "eval_bptt" if t.eval_bptt else "bptt (eval_bptt=0: the same)"
        self.valid_stream = stream("validation", t.eval_batch_size, eval_bptt, field,
                                   train=False)
        self.test_stream = stream("test", t.test_batch_size or t.eval_batch_size, eval_bptt,
                                  field, train=False)
        self.num_tokens = {s: int(v.size) for s, v in ids.items()}
        self.steps_per_epoch = len(self.train_stream.positions(0))
        self._epoch_starts = [0]  # first step of epochs 0, 1, ... (computed as needed)
        self._positions = {}  # epoch -> window start positions (the latest few)
        self.ar_alpha, self.tar_beta = float(t.ar_alpha), float(t.tar_beta)
        self.loss_reduction = t.loss_reduction
        self.model = make_model(config, len(self.vocab))

    # --- run files ------------------------------------------------------------------------
    def prepare(self, workdir: str) -> None:
        """Writes the vocabulary to `<workdir>/vocab.json`, or checks the one a resumed run
        wrote there against this corpus's."""
        path = os.path.join(workdir, VOCAB_FILE)
        saved = Vocab.load_or_build(path, self._train_text, self.vocab.level, **self._build_kwargs)
        if saved != self.vocab:
            raise ValueError(f"the vocabulary saved in {path} ({len(saved)} tokens) differs from "
                             f"the one built from this corpus ({len(self.vocab)} tokens): the "
                             "run's corpus or vocabulary settings changed; use a new workdir")

    # --- data -----------------------------------------------------------------------------
    def _epoch_positions(self, epoch: int) -> list[int]:
        if epoch not in self._positions:
            if len(self._positions) > 4:
                self._positions.pop(min(self._positions))
            self._positions[epoch] = self.train_stream.positions(epoch)
        return self._positions[epoch]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, train stream position) of train step `step`."""
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if not self.train_stream.random_length:
            epoch, i = divmod(step, self.steps_per_epoch)
            return epoch, self._epoch_positions(epoch)[i]
        while self._epoch_starts[-1] <= step:
            e = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + len(self._epoch_positions(e)))
        epoch = bisect.bisect_right(self._epoch_starts, step) - 1
        return epoch, self._epoch_positions(epoch)[step - self._epoch_starts[epoch]]

    @staticmethod
    def _as_batch(w) -> dict:
        return {"inputs": w.inputs, "targets": w.targets, "mask": w.mask,
                "reset": np.bool_(w.reset)}

    def train_batch(self, step: int) -> dict:
        return self._as_batch(self.train_stream.window(self.locate(step)[1]))

    def split_batches(self, name: str) -> list:
        stream = self.valid_stream if name == "validation" else self.test_stream
        return [self._as_batch(w) for w in stream]

    # --- model ----------------------------------------------------------------------------
    def init(self, rng):
        tokens = jnp.zeros((self.batch_size, self.train_stream.pad_to or self.train_stream.bptt),
                           jnp.int32)
        return self.model.init({"params": rng}, tokens, train=False)["params"]

    def initial_carry(self, batch_size: int):
        return self.model.initial_carry(batch_size)

    def recurrent_probe(self, params, batch, carry=None):
        """(cell, cell_params, xs, carry) for `rnnlab.diagnostics`: the first recurrent layer on
        the window's embedded tokens xs [batch, bptt, embed] (no dropout), from `carry` (the
        state the run brings into this window; the initial carry where the window resets it or
        when None). The gradient flow is measured through the BPTT window."""
        inputs = jnp.asarray(batch["inputs"])
        fresh = self.initial_carry(inputs.shape[0])
        if carry is None or bool(batch.get("reset", False)):
            carry = fresh
        xs = jnp.take(params["embedding"], inputs, axis=0)
        return self.model.cells[0], params["cell_0"], xs, carry[0]

    def update_scale(self, batch):
        """Window length / bptt with random window lengths (AWD-LSTM), else 1."""
        if not self.train_stream.random_length:
            return jnp.float32(1.0)
        length = jnp.sum(jnp.any(batch["mask"], axis=0))  # columns with any target
        return length.astype(jnp.float32) / self.train_stream.bptt

    def loss(self, params, batch, carry, rng, train):
        inputs, mask = batch["inputs"], batch["mask"]
        if carry is None:
            carry = self.initial_carry(inputs.shape[0])
        if "reset" in batch:
            fresh = self.initial_carry(inputs.shape[0])
            carry = jax.tree_util.tree_map(lambda z, c: jnp.where(batch["reset"], z, c),
                                           fresh, carry)
        rngs = dropout_rngs(rng, train)
        # the streams pad only at the end of a row (rnnlab.data.lm), so per-row lengths say
        # what the mask says, in the form the fused cuDNN path accepts (rnnlab.fused)
        lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        resets = None if self.reset_id is None else (inputs == self.reset_id) & mask
        out = self.model.apply({"params": params}, inputs, carry, lengths=lengths, train=train,
                               rngs=rngs, resets=resets)
        nll_sum, count = lm_model.masked_sum_count(
            lm_model.token_nll(out.logits, batch["targets"]), mask)
        if self.loss_reduction == "sum_time":
            loss = nll_sum / inputs.shape[0]
        else:
            loss = nll_sum / jnp.maximum(count, 1.0)
        if train and (self.ar_alpha or self.tar_beta):
            loss = loss + lm_model.ar_tar(out.hidden, out.hidden_dropped, self.ar_alpha,
                                          self.tar_beta, mask)
        return loss, ({"nll": nll_sum, "count": count}, out.carry)

    def metrics(self, stats) -> dict:
        loss = stats["nll"] / jnp.maximum(stats["count"], 1.0)
        if self.unit == "word":
            return {"loss": loss, "perplexity": jnp.exp(loss)}
        return {"loss": loss, "bpc": loss / math.log(2.0)}


register("lm", LMTask)

__all__ = ["LMTask", "lm_config", "load_corpus",
           "make_model"]
