"""`train_and_evaluate(config, workdir)`: the training loop every experiment runs on.

    result = train_and_evaluate(config, workdir, progress=print)
    result.state.params, result.eval_metrics, result.preempted

1. validates the config (before any work), builds the task, optimiser and initial state;
2. resumes from the newest readable checkpoint in `<workdir>/checkpoints` if there is one
   (params, optimiser state, step = data position, RNG, carried state);
3. runs `config.train.steps` steps: train metrics every `log_every` steps, evaluation on the
   task's validation batches every `eval_every` steps and at the end, checkpoints every
   `checkpoint.every_steps` steps and/or `checkpoint.every_secs` seconds and at the end;
   a task whose `test_batches()` is not None is then evaluated on its test split once
   (metrics.jsonl split "test"); the task's `prepare(workdir)` runs before step 1;
   with iterate averaging (`optim.average`) validation and test use the averaged parameters,
   eval records carry `average_start` and `averaged_iterates`, and the NT-ASGD trigger
   (`optimizer.observe`) sees every validation loss;
   with `diagnostics.every > 0`, the gradient flow of the model's first recurrent layer
   (`rnnlab.diagnostics.gradient_flow_metrics` on the train batch) is logged at step 0 and
   every `every` steps (split "gradient_flow"; see `rnnlab.tasks.Task.recurrent_probe`);
4. on SIGTERM (preemption) saves a checkpoint after the current step and returns with
   `preempted=True` (multi-host: when JAX's preemption sync point is reached, at the same step
   on every process).

Everything runs on a device mesh (`rnnlab.train.mesh`, `config.mesh`; one device is a mesh of
one): the state is created and restored in its shardings (a checkpoint written on any mesh
restores onto this one), batches are split along the "data" axis, and a batch size the mesh
cannot split is a ConfigError before any work. Multi-host: each process reads its own rows
of every batch; only process 0 writes metrics.jsonl, TensorBoard and config.json and reports
progress, while every process takes part in checkpoints. The workdir may be a gs:// path.

A non-finite loss or gradient raises `NonFiniteError` naming the step with
`train.nonfinite="stop"` (checked every `log_every` steps and before every checkpoint, so no
checkpoint ever holds the failed state); with "skip" the update is skipped and counted
(`nonfinite_count` in the train records), every log step that saw skips says so in a warning
line, and `train.max_consecutive_skips` skipped updates in a row raise `NonFiniteError`.

Problems the user fixes (a config field, an unreadable data file, a workdir that is a file or
not writable, checkpoints that cannot be used; see `rnnlab.train.checkpoint`) raise a
`RunError` (`ConfigError`, `CheckpointError`, `NonFiniteError`) before any work where they can
be known before it; the entry points print its message as one line.

The library never prints: `progress`, if given, receives the console progress lines.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from etils import epath

from rnnlab.diagnostics import gradient_flow_metrics
from rnnlab.train import mesh as mesh_lib
from rnnlab.train import metrics as metrics_lib
from rnnlab.train.checkpoint import Checkpointer
from rnnlab.config import ConfigError, RunError, param_bounds
from rnnlab.train.config import validate
from rnnlab.train.optim import average_info, leaf_names, make_optimizer, parse_lr_scales
from rnnlab.train.state import TrainState, create_sharded_state
from rnnlab.train.steps import make_step_fns
import rnnlab.tasks as tasks_lib

log = logging.getLogger(__name__)


class NonFiniteError(RunError, FloatingPointError):
    """The loss or gradient became NaN/inf and config.train.nonfinite is "stop", or
    `train.max_consecutive_skips` updates in a row were skipped with "skip"."""


class Result(NamedTuple):
    state: TrainState  # the final train state
    eval_metrics: dict | None  # the last evaluation's metrics
    preempted: bool  # stopped early by SIGTERM (a checkpoint was saved)


@contextlib.contextmanager
def _sigterm_flag():
    """Yields a dict whose "set" becomes True on SIGTERM (main thread only; else never)."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _preemption_check(ckpt):
    """Yields `preempted_at(step) -> bool`: SIGTERM was received (one process), or JAX's
    preemption sync point is reached (multi-host: True at the same step on every process)."""
    if jax.process_count() > 1:
        yield ckpt.manager.reached_preemption
        return
    with _sigterm_flag() as flag:
        yield lambda step: flag["set"]


def _time_due(every_secs: float, t_save: float, step: int, log_every: int) -> bool:
    """`every_secs` have passed since the last save (0 = never). Multi-host: decided by process
    0's clock at log steps only, so that every process saves at the same step."""
    if not every_secs:
        return False
    due = time.monotonic() - t_save >= every_secs
    if jax.process_count() == 1:
        return due
    return step % log_every == 0 and mesh_lib.agree(due)


class _NoWriter:
    """The metrics writer of processes other than 0 (multi-host): records are not written."""

    def write(self, record: dict) -> dict:
        return record

    def close(self) -> None:
        pass


def _check_rows(task, layout) -> None:
    """ConfigError if a train, validation or test batch cannot be split across the mesh."""
    layout.check_rows(task.batch_size, "the train batch (task.batch_size)")
    for what, batches in (("a validation batch", task.eval_batches),
                          ("a test batch", task.test_batches)):
        split = batches()
        first = next(iter(split), None) if split is not None else None
        if first is not None:
            layout.check_rows(layout.global_rows(first), what)


def evaluate(task, eval_fn, params, batches=None) -> dict:
    """The task's metrics over `batches` (default: its whole validation set, `eval_batches()`;
    pass e.g. a test stream for a final test evaluation). Stream tasks: carry crosses batches."""
    sums, carry = None, None  # eval_fn starts a stream task's carry from None
    for batch in task.eval_batches() if batches is None else batches:
        stats, carry = eval_fn(params, carry, batch)
        stats = jax.device_get(stats)
        sums = stats if sums is None else {k: sums[k] + stats[k] for k in sums}
    if sums is None:
        raise ValueError("the task's eval_batches() yielded no batches")
    return {k: float(np.asarray(v)) for k, v in task.metrics(sums).items()}


def _prepare_workdir(workdir: str) -> None:
    """Creates `workdir`; RunError if it is a file or cannot be written (before any work)."""
    path = epath.Path(workdir)
    try:
        if path.exists() and not path.is_dir():
            raise RunError(f"--workdir {workdir} is a file, not a folder; choose another "
                           "--workdir or move the file away")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".rnnlab_write_check.{jax.process_index()}"  # one per process
        probe.write_text("")
        probe.unlink(missing_ok=True)
    except (PermissionError, NotADirectoryError, FileExistsError) as e:
        where = getattr(e, "filename", None) or workdir
        raise RunError(f"cannot write to --workdir {workdir} ({type(e).__name__} on {where}); "
                       "choose a writable --workdir or fix its permissions") from None


def _make_task(config):
    """The task of `config.task`; a data file that cannot be read is a ConfigError naming it."""
    try:
        return tasks_lib.make_task(config)
    except OSError as e:
        where = getattr(e, "filename", None)
        raise ConfigError(f"config.task: cannot read {where or 'a data file'} "
                          f"({type(e).__name__}: {e.strerror or e}); check the task's file "
                          "fields (config.task.files, data_dir, download_dir)") from None


class _SkipWatch:
    """train.nonfinite="skip": counts skipped updates in a row from each step's `finite` flag,
    read one step late (the device is then a step ahead, so reading it does not stall)."""

    def __init__(self, limit: int, count: int):
        self.limit, self.run, self.logged = limit, 0, count
        self._last = None  # (step, finite flag on the device)

    def observe(self, step: int, finite) -> None:
        prev, self._last = self._last, (step, finite)
        if prev is not None:
            self._count(*prev)

    def flush(self) -> None:
        if self._last is not None:
            self._count(*self._last)
            self._last = None

    def _count(self, step: int, finite) -> None:
        self.run = 0 if float(finite) else self.run + 1
        if self.limit and self.run >= self.limit:
            raise NonFiniteError(
                f"train.nonfinite=skip: the last {self.run} updates (steps {step - self.run + 1}"
                f"..{step}) were all skipped (non-finite loss or gradient): the run has "
                f"diverged (train.max_consecutive_skips={self.limit}). Lower optim.lr or enable "
                "clipping (optim.clip=global_norm), then resume or start a new --workdir.")

    def note(self, count: int, step: int) -> str | None:
        """A warning line if updates were skipped since the last call."""
        new, self.logged = count - self.logged, count
        if new <= 0:
            return None
        return (f"WARNING: {new} update(s) skipped up to step {step} (non-finite loss or "
                f"gradient; {count} in this run so far, train.nonfinite=skip)")


def _check_finite(state: TrainState, mode: str) -> None:
    if mode == "stop" and int(state.nonfinite_count) > 0:
        step = int(state.first_nonfinite_step)
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} (0-based; the update was not applied). "
            "Lower optim.lr, enable clipping (optim.clip=global_norm), or set "
            "train.nonfinite=skip to skip such updates.")


def _log_gradient_flow(task, d, state, step, writer, layout) -> None:
    """Gradient flow through the first recurrent layer on the next train batch, from the carry
    the run brings into it (stream tasks)."""
    batch = layout.global_batch(task.train_batch(step), "the train batch (task.batch_size)")
    cell, cell_params, xs, carry = task.recurrent_probe(state.params, batch, state.carry)
    writer.write({"step": step, "split": "gradient_flow", **gradient_flow_metrics(
        cell, cell_params, xs, carry=carry, lags=tuple(d.lags), prefix="",
        max_samples=d.max_samples)})


def train_and_evaluate(config, workdir: str, *, task: Any = None,
                       progress: Callable[[str], None] | None = None) -> Result:
    """Trains and evaluates `config` in `workdir` (created if needed); resumes if it holds a
    checkpoint. `task` overrides the task built from `config.task` (tests, custom tasks)."""
    validate(config)
    primary = mesh_lib.is_primary()
    say = progress if progress is not None and primary else (lambda line: None)
    layout = mesh_lib.Layout.from_config(config.mesh)
    task = task if task is not None else _make_task(config)
    _check_rows(task, layout)
    _prepare_workdir(workdir)
    task.prepare(workdir)  # run files such as a vocabulary
    tc, total = config.train, config.train.steps
    optimizer = make_optimizer(config.optim, task.steps_per_epoch, total,
                               param_bounds=param_bounds(config.model))
    state, shardings = create_sharded_state(task, optimizer, config.seed, layout)
    unknown = sorted(set(parse_lr_scales(config.optim.lr_scales)) - leaf_names(state.params))
    if unknown:
        raise ConfigError(f"config.optim.lr_scales names {unknown}, which match no parameter; "
                          f"the model's parameter names are {sorted(leaf_names(state.params))}")

    ckpt = Checkpointer(workdir, config.checkpoint, task.metric, task.metric_mode)
    restored, notes = ckpt.restore_latest(state)
    for note in notes:
        log.warning(note)
        say(f"WARNING: {note}")
    resume_step = None
    if restored is not None:
        state, resume_step = restored, int(restored.step)
        say(f"resumed from checkpoint at step {resume_step} in {ckpt.directory}")
    if primary:
        metrics_lib.write_config(workdir, config)
    writer = metrics_lib.MetricsWriter(workdir, resume_step) if primary else _NoWriter()
    train_fn, eval_fn = make_step_fns(task, optimizer, layout, shardings)

    step = int(state.step)
    eval_metrics, preempted = None, False
    t_log, step_log = time.perf_counter(), step
    t_save = time.monotonic()
    diag = config.diagnostics
    skips = _SkipWatch(tc.max_consecutive_skips if tc.nonfinite == "skip" else 0,
                       int(state.nonfinite_count))
    try:
        if diag.every and step == 0:
            _log_gradient_flow(task, diag, state, step, writer, layout)
        with _preemption_check(ckpt) as preempted_at:
            while step < total:
                state, m = train_fn(state, task.train_batch(step))
                step += 1
                last = step == total
                stop = preempted_at(step)
                ckpt.poll()
                if tc.nonfinite == "skip":
                    skips.observe(step, m["finite"])
                if step % tc.log_every == 0 or last:
                    m = jax.device_get(m)
                    _check_finite(state, tc.nonfinite)
                    skips.flush()
                    now = time.perf_counter()
                    record = writer.write({
                        "step": step, "split": "train", **m,
                        "learning_rate": float(optimizer.schedule(step - 1)),
                        "steps_per_sec": (step - step_log) / max(now - t_log, 1e-9),
                        "nonfinite_count": int(state.nonfinite_count)})
                    t_log, step_log = now, step
                    say(metrics_lib.progress_line(record, total, task.metric))
                    warning = skips.note(int(state.nonfinite_count), step)
                    if warning:
                        log.warning(warning)
                        say(warning)
                evaluated = step % tc.eval_every == 0 or last
                if evaluated:
                    t0 = time.perf_counter()
                    # the averaged iterate once iterate averaging has started (optim.average)
                    eval_metrics = evaluate(task, eval_fn,
                                            optimizer.eval_params(state.opt_state, state.params))
                    state = state.replace(
                        opt_state=optimizer.observe(state.opt_state, eval_metrics["loss"]))
                    averaging = average_info(state.opt_state)  # {} without averaging
                    record = writer.write({"step": step, "split": "eval", **eval_metrics,
                                           **averaging})
                    say(metrics_lib.progress_line(record, total, task.metric))
                    t_log += time.perf_counter() - t0  # eval time is not train speed
                if diag.every and (step % diag.every == 0 or last):
                    t0 = time.perf_counter()
                    _log_gradient_flow(task, diag, state, step, writer, layout)
                    t_log += time.perf_counter() - t0
                k = config.checkpoint
                due = (last or stop
                       or (k.every_steps and step % k.every_steps == 0)
                       or _time_due(k.every_secs, t_save, step, tc.log_every))
                if due:
                    _check_finite(state, tc.nonfinite)
                    skips.flush()
                    ckpt.save(step, state, eval_metrics if evaluated else None)
                    t_save = time.monotonic()
                if stop and not last:
                    preempted = True
                    say(f"SIGTERM: saved a checkpoint at step {step}; exiting")
                    break
        # the test split (when the task has one), evaluated once when training completes
        test_batches = task.test_batches() if step == total and not preempted else None
        if (test_batches is not None
                and not mesh_lib.agree(primary and any(  # every process evaluates, or none
                    r["split"] == "test" and r["step"] == step
                    for r in metrics_lib.read_metrics(workdir)))):
            test_metrics = evaluate(task, eval_fn,
                                    optimizer.eval_params(state.opt_state, state.params),
                                    test_batches)
            record = writer.write({"step": step, "split": "test", **test_metrics})
            say(metrics_lib.progress_line(record, total, task.metric))
    finally:
        ckpt.close()
        writer.close()
    return Result(state, eval_metrics, preempted)
