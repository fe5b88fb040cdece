"""experiments.generate: sampling from and scoring with trained smoke checkpoints (character level:
char_shakespeare:smoke; word level: ptb_zaremba:smoke), reproducibility with a seed, the
--score output and clear errors for a workdir without a checkpoint or vocabulary."""

from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments import generate
from rnnlab.data.vocab import VOCAB_FILE
from rnnlab.train import train_and_evaluate
from rnnlab.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(name, workdir):
    config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
    config.checkpoint.async_save = False
    train_and_evaluate(config, str(workdir))
    return str(workdir)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return _train("char_shakespeare", tmp_path_factory.mktemp("char"))


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    return _train("ptb_zaremba", tmp_path_factory.mktemp("word"))


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "experiments.generate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_char_smoke_run_reports_bpc(char_run):
    records = read_metrics(char_run)
    for split in ("eval", "test"):
        r = [r for r in records if r["split"] == split][-1]
        assert np.isclose(r["bpc"], r["loss"] / math.log(2), rtol=1e-5)


def test_generation_in_vocabulary_and_reproducible(char_run):
    model, params, vocab, step = generate.load_run(char_run)
    assert step == 6
    texts = [generate.sample_text(model, params, vocab, "the ", 40, 1.0, 0, seed)
             for seed in (3, 3, 4)]
    assert texts[0] == texts[1] != texts[2]
    assert texts[0].startswith("the ") and len(texts[0]) == 44
    assert set(texts[0]) <= set(vocab.tokens)
    out = run_cli(f"--workdir={char_run}", "--prompt=the ", "--length=40", "--seed=3")
    assert out.returncode == 0, out.stderr
    assert out.stdout == texts[0] + "\n"


def test_word_generation_and_score_output(word_run):
    model, params, vocab, _ = generate.load_run(word_run, "best")
    text = generate.sample_text(model, params, vocab, "the cat", 15, 0.8, 5, seed=0)
    assert text.startswith("the cat ")
    assert set(text.split()) <= set(vocab.tokens)
    out = run_cli(f"--workdir={word_run}", "--score=the cat sat on the mat .")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert int(fields["tokens"]) == 8  # 7 words + <eos>
    nats, ppl = float(fields["log_prob_nats"]), float(fields["perplexity"])
    assert nats < 0 and np.isclose(ppl, math.exp(-nats / 8), rtol=1e-4)
    assert int(fields["unknown_tokens"]) == 0
    direct = generate.score_text(model, params, vocab, "the cat sat on the mat .")
    assert np.isclose(direct["log_prob_nats"], nats, rtol=1e-4)


def test_clear_errors_without_checkpoint_or_vocab(word_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(word_run, run)
    os.remove(run / VOCAB_FILE)
    with pytest.raises(generate.RunError, match="vocab.json"):
        generate.load_run(str(run))
    shutil.copy(os.path.join(word_run, VOCAB_FILE), run / VOCAB_FILE)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(generate.RunError, match="no checkpoints"):
        generate.load_run(str(run))
    os.makedirs(run / "checkpoints")
    with pytest.raises(generate.RunError, match="holds no checkpoint"):
        generate.load_run(str(run))
    with pytest.raises(generate.RunError, match="does not exist"):
        generate.load_run(str(tmp_path / "nowhere"))
    with pytest.raises(generate.RunError, match="no checkpoint at step 99"):
        generate.load_run(word_run, "99")
    out = run_cli(f"--workdir={run}", "--prompt=x")
    assert out.returncode != 0 and "holds no checkpoint" in out.stderr
    assert "Traceback" not in out.stderr
