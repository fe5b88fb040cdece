"""experiments.evaluate on a smoke-trained word LM (ptb_zaremba:smoke with the test split read
at batch 1): the static test score equals the one training wrote to metrics.jsonl (the engine's
own evaluation path), the table and evaluate.json, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import evaluate
from experiments.configs import ptb_zaremba
from rnnlab.train import train_and_evaluate
from rnnlab.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    config = ptb_zaremba.get_config("smoke")
    config.task.test_batch_size = 1  # the test split as one stream, as evaluate reads it
    config.checkpoint.async_save = False
    workdir = str(tmp_path_factory.mktemp("word"))
    train_and_evaluate(config, workdir)
    return workdir


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.evaluate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_reports_static_cache_and_dynamic(word_run):
    out = run_cli(f"--workdir={word_run}", "--dynamic", "--cache", "--dynamic_stat_batches=4")
    assert out.returncode == 0, out.stderr
    with open(os.path.join(word_run, "evaluate.json")) as f:
        result = json.load(f)
    assert result["checkpoint_step"] == 6 and result["metric"] == "perplexity"
    assert result["complete"] and result["gradient_statistics_seconds"] > 0
    assert list(result["splits"]) == ["valid", "test"]
    test = result["splits"]["test"]
    trained = [r for r in read_metrics(word_run) if r["split"] == "test"][-1]
    assert math.isclose(test["static"]["loss"], trained["loss"], rel_tol=1e-5)
    for row in result["splits"].values():
        for method in ("static", "cache", "dynamic"):
            assert math.isclose(row[method]["perplexity"], math.exp(row[method]["loss"]),
                                rel_tol=1e-9)
        assert row["cache"]["loss"] != row["static"]["loss"]
        assert row["dynamic"]["loss"] != row["static"]["loss"]
    table = out.stdout.splitlines()
    assert table[1].split() == ["split", "tokens", "static", "cache", "dynamic"]
    assert table[3].split()[:3] == ["test", str(test["tokens"]),
                                    f"{test['static']['perplexity']:.2f}"]


@pytest.mark.parametrize("flag,message", [
    ("--cache_lambda=1.5", "--cache_lambda=1.5 must be in [0, 1)"),
    ("--splits=valid,dev", "--splits='valid,dev' is not valid"),
])
def test_cli_bad_flag_is_one_line(word_run, flag, message):
    out = run_cli(f"--workdir={word_run}", "--cache", flag)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: ") and message in lines[0], lines


def test_bad_runs_and_settings_raise_run_error(word_run, tmp_path):
    settings = evaluate.Settings()
    with pytest.raises(evaluate.RunError, match="does not exist"):
        evaluate.evaluate_run(str(tmp_path / "missing"), settings)
    (tmp_path / "config.json").write_text(json.dumps({"task": {"name": "adding"}}))
    with pytest.raises(evaluate.RunError, match="not a language-model run"):
        evaluate.evaluate_run(str(tmp_path), settings)
    with pytest.raises(evaluate.RunError, match="no checkpoint at step 5"):
        evaluate.evaluate_run(word_run, evaluate.Settings(checkpoint="5"))
    with pytest.raises(evaluate.RunError, match="sgd has no published default"):
        evaluate.check_settings(evaluate.Settings(dynamic=True, dynamic_rule="sgd"))
    with pytest.raises(evaluate.RunError, match="--dynamic_segment=0 must be > 0"):
        evaluate.check_settings(evaluate.Settings(dynamic_segment=0))
