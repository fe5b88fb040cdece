"""rnnlab.tasks.tagging and rnnlab.data.tagging: the smoke config through `train_and_evaluate`
and its metrics, the labelling rules against a Python loop, the CoNLL reader, and the masked
per-token accuracy against numpy."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from rnnlab.data import tagging as data
from rnnlab.data.vocab import VOCAB_FILE, Vocab
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.loop import evaluate
from rnnlab.train.metrics import read_metrics
from _config_helpers import smoke_config

CONLL_TRAIN = """-DOCSTART- -X- O

EU NNP B-ORG
rejects VBZ O
German JJ B-MISC
call NN O

Peter\tNNP\tB-PER
Blackburn\tNNP\tI-PER


BRUSSELS NNP B-LOC
"""


def test_smoke_run_through_train_and_evaluate(tmp_path):
    config = smoke_config("tagging", **{"checkpoint.every_steps": 0})
    task = make_task(config)
    result = train_and_evaluate(config, str(tmp_path), task=task)
    assert int(result.state.step) == config.train.steps
    records = read_metrics(str(tmp_path))
    assert [(r["step"], r["split"]) for r in records if r["split"] != "train"] == [
        (3, "eval"), (6, "eval"), (6, "test")]
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"])
    # the baseline counts real tokens only: the train majority tag's share of them
    majority = np.bincount(np.concatenate(task.splits["train"].labels)).argmax()
    for split, name in (("eval", "validation"), ("test", "test")):
        want = np.mean(np.concatenate(task.splits[name].labels) == majority)
        assert [r["baseline"] for r in records if r["split"] == split][-1] == pytest.approx(want)


@pytest.mark.parametrize("rule,lag", [("count", 0), ("lag", 0), ("lag", 3), ("lag", 20)])
def test_rules_against_a_python_loop(rule, lag):
    rng = np.random.default_rng(0)
    tokens, tags = data.synthetic_tags(rng, 30, 1, 12, symbols=5, num_tags=3, rule=rule, lag=lag)
    assert all(1 <= len(x) <= 12 for x in tokens)
    for x, y in zip(tokens, tags):
        assert x.min() >= 1 and x.max() <= 5 and len(y) == len(x)
        count, want = 0, []
        for t, s in enumerate(x):
            count += int(s == 1)
            if rule == "count":
                want.append(count % 3)
            else:
                want.append(int(x[t - lag]) % 3 if t >= lag else 0)
        np.testing.assert_array_equal(y, want)
    with pytest.raises(ValueError, match=r"unknown rule 'parity'.*'count', 'lag'"):
        data.tag_rule(tokens[0], 2, "parity")


def test_read_conll(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL_TRAIN)
    sentences = data.read_conll(str(path))
    assert sentences == [(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
                         (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
                         (["BRUSSELS"], ["B-LOC"])]
    pos = data.read_conll(str(path), tag_column=1, lowercase=True)
    assert pos[0] == (["eu", "rejects", "german", "call"], ["NNP", "VBZ", "JJ", "NN"])
    index = data.tag_index(sentences)
    assert list(index) == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O"]
    with pytest.raises(ValueError, match=r"tag\(s\) \['B-XYZ'\] of the test file"):
        data.encode_tags([(["a"], ["B-XYZ"])], index, "test")
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a token and a tag"):
        data.read_conll(str(bad))
    with pytest.raises(ValueError, match=r"3 columns .* tag_column=5"):
        data.read_conll(str(path), tag_column=5)


def test_conll_task_masked_token_accuracy(tmp_path):
    """Files -> task (long sentences cut into pieces, vocabulary and tag names written), and
    the task's statistics equal numpy's over the real tokens of the model's own logits."""
    (tmp_path / "train.txt").write_text(CONLL_TRAIN)
    (tmp_path / "valid.txt").write_text("Peter NNP B-PER\nrejects VBZ O\nunseen NN O\n")
    (tmp_path / "test.txt").write_text("EU NNP B-ORG\n")
    config = smoke_config("tagging", **{"task.source": "conll", "task.batch_size": 2,
                                        "task.max_length": 3})
    for split in ("train", "valid", "test"):
        config.task.files[split] = str(tmp_path / f"{split}.txt")
    validate(config)
    task = make_task(config)
    assert sorted(len(x) for x in task.splits["train"].tokens) == [1, 1, 2, 3]  # 4 = 3 + 1
    valid = task.splits["validation"]
    np.testing.assert_array_equal(valid.tokens[0][2], task.vocab.index["<unk>"])
    task.prepare(str(tmp_path / "run"))
    assert Vocab.load(str(tmp_path / "run" / VOCAB_FILE)) == task.vocab
    assert json.loads((tmp_path / "run" / "labels.json").read_text())[0] == "B-LOC"

    params = task.init(jax.random.key(0))
    batch = task.train_batch(0)
    stats_fn = jax.jit(lambda p, b: (task.loss(p, b, None, None, False)[1][0],
                                     task.model.apply({"params": p}, b["inputs"],
                                                      mask=b["mask"])[0]))
    stats, logits = stats_fn(params, batch)
    real = np.asarray(batch["mask"])
    pred = np.asarray(logits).argmax(-1)
    assert float(stats["count"]) == real.sum()
    assert float(stats["correct"]) == (pred == batch["targets"])[real].sum()
    padded_elsewhere = dict(batch, targets=np.where(real, batch["targets"], 5))
    stats2, _ = stats_fn(params, padded_elsewhere)
    assert float(stats2["correct"]) == float(stats["correct"])  # padding never counts
    # the engine's evaluation: baseline = share of the train majority tag among real tokens
    valid_metrics = evaluate(task, lambda p, c, b: (stats_fn(p, b)[0], None), params)
    majority = np.bincount(np.concatenate(task.splits["train"].labels)).argmax()
    want = np.mean(np.concatenate(valid.labels) == majority)
    assert valid_metrics["baseline"] == pytest.approx(want)


@pytest.mark.parametrize("overrides,match", [
    ({"task.source": "pos"}, r"task.source='pos'.*'synthetic', 'conll'"),
    ({"task.rule": "parity"}, r"task.rule='parity'.*'count', 'lag'"),
    ({"task.min_length": 40}, r"task.min_length=40 must be <= task.max_length=16"),
    ({"task.batch_size": 0}, r"task.batch_size=0 must be > 0"),
])
def test_bad_config_fields(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(smoke_config("tagging", **overrides))


def test_configs_validate():
    for variant in ("", "lag", "conll", "smoke"):
        validate(smoke_config("tagging", variant))
    with pytest.raises(ConfigError, match=r"source='conll' needs config.task.files"):
        make_task(smoke_config("tagging", "conll"))
