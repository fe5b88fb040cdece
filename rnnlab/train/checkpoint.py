"""Checkpoints with Orbax's `CheckpointManager` in `<workdir>/checkpoints`.

    ckpt = Checkpointer(workdir, config.checkpoint, metric="mse", mode="min")
    state, notes = ckpt.restore_latest(fresh_state)     # (None, notes) if there is none
    ckpt.save(step, state, metrics={"mse": 0.01})        # asynchronous unless async_save=False
    ckpt.close()                                         # waits for pending saves

The whole `TrainState` pytree is one item (params, optimiser state, step = data position, RNG,
carried hidden state). Retention: the last `keep` checkpoints plus the best one by the task's
validation metric (only checkpoints saved together with eval metrics compete for best).

A newest checkpoint that cannot be read (truncated, corrupted) is moved, untouched, to
`<workdir>/checkpoints_unreadable/<step>`; the next newest is tried, and `notes` says what
happened. Saves interrupted by a crash never become visible (Orbax writes to a temporary
directory and renames it when complete); leftover temporary directories are removed.

Sharded state: `save` writes each process's shards (every process of a multi-host run calls it;
Orbax coordinates them). `restore` reads into the shardings of `like`, so a checkpoint written
on one mesh (8 devices, FSDP or not) restores onto any other (1 device, ...). The workdir may be
a `gs://` path (paths go through `etils.epath`).
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies


def _absolute(path: str) -> epath.Path:
    p = epath.Path(path)
    return p if "://" in str(path) else epath.Path(p.resolve())


class Checkpointer:
    def __init__(self, workdir: str, ckpt_cfg, metric: str, mode: str):
        self.directory = _absolute(workdir) / "checkpoints"
        self.unreadable_dir = _absolute(workdir) / "checkpoints_unreadable"
        self.metric = metric
        keep = [policies.LatestN(n=ckpt_cfg.keep)]
        if ckpt_cfg.keep_best:
            keep.append(policies.BestN(get_metric_fn=lambda m: m[metric], reverse=mode == "min",
                                       n=1, keep_checkpoints_without_metrics=False))
        self._options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=ckpt_cfg.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, metrics: dict | None = None) -> None:
        """Saves `state` as checkpoint `step` (replacing nothing; a step saved before is kept)."""
        if step in self.manager.all_steps():
            return
        m = None if metrics is None else {self.metric: float(metrics[self.metric])}
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=m, force=True)

    def restore(self, step: int, like):
        """Checkpoint `step` restored into the structure, shapes and shardings of `like` (arrays
        or `jax.ShapeDtypeStruct`s with a sharding)."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, like):
        """(state, notes): the newest readable checkpoint (None if none) and what was skipped."""
        notes = []
        for step in reversed(self.steps()):
            try:
                return self.restore(step, like), notes
            except Exception as e:  # any failure to read means this checkpoint is unusable
                dest = self.unreadable_dir / str(step)
                if jax.process_index() == 0:
                    self.unreadable_dir.mkdir(parents=True, exist_ok=True)
                    (self.directory / str(step)).rename(dest)
                ocp.multihost.sync_global_processes(f"rnnlab_unreadable_{step}")
                self.manager.reload()
                reason = (str(e).splitlines() or [""])[0][:200]
                notes.append(f"checkpoint at step {step} is unreadable ({type(e).__name__}: "
                             f"{reason}); moved to {dest}, trying the previous one")
        return None, notes

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def read_checkpoint(directory: str, step: int):
    """Checkpoint `step` in `directory` (a run's `<workdir>/checkpoints`) as nested dicts of
    arrays on this process's first device, whatever mesh wrote it. Read-only: never touches the
    run's files (for tools such as generation while training may still be writing)."""
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
