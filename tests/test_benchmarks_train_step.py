"""experiments.benchmarks.train_step: the engine's own LM step timed next to PyTorch's
word_language_model step on the same batches (slow: two subprocesses)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_smoke_run_times_both_and_first_losses_agree(tmp_path):
    out = tmp_path / "train_step.json"
    cmd = [sys.executable, "-m", "experiments.benchmarks.train_step",
           "--config=experiments/configs/ptb_zaremba.py:smoke", "--steps=2", "--warmup=1",
           f"--out={out}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["impl"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"rnnlab", "torch"} and all("error" not in r for r in rows.values())
    for r in rows.values():
        assert r["steps"] == 2 and r["tokens_per_s"] > 0
    # both start from a fresh U(±0.1) model: the mean NLL per token is near ln(vocab) for both
    a, b = rows["rnnlab"]["first_loss"], rows["torch"]["first_loss"]
    assert abs(a - b) < 0.02 * a and a > 0.9 * math.log(20)
    assert "rnnlab / PyTorch" in res.stdout
