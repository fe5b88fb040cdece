"""rnnlab.train: smoke runs of each config, exact resume after SIGKILL, corrupted checkpoints,
config errors, clipping, non-finite handling and the carried-state (truncated BPTT) path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab.models.sequence import SequenceModel
from rnnlab.tasks import Task, make_task
from rnnlab.train import ConfigError, NonFiniteError, train_and_evaluate
from rnnlab.train.checkpoint import Checkpointer
from rnnlab.train.metrics import read_metrics
from rnnlab.config import make_cells
from _config_helpers import leaves, smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("adding", "copy", "temporal_order")


def assert_bitwise_equal(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.atleast_1d(x).view(np.uint8),
                              np.atleast_1d(y).view(np.uint8)), "values differ"


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_config_trains(name, tmp_path):
    config = smoke_config(name)
    task = make_task(config)
    initial = task.init(jax.random.split(jax.random.PRNGKey(config.seed))[0])
    result = train_and_evaluate(config, str(tmp_path), task=task)
    assert int(result.state.step) == config.train.steps
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(initial),
                                                        leaves(result.state.params)))
    records = read_metrics(str(tmp_path))
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == list(range(2, config.train.steps + 1, 2))
    assert [r["step"] for r in evals] == [3, 6]
    for key in ("loss", task.metric, "grad_norm", "grad_norm_clipped", "learning_rate",
                "steps_per_sec", "param_norm", "update_norm", "clipped"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert all(task.metric in r for r in evals)
    assert result.eval_metrics == {k: v for k, v in evals[-1].items()
                                   if k not in ("step", "split")}
    assert os.path.exists(tmp_path / "config.json")
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
    assert sorted(Checkpointer(str(tmp_path), config.checkpoint, "loss", "min").steps()) == [3, 6]


def _wait_for_checkpoint(ckpt_dir, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    """A run killed by SIGKILL after a checkpoint, then restarted, ends with exactly the
    parameters of an uninterrupted run."""
    steps = 400
    overrides = {"train.steps": steps, "train.log_every": 50, "train.eval_every": 200,
                 "checkpoint.every_steps": 10, "checkpoint.every_secs": 0.0}
    reference = train_and_evaluate(smoke_config(**{**overrides, "checkpoint.every_steps": 0}),
                                   str(tmp_path / "ref"))

    workdir = tmp_path / "killed"
    args = ["--config=experiments/configs/adding.py:smoke", f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(workdir / "checkpoints", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    config = smoke_config(**overrides)
    done = Checkpointer(str(workdir), config.checkpoint, "mse", "min").steps()
    assert done and max(done) < steps, f"the run was not interrupted: checkpoints {done}"

    resumed = train_and_evaluate(config, str(workdir))
    assert int(resumed.state.step) == steps
    assert_bitwise_equal(reference.state.params, resumed.state.params)
    assert_bitwise_equal(reference.state.opt_state, resumed.state.opt_state)
    assert_bitwise_equal(reference.state.rng, resumed.state.rng)
    train_steps = [r["step"] for r in read_metrics(str(workdir)) if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "metrics.jsonl has duplicated steps"


# Orbax's reader leaves an asyncio callback behind when a restore fails; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupted_newest_checkpoint_falls_back(tmp_path):
    config = smoke_config()
    reference = train_and_evaluate(config, str(tmp_path / "ref"))
    workdir = tmp_path / "run"
    train_and_evaluate(config, str(workdir))
    newest = workdir / "checkpoints" / "6"
    data_files = [os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs
                  if os.path.basename(d) == "d"]
    assert data_files
    for path in data_files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    lines = []
    resumed = train_and_evaluate(config, str(workdir), progress=lines.append)
    assert any("checkpoints/6 is unreadable" in line for line in lines), lines
    assert any("resumed from checkpoint at step 3" in line for line in lines), lines
    assert os.path.isdir(workdir / "checkpoints_unreadable" / "6"), "the bad checkpoint is kept"
    assert_bitwise_equal(reference.state.params, resumed.state.params)


@pytest.mark.parametrize("override, message", [
    ("--config.model.cell=lstmm", "config.model.cell='lstmm' is not valid; valid choices"),
    ("--config.optim.lr=abc", "--config.optim.lr=abc: could not convert string to float"),
    ("--config.optim.nosuch=1", "config.optim has no field 'nosuch'; valid fields"),
])
def test_bad_override_fails_fast(override, message, tmp_path):
    proc = run_cli("--config=experiments/configs/adding.py:smoke",
                   f"--workdir={tmp_path / 'run'}", override)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run"), "work started despite the bad config"


def test_invalid_config_in_process():
    config = smoke_config(**{"optim.clip": "norm"})
    with pytest.raises(ConfigError, match="optim.clip='norm'.*global_norm"):
        train_and_evaluate(config, "/nonexistent/never/created")


def test_global_norm_clipping_bounds_every_applied_gradient(tmp_path):
    c = 0.05
    config = smoke_config(**{"optim.name": "sgd", "optim.lr": 1.0, "optim.clip_value": c,
                             "train.log_every": 1, "train.steps": 5})
    train_and_evaluate(config, str(tmp_path))
    train = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert len(train) == 5
    for r in train:
        assert r["grad_norm_clipped"] <= c * (1 + 1e-5)
        assert r["update_norm"] <= c * (1 + 1e-5)  # SGD, lr 1: the applied update
        assert r["clipped"] == float(r["grad_norm"] > c)


class _PlantedNaN:
    """Wraps a task; the train batch of step `bad_step` holds a NaN."""

    def __init__(self, task, bad_step):
        self._task, self._bad = task, bad_step

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_batch(self, step):
        batch = self._task.train_batch(step)
        if step == self._bad:
            batch = dict(batch, inputs=batch["inputs"].at[0, 0, 0].set(jnp.nan))
        return batch


def test_nonfinite_stop_names_the_step(tmp_path):
    config = smoke_config(**{"train.nonfinite": "stop"})
    task = _PlantedNaN(make_task(config), bad_step=3)
    with pytest.raises(NonFiniteError, match="step 3"):
        train_and_evaluate(config, str(tmp_path), task=task)
    steps = Checkpointer(str(tmp_path), config.checkpoint, "mse", "min").steps()
    assert steps == [3], "no checkpoint may hold a state after the non-finite step"


def test_nonfinite_skip_counts_and_continues(tmp_path):
    config = smoke_config(**{"train.nonfinite": "skip"})
    task = _PlantedNaN(make_task(config), bad_step=3)
    result = train_and_evaluate(config, str(tmp_path), task=task)
    assert int(result.state.nonfinite_count) == 1
    assert int(result.state.first_nonfinite_step) == 3
    assert all(np.all(np.isfinite(x)) for x in leaves(result.state.params))
    last = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"][-1]
    assert last["nonfinite_count"] == 1


class _Stream(Task):
    """A stream task: predict x_{t-1} from x_t over a fixed stream cut into windows, so the
    first step of each window needs the carry from the previous window."""

    carries_state, metric, metric_mode = True, "loss", "min"

    def __init__(self, config, window=4, batch_size=3):
        self.batch_size, self.window = batch_size, window
        self.steps_per_epoch = 5
        self.stream = jax.random.normal(jax.random.PRNGKey(0),
                                        (batch_size, self.steps_per_epoch * window + 1, 1))
        self.model = SequenceModel(cells=make_cells(config.model), output_size=1, readout="all")

    def window_at(self, i):
        i = i % self.steps_per_epoch
        return self.stream[:, i * self.window + 1:(i + 1) * self.window + 1]

    def train_batch(self, step):
        i = step % self.steps_per_epoch
        return {"inputs": self.window_at(i),
                "targets": self.stream[:, i * self.window:(i + 1) * self.window]}

    def eval_batches(self):
        return [self.train_batch(i) for i in range(self.steps_per_epoch)]

    def init(self, rng):
        return self.model.init(rng, self.window_at(0))["params"]

    def initial_carry(self, batch_size):
        return self.model.initial_carry(batch_size)

    def loss(self, params, batch, carry, rng, train):
        ys, new_carry = self.model.apply({"params": params}, batch["inputs"], carry)
        se = jnp.square(ys - batch["targets"])
        return jnp.mean(se), ({"se": jnp.sum(se), "count": jnp.float32(se.size)}, new_carry)

    def metrics(self, stats):
        return {"loss": stats["se"] / stats["count"]}


@pytest.mark.parametrize("steps, windows", [(3, range(0, 3)), (7, range(5, 7))])
def test_carried_state_crosses_windows_and_resets_each_epoch(steps, windows, tmp_path):
    """With a learning rate too small to move the parameters, the carried state after `steps`
    steps equals one unroll over the windows since the last epoch start."""
    config = smoke_config(**{"model.cell": "gru", "optim.name": "sgd", "optim.lr": 1e-30,
                             "optim.clip": "none", "train.steps": steps})
    task = _Stream(config)
    result = train_and_evaluate(config, str(tmp_path), task=task)
    params = result.state.params
    xs = jnp.concatenate([task.window_at(i) for i in windows], axis=1)
    _, expected = task.model.apply({"params": params}, xs)
    for got, want in zip(leaves(result.state.carry), leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    records = read_metrics(str(tmp_path))
    assert np.isfinite([r["loss"] for r in records if r["split"] == "eval"]).all()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train",
         "--config=experiments/configs/adding.py:smoke", f"--workdir={workdir}",
         "--config.train.steps=100000", "--config.checkpoint.every_steps=50",
         "--config.checkpoint.every_secs=0", "--config.train.log_every=1000",
         "--config.train.eval_every=100000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(workdir / "checkpoints", proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "SIGTERM: saved a checkpoint at step" in out
    step = int(out.split("SIGTERM: saved a checkpoint at step ")[1].split(";")[0])
    config = smoke_config()
    assert step in Checkpointer(str(workdir), config.checkpoint, "mse", "min").steps()


def test_unknown_task_is_a_config_error():
    config = smoke_config(**{"task.name": "addding"})
    with pytest.raises(ConfigError, match="task.name='addding'.*'adding'"):
        train_and_evaluate(config, "/nonexistent/never/created")


def test_sequence_model_shapes():
    cells = make_cells(smoke_config().model)
    xs = jnp.ones((2, 5, 3))
    for readout, shape in (("last", (2, 4)), ("all", (2, 5, 4))):
        model = SequenceModel(cells=cells * 2, output_size=4, readout=readout)
        params = model.init(jax.random.PRNGKey(0), xs)["params"]
        ys, carry = model.apply({"params": params}, xs)
        assert ys.shape == shape and len(carry) == 2
    tokens = jnp.zeros((2, 5), jnp.int32)
    for embed in (0, 6):
        model = SequenceModel(cells=cells, output_size=3, vocab_size=7, embed_dim=embed)
        params = model.init(jax.random.PRNGKey(0), tokens)["params"]
        assert model.apply({"params": params}, tokens)[0].shape == (2, 3)
    assert optax.tree.norm(params) > 0
