"""Shared plumbing: input checks and the per-sample, flattened view of a cell's carry.

Every diagnostic works on one sample's carry flattened to a vector s ∈ R^D with
`jax.flatten_util.ravel_pytree` (D = hidden for Elman/GRU/ESN, 2·hidden for an LSTM's (h, c),
the sum over layers for a Stack), and is vmapped over the batch.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

TINY = 1e-37  # below this a float32 norm is treated as underflowed (log is clamped here)


def safe_norm(x: jax.Array, axis=-1) -> jax.Array:
    """Euclidean norm over `axis` that does not underflow: max|x| · ‖x / max|x|‖.

    The plain sqrt(Σ x²) flushes to zero once the entries fall below ~1e-19 in float32
    (their squares are below the smallest normal number), long before x itself underflows.
    """
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    safe_m = jnp.where(m > 0, m, 1.0)
    n = jnp.sqrt(jnp.sum(jnp.square(x / safe_m), axis=axis, keepdims=True)) * m
    return jnp.squeeze(n, axis=axis)


def batch_inputs(batch) -> jax.Array:
    """The inputs [batch, time, features] of an array or of a batch dict ("inputs" or "x")."""
    if isinstance(batch, Mapping):
        for key in ("inputs", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(f"batch dict has no 'inputs' or 'x' entry; its keys are {sorted(batch)}")
    return batch


def check_inputs(cell, params, xs, carry):
    """Validates a [batch, time, features] batch; returns (xp [B, T, G], carry0 with batch B)."""
    if not hasattr(cell, "step") or not hasattr(cell, "init"):
        raise ValueError(f"diagnostics need a cell (rnnlab.cells.make(...)), got {cell!r}")
    xs = jnp.asarray(batch_inputs(xs))
    if xs.ndim != 3:
        raise ValueError(f"inputs must be [batch, time, features], got shape {tuple(xs.shape)}; "
                         "for a single sequence pass xs[None]")
    if xs.shape[1] < 1:
        raise ValueError(f"inputs need at least one time step, got shape {tuple(xs.shape)}")
    cell.check_input(params, xs)
    xp = cell.project_inputs(params, xs)
    expected = cell.initial_carry((xs.shape[0],), dtype=xp.dtype)
    if carry is None:
        carry = expected
    else:
        got = jax.tree_util.tree_map(jnp.shape, carry)
        want = jax.tree_util.tree_map(jnp.shape, expected)
        if got != want:
            raise ValueError(f"carry shapes {got} do not match the cell's initial_carry for "
                             f"batch {xs.shape[0]}: {want}")
    return xp, carry


def flat_step(cell, params, carry_example):
    """(s0, f, unravel): s0 [D] the flattened per-sample carry and f(s, xp_t) -> (s', y_t)."""
    s0, unravel = ravel_pytree(carry_example)
    if hasattr(cell, "dynamics"):  # the forward map, without reverse-mode-only changes
        cell = cell.dynamics()
    if hasattr(cell, "prepare"):  # parameter-only work once, not per step
        params = cell.prepare(params)

    def f(s, xp_t):
        c, y = cell.step(params, unravel(s), xp_t)
        return ravel_pytree(c)[0].astype(s.dtype), y

    return s0, f, unravel


def check_lag(name, lag, time):
    """An int lag in [0, time], or ValueError naming it and the valid range."""
    try:
        value = operator.index(lag)
    except TypeError:
        value = None
    if value is None or isinstance(lag, bool) or not 0 <= value <= time:
        raise ValueError(f"{name} must be an integer lag in [0, {time}] (the sequence has "
                         f"{time} steps), got {lag!r}")
    return value
