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
"""

from __future__ import annotations

import os
import shutil

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class Checkpointer:
    def __init__(self, workdir: str, ckpt_cfg, metric: str, mode: str):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.unreadable_dir = os.path.abspath(os.path.join(workdir, "checkpoints_unreadable"))
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
        """Checkpoint `step` restored into the structure, shapes and shardings of `like`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, like):
        """(state, notes): the newest readable checkpoint (None if none) and what was skipped."""
        notes = []
        for step in reversed(self.steps()):
            try:
                return self.restore(step, like), notes
            except Exception as e:  # any failure to read means this checkpoint is unusable
                dest = os.path.join(self.unreadable_dir, str(step))
                os.makedirs(self.unreadable_dir, exist_ok=True)
                shutil.move(os.path.join(self.directory, str(step)), dest)
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
