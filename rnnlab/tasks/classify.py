"""Many-to-one text classification ("classify"): sentiment on IMDB reviews (TFDS
`imdb_reviews`), any "label<TAB>text" files, or a generated toy corpus.

    config = classify_config()                 # base_config() + the task and model fields
    config.task.corpus = "imdb"                # or files (task.files.*), generated
    result = train_and_evaluate(config, workdir)

Reviews are word-tokenised (`rnnlab.data.classify.tokenize`), mapped through a vocabulary of
the train split's `vocab_size` most frequent words plus "<pad>" and "<unk>" (written to
`<workdir>/vocab.json` by `prepare`, with the class names in `<workdir>/labels.json`), cut to
`max_length` tokens and batched by length with padding masks (`rnnlab.tasks.padded`). The
model embeds the tokens, runs the recurrent layers (optionally bidirectional) with the padding
mask and pools over the real steps: `model.pooling="last"` (the output at each review's last
real token; bidirectional: the backward run's output at the first token) or "mean" (masked mean).

Metrics: loss (cross-entropy), accuracy, baseline (majority class of the train split) on the
validation split during training and on the test split at the end.
"""

from __future__ import annotations

import os

import ml_collections

from rnnlab.data import classify as data
from rnnlab.data.buckets import PaddedExamples
from rnnlab.tasks.base import register
from rnnlab.tasks.lm import DATA_DIR_ENV
from rnnlab.tasks.padded import (PaddedTask, add_padded_fields, check_padded,
                                 save_or_check_run_files)
from rnnlab.config import ConfigError, base_config, check_fields

CORPORA = ("imdb", "files", "generated")
POOLINGS = ("last", "mean")


def classify_config():
    """`base_config()` plus every field the classification task reads (each with a comment)."""
    c = add_padded_fields(base_config())
    t = c.task
    t.name = "classify"
    t.corpus = "generated"  # imdb (TFDS imdb_reviews) | files (task.files) | generated (toy)
    t.data_dir = ""  # TFDS data dir ("" = TFDS's default, ~/tensorflow_datasets)
    t.download_dir = ""  # TFDS download dir ("" = $RNNLAB_DATA_DIR if set, else TFDS's default)
    t.manual_dir = ""  # where aclImdb_v1.tar.gz already lies ("" = <download_dir>/manual)
    t.download = True  # allow network downloads (False: a missing file is a clear error)
    t.valid_fraction = 0.1  # imdb: share of TFDS's train split held out for validation
    t.files = ml_collections.ConfigDict()  # corpus files: "label<TAB>text" per line, per split
    t.files.train = ""
    t.files.valid = ""
    t.files.test = ""
    t.generated_examples = 2000  # corpus generated: number of toy reviews (split 80/10/10)
    t.vocab_size = 20_000  # most frequent train words kept (+ <pad>, <unk>); 0 = all
    t.truncate = "head"  # reviews longer than max_length keep their head | tail
    c.model.embed_dim = 128  # word embedding width (must be > 0)
    c.model.pooling = "last"  # last (output at the last real token) | mean (masked mean)
    return c


def load_corpus(config) -> data.TextCorpus:
    t = config.task
    if t.corpus == "generated":
        return data.generated_reviews(t.generated_examples, seed=config.seed)
    if t.corpus == "files":
        missing = [k for k in ("train", "valid", "test") if not t.files[k]]
        if missing:
            raise ConfigError(f"config.task.corpus='files' needs config.task.files."
                              f"{{{','.join(missing)}}} (paths of 'label<TAB>text' files)")
        return data.load_tsv_files(t.files.train, t.files.valid, t.files.test)
    download_dir = t.download_dir or os.environ.get(DATA_DIR_ENV) or None
    return data.load_imdb(data_dir=t.data_dir or None, download_dir=download_dir,
                          manual_dir=t.manual_dir or None, download=t.download,
                          valid_fraction=t.valid_fraction, seed=config.seed)


class ClassifyTask(PaddedTask):
    """Text classification (see the module docstring)."""

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, classify_config(), "classify",
                     "rnnlab.tasks.classify.classify_config()")
        check_padded(config)
        t, m = config.task, config.model
        for field, value, choices in (("task.corpus", t.corpus, CORPORA),
                                      ("task.truncate", t.truncate, data.TRUNCATE),
                                      ("model.pooling", m.pooling, POOLINGS)):
            if value not in choices:
                raise ConfigError(f"config.{field}={value!r} is not valid; valid choices: "
                                  f"{list(choices)}")
        if not 0.0 < t.valid_fraction < 1.0:
            raise ConfigError(f"config.task.valid_fraction={t.valid_fraction!r} must be in (0, 1)")
        if t.vocab_size < 0:
            raise ConfigError(f"config.task.vocab_size={t.vocab_size!r} must be >= 0")
        if t.generated_examples < 10:
            raise ConfigError(f"config.task.generated_examples={t.generated_examples!r} must "
                              "be >= 10")
        if m.embed_dim <= 0:
            raise ConfigError(f"config.model.embed_dim={m.embed_dim!r} must be > 0 for task "
                              "'classify' (a one-hot input over the vocabulary is too wide)")

    def __init__(self, config):
        t = config.task
        corpus = load_corpus(config)
        self.label_names = corpus.label_names
        self._train_texts = corpus.texts["train"]
        self.vocab = data.build_vocab(self._train_texts, t.vocab_size)
        lengths = self.lengths(t)
        splits = [PaddedExamples(data.encode(self.vocab, corpus.texts[s], t.max_length,
                                             t.truncate), corpus.labels[s], lengths)
                  for s in data.SPLITS]
        self._setup(config, *splits, vocab_size=len(self.vocab),
                    num_classes=len(corpus.label_names), readout=config.model.pooling)

    def prepare(self, workdir: str) -> None:
        """Writes the vocabulary and the class names to the workdir, or checks the ones a
        resumed run wrote there against this corpus's."""
        save_or_check_run_files(workdir, self.vocab, self.label_names)


register("classify", ClassifyTask)

__all__ = ["ClassifyTask", "classify_config", "load_corpus"]
