"""The train state: one explicit pytree holding everything a run needs to continue exactly.

    state = create_state(task, optimizer, seed)     # step 0
    state, metrics = train_step(state, batch)        # see rnnlab.train.steps

The data position is `step`: a task's train batch is a deterministic function of the step
(`Task.train_batch(step)`), so restoring `step` restores the data iterator.

On a device mesh (`rnnlab.train.mesh.Layout`):

    state, shardings = create_sharded_state(task, optimizer, seed, layout)

params and optimiser state replicated (or FSDP-sharded), the carry split along its batch axis,
the scalars and the RNG replicated; `shardings` is the matching TrainState of NamedShardings.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []: optimiser steps taken so far = data position
    params: Any  # the model's parameter pytree
    opt_state: Any  # (clipping state, optimiser state)
    rng: jax.Array  # uint32 [2]: raw PRNG key, split once per step for dropout
    carry: Any  # hidden state carried across train batches (stream tasks); None otherwise
    nonfinite_count: jax.Array  # int32 []: steps whose loss or gradient was not finite
    first_nonfinite_step: jax.Array  # int32 []: the first such step (0-based), -1 if none


def create_state(task, optimizer, seed: int) -> TrainState:
    """Initial state: parameters from `task.init`, optimiser state, RNG from `seed`."""
    k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
    params = task.init(k_init)
    opt_state = (optimizer.clip.init(params), optimizer.update.init(params))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        rng=k_run,
        carry=task.initial_carry(task.batch_size) if task.carries_state else None,
        nonfinite_count=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
    )


def state_shardings(abstract: TrainState, layout) -> TrainState:
    """The NamedSharding of every leaf of `abstract` (a TrainState of arrays or
    ShapeDtypeStructs) on `layout` (see the module docstring)."""
    rep = layout.replicated
    return TrainState(
        step=rep,
        params=layout.param_shardings(abstract.params),
        opt_state=layout.param_shardings(abstract.opt_state),
        rng=rep,
        carry=jax.tree_util.tree_map(lambda _: layout.rows, abstract.carry),
        nonfinite_count=rep,
        first_nonfinite_step=rep,
    )


def create_sharded_state(task, optimizer, seed: int, layout) -> tuple[TrainState, TrainState]:
    """(state, shardings) on `layout`. Replicated parameters: `create_state` as it runs without a
    mesh (bitwise the same values, so every earlier result reproduces), then placed. FSDP:
    computed under `jit` straight into its shards, so no device holds a full copy (the values
    can differ from the eager ones in the last bit: XLA fuses a * b + c)."""
    init = functools.partial(create_state, task, optimizer, seed)
    if layout.fsdp:
        shardings = state_shardings(jax.eval_shape(init), layout)
        return jax.jit(init, out_shardings=shardings)(), shardings
    state = init()
    shardings = state_shardings(state, layout)
    return layout.place(state, shardings), shardings
