"""Pure train and eval steps. `make_step_fns` binds them to a task and optimiser under `jax.jit`.

    state, shardings = create_sharded_state(task, optimizer, seed, layout)   # rnnlab.train.state
    train_fn, eval_fn = make_step_fns(task, optimizer, layout, shardings)
    state, metrics = train_fn(state, batch)      # state is donated; batch: this process's rows
    stats, carry = eval_fn(params, carry, batch)  # carry None: the task's initial carry

`metrics` holds the task's metrics for the batch (always "loss", plus e.g. "mse" or
"accuracy") and the step diagnostics: grad_norm (global norm before clipping),
grad_norm_clipped (after clipping: what the optimiser received), param_norm (of the params
kept), update_norm (of the update applied: 0 for a skipped step), clipped (1.0 if clipping changed the gradient) and finite (0.0 if loss or gradient was not).

A step whose loss or gradient is not finite leaves params, optimiser state and carry unchanged
and is counted in `state.nonfinite_count` (the first such step in `first_nonfinite_step`);
with nonfinite="stop" the loop then raises, with "skip" it goes on.

Truncated BPTT: for tasks with `carries_state`, the carry from the previous batch enters under
`stop_gradient` (gradients never cross a window boundary) and is reset to the initial carry at
the start of every epoch (step % steps_per_epoch == 0) unless the task resets it itself
(`resets_carry`). A task's optional `update_scale(batch)` scales this step's update after
clipping (its learning rate; see `rnnlab.train.optim`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rnnlab.train.state import TrainState


def _where(pred, new, old):
    return jax.tree_util.tree_map(lambda n, o: jnp.where(pred, n, o), new, old)


def train_step(task, optimizer, state: TrainState, batch):
    """One optimiser step on `batch` -> (new state, metrics). Pure; jitted by `make_step_fns`."""
    rng, step_rng = jax.random.split(state.rng)
    carry = state.carry
    if task.carries_state:
        if not task.resets_carry:
            reset = state.step % task.steps_per_epoch == 0
            carry = _where(reset, task.initial_carry(task.batch_size), carry)
        carry = jax.lax.stop_gradient(carry)
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (loss, (stats, new_carry)), grads = grad_fn(state.params, batch, carry, step_rng, True)

    clip_state, opt_state = state.opt_state
    clipped_grads, new_clip_state = optimizer.clip.update(grads, clip_state, state.params)
    scale = task.update_scale(batch)
    scale = {} if scale is None else {"update_scale": scale}
    updates, new_opt_state = optimizer.update.update(clipped_grads, opt_state, state.params,
                                                     **scale)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params = _where(finite, optax.apply_updates(state.params, updates), state.params)
    changed = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a, b: jnp.any(a != b), grads, clipped_grads))
    metrics = dict(
        task.metrics(stats),
        grad_norm=grad_norm,
        grad_norm_clipped=optax.tree.norm(clipped_grads),
        param_norm=optax.tree.norm(new_params),  # the params kept (a skipped step keeps the old)
        update_norm=jnp.where(finite, optax.tree.norm(updates), 0.0),  # the update applied
        clipped=jnp.any(jnp.stack(changed)).astype(jnp.float32) if changed else jnp.float32(0),
        finite=finite.astype(jnp.float32),
    )
    new_state = state.replace(
        step=state.step + 1,
        params=new_params,
        opt_state=_where(finite, (new_clip_state, new_opt_state), state.opt_state),
        rng=rng,
        carry=_where(finite, new_carry, carry) if task.carries_state else None,
        nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where((state.first_nonfinite_step < 0) & ~finite,
                                       state.step, state.first_nonfinite_step),
    )
    return new_state, metrics


def eval_step(task, params, carry, batch):
    """Summed statistics of one eval batch (no dropout) and the carry after it."""
    _, (stats, new_carry) = task.loss(params, batch, carry, None, False)
    return stats, new_carry


def make_step_fns(task, optimizer, layout, shardings: TrainState):
    """(train_fn, eval_fn): the two steps bound to `task` and `optimizer` under `jax.jit` on the
    mesh of `layout` (`rnnlab.train.mesh.Layout`).

    Both take this process's rows of a batch and assemble the global batch split along the data
    axis (`layout.global_batch`). The state keeps `shardings` (from `create_sharded_state`);
    metrics and eval statistics come back replicated; train_fn donates the incoming state's
    buffers. eval_fn(params, None, batch) starts a stream task from its initial carry, split
    along the batch axis like the batch.
    """
    train_jit = jax.jit(functools.partial(train_step, task, optimizer),
                        out_shardings=(shardings, layout.replicated), donate_argnums=0)
    eval_jit = jax.jit(functools.partial(eval_step, task),
                       out_shardings=(layout.replicated, layout.rows))
    init_carry = jax.jit(task.initial_carry, static_argnums=0, out_shardings=layout.rows)

    def train_fn(state: TrainState, batch):
        return train_jit(state, layout.global_batch(batch, "the train batch (task.batch_size)"))

    def eval_fn(params, carry, batch):
        rows = layout.global_rows(batch)
        batch = layout.global_batch(batch, "an evaluation batch")
        if carry is None and task.carries_state:
            carry = init_carry(rows)
        return eval_jit(params, carry, batch)

    return train_fn, eval_fn
