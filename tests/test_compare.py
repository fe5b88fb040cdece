"""experiments.compare (tables and overlay plots across runs) and launch/sweep.py (grid of config
overrides -> one workdir per run), on small hand-written run directories."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import compare
from rnnlab import stats

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


def _sweep(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join("launch", "sweep.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


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


# --- grouping over seeds, statistics and the report (runs with config.json) ---

def _config(cell="lstm", lr=1e-3, seed=0, steps=400, kwargs=""):
    return {"seed": seed, "model": {"cell": cell, "hidden": 8, "cell_kwargs": kwargs},
            "optim": {"lr": lr, "name": "adam"}, "train": {"steps": steps, "log_every": 100},
            "task": {"name": "adding", "length": 10}, "diagnostics": {"lags": [0, 1, 5]}}


def _write_seed_run(path, config, mse, rate=-0.1, last_step=None):
    """A training run: config.json, train + eval records every 100 steps (eval mse as given,
    one value per 100 steps), a step-0 gradient_flow record; stops at `last_step` if given."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 0, "split": "gradient_flow", "rate": rate, "grad_norm@0": 1.0,
                            "grad_norm@1": math.exp(rate), "grad_norm@5": math.exp(5 * rate)})
                + "\n")
        for i, m in enumerate(mse, 1):
            if last_step is not None and 100 * i > last_step:
                break
            f.write(json.dumps({"step": 100 * i, "split": "train", "loss": m * 1.1,
                                "steps_per_sec": 5.0}) + "\n")
            f.write(json.dumps({"step": 100 * i, "split": "eval", "loss": m, "mse": m}) + "\n")
        if last_step is None:  # the end-of-training measurement (diagnostics.every = steps)
            f.write(json.dumps({"step": 100 * len(mse), "split": "gradient_flow",
                                "rate": rate / 2, "grad_norm@0": 1.0, "grad_norm@1": 0.9,
                                "grad_norm@5": 0.5}) + "\n")


def _ablation(root):
    """3 groups x 3 seeds differing in model.cell (+ optim.lr for irnn) and seed; one lstm
    seed cut short at step 200 of 400."""
    curves = {"lstm": [[0.2, 0.1, 0.05, 0.02], [0.2, 0.12, 0.04, 0.021], [0.2, 0.11, 0.06, 0.019]],
              "irnn": [[0.2, 0.05, 0.005, 0.001], [0.2, 0.009, 0.004, 0.002],
                       [0.2, 0.2, 0.2, 0.2]],
              "rnn_tanh": [[0.2, 0.19, 0.18, 0.17], [0.2, 0.18, 0.17, 0.171],
                           [0.2, 0.19, 0.175, 0.169]]}
    rates = {"lstm": -0.01, "irnn": 0.0, "rnn_tanh": -0.1}
    dirs = []
    for cell, per_seed in curves.items():
        for seed, mse in enumerate(per_seed):
            d = os.path.join(root, f"cell={cell},seed={seed}")
            cfg = _config(cell, lr=1e-4 if cell == "irnn" else 1e-3, seed=seed)
            _write_seed_run(d, cfg, mse, rate=rates[cell] + 0.001 * seed,
                            last_step=200 if (cell, seed) == ("lstm", 2) else None)
            dirs.append(d)
    lstm_fb = os.path.join(root, "cell=lstm,chrono,seed=0")  # a 4th group with a 4th key
    _write_seed_run(lstm_fb, _config("lstm", kwargs="chrono_init=10"), [0.1, 0.01, 0.001, 0.0005])
    return dirs + [lstm_fb]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_grouping_finds_the_varying_keys_and_groups_seeds(tmp_path):
    from rnnlab.train import runs as runs_lib

    dirs = _ablation(str(tmp_path / "sweep"))
    runs = [runs_lib.load_run(d) for d in dirs]
    keys, groups = runs_lib.group_runs(runs)
    assert keys == ["model.cell", "model.cell_kwargs", "optim.lr"]  # first-seen order, no seed
    assert [(g["label"], [r["config"]["seed"] for r in g["runs"]]) for g in groups] == [
        ("cell=lstm, cell_kwargs='', lr=0.001", [0, 1, 2]),
        ("cell=irnn, cell_kwargs='', lr=0.0001", [0, 1, 2]),
        ("cell=rnn_tanh, cell_kwargs='', lr=0.001", [0, 1, 2]),
        ("cell=lstm, cell_kwargs=chrono_init=10, lr=0.001", [0])]
    assert [r["status"] for r in groups[0]["runs"]] == ["complete", "complete", "incomplete"]
    assert runs_lib.varying_keys([{"a": 1, "b": (1, 2)}, {"a": 1, "b": (1, 2), "c": 0}]) == ["c"]


def test_compare_report_statistics_solve_and_baseline(tmp_path):
    dirs = _ablation(str(tmp_path / "sweep"))
    out = str(tmp_path / "out")
    written = {os.path.basename(p) for p in compare.compare(
        dirs, out, solve=["eval.mse<0.01"], baseline=["model.cell=lstm", "model.cell_kwargs="],
        metrics=["eval.mse"])}
    assert {"report.md", "status.csv", "metric_eval.mse.csv", "solve_eval.mse_lt_0.01.csv",
            "baseline.csv", "gradient_flow_init.csv", "curves_eval.mse.png",
            "grad_flow_init.png", "grad_flow_final.png", "outcome_vs_rate.png", "runs.csv",
            "loss.png"} <= written
    rows = {r["model.cell"] + r["model.cell_kwargs"]: r
            for r in _csv(os.path.join(out, "metric_eval.mse.csv"))}
    lstm = rows["lstm"]
    assert (lstm["n"], lstm["runs"]) == ("2", "3")  # the cut-short seed is not averaged
    assert float(lstm["final_mean"]) == pytest.approx((0.02 + 0.021) / 2)
    assert "seed 2: step 200/400" in lstm["left_out"]
    finals = [0.17, 0.171, 0.169]
    tanh = rows["rnn_tanh"]
    assert float(tanh["final_mean"]) == pytest.approx(np.mean(finals))
    assert float(tanh["final_std"]) == pytest.approx(np.std(finals, ddof=1))
    assert (float(tanh["final_lo"]), float(tanh["final_hi"])) == pytest.approx(
        stats.t_interval(finals))
    assert float(rows["irnn"]["best_mean"]) == pytest.approx((0.001 + 0.002 + 0.2) / 3)
    assert math.isnan(float(rows["lstmchrono_init=10"]["final_lo"]))  # one seed: no interval
    solve = {r["model.cell"] + r["model.cell_kwargs"]: r
             for r in _csv(os.path.join(out, "solve_eval.mse_lt_0.01.csv"))}
    assert (solve["irnn"]["median_steps"], solve["irnn"]["solved"],
            solve["irnn"]["per_seed"]) == ("300", "2/3", "300 200 -")
    assert (solve["lstm"]["median_steps"], solve["lstm"]["solved"]) == ("> 400", "0/2")
    assert solve["lstmchrono_init=10"]["median_steps"] == "300"
    base = {r["model.cell"] + r["model.cell_kwargs"]: r
            for r in _csv(os.path.join(out, "baseline.csv"))}
    assert set(base) == {"irnn", "rnn_tanh", "lstmchrono_init=10"}
    assert base["rnn_tanh"]["verdict"] == "resolved" and float(base["rnn_tanh"]["welch_p"]) < 0.05
    assert base["rnn_tanh"]["intervals_overlap"] == "no"
    assert base["irnn"]["verdict"] == "not resolved"  # one seed failed: wide spread
    assert base["lstmchrono_init=10"]["verdict"] == "too few seeds"
    gf = {r["model.cell"] + r["model.cell_kwargs"]: r
          for r in _csv(os.path.join(out, "gradient_flow_init.csv"))}
    assert float(gf["rnn_tanh"]["rate_mean"]) == pytest.approx(-0.099)
    report = open(os.path.join(out, "report.md")).read()
    assert "Student's t" in report and "INCOMPLETE" in report
    assert "`cell=lstm,seed=2` at step 200 of 400" in report
    assert "![curves_eval.mse.png](curves_eval.mse.png)" in report
    assert "| cell | cell_kwargs | lr |" in report  # the varying keys are the columns


def test_compare_rejects_bad_grouped_input(tmp_path):
    dirs = _ablation(str(tmp_path / "sweep"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="matches 2 groups"):
        compare.compare(dirs, out, baseline=["model.cell=lstm"])
    with pytest.raises(ValueError, match="matches no group"):
        compare.compare(dirs, out, baseline=["model.cell=gru"])
    with pytest.raises(ValueError, match="bad threshold 'eval.mse=1'"):
        compare.compare(dirs, out, solve=["eval.mse=1"])
    with pytest.raises(ValueError, match="no run logs eval.acc"):
        compare.compare(dirs, out, solve=["eval.acc>0.5"])
    with pytest.raises(ValueError, match="--metrics: 'eval.bleu' is in no run"):
        compare.compare(dirs, out, metrics=["eval.bleu"])
    with pytest.raises(ValueError, match="matches no directory"):
        compare.compare([str(tmp_path / "nothing" / "*")], out)
    not_run = tmp_path / "sweep" / "compare"  # e.g. an earlier OUT inside the sweep root
    not_run.mkdir()
    with pytest.raises(ValueError, match=f"{not_run}.*neither metrics.jsonl"):
        compare.compare([str(tmp_path / "sweep" / "*")], out)
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", *dirs, f"--out={out}",
                           "--baseline=model.cell=lstm"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("compare: --baseline=model.cell=lstm")
    assert not os.path.exists(out)  # every bad request stopped before writing anything


def test_compare_reads_gs_paths_through_epath(tmp_path, monkeypatch):
    """gs://bucket/... is served from tmp_path by a mocked epath backend: every read and the
    glob go through etils.epath, none through the local filesystem by hand."""
    from etils import epath
    from etils.epath import gpath
    from etils.epath import testing as epath_testing

    # with TensorFlow installed epath sends gs:// to tf.io.gfile, past mock_epath's backends
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)

    local = str(tmp_path / "bucket")
    _ablation(os.path.join(local, "sweeps"))
    seen = []

    def redirect(fn):
        def mocked(original, path, *args, **kwargs):
            path = os.fspath(path)
            seen.append(path)
            assert path.startswith("gs://bucket"), path
            return original(path.replace("gs://bucket", local), *args, **kwargs)
        return mocked

    def glob(original, pattern):
        seen.append(pattern)
        return [p.replace(local, "gs://bucket") for p in original(
            pattern.replace("gs://bucket", local))]

    mocks = {name: redirect(name) for name in ("open", "exists", "isdir", "stat", "listdir")}
    with epath_testing.mock_epath(glob=glob, **mocks):
        assert epath.Path("gs://bucket/sweeps").exists()
        out = str(tmp_path / "out")
        compare.compare(["gs://bucket/sweeps/*"], out, metrics=["eval.mse"])
    assert "gs://bucket/sweeps/*" in seen
    assert "gs://bucket/sweeps/cell=irnn,seed=1/config.json" in seen
    status = _csv(os.path.join(out, "status.csv"))
    assert len(status) == 10 and {r["run"] for r in status} >= {"cell=irnn,seed=1"}


@pytest.mark.slow
def test_sweep_over_seeds_then_compare_end_to_end(tmp_path):
    """launch/sweep.py --seeds trains real (smoke) runs; experiments.compare groups them by their
    config.json and reports per group (the path the README's ablation takes)."""
    root = str(tmp_path / "sweep")
    proc = _sweep(f"--root={root}", f"--command={sys.executable} -m experiments.train "
                  "--config=experiments/configs/adding.py:smoke --config.diagnostics.every=6 "
                  "--config.diagnostics.lags=(0,1,5)",
                  "--grid=model.cell=lstm,rnn_tanh", "--seeds=0,1", "--parallel=2", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(root)) == [f"cell={c},seed={s}" for c in ("lstm", "rnn_tanh")
                                        for s in (0, 1)]
    with open(os.path.join(root, "cell=rnn_tanh,seed=1", "config.json")) as f:
        config = json.load(f)
    assert config["seed"] == 1 and config["model"]["cell"] == "rnn_tanh"
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", f"{root}/*",
                           f"--out={out}", "--solve=eval.mse<100", "--baseline=model.cell=lstm"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model.cell"]: r for r in _csv(os.path.join(out, "metric_eval.mse.csv"))}
    assert set(rows) == {"lstm", "rnn_tanh"} and rows["lstm"]["n"] == "2"
    solve = {r["model.cell"]: r for r in _csv(os.path.join(out, "solve_eval.mse_lt_100.csv"))}
    assert solve["lstm"]["solved"] == "2/2" and solve["lstm"]["median_steps"] == "3"
    assert os.path.exists(os.path.join(out, "grad_flow_init.png"))
    assert "Made by `python -m experiments.compare" in open(os.path.join(out, "report.md")).read()
