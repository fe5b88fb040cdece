"""The speed benchmark script: its FLOP count and plan (fast), and a `--quick` smoke run (slow:
it starts one subprocess per measurement, several seconds each)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.benchmarks import speed

ROOT = Path(__file__).resolve().parents[1]


def test_matmul_flops_lstm_workload_a():
    cfg = speed.WORKLOADS["A"]
    per_token_fwd = 2 * (650 * 2600 + 650 * 2600) * 2 + 2 * 650 * 10000
    assert speed.matmul_flops("lstm", cfg) == 3 * per_token_fwd * 20 * 35


def test_plan_limits_parallel_cells_to_long_workload_and_rnnlab():
    specs = speed.plan(["A", "L"], ["lstm", "mingru"], ["rnnlab", "torch"], quick=True,
                       remat=True)
    got = {(s["workload"], s["cell"], s["impl"], s["remat"]) for s in specs}
    assert ("A", "mingru", "rnnlab", False) not in got
    assert ("L", "mingru", "torch", False) not in got
    assert ("L", "mingru", "rnnlab", False) in got
    assert ("L", "lstm", "rnnlab", True) in got


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "-m", "experiments.benchmarks.speed", "--quick", "--workload=B",
           "--cells=lstm", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert {r["impl"] for r in results} == {"rnnlab", "torch", "flax"}
    assert all("error" not in r for r in results), results
    assert all(r["tokens_per_s"] > 0 for r in results)
    assert all(r.get("init_loss_agrees", True) for r in results), report["same_math"]
    assert "| B | lstm | rnnlab |" in proc.stdout
