"""experiments.compare (tables and overlay plots across runs) and launch/sweep.py (grid of config
overrides -> one workdir per run), on small hand-written run directories."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from experiments import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(path, losses, metric=0.1):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for i, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": i, "split": "train", "loss": loss, "grad_norm": 2.0,
                                "clipped": 1.0}) + "\n")
        f.write(json.dumps({"step": len(losses), "split": "eval", "loss": losses[-1],
                            "mse": metric}) + "\n")
        f.write(json.dumps({"step": len(losses), "split": "gradient_flow", "rate": -0.1}) + "\n")


def _write_study(path, rate):
    os.makedirs(path, exist_ok=True)
    entry = {"name": "tanh r=0.9 T=4", "phase": "init", "cell": "rnn_tanh",
             "lags": [0, 1, 2, 3, 4], "grad_norm": [1.0, 0.5, 0.25, 0.12, 0.06], "rate": rate,
             "lyapunov": rate * 1.01, "rel_diff": 0.01, "grad_norm_at_max_lag": 0.06,
             "sigma_max": 1.2, "pascanu_holds": False, "final_metric": None}
    with open(os.path.join(path, "gradient_flow.json"), "w") as f:
        json.dump({"configurations": [entry, dict(entry, phase="trained", rate=rate / 2)]}, f)


def test_compare_writes_tables_and_plots(tmp_path):
    a, b, s = str(tmp_path / "run_a"), str(tmp_path / "run_b"), str(tmp_path / "study")
    _write_run(a, [1.0, 0.5, 0.2])
    _write_run(b, [1.0, 0.8], metric=0.3)
    _write_study(s, -0.7)
    out = str(tmp_path / "out")
    written = {os.path.basename(p) for p in compare.compare([a, b, s], out)}
    assert written == {"runs.md", "runs.csv", "gradient_flow.md", "gradient_flow.csv",
                       "loss.png", "grad_norm_vs_lag.png"}
    with open(os.path.join(out, "runs.csv")) as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"run_a", "run_b"}
    assert float(rows["run_a"]["train/loss"]) == 0.2 and float(rows["run_b"]["eval/mse"]) == 0.3
    assert float(rows["run_a"]["gradient_flow/rate"]) == -0.1
    with open(os.path.join(out, "gradient_flow.csv")) as f:
        study = list(csv.DictReader(f))
    assert [(r["run"], r["phase"], float(r["rate"])) for r in study] == [
        ("study", "init", -0.7), ("study", "trained", -0.35)]
    md = open(os.path.join(out, "runs.md")).read()
    assert md.startswith("| run |") and "run_b" in md


def test_compare_cli_and_errors(tmp_path):
    a = str(tmp_path / "a")
    _write_run(a, [1.0, 0.5])
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(ValueError, match="neither metrics.jsonl nor gradient_flow.json"):
        compare.compare([a, empty], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="no run directories"):
        compare.compare([], str(tmp_path / "out"))
    out = str(tmp_path / "cli_out")
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", a, f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.path.join(out, "runs.md") in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", empty, f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "neither metrics.jsonl" in proc.stderr


def _sweep(*args):
    return subprocess.run([sys.executable, os.path.join("launch", "sweep.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_sweep_dry_run_prints_one_command_per_grid_point(tmp_path):
    root = str(tmp_path / "sweep")
    proc = _sweep(f"--root={root}",
                  "--command=python -m experiments.train --config=experiments/configs/adding.py",
                  "--grid=model.cell=lstm,gru", "--grid=task.length=10,20", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == (f"python -m experiments.train --config=experiments/configs/adding.py "
                        f"--workdir={root}/cell=lstm,length=10 --config.model.cell=lstm "
                        f"--config.task.length=10")
    assert {line.split("--workdir=")[1].split()[0] for line in lines} == {
        f"{root}/cell={c},length={t}" for c in ("lstm", "gru") for t in (10, 20)}
    assert not os.path.exists(root)  # a dry run creates nothing


@pytest.mark.parametrize("grid", ["model.cell", "=lstm", "model.cell="])
def test_sweep_rejects_a_bad_grid(grid, tmp_path):
    proc = _sweep(f"--root={tmp_path}", "--command=echo", f"--grid={grid}", "--dry_run")
    assert proc.returncode != 0
    assert "bad --grid" in proc.stderr and repr(grid) in proc.stderr



def test_sweep_seeds_give_one_workdir_per_point_and_seed(tmp_path):
    root = str(tmp_path / "sweep")
    proc = _sweep(f"--root={root}", "--command=python -m experiments.train --config=c.py",
                  "--grid=model.cell=lstm,gru", "--seeds=0,7", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines == [f"python -m experiments.train --config=c.py --workdir={root}/cell={c},"
                     f"seed={s} --config.model.cell={c} --config.seed={s}"
                     for c in ("lstm", "gru") for s in (0, 7)]
    # no grid: one run per seed; on TPU VMs one VM per (point, seed)
    proc = _sweep(f"--root={root}", "--command=train", "--seeds=3", "--dry_run")
    assert proc.stdout.split() == ["train", f"--workdir={root}/seed=3", "--config.seed=3"]
    proc = _sweep("--root=gs://b/s", "--command=train", "--grid=model.cell=lstm", "--seeds=0,1",
                  "--tpu=rnnlab-s", "--zone=z", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[3] for line in lines] == ["--name=rnnlab-s-0", "--name=rnnlab-s-1"]
    assert "--workdir=gs://b/s/cell=lstm,seed=1" in lines[1]
    assert "--command='train --config.model.cell=lstm --config.seed=1'" in lines[1]


@pytest.mark.parametrize("seeds,message", [("0,x", "bad --seeds '0,x'"),
                                           ("1,1", "a seed is repeated")])
def test_sweep_rejects_bad_seeds(seeds, message, tmp_path):
    proc = _sweep(f"--root={tmp_path}", "--command=echo", f"--seeds={seeds}", "--dry_run")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    proc = _sweep(f"--root={tmp_path}", "--command=echo", "--seeds=0", "--grid=seed=1,2",
                  "--dry_run")
    assert proc.returncode != 0 and "not both" in proc.stderr
