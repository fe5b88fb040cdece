"""The speed benchmark script: its FLOP count and plan (fast), and a `--quick` smoke run (slow:
it starts one subprocess per measurement, several seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags

from experiments.benchmarks import lm_workers, speed

ROOT = Path(__file__).resolve().parents[1]


def test_matmul_flops_lstm_workload_a():
    cfg = speed.WORKLOADS["A"]
    per_token_fwd = 2 * (650 * 2600 + 650 * 2600) * 2 + 2 * 650 * 10000
    assert lm_workers.matmul_flops("lstm", cfg) == 3 * per_token_fwd * 20 * 35


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
           "--cells=lstm", "--impls=rnnlab,torch,flax", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert {r["impl"] for r in results} == {"rnnlab", "torch", "flax"}
    assert all("error" not in r for r in results), results
    assert all(r["tokens_per_s"] > 0 for r in results)
    assert all(r.get("init_loss_agrees", True) for r in results), report["same_math"]
    assert len({r["device"] for r in results}) == 1, results  # all on one device
    assert "| B | lstm | rnnlab |" in proc.stdout
    # the JAX workers set glibc's malloc as the entry points do; PyTorch keeps its own
    assert report["rnnlab_options"]["malloc"] == "tuned"
    tuned = "tuned" if sys.platform == "linux" else "no glibc"
    assert {r["impl"]: r.get("malloc") for r in results} == {"rnnlab": tuned, "flax": tuned,
                                                               "torch": None}


def test_keep_freed_memory_applies_mallopt_unless_told_not_to(monkeypatch):
    from experiments import cli

    monkeypatch.setenv("RNNLAB_MALLOC", "system")
    assert cli.keep_freed_memory() == "system"
    monkeypatch.delenv("RNNLAB_MALLOC")
    if sys.platform == "linux":  # glibc: every mallopt parameter accepted
        assert cli.keep_freed_memory() == "tuned"


def test_compile_cache_stores_compiled_programs_under_rnnlab_cache(tmp_path):
    """Entry points cache compiled programs in $RNNLAB_CACHE/xla and load them in the next
    process; a directory the user set is kept, and RNNLAB_COMPILE_CACHE=off turns it off."""
    import subprocess

    code = ("import jax, jax.numpy as jnp; from experiments import cli; print(cli.compile_cache());"
            "jax.jit(lambda x: jnp.tanh(x) * 3.0)(jnp.ones(7)).block_until_ready()")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(RNNLAB_CACHE=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(**extra):
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**env, **extra})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert run() == str(tmp_path / "cache" / "xla")
    stored = sorted(os.listdir(tmp_path / "cache" / "xla"))
    assert stored
    run()  # the second process loads the program: nothing new is written
    assert sorted(os.listdir(tmp_path / "cache" / "xla")) == stored
    assert run(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine")
    assert run(RNNLAB_COMPILE_CACHE="off", RNNLAB_CACHE=str(tmp_path / "off")) == ""
    assert not os.path.exists(tmp_path / "off")


def test_ratio_across_devices_is_flagged():
    from experiments.benchmarks.speed import finish

    row = lambda impl, dev, tps: dict(workload="A", cell="lstm", impl=impl, device=dev,  # noqa: E731
                                      tokens_per_s=tps, init_loss=9.2)
    results = [row("rnnlab", "cpu", 100.0), row("torch", "NVIDIA H200", 400.0),
               row("flax", "cpu", 50.0)]
    checks = finish(results)
    assert [r.get("ratio") for r in results] == [None, 0.25, 2.0]
    assert any("torch: ran on NVIDIA H200, rnnlab on cpu" in c for c in checks), checks
    assert not any("flax: ran on" in c for c in checks), checks


@pytest.mark.slow
def test_rnnlab_step_options_keep_the_math():
    """The rnnlab training step with the engine's options (unroll="auto", chunked remat) has
    the same initial loss as Flax's from the same weights; bfloat16 compute is close."""
    import jax.numpy as jnp

    cfg = speed.QUICK["B"]
    w = lm_workers.make_weights("lstm", cfg)
    xs, ys = lm_workers.make_batches(cfg, n=1)
    losses = {}
    for name, spec in {
        "flax": dict(impl="flax"),
        "rnnlab": dict(impl="rnnlab", unroll="auto", remat=True),
        "bf16": dict(impl="rnnlab", unroll="2", dtype="bfloat16"),
    }.items():
        step, params, carry = lm_workers.jax_train_step(dict(spec, cell="lstm", cfg=cfg), w)
        losses[name] = float(step(params, carry, jnp.asarray(xs[0]), jnp.asarray(ys[0]))[2])
    assert abs(losses["rnnlab"] - losses["flax"]) < 1e-5, losses
    assert abs(losses["bf16"] - losses["flax"]) < 1e-2, losses


def test_profile_op_table_counts_concurrent_threads_once(tmp_path):
    """Two threads running one operation at once count once; calls and shapes come through."""
    import gzip

    from experiments.benchmarks.profile import op_table

    run = tmp_path / "plugins" / "profile" / "run1"
    run.mkdir(parents=True)
    ev = lambda name, ts, dur, tid: dict(ph="X", name=name, ts=ts, dur=dur, pid=1,  # noqa: E731
                                         tid=tid)
    events = [ev("ynn_fusion.3", 0, 1000, 1), ev("ynn_fusion.3", 200, 1000, 2),  # one call
              ev("ynn_fusion.3", 5000, 500, 1),  # a second call
              ev("add_fusion", 2000, 300, 1), ev("ThunkExecutor::Execute", 0, 9000, 1)]
    with gzip.open(run / "vm.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    hlo = ('  %ynn_fusion.3 = f32[32,2048]{1,0} fusion(%a, %b), kind=kCustom, '
           'metadata={op_name="jit(step)/while/body/dot_general"}\n'
           '  %add_fusion = f32[32]{0} fusion(%c), kind=kLoop\n')
    rows = op_table(str(tmp_path), hlo, steps=1)
    assert [r[2] for r in rows] == ["ynn_fusion.3", "add_fusion"]
    ms, calls, _, shape, origin = rows[0]
    assert (ms, calls, shape, origin) == (1.7, 2, "f32[32,2048]{1,0}", "while/body/dot_general")


@pytest.mark.slow
def test_profile_quick_run_lists_matmuls():
    cmd = [sys.executable, "-m", "experiments.benchmarks.profile", "--quick", "--cell=gru",
           "--top=50"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ms per step" in proc.stdout and "dot_general" in proc.stdout


def test_round_robin_times_every_variant():
    from experiments.benchmarks.timing import time_round_robin

    calls = []
    times = time_round_robin({"a": lambda: calls.append("a"),
                              "b": lambda: calls.append("b")}, seconds=0.0, min_reps=3)
    assert calls == ["a", "b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_kernel_ab_times_two_builds_in_one_process(cell):
    """kernel_ab: HEAD's kernel against the working tree's on a tiny shape; where the two
    sources are the same the outputs are bitwise equal."""
    from experiments.benchmarks import kernel_ab, speed
    from rnnlab.fused import cpu

    if cpu.unavailable() is not None:
        pytest.skip(cpu.unavailable())
    rel = os.path.relpath(cpu.SOURCE, ROOT)
    head = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if head.returncode != 0:
        pytest.skip("not a git checkout with the kernel committed")
    with open(cpu.SOURCE) as f:
        if kernel_ab.call_layouts(f.read()) != kernel_ab.call_layouts(head.stdout):
            with pytest.raises(SystemExit, match="FFI call layouts at 'HEAD' differ"):
                kernel_ab.bench_kernel("HEAD", cell, {"L": speed.QUICK["L"]}, seconds=0.0)
            return  # an uncommitted interface change: the one-line refusal is the behaviour
    (row,) = kernel_ab.bench_kernel("HEAD", cell, {"L": speed.QUICK["L"]}, seconds=0.0)
    assert set(row["ms"]) == {"base forward", "tree forward", "base backward", "tree backward"}
    assert all(v["calls"] >= 5 and 0 < v["min"] <= v["median"] for v in row["ms"].values())
    with open(cpu.SOURCE) as f:
        if f.read() == head.stdout:
            assert row["bitwise_equal"]


@pytest.mark.slow
def test_micro_benchmarks_run():
    """The unroll sweep and the memory report on tiny settings; chunked remat needs less."""
    from experiments.benchmarks import micro
    from rnnlab.unroll import auto_unroll

    rows = micro.bench_unroll([8], [1, 4], steps=6, seconds=0.0)
    assert [(r["hidden"], r["batch"]) for r in rows] == [(8, 1), (8, 4)]
    assert all(set(r["ms"]) == set(micro.UNROLLS) and r["auto"] == auto_unroll(r["batch"], 8, 6,
                                                                              "cpu") for r in rows)
    (row,) = micro.bench_memory([64])
    assert row["chunked"] < row["every_step"] < row["none"]


@pytest.mark.slow
def test_xla_flags_child_reports_gflops():
    """One child of --bench=xla_flags under this jaxlib with a non-default switch."""
    import os

    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_cpu_use_xnnpack=false"))
    cmd = [sys.executable, "-m", "experiments.benchmarks.micro", "--child=lstm_step",
           "--seconds=0.05"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(next(line[7:] for line in proc.stdout.splitlines()
                          if line.startswith("RESULT ")))
    assert set(res["gflops"]) == {"matmul", "forward", "grad"}
    assert all(v > 0 for v in res["gflops"].values())
