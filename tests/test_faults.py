"""Fault injection: damaged, misplaced and unreadable checkpoints, retention across restarts,
diverged runs, kills at random moments and bad input.

The promise under test: a resumed run either ends bitwise like the uninterrupted run or stops
with one clear line; bad input stops before any work with one line naming the key, file or
split. Quick cases run by default (in process, on adding.py:smoke and a tiny file corpus); the
kill loops, the full bit-flip scan and the command-line cases are `slow`.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rnnlab.tasks import make_task
from rnnlab.train import (CheckpointError, ConfigError, NonFiniteError, RunError,
                          train_and_evaluate)
from rnnlab.train import checkpoint as ckpt_lib
from rnnlab.train.checkpoint import CHECKSUMS, Checkpointer
from rnnlab.train.metrics import read_metrics
from _config_helpers import leaves, smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Orbax's reader leaves an asyncio callback behind when a restore fails; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def assert_bitwise_equal(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.atleast_1d(x).view(np.uint8),
                              np.atleast_1d(y).view(np.uint8)), "values differ"


def flip(path, offset, nbytes=4):
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(nbytes))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def array_files(step_dir):
    """The files holding array bytes (Orbax's OCDBT data files, under .../d/)."""
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
                  if os.path.basename(d) == "d")


def all_files(step_dir):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
                  if f != CHECKSUMS)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """adding.py:smoke trained once (6 steps, checkpoints at 3 and 6): (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("golden") / "run"
    result = train_and_evaluate(smoke_config(), str(workdir))
    return workdir, result.state


@pytest.fixture
def run(golden, tmp_path):
    """A copy of the golden workdir to damage."""
    workdir = tmp_path / "run"
    shutil.copytree(golden[0], workdir)
    return workdir


def _checkpointer(workdir):
    return Checkpointer(str(workdir), smoke_config().checkpoint, "mse", "min")


# --- corruption ---------------------------------------------------------------------------------


def test_every_saved_checkpoint_has_checksums_of_every_file(golden):
    for step in (3, 6):
        step_dir = golden[0] / "checkpoints" / str(step)
        assert ckpt_lib.verify(step_dir) is True
        assert set(ckpt_lib.checksums(step_dir)) == {
            os.path.relpath(f, step_dir) for f in all_files(step_dir)}


def test_bit_flip_in_newest_checkpoint_falls_back_and_ends_bitwise(golden, run):
    """The issue's case: 4 bytes flipped at offset 600 of the largest array file of the newest
    checkpoint used to restore silently changed values."""
    target = max(array_files(run / "checkpoints" / "6"), key=os.path.getsize)
    flip(target, min(600, os.path.getsize(target) - 4))
    lines = []
    resumed = train_and_evaluate(smoke_config(), str(run), progress=lines.append)
    warning = [line for line in lines if line.startswith("WARNING")]
    assert len(warning) == 1 and target in warning[0] and "differs" in warning[0], lines
    assert any("resumed from checkpoint at step 3" in line for line in lines), lines
    assert os.path.isdir(run / "checkpoints_unreadable" / "6")
    assert_bitwise_equal(golden[1].params, resumed.state.params)
    assert_bitwise_equal(golden[1].opt_state, resumed.state.opt_state)


def test_bit_flips_in_every_file_are_caught(golden, tmp_path):
    """Every file of a checkpoint (arrays and metadata), one byte flipped at 5 spread offsets:
    `verify` names the file each time (restore_latest checks it first; the slow scan below
    restores after every flip)."""
    step_dir = tmp_path / "6"
    shutil.copytree(golden[0] / "checkpoints" / "6", step_dir)
    files = all_files(step_dir)
    assert len(array_files(step_dir)) >= 1 and len(files) > len(array_files(step_dir))
    for path in files:
        for off in sorted(set(np.linspace(0, os.path.getsize(path) - 1, 5).astype(int))):
            flip(path, int(off), nbytes=1)
            with pytest.raises(ckpt_lib._Unreadable, match=path):
                ckpt_lib.verify(step_dir)
            flip(path, int(off), nbytes=1)  # and back
            assert ckpt_lib.verify(step_dir) is True


@pytest.mark.slow
def test_bit_flip_scan_every_64_bytes_of_every_array_file(golden, run):
    """Restores after each flip: never a silent restore, always the previous checkpoint."""
    _scan_flips(golden, run, lambda size: range(0, size, 64), files=array_files)


@pytest.mark.slow
def test_bit_flip_scan_of_every_file(golden, run):
    _scan_flips(golden, run, lambda size: np.linspace(0, size - 1, 3).astype(int))


def _scan_flips(golden, run, offsets_of, files=all_files):
    ckpt = _checkpointer(run)
    want3 = ckpt.restore(3, golden[1])
    ckpt.close()
    pristine = run / "pristine6"
    shutil.copytree(run / "checkpoints" / "6", pristine)
    tried = 0
    for path in files(pristine):
        rel = os.path.relpath(path, pristine)
        for off in offsets_of(os.path.getsize(path)):
            shutil.rmtree(run / "checkpoints" / "6", ignore_errors=True)
            shutil.rmtree(run / "checkpoints_unreadable", ignore_errors=True)
            shutil.copytree(pristine, run / "checkpoints" / "6")
            flip(run / "checkpoints" / "6" / rel, int(off), nbytes=1)
            ckpt = _checkpointer(run)
            try:
                state, notes = ckpt.restore_latest(golden[1])
            finally:
                ckpt.close()
            assert len(notes) == 1 and rel in notes[0], (rel, off, notes)
            assert int(state.step) == 3, (rel, off)
            assert_bitwise_equal(want3, state)
            tried += 1
    assert tried >= 3


def test_emptied_newest_checkpoint_sets_aside_only_that_one(golden, run):
    """The issue's case: emptying checkpoints/6 made every checkpoint be moved aside."""
    newest = run / "checkpoints" / "6"
    shutil.rmtree(newest)
    newest.mkdir()
    ckpt = _checkpointer(run)
    try:
        state, notes = ckpt.restore_latest(golden[1])
        assert int(state.step) == 3
        assert len(notes) == 1 and str(newest) in notes[0] and "empty" in notes[0], notes
        assert os.listdir(run / "checkpoints_unreadable") == ["6"]
        assert ckpt.steps() == [3]
    finally:
        ckpt.close()


def test_no_usable_checkpoint_left_stops_every_launch(run):
    """All checkpoints damaged: a CheckpointError naming checkpoints_unreadable, never a
    silent restart from step 0; metrics.jsonl is left as it was; the next launch stops too."""
    for step in (3, 6):
        flip(max(array_files(run / "checkpoints" / str(step)), key=os.path.getsize), 100)
    before = (run / "metrics.jsonl").read_text()
    for _ in range(2):
        with pytest.raises(CheckpointError, match="checkpoints_unreadable.*to start again"):
            train_and_evaluate(smoke_config(), str(run))
        assert (run / "metrics.jsonl").read_text() == before
    assert sorted(os.listdir(run / "checkpoints_unreadable")) == ["3", "6"]


def test_file_in_place_of_a_checkpoint_folder_is_set_aside(golden, run):
    (run / "checkpoints" / "9").write_text("not a checkpoint")
    ckpt = _checkpointer(run)
    try:
        state, notes = ckpt.restore_latest(golden[1])
    finally:
        ckpt.close()
    assert int(state.step) == 6
    assert len(notes) == 1 and "a file, not a checkpoint folder" in notes[0], notes
    assert (run / "checkpoints_unreadable" / "9").read_text() == "not a checkpoint"


def test_unreadable_checkpoint_names_the_path_and_the_fix(golden, run, monkeypatch):
    """chmod 000 on a checkpoint (as a user root's override does not cover): one line with the
    path and the chmod that fixes it; nothing is moved. (Simulated: the tests may run as root.)"""
    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ckpt_lib, "_sha256", denied)
    with pytest.raises(CheckpointError, match=r"checkpoints/6: permission denied.*chmod -R u\+rwX"):
        train_and_evaluate(smoke_config(), str(run))
    assert not os.path.exists(run / "checkpoints_unreadable")


def test_intact_checkpoint_that_does_not_fit_the_config_is_not_condemned(run):
    """A restore-call error (here: the config changed the model) stops; checkpoints stay."""
    with pytest.raises(CheckpointError, match="intact.*config it was trained with"):
        train_and_evaluate(smoke_config(**{"model.hidden": 16}), str(run))
    assert not os.path.exists(run / "checkpoints_unreadable")
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "6"]


def test_checkpoint_without_checksums_restores_with_a_note(golden, run):
    os.remove(run / "checkpoints" / "6" / CHECKSUMS)
    ckpt = _checkpointer(run)
    try:
        state, notes = ckpt.restore_latest(golden[1])
    finally:
        ckpt.close()
    assert int(state.step) == 6 and len(notes) == 1 and "unverified" in notes[0]


# --- retention --------------------------------------------------------------------------------


def test_best_checkpoint_survives_a_restart(tmp_path):
    """The issue's case: a restarted manager had no metrics to rank by and deleted the best."""
    cfg = ml_collections.ConfigDict(dict(keep=1, keep_best=True, async_save=False))
    state = {"w": jnp.arange(4.0)}
    ckpt = Checkpointer(str(tmp_path), cfg, "loss", "min")
    for step, loss in ((1, 0.1), (2, 0.5), (3, 0.6)):
        ckpt.save(step, state, {"loss": loss})
    assert ckpt.steps() == [1, 3]
    ckpt.close()
    ckpt = Checkpointer(str(tmp_path), cfg, "loss", "min")  # a restarted run
    ckpt.save(4, state, {"loss": 0.9})
    ckpt.save(5, state)  # a checkpoint without eval metrics (e.g. SIGTERM)
    assert ckpt.steps() == [1, 5]
    ckpt.close()


# --- non-finite -------------------------------------------------------------------------------


class _NaNFrom:
    """Wraps a task; every train batch from step `start` on holds a NaN."""

    def __init__(self, task, start):
        self._task, self._start = task, start

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_batch(self, step):
        batch = self._task.train_batch(step)
        if step >= self._start:
            batch = dict(batch, inputs=batch["inputs"].at[0, 0, 0].set(jnp.nan))
        return batch


def test_skip_warns_counts_and_stops_after_consecutive_skips(tmp_path):
    config = smoke_config(**{"train.nonfinite": "skip", "train.max_consecutive_skips": 3,
                             "train.log_every": 1})
    lines = []
    with pytest.raises(NonFiniteError, match=r"last 3 updates \(steps 2\.\.4\).*skipped"):
        train_and_evaluate(config, str(tmp_path), task=_NaNFrom(make_task(config), 1),
                           progress=lines.append)
    warnings = [line for line in lines if "skipped" in line and line.startswith("WARNING")]
    assert warnings and "train.nonfinite=skip" in warnings[0], lines
    train = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert [r["nonfinite_count"] for r in train] == [0, 1, 2]
    assert all(np.isfinite(r["param_norm"]) for r in train), "params stayed finite"
    assert [r["update_norm"] == 0.0 for r in train] == [False, True, True]


def test_max_consecutive_skips_is_validated():
    with pytest.raises(ConfigError, match="train.max_consecutive_skips=-1"):
        train_and_evaluate(smoke_config(**{"train.max_consecutive_skips": -1}), "/nonexistent")


# --- bad input, in process ----------------------------------------------------------------------


def _lm_config(files, **overrides):
    """ptb_zaremba.py:smoke on the corpus `files` [train, valid, test]."""
    c = importlib.import_module("experiments.configs.ptb_zaremba").get_config("smoke")
    c.task.corpus = "files"
    c.task.files.train, c.task.files.valid, c.task.files.test = files
    c.checkpoint.async_save = False
    for k, v in overrides.items():
        node = c
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    return c


@pytest.fixture
def corpus(tmp_path):
    words = " ".join(f"w{i % 37}" for i in range(400))
    paths = []
    for split, n in (("train", 30), ("valid", 5), ("test", 5)):
        p = tmp_path / f"{split}.txt"
        p.write_text("\n".join([words[: 10 * (i + 20)] for i in range(n)]) + "\n")
        paths.append(str(p))
    return paths


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return {}


BAD_LM = {  # name: (damage the corpus files [train, valid, test] -> (config overrides, files),
    #                 what the one-line message must contain)
    "missing file": (lambda f: ({}, [f[0] + ".nope", f[1], f[2]]), "files.train="),
    "directory": (lambda f: ({}, [os.path.dirname(f[0]), f[1], f[2]]), "is a directory"),
    "empty valid": (lambda f: (_write(f[1], b""), f), "the validation split"),
    "one-line train": (lambda f: (_write(f[0], b"a b\n"), f), "the train split"),
    "latin-1": (lambda f: (_write(f[2], "caf\xe9 ol\xe9\n".encode("latin-1")), f),
                "task.encoding=latin-1"),
    "bptt": (lambda f: ({"task.bptt": 1_000_000}, f), "config.task.bptt=1000000 is longer"),
    "eval_bptt": (lambda f: ({"task.eval_bptt": 1_000_000}, f), "config.task.eval_bptt=1000000"),
    "encoding": (lambda f: ({"task.encoding": "utf-9"}, f), "config.task.encoding='utf-9'"),
}


@pytest.mark.parametrize("case", sorted(BAD_LM))
def test_bad_lm_input_is_one_clear_error_before_any_work(case, corpus, tmp_path):
    change, message = BAD_LM[case]
    overrides, files = change(corpus)
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(_lm_config(files, **overrides), str(workdir))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    if case == "latin-1":
        assert files[2] in str(e.value)
    assert not workdir.exists(), "work started despite the bad input"


def test_latin1_corpus_trains_with_the_encoding_option(corpus, tmp_path):
    with open(corpus[2], "ab") as f:
        f.write("caf\xe9\n".encode("latin-1"))
    task = make_task(_lm_config(corpus, **{"task.encoding": "latin-1"}))
    assert task.num_tokens["test"] > 0


def _unwritable(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a kernel folder
        return "/sys/rnnlab_not_writable/run"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d / "run")


def test_workdir_that_is_a_file_or_unwritable_is_one_clear_error(tmp_path):
    as_file = tmp_path / "file"
    as_file.write_text("")
    with pytest.raises(RunError, match=f"--workdir {as_file} is a file"):
        train_and_evaluate(smoke_config(), str(as_file))
    with pytest.raises(RunError, match="cannot write to --workdir"):
        train_and_evaluate(smoke_config(), _unwritable(tmp_path))


def test_cell_kwargs_of_the_wrong_type_name_the_field():
    with pytest.raises(ConfigError, match="forget_bias='abc'.*must be a number"):
        train_and_evaluate(smoke_config(**{"model.cell_kwargs": "forget_bias=abc"}),
                           "/nonexistent")


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _one_clean_line(proc, *fragments):
    """rc != 0, no traceback, the error as the one last "train: " line naming `fragments` (JAX
    may log a platform warning before it)."""
    assert proc.returncode not in (0, None), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("train: "), proc.stderr
    assert sum(line.startswith("train: ") for line in lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.mark.slow
def test_cli_missing_corpus_file_is_one_line(tmp_path):
    proc = run_cli("--config=experiments/configs/ptb_zaremba.py:smoke",
                   f"--workdir={tmp_path / 'run'}", "--config.task.corpus=files",
                   f"--config.task.files.train={tmp_path / 'no.txt'}",
                   f"--config.task.files.valid={tmp_path / 'no.txt'}",
                   f"--config.task.files.test={tmp_path / 'no.txt'}")
    _one_clean_line(proc, "config.task.files.train=", "no such file")
    assert not (tmp_path / "run").exists()


CLI_CASES = {  # name: (extra args, fragments of the one line)
    "missing config": (["--config=experiments/configs/nosuch.py"], ["nosuch.py"]),
    "unknown variant": (["--config=experiments/configs/adding.py:smok"], ["'smok'", "smoke"]),
    "cell_kwargs": (["--config=experiments/configs/adding.py:smoke",
                     "--config.model.cell_kwargs=forget_bias=abc"], ["forget_bias"]),
    "unknown key": (["--config=experiments/configs/adding.py:smoke",
                     "--config.train.nosuch=1"], ["nosuch"]),
    "nonfinite stop": (["--config=experiments/configs/adding.py:smoke",
                        "--config.optim.lr=1e30", "--config.optim.clip=none"],
                       ["non-finite", "step"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_is_one_line(case, tmp_path):
    args, fragments = CLI_CASES[case]
    _one_clean_line(run_cli(*args, f"--workdir={tmp_path / 'run'}"), *fragments)


@pytest.mark.slow
def test_cli_workdir_problems_are_one_line(tmp_path):
    as_file = tmp_path / "file"
    as_file.write_text("")
    base = ["--config=experiments/configs/adding.py:smoke"]
    _one_clean_line(run_cli(*base, f"--workdir={as_file}"), str(as_file), "is a file")
    _one_clean_line(run_cli(*base, f"--workdir={_unwritable(tmp_path)}"), "cannot write")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_cli_chmod_000_checkpoint_is_one_line(golden, run):
    (run / "checkpoints" / "6").chmod(0)
    try:
        proc = run_cli("--config=experiments/configs/adding.py:smoke", f"--workdir={run}")
    finally:
        (run / "checkpoints" / "6").chmod(0o755)
    _one_clean_line(proc, str(run / "checkpoints" / "6"), "chmod")


def test_start_up_sigterm_exits_even_inside_a_gc_callback():
    """A SIGTERM handled while Python runs a gc callback (JAX registers one): an exception
    raised there is printed and ignored, so the start-up handler must not rely on one."""
    code = ("import gc, os, signal, time\n"
            "from experiments import train\n"
            "signal.signal(signal.SIGTERM, train._startup_sigterm)\n"
            "def callback(phase, info):\n"
            "    if phase == 'start':\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(0.5)\n"
            "gc.callbacks.append(callback)\n"
            "gc.collect()\n"
            "print('survived', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-1000:])
    assert "survived" not in proc.stdout and "SIGTERM" in proc.stderr


@pytest.mark.slow
def test_cli_sigterm_during_start_up_is_a_clean_exit(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--config=experiments/configs/adding.py:smoke",
         f"--workdir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # importing JAX, parsing flags, compiling: before any step (on a loaded
    proc.send_signal(signal.SIGTERM)  # CPU; a fast one may be training: then it saves and says so)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and "SIGTERM" in err + out, err


# --- kills at random moments ------------------------------------------------------------------


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _wait_for(condition, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None and not condition():
        time.sleep(0.002)


@pytest.mark.slow
def test_kills_at_random_moments_resume_bitwise(tmp_path):
    """SIGKILL at random moments (during compiles and steps) and while a checkpoint is being
    written, each time relaunched, until the run completes: bitwise the uninterrupted run."""
    overrides = {"train.steps": 300, "train.log_every": 25, "train.eval_every": 100,
                 "checkpoint.every_steps": 5, "checkpoint.every_secs": 0.0}
    reference = train_and_evaluate(smoke_config(**overrides), str(tmp_path / "ref"))
    workdir = tmp_path / "killed"
    args = [sys.executable, "-m", "experiments.train",
            "--config=experiments/configs/adding.py:smoke", f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in overrides.items()]
    rng = random.Random(0)
    for i in range(8):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if i % 2:  # at a random moment
            time.sleep(rng.uniform(1.0, 12.0))
        else:  # while Orbax is writing a checkpoint (its temporary folder exists)
            _wait_for(lambda: any("tmp" in d for d in _listdir(workdir / "checkpoints")), proc)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    config = smoke_config(**overrides)
    ckpt = Checkpointer(str(workdir), config.checkpoint, "mse", "min")
    try:
        final = ckpt.restore(300, reference.state)
    finally:
        ckpt.close()
    assert_bitwise_equal(reference.state, final)
    train_steps = [r["step"] for r in read_metrics(str(workdir)) if r["split"] == "train"]
    assert train_steps == list(range(25, 301, 25)), "metrics.jsonl reads as one run"
    assert not os.path.exists(workdir / "checkpoints_unreadable"), "a good checkpoint was lost"
