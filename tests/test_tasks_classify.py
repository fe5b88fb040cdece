"""rnnlab.tasks.classify and rnnlab.data.classify / buckets: an IMDB run through
`train_and_evaluate` on TFDS mock data, its metrics, the offline error, length bucketing with
masks, tokenisation, the vocabulary, the generated corpus's rule and TSV files. (Padding is
ignored exactly by the pooling: tests/test_models_sequence.py.)"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

from rnnlab.data import classify as data
from rnnlab.data.buckets import PAD_ID, PaddedExamples, bucket_lengths
from rnnlab.data.text import CorpusNotFoundError, import_tfds
from rnnlab.data.vocab import VOCAB_FILE, Vocab
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.loop import evaluate
from rnnlab.train.metrics import read_metrics
from _config_helpers import smoke_config


@pytest.fixture(scope="module")
def mock_imdb():
    """TFDS mocked: imdb_reviews' train and test splits are generated toy reviews."""
    tfds = import_tfds()
    import tensorflow as tf

    corpus = data.generated_reviews(100, max_words=20, seed=3)
    splits = {"train": (corpus.texts["train"], corpus.labels["train"]),
              "test": (corpus.texts["test"], corpus.labels["test"])}

    def as_dataset(self, split, **kwargs):
        texts, labels = splits[str(split)]
        return tf.data.Dataset.from_tensor_slices(
            {"text": texts, "label": tf.constant(labels, tf.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield splits


def _imdb_config(tmp_path, **overrides):
    return smoke_config("imdb", **{"task.corpus": "imdb", "task.valid_fraction": 0.25,
                                   "task.buckets": 1, "task.max_length": 32,
                                   "task.data_dir": str(tmp_path / "tfds"),
                                   "checkpoint.every_steps": 0, **overrides})


def test_imdb_task_on_tfds_mock_data(mock_imdb, tmp_path):
    """TFDS imdb_reviews (mocked) -> splits, run files, and the engine's evaluation: the
    baseline is the train majority class's share of the evaluated reviews (the weight-0 rows
    that fill the last batch do not count; the accuracy is checked against numpy in
    test_tasks_tagging, same code)."""
    task = make_task(_imdb_config(tmp_path))
    train_texts, _ = mock_imdb["train"]
    assert len(task.splits["train"]) + len(task.splits["validation"]) == len(train_texts)
    assert len(task.splits["validation"]) == 20
    np.testing.assert_array_equal(task.splits["test"].labels, mock_imdb["test"][1])

    params = task.init(jax.random.key(0))
    eval_fn = jax.jit(lambda p, c, b: task.loss(p, b, c, None, False)[1])
    majority = np.bincount(task.splits["train"].labels).argmax()
    for name, batches in (("validation", task.eval_batches()), ("test", task.test_batches())):
        assert batches[-1]["weights"].min() == 0  # the last batch is filled with empty rows
        metrics = evaluate(task, eval_fn, params, batches)
        assert metrics["baseline"] == pytest.approx(np.mean(task.splits[name].labels == majority))
        assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])

    task.prepare(str(tmp_path / "run"))
    assert Vocab.load(str(tmp_path / "run" / VOCAB_FILE)) == task.vocab
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == ["negative",
                                                                          "positive"]
    task.prepare(str(tmp_path / "run"))  # a resumed run: the same files are accepted
    other = make_task(_imdb_config(tmp_path, **{"task.vocab_size": 5}))
    with pytest.raises(ValueError, match="differs from the one built"):
        other.prepare(str(tmp_path / "run"))


def test_imdb_smoke_run_through_train_and_evaluate(mock_imdb, tmp_path):
    config = _imdb_config(tmp_path)
    result = train_and_evaluate(config, str(tmp_path / "run"))
    assert int(result.state.step) == config.train.steps
    records = read_metrics(str(tmp_path / "run"))
    assert [(r["step"], r["split"]) for r in records if r["split"] != "train"] == [
        (3, "eval"), (6, "eval"), (6, "test")]
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"])
    assert records[-1]["baseline"] == pytest.approx(0.5, abs=0.2)


def test_imdb_offline_without_the_archive_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusNotFoundError, match=re.escape(
            f"{data.IMDB_FILE} is not in the manual dir {tmp_path / 'dl' / 'manual'}")):
        data.load_imdb(data_dir=str(tmp_path / "tfds"), download_dir=str(tmp_path / "dl"),
                       download=False)


def test_epoch_order_buckets_and_masks():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 41, 103)
    tokens = [rng.integers(1, 50, n) for n in lengths]
    examples = PaddedExamples(tokens, np.arange(103) % 3, bucket_lengths(40, 3))
    assert examples.bucket_lengths == (16, 24, 40)
    order = examples.epoch_order(batch_size=10, epoch=1, seed=0, pool=3)
    flat = np.concatenate(order)
    assert len(order) == 10 and len(np.unique(flat)) == 100  # remainder of 3 left out
    again = examples.epoch_order(10, 1, 0, pool=3)
    assert all(np.array_equal(a, b) for a, b in zip(order, again))
    assert not np.array_equal(flat, np.concatenate(examples.epoch_order(10, 2, 0, pool=3)))
    spread = np.mean([np.ptp(lengths[b]) for b in order])
    assert spread < 0.6 * np.mean([np.ptp(lengths[rng.permutation(103)[:10]])
                                   for _ in range(20)])  # sorted pools: similar lengths
    for idx in order:
        b = examples.batch(idx, rows=10)
        longest = lengths[idx].max()
        assert b["inputs"].shape[1] == min(n for n in (16, 24, 40) if n >= longest)
        for r, i in enumerate(idx):
            n = lengths[i]
            np.testing.assert_array_equal(b["inputs"][r, :n], tokens[i])
            assert b["mask"][r, :n].all() and not b["mask"][r, n:].any()
            assert (b["inputs"][r, n:] == PAD_ID).all() and b["targets"][r] == i % 3
    evals = examples.eval_order(batch_size=25)
    assert sorted(np.concatenate(evals)) == list(range(103))
    last = examples.batch(evals[-1], rows=25)
    np.testing.assert_array_equal(last["weights"], [1, 1, 1] + [0] * 22)
    assert not last["mask"][3:].any()


def test_padded_examples_errors():
    with pytest.raises(ValueError, match="longer than the largest bucket length 8"):
        PaddedExamples([np.ones(9)], np.zeros(1, np.int32), (4, 8))
    with pytest.raises(ValueError, match="sequence 0 has 3 tokens but 2 labels"):
        PaddedExamples([np.ones(3)], [np.zeros(2)], (4,))
    with pytest.raises(ValueError, match="do not fill one batch of 4"):
        PaddedExamples([np.ones(3)] * 3, np.zeros(3, np.int32), (4,)).epoch_order(4, 0, 0)


def test_tokenize_vocab_and_truncation():
    assert data.tokenize("A GREAT film!<br /><br />I didn't like it, 10/10?") == [
        "a", "great", "film", "!", "i", "didn't", "like", "it", "10", "10", "?"]
    vocab = data.build_vocab(["good good bad", "good film"], max_words=2)
    assert vocab.tokens == ["<pad>", "<unk>", "good", "bad"]
    assert vocab.index["<pad>"] == PAD_ID
    ids = data.encode(vocab, ["film good bad bad", ""], max_length=3)
    np.testing.assert_array_equal(ids[0], [1, 2, 3])  # "film" is outside the top 2
    np.testing.assert_array_equal(ids[1], [1])  # an empty text is one <unk>
    np.testing.assert_array_equal(data.encode(vocab, ["film good bad bad"], 3, "tail")[0],
                                  [2, 3, 3])
    with pytest.raises(ValueError, match=r"unknown truncate 'middle'.*'head', 'tail'"):
        data.encode(vocab, ["x"], 3, "middle")


def test_generated_reviews_follow_their_rule():
    corpus = data.generated_reviews(300, seed=1)
    for split in data.SPLITS:
        for text, label in zip(corpus.texts[split], corpus.labels[split]):
            words = data.tokenize(text)
            pos = sum(w in data.POSITIVE for w in words)
            neg = sum(w in data.NEGATIVE for w in words)
            assert pos != neg and label == int(pos > neg)
    assert 0.35 < corpus.labels["train"].mean() < 0.65


def test_tsv_files(tmp_path):
    paths = {}
    for split, lines in (("train", ["pos\tgood film", "neg\tbad film", "", "neu\tfilm"]),
                         ("valid", ["neg\tawful"]), ("test", ["pos\tgreat", "neu\tok"])):
        paths[split] = tmp_path / f"{split}.tsv"
        paths[split].write_text("\n".join(lines) + "\n")
    corpus = data.load_tsv_files(*(str(paths[s]) for s in ("train", "valid", "test")))
    assert corpus.label_names == ("neg", "neu", "pos")
    np.testing.assert_array_equal(corpus.labels["train"], [2, 0, 1])
    assert corpus.texts["test"] == ["great", "ok"]
    config = smoke_config("imdb", **{"task.corpus": "files", "task.batch_size": 2})
    for split, field in (("train", "train"), ("valid", "valid"), ("test", "test")):
        config.task.files[field] = str(paths[split])
    assert make_task(config).num_classes == 3
    paths["valid"].write_text("happy\tgood\n")
    with pytest.raises(ValueError, match=r"label\(s\) \['happy'\] of the validation file"):
        data.load_tsv_files(*(str(paths[s]) for s in ("train", "valid", "test")))
    paths["valid"].write_text("no tab here\n")
    with pytest.raises(ValueError, match=r"valid.tsv:1: expected 'label<TAB>text'"):
        data.load_tsv_files(*(str(paths[s]) for s in ("train", "valid", "test")))


@pytest.mark.parametrize("overrides,match", [
    ({"task.corpus": "sst2"}, r"task.corpus='sst2'.*'imdb', 'files', 'generated'"),
    ({"model.pooling": "max"}, r"model.pooling='max'.*'last', 'mean'"),
    ({"task.truncate": "middle"}, r"task.truncate='middle'"),
    ({"task.max_length": 0}, r"task.max_length=0 must be > 0"),
    ({"model.embed_dim": 0}, r"model.embed_dim=0 must be > 0"),
])
def test_bad_config_fields(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(smoke_config("imdb", **overrides))


def test_configs_validate():
    for variant in ("", "last", "bidir", "generated", "smoke"):
        validate(smoke_config("imdb", variant))
    with pytest.raises(ValueError, match="unknown variant"):
        smoke_config("imdb", "nope")
    with pytest.raises(ConfigError, match="corpus='files' needs config.task.files"):
        make_task(smoke_config("imdb", **{"task.corpus": "files"}))
