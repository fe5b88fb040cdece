"""experiments.gradient_flow: the :smoke study end to end (JSON, report, plots), the training
loop's periodic gradient-flow hook, and `experiments.compare` on two study directories."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil

import pytest

from experiments import compare
from experiments import gradient_flow as study
from experiments.configs import gradient_flow as study_config
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.metrics import read_metrics

ENTRY_KEYS = {"name", "phase", "cell", "lags", "grad_norm", "rate", "lyapunov", "rel_diff",
              "grad_norm_at_max_lag"}


def smoke_config():
    config = study_config.get_config("smoke")
    return config


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("study"))
    return workdir, study.run_study(smoke_config(), workdir)


def test_smoke_study_writes_json_report_and_plots(smoke_study):
    workdir, result = smoke_study
    with open(os.path.join(workdir, "gradient_flow.json")) as f:
        data = json.load(f)  # strict JSON: no NaN
    entries = data["configurations"]
    assert {e["phase"] for e in entries} == {"init", "trained"}
    for e in entries:
        assert ENTRY_KEYS <= set(e), sorted(ENTRY_KEYS - set(e))
        assert len(e["lags"]) == len(e["grad_norm"])
        if e["phase"] == "init" or e["finite"]:
            assert math.isfinite(e["rate"]) and math.isfinite(e["lyapunov"]), e["name"]
    sweep = [e for e in entries if e["group"] == "init_sweep"]
    assert {e["cell"] for e in sweep} == {"rnn_tanh", "rnn_relu", "lstm"}
    assert any("spectra" in e for e in sweep)
    assert all("pascanu_holds" in e for e in sweep if e["cell"] != "lstm")
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == set(smoke_config().train.runs)
    assert runs["adding_relu_clip1"]["clip_events"] > 0
    assert runs["adding_relu_noclip"]["clip_events"] == 0
    for r in runs.values():
        assert os.path.exists(os.path.join(r["workdir"], "metrics.jsonl"))
        assert r["curves"]["gradient_flow"], r["name"]  # the hook ran during training
    keys = {f["key"] for f in data["findings"]}
    assert {"tanh_agreement", "tanh_monotone", "relu_crossing", "lstm_forget_bias",
            "relu_clipping", "trained"} <= keys
    assert all(f["holds"] in (True, False, None) for f in data["findings"])
    report = open(os.path.join(workdir, "report.md")).read()
    assert "## Findings" in report and "| configuration |" in report
    for key, path in result["plots"].items():
        assert os.path.getsize(path) > 1000, key
        assert f"]({os.path.basename(path)})" in report
    assert {"grad_norm_vs_lag", "spectra", "training_adding", "rate_vs_radius"} <= set(
        result["plots"])


def test_findings_are_decided_by_the_numbers(smoke_study):
    """Flip a measured number and the verdict flips with it."""
    _, result = smoke_study
    config = smoke_config()
    entries = json.loads(json.dumps(result["configurations"]))
    runs = json.loads(json.dumps(result["runs"]))
    lstm = sorted((e for e in entries if e["cell"] == "lstm" and e["group"] == "init_sweep"),
                  key=lambda e: e["forget_bias"])
    lstm[0]["rate"], lstm[-1]["rate"] = -1.0, -0.01
    for e in lstm:
        e["grad_norm_at_compare_lag"] = 1.0
    findings, _ = study.compute_findings(config, entries, runs)
    assert {f["key"]: f["holds"] for f in findings}["lstm_forget_bias"] is True
    lstm[-1]["rate"] = -2.0
    findings, _ = study.compute_findings(config, entries, runs)
    assert {f["key"]: f["holds"] for f in findings}["lstm_forget_bias"] is False
    for r in runs:
        if r["cell"] == "rnn_relu":
            r["beats_baseline"] = r["clip"] != "none"
    init = next(e for e in entries if e.get("run") == "adding_relu_noclip"
                and e["phase"] == "init")
    for rate, expected in ((0.3, True), (-0.3, False)):  # exploding at init, or not
        init["rate"] = rate
        findings, _ = study.compute_findings(config, entries, runs)
        assert {f["key"]: f["holds"] for f in findings}["relu_clipping"] is expected


def test_cli_rejects_a_bad_config():
    config = smoke_config()
    config.sweep.cells = ("rnn_tanh", "transformer")
    with pytest.raises(ValueError, match="transformer"):
        study.check_config(config)
    with pytest.raises(ValueError, match="variant"):
        study_config.get_config("huge")


def test_full_variant_trains_the_outcome_runs_at_the_published_length():
    config = study_config.get_config("full")
    study.check_config(config)
    outcome = [n for n, r in config.train.runs.items() if r.outcome]
    assert {"adding_tanh", "adding_lstm_fb1", "adding_lem", "adding_cornn",
            "adding_indrnn"} <= set(outcome)
    for name in config.train.runs:
        c = study.train_config(config, name)
        validate(c)
        if name in outcome:
            assert (c.task.length, c.train.steps, c.model.hidden, c.task.batch_size) == (
                1000, 4000, 128, 50)
            assert c.task.eval_batches * c.task.batch_size == 1000  # 1000 test sequences
            assert c.task.marks == "halves"  # as the LEM, coRNN and IndRNN code draw them
        else:  # the clipping ablation and the copy runs keep the default's setting
            assert c.model.hidden == study_config.get_config().train.hidden
    runs = config.train.runs
    assert runs.adding_lstm_chrono.cell_kwargs == "chrono_init=1000"
    assert (runs.adding_indrnn.cell_kwargs, runs.adding_indrnn.clip) == (
        "max_length=1000,input_std=0.001,grad_clip=10.0", "none")
    assert (runs.adding_lem.cell_kwargs, runs.adding_lem.clip) == ("dt=0.0242", "none")
    # the default's outcome runs keep their short-run setting
    default = study_config.get_config()
    assert default.train.runs.adding_lstm_chrono.cell_kwargs == (
        f"chrono_init={default.train.outcome_length}")
    assert "adding_cornn" not in default.train.runs


def test_training_hook_writes_gradient_flow_records(tmp_path):
    config = importlib.import_module("experiments.configs.copy").get_config("smoke")
    config.checkpoint.async_save = False  # copy: token inputs, one-hot before the cell
    config.model.cell = "rnn_tanh"
    config.diagnostics.every = 2
    config.diagnostics.lags = (1, 5, 10, 1000)
    train_and_evaluate(config, str(tmp_path))
    records = [r for r in read_metrics(str(tmp_path)) if r["split"] == "gradient_flow"]
    assert [r["step"] for r in records] == [0, 2, 4, 6]
    for r in records:
        assert math.isfinite(r["rate"]) and math.isfinite(r["lyapunov"])
        assert {"grad_norm@1", "grad_norm@10", "pascanu_holds"} <= set(r)
        assert "grad_norm@1000" not in r  # beyond the sequence
    train = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert train and all("rate" not in r for r in train)


def test_training_hook_config_is_validated():
    config = importlib.import_module("experiments.configs.adding").get_config("smoke")
    config.diagnostics.every = -1
    with pytest.raises(ConfigError, match="diagnostics.every"):
        validate(config)
    config.diagnostics.every = 1
    config.diagnostics.lags = (1, -3)
    with pytest.raises(ConfigError, match="diagnostics.lags"):
        validate(config)


def test_compare_reads_two_study_dirs(smoke_study, tmp_path):
    workdir, _ = smoke_study
    a, b = str(tmp_path / "study_a"), str(tmp_path / "study_b")
    for d in (a, b):
        os.makedirs(d)
        shutil.copy(os.path.join(workdir, "gradient_flow.json"), d)
    run = os.path.join(workdir, "runs", "adding_relu_clip1")
    written = compare.compare([a, b, run], str(tmp_path / "out"))
    names = {os.path.basename(p) for p in written}
    assert {"gradient_flow.md", "gradient_flow.csv", "grad_norm_vs_lag.png", "runs.md",
            "runs.csv", "loss.png"} <= names
    table = open(tmp_path / "out" / "gradient_flow.md").read()
    assert "study_a" in table and "study_b" in table and "tanh gauss r=0.5" in table


def test_outcome_finding_is_decided_by_the_numbers(smoke_study):
    """The outcome finding holds when at least `findings.min_solved` outcome runs end below
    10% of the baseline and the expected ones stay at it, and not otherwise."""
    _, result = smoke_study
    config = smoke_config()
    entries = json.loads(json.dumps(result["configurations"]))
    runs = json.loads(json.dumps(result["runs"]))
    for name, mse, rate in (("adding_tanh", 0.17, -0.15), ("adding_lstm_fb1", 0.17, -0.12),
                            ("adding_lem", 0.001, -0.3), ("adding_lstm_chrono", 0.008, -0.01)):
        runs.append({"name": name, "cell": name, "cell_kwargs": "", "outcome": True,
                     "final_loss": mse, "baseline_loss": 1 / 6, "status": "ok"})
        entries.append({"run": name, "phase": "init", "rate": rate, "group": "adding",
                        "grad_norm_at_long_lag": 1.0, "long_lag": 90, "status": "ok"})

    def outcome():
        findings, _ = study.compute_findings(config, entries, runs)
        return {f["key"]: f for f in findings}["outcome_separation"]

    def outcome_rows():
        return study.compute_findings(config, entries, runs)[1]["outcome"]

    assert outcome()["holds"] is True
    assert "does not rank them alone" in outcome()["text"]  # LEM solves from rate -0.3
    by_name = {r["name"]: r for r in runs}
    by_name["adding_lstm_chrono"]["final_loss"] = 0.05  # in between: one solved is not enough
    assert outcome()["holds"] is False
    by_name["adding_lstm_chrono"]["final_loss"] = 0.008
    by_name["adding_tanh"]["final_loss"] = 0.01  # the tanh RNN solves: not what was expected
    assert outcome()["holds"] is False
    by_name["adding_tanh"]["final_loss"] = 0.17

    def seeds(*losses):  # a run trained with several seeds: the median decides
        return [{"seed": k, "status": "ok" if v is not None else "diverged (non-finite at "
                 "step 3)", "final_loss": v, "rate_init": -0.12 + 0.01 * k}
                for k, v in enumerate(losses)]
    by_name["adding_lstm_fb1"]["seed_runs"] = seeds(0.13, 0.16, 0.17)  # one seed learns a bit
    assert outcome()["holds"] is True
    row = {o["run"]: o for o in outcome_rows()}["adding_lstm_fb1"]
    assert (row["final_mse"], row["outcome"], row["final_mse_seeds"]) == (
        0.16, "at baseline", [0.13, 0.16, 0.17])
    assert row["rate"] == pytest.approx(-0.11) and row["rate_range"] == pytest.approx(
        [-0.12, -0.10])
    assert "0.16 (median of 0.13, 0.16, 0.17) (at baseline)" in outcome()["text"]
    by_name["adding_lstm_fb1"]["seed_runs"] = seeds(0.13, 0.14, 0.17)  # most seeds learn a bit
    assert outcome()["holds"] is False
    by_name["adding_lstm_fb1"]["seed_runs"] = seeds(0.001, None, None)  # most diverged
    assert {o["run"]: o for o in outcome_rows()}["adding_lstm_fb1"]["outcome"].startswith(
        "diverged")


def test_outcome_seeds_train_the_same_in_worker_processes(tmp_path):
    """Each outcome run is trained once per `train.outcome_seeds`; `train.workers` spawned
    processes give the same numbers as this process, and bad values stop before any work."""
    from experiments.gradient_flow.runs import TrainRuns

    config = smoke_config()
    t = config.train
    t.outcome_length, t.outcome_steps, t.outcome_hidden = 8, 3, 4
    t.outcome_batch_size, t.outcome_eval_batches, t.diagnostics_every = 4, 1, 0
    t.runs = {"adding_lstm_fb1": study_config._run("adding", "lstm", "forget_bias=1.0",
                                                   outcome=True)}
    t.outcome_seeds = (0, 1)
    study.check_config(config)
    results = {}
    for workers in (1, 2):
        t.workers = workers
        with TrainRuns(config, str(tmp_path / f"w{workers}")) as training:
            (run,), entries = training.results(lambda line: None)
        results[workers] = [s["final_loss"] for s in run["seed_runs"]]
        assert [s["seed"] for s in run["seed_runs"]] == [0, 1]
        assert run["seed"] == 0 and {e["phase"] for e in entries} == {"init", "trained"}
        assert os.path.basename(run["seed_runs"][1]["workdir"]) == "adding_lstm_fb1.seed1"
        assert all(os.path.exists(os.path.join(s["workdir"], "metrics.jsonl"))
                   for s in run["seed_runs"])
    assert results[1] == results[2]  # the same computation, bit for bit
    assert results[1][0] != results[1][1]  # the seeds differ
    for field, bad in (("outcome_seeds", ()), ("outcome_seeds", (1, 1)), ("workers", 0)):
        c = smoke_config()
        c.train[field] = bad
        with pytest.raises(ConfigError, match=field):
            study.check_config(c)
