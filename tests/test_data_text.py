"""Corpora: TFDS tiny_shakespeare offline from a manual dir, rnnlab's PTB/WikiText TFDS builders
(TFDS's own builder test case on small fake files), plain local text files.

Real data: $RNNLAB_SHARED_DATA, else ../shared/data beside the checkout when present (test input
only); without it tiny_shakespeare is checked on a generated corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile

import pytest

from rnnlab.data import text

tfds = text.import_tfds()  # TensorFlow off accelerators, rnnlab builders registered
from rnnlab.data import ptb, wikitext  # noqa: E402

# tfds.testing needs `dill` (TFDS's test extra); without it the equivalent check below runs alone.
HAVE_TFDS_TESTING = importlib.util.find_spec("dill") is not None


def shared_data_dir():
    d = os.environ.get("RNNLAB_SHARED_DATA") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
    return d if os.path.isdir(d) else None


def tfds_split(t: str):
    """Independent statement of TFDS tiny_shakespeare's 90/5/5 character split."""
    i = int(len(t) * 0.9)
    rest = t[i:]
    j = int(len(rest) * 0.5)
    return t[:i], rest[:j], rest[j:]


def _generated_download_dir(tmp_path, monkeypatch):
    """A download dir with a generated input.txt whose checksum TFDS is told to expect."""
    from tensorflow_datasets.core import utils as tfds_utils
    from tensorflow_datasets.core.download import checksums

    manual = tmp_path / "dl" / "manual"
    manual.mkdir(parents=True)
    body = "".join(f"LINE {i}: to be or not to be\n" for i in range(400)).encode()
    (manual / "input.txt").write_bytes(body)
    cls = tfds.builder_cls("tiny_shakespeare")
    url = next(iter(cls.url_infos))
    info = checksums.UrlInfo(size=tfds_utils.Size(len(body)),
                             checksum=hashlib.sha256(body).hexdigest(), filename="input.txt")
    monkeypatch.setattr(cls, "url_infos", {url: info})
    return str(tmp_path / "dl")


def test_tiny_shakespeare_offline_from_manual_dir(tmp_path, monkeypatch):
    shared = shared_data_dir()
    if shared and os.path.exists(os.path.join(shared, "tfds_downloads", "manual", "input.txt")):
        download_dir = os.path.join(shared, "tfds_downloads")
    else:
        download_dir = _generated_download_dir(tmp_path, monkeypatch)
    with open(os.path.join(download_dir, "manual", "input.txt"), encoding="utf-8") as f:
        raw = f.read()
    corpus = text.load_corpus("tiny_shakespeare", data_dir=str(tmp_path / "data"),
                              download_dir=download_dir, download=False)
    assert (corpus.train, corpus.validation, corpus.test) == tfds_split(raw)
    assert corpus.vocab_level == "char" and corpus.unit == "char"
    if shared and download_dir.startswith(shared):
        assert (len(corpus.train), len(corpus.validation), len(corpus.test)) == (
            1003854, 55770, 55770)
    # A second load reads the prepared dataset (the manual dir is no longer needed).
    again = text.load_corpus("tiny_shakespeare", data_dir=str(tmp_path / "data"),
                             download_dir=str(tmp_path / "nowhere"), download=False)
    assert again == corpus


def test_missing_corpus_names_file_and_folder(tmp_path):
    with pytest.raises(text.CorpusNotFoundError) as e:
        text.load_corpus("tiny_shakespeare", data_dir=str(tmp_path / "data"),
                         download_dir=str(tmp_path / "dl"), download=False)
    msg = str(e.value)
    assert "input.txt" in msg and os.path.join(str(tmp_path / "dl"), "manual") in msg


def test_unknown_corpus_lists_choices():
    with pytest.raises(ValueError, match="valid choices"):
        text.load_corpus("ptb_typo")


def test_text_files(tmp_path):
    paths = {}
    for split in text.SPLITS:
        paths[split] = str(tmp_path / f"{split}.txt")
        with open(paths[split], "w") as f:
            f.write(f"the {split} text\n")
    corpus = text.load_corpus("files", files=paths)
    assert corpus.validation == "the validation text\n" and corpus.vocab_level == "word"
    with pytest.raises(text.CorpusNotFoundError, match="missing.txt"):
        text.load_text_files(paths["train"], str(tmp_path / "missing.txt"), paths["test"])


def test_ptb_char_format():
    assert ptb.to_chars(" aer banknote <unk> \n") == "a e r _ b a n k n o t e _ < u n k >\n"


# The first lines of Mikolov's ptb.train.txt / ptb.valid.txt and of his ptb.char.*.txt.
_KNOWN_LINES = [
    (" aer banknote berlitz calloway centrust cluett fromstein gitano guterman hydro-quebec "
     "ipo kia memotec mlx nahb punts rake regatta rubens sim snack-food ssangyong swapo "
     "wachter \n",
     "a e r _ b a n k n o t e _ b e r l i t z _ c a l l o w a y _ c e n t r u s t _ c l u e t "
     "t _ f r o m s t e i n _ g i t a n o _ g u t e r m a n _ h y d r o - q u e b e c _ i p o "
     "_ k i a _ m e m o t e c _ m l x _ n a h b _ p u n t s _ r a k e _ r e g a t t a _ r u b "
     "e n s _ s i m _ s n a c k - f o o d _ s s a n g y o n g _ s w a p o _ w a c h t e r\n"),
    (" consumers may want to move their telephones a little closer to the tv set \n",
     "c o n s u m e r s _ m a y _ w a n t _ t o _ m o v e _ t h e i r _ t e l e p h o n e s "
     "_ a _ l i t t l e _ c l o s e r _ t o _ t h e _ t v _ s e t\n"),
    (" N years ago \n", "N _ y e a r s _ a g o\n"),
]


@pytest.mark.parametrize("word, char", _KNOWN_LINES)
def test_ptb_char_derivation_matches_mikolov_lines(word, char):
    assert ptb.to_chars(word) == char


def test_ptb_char_stream_has_mikolov_token_counts():
    """On the full PTB (when reachable): the derived character stream, one <eos> per line, has
    the token counts of Mikolov's ptb.char.valid.txt / ptb.char.test.txt."""
    shared = shared_data_dir()
    path = shared and os.path.join(shared, "ptb", "ptb.valid.txt")
    if not path or not os.path.exists(path):
        pytest.skip("full PTB not reachable (set RNNLAB_SHARED_DATA to a dir with ptb/)")
    for split, expected in (("valid", 393_042), ("test", 442_423)):
        with open(os.path.join(shared, "ptb", f"ptb.{split}.txt")) as f:
            lines = f.readlines()
        assert sum(len(ptb.to_chars(l).split()) + 1 for l in lines) == expected


# --- TFDS's builder test case on fake manual files -------------------------------------------

_FAKE = tempfile.mkdtemp(prefix="rnnlab_fake_lm_")
_LINES = {"train": 5, "validation": 3, "test": 2}
for _split, _n in _LINES.items():
    for _name in (ptb.FILES[_split], wikitext.FILES[_split]):
        with open(os.path.join(_FAKE, _name), "w") as _f:
            _f.writelines(f" w{_i} <unk> {_split} \n" for _i in range(_n))


if HAVE_TFDS_TESTING:
    from tensorflow_datasets import testing as tfds_testing

    class RnnlabPtbTest(tfds_testing.DatasetBuilderTestCase):
        DATASET_CLASS = ptb.RnnlabPtb
        EXAMPLE_DIR = _FAKE
        SPLITS = _LINES
        SKIP_TF1_GRAPH_MODE = True

    class RnnlabWikitextTest(tfds_testing.DatasetBuilderTestCase):
        DATASET_CLASS = wikitext.RnnlabWikitext
        EXAMPLE_DIR = _FAKE
        SPLITS = _LINES
        SKIP_TF1_GRAPH_MODE = True


@pytest.mark.parametrize("name", ["rnnlab_ptb/word", "rnnlab_ptb/char",
                                  "rnnlab_wikitext/wikitext2", "rnnlab_wikitext/wikitext103"])
def test_builder_prepares_from_fake_manual_files(name, tmp_path):
    """What TFDS's builder test checks, without tfds.testing: registered by name, prepares
    offline from the manual dir, split sizes and features as declared, text round-trips."""
    builder = tfds.builder(name, data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_dir=str(tmp_path / "dl"),
        download_config=tfds.download.DownloadConfig(manual_dir=_FAKE, try_download_gcs=False))
    assert {s: builder.info.splits[s].num_examples for s in _LINES} == _LINES
    assert set(builder.info.features) == {"text", "index"}
    examples = sorted(tfds.as_numpy(builder.as_dataset(split="validation")),
                      key=lambda ex: ex["index"])
    got = "".join(ex["text"].decode() for ex in examples)
    lines = [f" w{i} <unk> validation \n" for i in range(_LINES["validation"])]
    if name.endswith("char"):
        lines = [ptb.to_chars(line) for line in lines]
    assert got == "".join(lines)


def test_ptb_corpus_from_manual_dir(tmp_path):
    """The loader restores line order and the char config derives Mikolov's format."""
    shared = shared_data_dir()
    manual = tmp_path / "dl" / "manual"
    manual.mkdir(parents=True)
    if shared and os.path.exists(os.path.join(shared, "ptb", "ptb.test.txt")):
        with open(os.path.join(shared, "ptb", "ptb.test.txt")) as f:
            lines = f.readlines()[:300]  # keep it fast
    else:
        lines = [f" line {i} of ptb <unk> \n" for i in range(300)]
    raw = "".join(lines)
    for name in ptb.FILES.values():
        (manual / name).write_text(raw)
    kw = dict(data_dir=str(tmp_path / "data"), download_dir=str(tmp_path / "dl"), download=False)
    word = text.load_corpus("ptb", **kw)
    assert word.train == word.validation == word.test == raw
    char = text.load_corpus("ptb_char", **kw)
    assert char.test == "".join(ptb.to_chars(l) for l in lines)
    assert char.unit == "char" and char.vocab_level == "word"
