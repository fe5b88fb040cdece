"""Text classification corpora (many-to-one): IMDB reviews from TFDS, local TSV files, and a
generated toy sentiment corpus; word tokenisation and the vocabulary of the train split.

    corpus = load_imdb(download_dir=...)           # TFDS imdb_reviews/plain_text
    corpus = load_tsv_files(train=..., validation=..., test=...)   # "label<TAB>text" per line
    corpus = generated_reviews()                   # no files: smoke runs and tests
    vocab = build_vocab(corpus.texts["train"], max_words=20000)    # + "<pad>" (0), "<unk>" (1)
    ids = encode(vocab, corpus.texts["validation"], max_length=400)   # list of int32 arrays

A `TextCorpus` holds each split's texts and integer labels and the label names. IMDB has no
validation split: `valid_fraction` of TFDS's train split (a fixed random subset, from `seed`) is
held out as validation; TFDS's test split is the test split.

Offline: TFDS looks for `aclImdb_v1.tar.gz` in `<download_dir>/manual/` before it touches the
network; with `download=False` a missing file is a clear error naming the file and the folder.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from rnnlab.data import text as text_lib
from rnnlab.data.buckets import UNK, padded_vocab
from rnnlab.data.vocab import Vocab

SPLITS = text_lib.SPLITS
IMDB_FILE = "aclImdb_v1.tar.gz"
IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/" + IMDB_FILE
TRUNCATE = ("head", "tail")

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    name: str
    texts: dict  # split -> list[str]
    labels: dict  # split -> int32 [num_examples]
    label_names: tuple  # class id -> name


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with an apostrophe part: "didn't"), digits, "!" and "?"; IMDB's
    "<br />" line breaks are dropped."""
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def build_vocab(train_texts, max_words: int = 0) -> Vocab:
    """Word vocabulary of the train texts (`buckets.padded_vocab` of their tokens): "<pad>"
    (id 0), "<unk>" (id 1), then the top `max_words` words (0 = all)."""
    return padded_vocab((tokenize(t) for t in train_texts), max_words)


def encode(vocab: Vocab, texts, max_length: int, truncate: str = "head") -> list[np.ndarray]:
    """Texts -> int32 id arrays of 1..max_length tokens. Longer texts keep their first
    (`truncate="head"`) or last ("tail") max_length tokens; an empty text becomes "<unk>"."""
    if truncate not in TRUNCATE:
        raise ValueError(f"unknown truncate {truncate!r}; valid choices: {list(TRUNCATE)}")
    out = []
    for text in texts:
        tokens = tokenize(text) or [UNK]
        tokens = tokens[:max_length] if truncate == "head" else tokens[-max_length:]
        out.append(vocab.encode_tokens(tokens))
    return out


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a fixed random `fraction` of range(n), each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    k = round(fraction * n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _split_off_validation(name, texts, labels, valid_fraction, seed, test, label_names):
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction={valid_fraction!r} must be in (0, 1)")
    keep, held = _holdout(len(texts), valid_fraction, seed)
    return TextCorpus(
        name,
        {"train": [texts[i] for i in keep], "validation": [texts[i] for i in held],
         "test": test[0]},
        {"train": labels[keep], "validation": labels[held], "test": test[1]},
        tuple(label_names))


def load_imdb(data_dir: str | None = None, download_dir: str | None = None,
              manual_dir: str | None = None, download: bool = True,
              valid_fraction: float = 0.1, seed: int = 0) -> TextCorpus:
    """IMDB movie reviews (Maas et al. 2011) through TFDS `imdb_reviews/plain_text`: 25,000
    train and 25,000 test reviews, labels 0 = negative, 1 = positive (see the module
    docstring for the validation split and offline use)."""
    tfds = text_lib.import_tfds()
    manual = text_lib._manual_dir(download_dir, manual_dir)
    builder = tfds.builder("imdb_reviews/plain_text", data_dir=data_dir)
    if not builder.is_prepared():
        missing = (f"TFDS imdb_reviews is not prepared in data_dir={data_dir!r} and "
                   f"{IMDB_FILE} is not in the manual dir "
                   f"{manual or '<download_dir>/manual (pass download_dir=...)'}. Put "
                   f"{IMDB_FILE} there (from {IMDB_URL}), or allow downloading "
                   "(download=True) where the network is reachable.")
        text_lib.prepare(builder, manual, download_dir, download, missing=missing,
                         have_manual=(manual is not None
                                      and os.path.exists(os.path.join(manual, IMDB_FILE))))
    splits = {}
    for split in ("train", "test"):
        examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
        texts, labels = [], []
        for ex in examples:
            texts.append(ex["text"].decode("utf-8"))
            labels.append(int(ex["label"]))
        splits[split] = (texts, np.asarray(labels, np.int32))
    return _split_off_validation("imdb", *splits["train"], valid_fraction, seed, splits["test"],
                                 ("negative", "positive"))


def _read_tsv(path: str, split: str):
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise text_lib.CorpusNotFoundError(f"the {split} file {path} does not exist")
    names, texts = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            label, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise ValueError(f"{path}:{n}: expected 'label<TAB>text', got {line[:60]!r}")
            names.append(label.strip())
            texts.append(text)
    return names, texts


def load_tsv_files(train: str, validation: str, test: str) -> TextCorpus:
    """A corpus from three UTF-8 files with one "label<TAB>text" example per line (blank lines
    skipped). Class ids follow the sorted label names of the train file."""
    raw = {s: _read_tsv(p, s) for s, p in zip(SPLITS, (train, validation, test))}
    label_names = tuple(sorted(set(raw["train"][0])))
    index = {name: i for i, name in enumerate(label_names)}
    labels = {}
    for split, (names, _) in raw.items():
        unseen = sorted(set(names) - set(index))
        if unseen:
            raise ValueError(f"label(s) {unseen} of the {split} file are not in the train file's "
                             f"labels {list(label_names)}")
        labels[split] = np.asarray([index[n] for n in names], np.int32)
    return TextCorpus("files", {s: raw[s][1] for s in SPLITS}, labels, label_names)


POSITIVE = ("good", "great", "fun", "superb", "moving", "clever", "charming", "excellent")
NEGATIVE = ("bad", "dull", "awful", "boring", "weak", "silly", "clumsy", "terrible")
FILLER = ("the", "film", "a", "plot", "was", "and", "actors", "story", "of", "it", "music",
          "scenes", "this", "with", "ending", "very", "but", "script", "some", "in")


def generated_reviews(num_examples: int = 2000, min_words: int = 8, max_words: int = 60,
                      seed: int = 0) -> TextCorpus:
    """A toy sentiment corpus with a known rule: filler words with 1 to 7 sentiment words mixed in
    at random places; label 1 (positive) if positive words outnumber negative ones (never a
    tie), else 0. Solving it needs counting over the whole review. Splits 80/10/10."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(num_examples):
        words = list(rng.choice(FILLER, rng.integers(min_words, max_words + 1)))
        n_pos = int(rng.integers(0, 4))
        n_neg = int(rng.integers(0, 4))
        if n_pos == n_neg:
            n_pos += 1 if rng.random() < 0.5 else 0
            n_neg += 0 if n_pos > n_neg else 1
        for w in list(rng.choice(POSITIVE, n_pos)) + list(rng.choice(NEGATIVE, n_neg)):
            words.insert(int(rng.integers(0, len(words) + 1)), w)
        texts.append(" ".join(words) + ".")
        labels.append(int(n_pos > n_neg))
    labels = np.asarray(labels, np.int32)
    a, b = int(0.8 * num_examples), int(0.9 * num_examples)
    return TextCorpus("generated", {"train": texts[:a], "validation": texts[a:b],
                                    "test": texts[b:]},
                      {"train": labels[:a], "validation": labels[a:b], "test": labels[b:]},
                      ("negative", "positive"))
