"""rnnlab.train.mesh and the sharded training path: 8 simulated devices give the losses and
parameters of 1 device, checkpoints move between mesh sizes, per-process data slicing, FSDP
placement, the distributed switch, and (slow) a real 2-process run with jax.distributed.

Tolerances (measured, CPU float32; reductions over 8 shards are summed in another order):
metrics |a - b| <= 1e-5 |b| (measured <= 4e-7), parameters and optimiser state |a - b| <=
1e-6 + 1e-5 |b| (measured max |a - b| 1e-7). Restores across meshes are bitwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import xla_flags
from jax.sharding import PartitionSpec as P

from rnnlab.data.hosts import local_batch, process_rows, process_split
from rnnlab.data.lm import LMStream
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.checkpoint import Checkpointer
from rnnlab.train.mesh import (AXIS, Layout, distributed_requested, fsdp_spec, make_mesh)
from rnnlab.train.metrics import read_metrics
from rnnlab.train.optim import make_optimizer
from rnnlab.train.state import create_sharded_state, create_state
from _config_helpers import leaves, smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL_METRICS = 1e-5
ATOL, RTOL = 1e-6, 1e-5


def _eight_devices(tmp_path, which: str) -> dict:
    """Runs tests/_mesh_check.py `which` in a subprocess with 8 simulated CPU devices."""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join("tests", "_mesh_check.py"),
                           str(tmp_path), which], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(tmp_path / "report.json") as f:
        return json.load(f)


def _assert_close(report, key):
    records, params, opt = (report[f"{key}_{k}"] for k in ("records", "params", "opt_state"))
    assert records["n"] == records["n_ref"] >= 20, records
    assert records["max_rel"] <= RTOL_METRICS, records
    for tree in (params, opt):
        assert tree["atol_needed"] <= ATOL, tree  # |a - b| <= ATOL + RTOL |b| (RTOL in the worker)


def test_eight_devices_match_one_device_and_checkpoints_cross_meshes(tmp_path):
    r = _eight_devices(tmp_path, "parity")
    _assert_close(r, "lm")  # LSTM language model, data parallel, carry sharded with its batch
    assert r["lm_carry"]["atol_needed"] <= ATOL, r["lm_carry"]
    assert r["lm8_carry_devices"] == 8 and r["lm_has_test"]
    _assert_close(r, "adding")  # adding problem (LSTM) with FSDP on 8 devices
    assert r["adding_fsdp_sharded_leaves"] >= 2 and r["adding_fsdp_opt_sharded_leaves"] >= 4
    assert r["restore_8_to_1_bitwise"] and r["restore_8_to_1_devices"] == 1
    assert r["restore_1_to_8fsdp_bitwise"] and r["restore_1_to_8fsdp_sharded_leaves"] >= 2
    assert "has 6 rows" in r["bad_batch_error"] and "8 devices" in r["bad_batch_error"]
    assert "multiple of 8" in r["bad_batch_error"] and "config.mesh.data" in r["bad_batch_error"]
    assert not r["bad_batch_workdir_created"]


@pytest.mark.slow
def test_runs_resume_across_mesh_sizes(tmp_path):
    """3 steps on 8 devices with FSDP resumed on 1 device (LM), 1 device resumed on 8 (adding):
    the same results as an uninterrupted 1-device run."""
    r = _eight_devices(tmp_path, "resume")
    for key in ("lm_8fsdp_to_1", "adding_1_to_8"):
        assert r[f"{key}_resumed"], key
        _assert_close(r, key)


# --- the 1-device process: the same code path --------------------------------------------

def test_one_device_is_a_mesh_of_one():
    """The default config on this 1-device process: the same sharded path, a mesh of one."""
    config = smoke_config()
    layout = Layout.from_config(config.mesh)
    task = make_task(config)
    optimizer = make_optimizer(config.optim, task.steps_per_epoch, config.train.steps)
    state, _ = create_sharded_state(task, optimizer, config.seed, layout)
    for x in jax.tree_util.tree_leaves(state):
        assert x.sharding.mesh.shape == {AXIS: 1} and x.sharding.spec == P()
    # bitwise the unsharded state: results of runs before the mesh existed reproduce exactly
    eager = create_state(task, optimizer, config.seed)
    assert all(np.array_equal(np.atleast_1d(a).view(np.uint8), np.atleast_1d(b).view(np.uint8))
               for a, b in zip(leaves(eager), leaves(state)))


@pytest.mark.parametrize("shape, n, min_size, spec", [
    ((64, 256), 8, 0, P(None, AXIS)),       # the largest divisible axis
    ((256, 64), 8, 0, P(AXIS)),
    ((64, 64), 8, 0, P(AXIS)),              # ties: the first
    ((65, 24), 8, 0, P(None, AXIS)),        # 65 does not divide
    ((65, 7), 8, 0, P()),                   # nothing divides: replicated
    ((), 8, 0, P()),                        # scalars (optimiser counts)
    ((64, 256), 8, 2**15, P()),             # below fsdp_min_size
    ((64, 256), 1, 0, P()),                 # one device
])
def test_fsdp_spec(shape, n, min_size, spec):
    assert fsdp_spec(shape, n, min_size) == spec


def test_mesh_config_errors():
    config = smoke_config(**{"mesh.data": 0})
    with pytest.raises(ConfigError, match=r"mesh.data=0 must be -1"):
        validate(config)
    with pytest.raises(ConfigError, match=r"mesh.data=3 devices requested but 1 are visible"):
        make_mesh(3)


def test_global_batch_on_one_device():
    layout = Layout(make_mesh(-1))
    batch = {"inputs": np.arange(12, dtype=np.float32).reshape(4, 3), "reset": np.bool_(True)}
    out = layout.global_batch(batch)
    np.testing.assert_array_equal(out["inputs"], batch["inputs"])
    assert out["inputs"].sharding.spec == P(AXIS) and out["reset"].sharding.spec == P()
    with pytest.raises(ValueError, match="leading sizes"):
        layout.global_batch({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))})


# --- per-process data ------------------------------------------------------------------------

def test_process_rows_tile_the_batch():
    for rows, count in ((8, 1), (8, 2), (8, 4), (12, 3)):
        got = [list(range(rows))[process_rows(rows, p, count)] for p in range(count)]
        assert sum(got, []) == list(range(rows))
        assert len({len(g) for g in got}) == 1
    with pytest.raises(ValueError, match="10 rows cannot be split evenly across 4 processes"):
        process_rows(10, 0, 4)
    with pytest.raises(ValueError, match="process_index=2"):
        process_rows(8, 2, 2)


@pytest.mark.parametrize("train", [True, False])
def test_lm_stream_process_slices_stack_to_the_single_process_windows(train):
    ids = np.random.default_rng(0).integers(0, 50, 997)
    kw = dict(batch=8, bptt=7, train=train, random_length=train, seed=1)
    whole = LMStream(ids, **kw)
    for count in (2, 4, 8):
        parts = [LMStream(ids, process_index=p, process_count=count, **kw) for p in range(count)]
        assert all(s.span == whole.span and s.num_targets == whole.num_targets for s in parts)
        assert all(s.positions(1) == whole.positions(1) for s in parts)
        for pos in whole.positions(0)[:3] + whole.positions(1)[-2:]:
            w = whole.window(pos)
            ws = [s.window(pos) for s in parts]
            for field in ("inputs", "targets", "mask"):
                np.testing.assert_array_equal(
                    np.concatenate([getattr(x, field) for x in ws]), getattr(w, field))
            assert {(x.length, x.reset, x.next_position) for x in ws} == {
                (w.length, w.reset, w.next_position)}
    with pytest.raises(ValueError, match="8 rows cannot be split evenly across 3"):
        LMStream(ids, process_index=0, process_count=3, **kw)


def test_process_split():
    assert process_split("train", 0, 1) == "train"
    parts = [process_split("train[:90]", p, 3) for p in range(3)]
    assert [(s.index, s.count, s.drop_remainder) for s in parts] == [(p, 3, True)
                                                                     for p in range(3)]
    with pytest.raises(ValueError, match="process_index=3"):
        process_split("train", 3, 3)


@pytest.mark.parametrize("name", ["adding", "copy", "imdb", "tagging", "forecast", "seq2seq",
                                  "caption", "ctc"])
def test_task_batches_split_across_processes(name, monkeypatch, tmp_path):
    """Every task family's train, validation and test batches: the rows two processes read,
    stacked in process order, are the batch one process reads (the engine's assumption)."""
    def batches(process_index, process_count):
        monkeypatch.setattr(jax, "process_index", lambda: process_index)
        monkeypatch.setattr(jax, "process_count", lambda: process_count)
        task = make_task(smoke_config(name, **{"task.batch_size": 4}))
        task.prepare(str(tmp_path / f"{process_index}_of_{process_count}"))
        out = [task.train_batch(0), task.train_batch(5), next(iter(task.eval_batches()))]
        test = task.test_batches()
        return out + [next(iter(test))] if test is not None else out

    whole, parts = batches(0, 1), [batches(p, 2) for p in range(2)]
    for w, p0, p1 in zip(whole, *parts):
        assert jax.tree_util.tree_structure(w) == jax.tree_util.tree_structure(p0)
        for a, b, c in zip(*(jax.tree_util.tree_leaves(x) for x in (w, p0, p1))):
            if np.ndim(a):
                assert len(b) == len(a) // 2
                np.testing.assert_array_equal(np.concatenate([b, c]), a)
            else:
                assert a == b == c


def test_local_batch_errors():
    assert local_batch({"x": np.zeros(3)}, 0, 1)["x"].shape == (3,)
    with pytest.raises(ValueError, match="share their leading"):
        local_batch({"x": np.zeros(4), "y": np.zeros(2)}, 0, 2)
    with pytest.raises(ValueError, match="3 rows cannot be split evenly across 2"):
        local_batch({"x": np.zeros(3)}, 1, 2)


def test_distributed_switch():
    assert distributed_requested(True, {}) and not distributed_requested(False, {})
    assert not distributed_requested(None, {})
    assert distributed_requested(None, {"RNNLAB_DISTRIBUTED": "1"})
    assert not distributed_requested(None, {"RNNLAB_DISTRIBUTED": "0"})
    with pytest.raises(ValueError, match="RNNLAB_DISTRIBUTED='maybe' is not valid"):
        distributed_requested(None, {"RNNLAB_DISTRIBUTED": "maybe"})


# --- a real multi-process run: 2 processes x 4 CPU devices, jax.distributed + gloo -----------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", [
    ("char_shakespeare", {"task.batch_size": 8, "task.eval_batch_size": 8,
                          "model.num_layers": 1}),
    ("adding", {"mesh.fsdp": True, "mesh.fsdp_min_size": 0}),
])
def test_two_processes_match_one(name, overrides, tmp_path):
    """`experiments.train --distributed` on 2 processes of 4 devices each (each reads its own
    rows; process 0 writes the metrics; both write the checkpoint) equals a 1-device run."""
    workdir, port = tmp_path / "mp", _free_port()
    args = [f"--config=experiments/configs/{name}.py:smoke", f"--workdir={workdir}",
            "--config.checkpoint.async_save=False", "--distributed",
            f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    args += [f"--config.{k}={v}" for k, v in overrides.items()]
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"),
               JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.train", *args,
                               f"--process_id={i}"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    progress = [[x for x in out.splitlines() if x.startswith("step ")] for out, _ in outs]
    assert "step 6/6" in progress[0][-1] and not progress[1]  # only process 0 reports

    config = smoke_config(name, **overrides)
    ref = train_and_evaluate(config, str(tmp_path / "ref"))
    got = {(r["split"], r["step"]): r for r in read_metrics(str(workdir))}
    want = {(r["split"], r["step"]): r for r in read_metrics(str(tmp_path / "ref"))}
    assert got.keys() == want.keys()
    for key, r in want.items():
        for k, v in r.items():
            if k not in ("split", "step", "steps_per_sec") and isinstance(v, float):
                assert abs(got[key][k] - v) <= RTOL_METRICS * abs(v), (key, k)
    ckpt = Checkpointer(str(workdir), config.checkpoint, "loss", "min")
    try:
        restored = ckpt.restore(6, ref.state)
    finally:
        ckpt.close()
    for a, b in zip(leaves(restored.params), leaves(ref.state.params)):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=RTOL)
