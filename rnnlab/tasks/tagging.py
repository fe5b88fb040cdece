"""Per-token tagging ("tagging", many-to-many synchronised): a synthetic labelling rule with a
known answer, or CoNLL-style token/tag files.

    config = tagging_config()                  # base_config() + the task and model fields
    config.task.source = "conll"               # or synthetic (task.rule: count | lag)
    result = train_and_evaluate(config, workdir)

Synthetic (`rnnlab.data.tagging.synthetic_tags`): fixed train/validation/test sets of random
symbol sequences of random length, each step tagged by `task.rule`: "count" (running count of
symbol 1 mod num_tags: needs the whole prefix) or "lag" (the symbol `lag` steps back mod
num_tags: needs a window of lag + 1 steps, so the TDNN baseline with `window=lag+1` can solve it).

CoNLL: `task.files.{train,valid,test}`, one "token tag" line per token, blank lines between
sentences; the token vocabulary (the train split's `vocab_size` most frequent tokens + <pad>,
<unk>) goes to `<workdir>/vocab.json` and the tag names to `<workdir>/labels.json`. A sentence
longer than `max_length` is cut into consecutive pieces of at most `max_length` tokens (every
token is still tagged and scored).

Batches are bucketed by length with padding masks (`rnnlab.tasks.padded`); the model reads the
tokens (optionally bidirectionally) and tags every step (`readout="all"`). Metrics: loss
(cross-entropy per real token), accuracy (per real token), baseline (always the train split's
most frequent tag).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from rnnlab.data import tagging as data
from rnnlab.data.buckets import PaddedExamples, padded_vocab
from rnnlab.tasks.base import register
from rnnlab.tasks.padded import (PaddedTask, add_padded_fields, check_padded,
                                 save_or_check_run_files)
from rnnlab.config import ConfigError, base_config, check_fields, check_positive_fields

SOURCES = ("synthetic", "conll")


def tagging_config():
    """`base_config()` plus every field the tagging task reads (each with a comment)."""
    c = add_padded_fields(base_config())
    t = c.task
    t.name = "tagging"
    t.source = "synthetic"  # synthetic (task.rule) | conll (task.files)
    t.rule = "count"  # synthetic: count (running count of symbol 1 mod num_tags) | lag
    t.lag = 3  # synthetic rule "lag": the tag is the symbol this many steps back mod num_tags
    t.symbols = 8  # synthetic: symbols 1..symbols (0 is padding)
    t.num_tags = 2  # synthetic: number of tags
    t.min_length = 10  # synthetic: shortest sequence (the longest is task.max_length)
    t.train_examples = 10_000  # synthetic: train sequences
    t.eval_examples = 1_000  # synthetic: validation and test sequences (each)
    t.files = ml_collections.ConfigDict()  # conll: one file per split
    t.files.train = ""
    t.files.valid = ""
    t.files.test = ""
    t.token_column = 0  # conll: column of the token
    t.tag_column = -1  # conll: column of the tag (-1 = last)
    t.lowercase = False  # conll: lower-case the tokens
    t.vocab_size = 0  # conll: most frequent train tokens kept (+ <pad>, <unk>); 0 = all
    c.model.embed_dim = 16  # token embedding width (0 = one-hot, fine for synthetic symbols)
    return c


def _pieces(seqs, max_length: int) -> list:
    """Every sequence cut into consecutive pieces of at most max_length items."""
    return [s[i:i + max_length] for s in seqs for i in range(0, max(len(s), 1), max_length)]


class TaggingTask(PaddedTask):
    """Per-token tagging (see the module docstring)."""

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, tagging_config(), "tagging", "rnnlab.tasks.tagging.tagging_config()")
        check_padded(config)
        t = config.task
        for field, value, choices in (("task.source", t.source, SOURCES),
                                      ("task.rule", t.rule, data.RULES)):
            if value not in choices:
                raise ConfigError(f"config.{field}={value!r} is not valid; valid choices: "
                                  f"{list(choices)}")
        check_positive_fields("task", t, ("symbols", "num_tags", "min_length", "train_examples",
                                         "eval_examples"))
        check_positive_fields("task", t, ("lag", "vocab_size"), allow_zero=True)
        if t.source == "synthetic" and t.min_length > t.max_length:
            raise ConfigError(f"config.task.min_length={t.min_length} must be <= "
                              f"task.max_length={t.max_length}")

    def __init__(self, config):
        t = config.task
        lengths = self.lengths(t)
        self.vocab = None
        if t.source == "synthetic":
            splits = []
            for i, n in enumerate((t.train_examples, t.eval_examples, t.eval_examples)):
                rng = np.random.default_rng([config.seed, i])
                tokens, tags = data.synthetic_tags(rng, n, t.min_length, t.max_length, t.symbols,
                                                   t.num_tags, t.rule, t.lag)
                splits.append(PaddedExamples(tokens, tags, lengths))
            self.tag_names = tuple(str(i) for i in range(t.num_tags))
            vocab_size = t.symbols + 1
        else:
            missing = [k for k in ("train", "valid", "test") if not t.files[k]]
            if missing:
                raise ConfigError(f"config.task.source='conll' needs config.task.files."
                                  f"{{{','.join(missing)}}} (paths of token/tag files)")
            sentences = {k: data.read_conll(t.files[k], t.token_column, t.tag_column,
                                            t.lowercase) for k in ("train", "valid", "test")}
            self.vocab = padded_vocab((s for s, _ in sentences["train"]), t.vocab_size)
            index = data.tag_index(sentences["train"])
            self.tag_names = tuple(index)
            splits = []
            for k, split in sentences.items():
                tokens = [self.vocab.encode_tokens(s) for s, _ in split]
                tags = data.encode_tags(split, index, k)
                splits.append(PaddedExamples(_pieces(tokens, t.max_length),
                                             _pieces(tags, t.max_length), lengths))
            vocab_size = len(self.vocab)
        self._setup(config, *splits, vocab_size=vocab_size, num_classes=len(self.tag_names),
                    readout="all")

    def prepare(self, workdir: str) -> None:
        """CoNLL: writes the token vocabulary and the tag names to the workdir, or checks the
        ones a resumed run wrote there."""
        if self.vocab is not None:
            save_or_check_run_files(workdir, self.vocab, self.tag_names)


register("tagging", TaggingTask)

__all__ = ["TaggingTask", "tagging_config"]
