"""Checkpoints with Orbax's `CheckpointManager` in `<workdir>/checkpoints`.

    ckpt = Checkpointer(workdir, config.checkpoint, metric="mse", mode="min")
    state, notes = ckpt.restore_latest(fresh_state)     # (None, notes) if there is none
    ckpt.save(step, state, metrics={"mse": 0.01})        # asynchronous unless async_save=False
    ckpt.poll()                                          # cheap; call once per step
    ckpt.close()                                         # waits for pending saves

The whole `TrainState` pytree is one item (params, optimiser state, step = data position, RNG,
carried hidden state). Retention: the last `keep` checkpoints plus the best one by the task's
validation metric (only checkpoints saved together with eval metrics compete for best). The
metric is stored in each checkpoint (Orbax's `metrics` item), so a restarted run ranks the
checkpoints of the runs before it and keeps the same best one.

Integrity: once a save has committed, the SHA-256 of every file it wrote (the arrays and their
metadata) goes beside them, in `<step>/rnnlab_checksums.json`. A restore first checks every file
against it. A checkpoint whose files do not match (a flipped bit, a truncated or missing file),
whose folder is empty or unreadable to Orbax, or a plain file where a checkpoint folder belongs,
is moved, untouched, to `<workdir>/checkpoints_unreadable/<step>`; the next newest is tried, and
`notes` names the file that failed. Only such checkpoints are set aside:

- a checkpoint whose files match their checksums but does not restore into `like` (the config
  changed the model, an Orbax version cannot read it) stops with `CheckpointError`;
- a checkpoint that cannot be read for lack of permission stops with `CheckpointError` naming the
  path and the `chmod` that fixes it;
- when no checkpoint is left but some were set aside (now or by an earlier run), `restore_latest`
  raises `CheckpointError` naming `checkpoints_unreadable/` rather than start again from step 0.

A checkpoint without checksums (written by an older rnnlab, or committed moments before the
process was killed) is restored with a note saying it was not verified. Saves interrupted by a
crash never become visible (Orbax writes to a temporary directory and renames it when complete);
leftover temporary directories are removed.

Sharded state: `save` writes each process's shards (every process of a multi-host run calls it;
Orbax coordinates them; process 0 writes the checksums, every process checks them). `restore` reads into the
shardings of `like`, so a checkpoint written on one mesh (8 devices, FSDP or not) restores onto
any other (1 device, ...). The workdir may be a `gs://` path (paths go through `etils.epath`).
"""

from __future__ import annotations

import hashlib
import json
import logging

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from rnnlab.config import RunError

CHECKSUMS = "rnnlab_checksums.json"


class CheckpointError(RunError):
    """The run's checkpoints cannot be used as they are; the message names the path and the fix."""


class _Unreadable(Exception):
    """This checkpoint's files are damaged: set it aside (the message names the file)."""


class _NoMetricWarning(logging.Filter):
    # Orbax warns on every save without metrics once it ranks by one; ours are expected
    def filter(self, record):
        return "did not provide metrics" not in record.getMessage()


_NO_METRIC_WARNING = _NoMetricWarning()  # one instance: addFilter keeps it once


def _absolute(path: str) -> epath.Path:
    p = epath.Path(path)
    return p if "://" in str(path) else epath.Path(p.resolve())


def _files(step_dir: epath.Path) -> list[str]:
    """Every file under `step_dir`, as sorted paths relative to it (checksum file excluded)."""
    out, todo = [], [step_dir]
    while todo:
        d = todo.pop()
        for p in d.iterdir():
            if p.is_dir():
                todo.append(p)
            elif p.name != CHECKSUMS:
                out.append(str(p)[len(str(step_dir)) + 1:])
    return sorted(out)


def _sha256(path: epath.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def checksums(step_dir) -> dict:
    """{relative path: SHA-256} of every file a committed checkpoint holds."""
    step_dir = epath.Path(step_dir)
    return {f: _sha256(step_dir / f) for f in _files(step_dir)}


def verify(step_dir) -> bool:
    """True if `step_dir`'s files match their checksums, False if it has none (not verified);
    raises `_Unreadable` naming the first file that is missing or differs."""
    step_dir = epath.Path(step_dir)
    record = step_dir / CHECKSUMS
    if not record.exists():
        if not _files(step_dir):
            raise _Unreadable(f"{step_dir} is empty")
        return False
    try:
        want = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        raise _Unreadable(f"its checksum file {record} is damaged") from None
    for rel, digest in sorted(want.items()):
        path = step_dir / rel
        if not path.exists():
            raise _Unreadable(f"{path} is missing")
        if _sha256(path) != digest:
            raise _Unreadable(f"{path} differs from the checksum written when it was saved")
    return True


def _permission_message(path, e) -> str:
    where = getattr(e, "filename", None) or path
    return (f"cannot read checkpoint {path}: permission denied on {where}; give this user "
            f"access (chmod -R u+rwX {path}) or move it out of {epath.Path(path).parent}")


class Checkpointer:
    def __init__(self, workdir: str, ckpt_cfg, metric: str, mode: str):
        self.directory = _absolute(workdir) / "checkpoints"
        self.unreadable_dir = _absolute(workdir) / "checkpoints_unreadable"
        self.metric = metric
        self._notes: list[str] = []
        self._pending: list[int] = []  # saved steps whose checksums are not written yet
        self._set_aside_misplaced()
        keep = [policies.LatestN(n=ckpt_cfg.keep)]
        if ckpt_cfg.keep_best:
            keep.append(policies.BestN(get_metric_fn=lambda m: m[metric], reverse=mode == "min",
                                       n=1, keep_checkpoints_without_metrics=False))
        self._options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            # best_fn makes Orbax store each checkpoint's metric (and read it back on restart)
            best_fn=(lambda m: m[metric]) if ckpt_cfg.keep_best else None, best_mode=mode,
            enable_async_checkpointing=ckpt_cfg.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        if ckpt_cfg.keep_best:
            logging.getLogger("absl").addFilter(_NO_METRIC_WARNING)
        try:
            self.manager = self._open()
        except PermissionError as e:
            raise CheckpointError(f"cannot use {self.directory}: permission denied on "
                                  f"{getattr(e, 'filename', None) or self.directory}; fix its "
                                  "permissions or choose another --workdir") from None

    def _open(self):
        """The manager; if Orbax cannot even list the checkpoints (a damaged metadata file),
        every checkpoint whose files fail their checksums is set aside and it tries again."""
        try:
            return ocp.CheckpointManager(self.directory, options=self._options)
        except PermissionError:
            raise
        except Exception:
            if not self.directory.is_dir():
                raise
            damaged = 0
            for p in sorted(self.directory.iterdir(), key=lambda p: p.name):
                if p.name.isdigit() and p.is_dir():
                    try:
                        verify(p)
                    except _Unreadable as e:
                        self._notes.append(self._set_aside(p.name, str(e)))
                        damaged += 1
            if not damaged:
                raise
            return ocp.CheckpointManager(self.directory, options=self._options)

    def _set_aside(self, name: str, why: str) -> str:
        """Moves checkpoints/<name> to checkpoints_unreadable/<name> (process 0); the note."""
        src = self.directory / name
        dest = self.unreadable_dir / name
        if dest.exists():  # set aside before under the same name: keep both
            i = 1
            while (self.unreadable_dir / f"{name}.{i}").exists():
                i += 1
            dest = self.unreadable_dir / f"{name}.{i}"
        if jax.process_index() == 0:
            try:
                self.unreadable_dir.mkdir(parents=True, exist_ok=True)
                src.rename(dest)
            except PermissionError as e:
                raise CheckpointError(_permission_message(src, e)) from None
        ocp.multihost.sync_global_processes(f"rnnlab_unreadable_{name}")
        return f"checkpoint {src} is unreadable ({why}); moved to {dest}"

    def _set_aside_misplaced(self) -> None:
        """A plain file where a checkpoint folder belongs is set aside before Orbax sees it."""
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory} is a file, not a folder of checkpoints; "
                                  "move it away or choose another --workdir")
        if not self.directory.exists():
            return
        try:
            entries = list(self.directory.iterdir())
        except PermissionError:
            raise CheckpointError(f"cannot list {self.directory}: permission denied; fix its "
                                  f"permissions (chmod u+rwx {self.directory})") from None
        for p in entries:
            if p.name.isdigit() and not p.is_dir():
                self._notes.append(self._set_aside(p.name, "a file, not a checkpoint folder"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, metrics: dict | None = None) -> None:
        """Saves `state` as checkpoint `step` (replacing nothing; a step saved before is kept)."""
        self._write_checksums(wait=True)  # Orbax waits for the previous save here anyway
        if step in self.manager.all_steps():
            return
        m = None if metrics is None else {self.metric: float(metrics[self.metric])}
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=m, force=True)
        self._pending.append(step)
        if not self._options.enable_async_checkpointing:
            self._write_checksums(wait=False)

    def poll(self) -> None:
        """Writes the checksums of an asynchronous save as soon as it has committed."""
        if self._pending and not self.manager.is_saving_in_progress():
            self._write_checksums(wait=False)

    def _write_checksums(self, wait: bool) -> None:
        if not self._pending:
            return
        if wait:
            self.manager.wait_until_finished()
        if jax.process_index() == 0:
            for step in self._pending:
                step_dir = self.directory / str(step)
                if step_dir.exists():  # else already removed by retention
                    tmp = step_dir / (CHECKSUMS + ".tmp")
                    tmp.write_text(json.dumps({"step": step, "sha256": checksums(step_dir)}))
                    tmp.replace(step_dir / CHECKSUMS)
        self._pending = []

    def restore(self, step: int, like):
        """Checkpoint `step` restored into the structure, shapes and shardings of `like` (arrays
        or `jax.ShapeDtypeStruct`s with a sharding). Not verified: see `restore_latest`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def _verify(self, step: int) -> bool:
        step_dir = self.directory / str(step)
        try:  # every process checks (the same files, the same answer: no coordination needed)
            return verify(step_dir)
        except PermissionError as e:
            raise CheckpointError(_permission_message(step_dir, e)) from None

    def restore_latest(self, like):
        """(state, notes): the newest intact checkpoint (None if there is none) and what was
        set aside on the way (see the module docstring)."""
        notes, self._notes = self._notes, []
        for step in reversed(self.steps()):
            step_dir = self.directory / str(step)
            try:
                verified = self._verify(step)
            except _Unreadable as e:
                notes.append(self._set_aside(str(step), str(e)) + "; trying the previous one")
                self.manager.reload()
                continue
            try:
                state = self.restore(step, like)
            except PermissionError as e:
                raise CheckpointError(_permission_message(step_dir, e)) from None
            except Exception as e:  # Orbax raises many types for a checkpoint it cannot read
                reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                if verified:  # intact files: the restore call is wrong, not the checkpoint
                    raise CheckpointError(
                        f"checkpoint {step_dir} is intact (its checksums match) but does not "
                        f"restore into this run's state ({reason}); resume with the config it "
                        "was trained with, or start this config in a new --workdir") from None
                notes.append(self._set_aside(str(step), reason) + "; trying the previous one")
                self.manager.reload()
                continue
            if not verified:
                notes.append(f"checkpoint {step_dir} has no checksums (saved by an older rnnlab "
                             "or just before the run was killed); restored unverified")
            return state, notes
        if self.unreadable_dir.exists() and any(True for _ in self.unreadable_dir.iterdir()):
            raise CheckpointError(
                f"no usable checkpoint is left in {self.directory}: the ones in "
                f"{self.unreadable_dir} were set aside as unreadable"
                + (f" ({'; '.join(notes)})" if notes else "")
                + f"; to start again from step 0, remove or rename {self.unreadable_dir}")
        return None, notes

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._write_checksums(wait=False)

    def close(self) -> None:
        self.wait()
        self.manager.close()


def read_checkpoint(directory: str, step: int):
    """Checkpoint `step` in `directory` (a run's `<workdir>/checkpoints`) as nested dicts of
    arrays on this process's first device, whatever mesh wrote it. Read-only: never touches the
    run's files (for tools such as generation while training may still be writing). Raises
    `CheckpointError` if its files do not match their checksums."""
    try:
        verify(epath.Path(_absolute(directory)) / str(step))
    except _Unreadable as e:
        raise CheckpointError(f"checkpoint at step {step} in {directory} is damaged: {e}") from None
    manager = ocp.CheckpointManager(
        _absolute(directory), item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             cleanup_tmp_directories=False))
    try:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            manager.item_metadata(step))
        return manager.restore(step, args=ocp.args.StandardRestore(target))
    finally:
        manager.close()
