"""Optax transformations from `config.optim`.

    opt = make_optimizer(config.optim, steps_per_epoch=1000, total_steps=config.train.steps)
    g_clipped, clip_state = opt.clip.update(grads, clip_state, params)
    updates, opt_state = opt.update.update(g_clipped, opt_state, params)
    lr_now = opt.schedule(step)

The clipping transform is kept apart from the rest of the chain so that the train step can
report the gradient norm after clipping (what the optimiser actually receives).

Schedules (learning rate as a function of the optimiser step s, epoch e = s // steps_per_epoch):
  constant  lr
  step      lr · factor^max(0, e - k + 1) with k = decay_after_epochs (Zaremba et al. 2014: lr 1
            for 4 epochs, then halved every epoch)
  cosine    lr · (f + (1 - f)(1 + cos(π s / S)) / 2) over S = total_steps - warmup_steps
and `warmup_steps > 0` prepends a linear ramp from 0 to lr.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import optax


class Optimizer(NamedTuple):
    clip: optax.GradientTransformation  # gradient clipping (identity for clip = none)
    update: optax.GradientTransformation  # weight decay + optimiser + learning rate
    schedule: Callable  # step -> learning rate


def make_schedule(o, steps_per_epoch: int, total_steps: int) -> Callable:
    if o.schedule == "constant":
        main = optax.constant_schedule(o.lr)
    elif o.schedule == "step":
        k, factor, spe = o.decay_after_epochs, o.decay_factor, max(int(steps_per_epoch), 1)

        def main(step):
            epoch = jnp.asarray(step) // spe
            return o.lr * factor ** jnp.maximum(0, epoch - k + 1).astype(jnp.float32)
    elif o.schedule == "cosine":
        main = optax.cosine_decay_schedule(o.lr, max(total_steps - o.warmup_steps, 1),
                                           alpha=o.final_lr_fraction)
    else:
        raise ValueError(f"unknown schedule {o.schedule!r}; valid: constant, step, cosine")
    if o.warmup_steps:
        warm = optax.linear_schedule(0.0, o.lr, o.warmup_steps)
        return optax.join_schedules([warm, main], [o.warmup_steps])
    return main


def make_clip(o) -> optax.GradientTransformation:
    if o.clip == "none":
        return optax.identity()
    if o.clip == "global_norm":
        return optax.clip_by_global_norm(o.clip_value)
    if o.clip == "value":
        return optax.clip(o.clip_value)
    if o.clip == "adaptive":
        return optax.adaptive_grad_clip(o.clip_value)
    raise ValueError(f"unknown clip {o.clip!r}; valid: none, global_norm, value, adaptive")


def make_optimizer(o, steps_per_epoch: int, total_steps: int) -> Optimizer:
    """The clipping transform, the update chain and the schedule for `config.optim`."""
    schedule = make_schedule(o, steps_per_epoch, total_steps)
    decay = ([optax.add_decayed_weights(o.weight_decay)]
             if o.weight_decay and o.name != "adamw" else [])
    if o.name == "sgd":
        opt = optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov)
    elif o.name == "adam":
        opt = optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)
    elif o.name == "adamw":
        opt = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    elif o.name == "rmsprop":
        opt = optax.rmsprop(schedule, decay=o.rms_decay, eps=o.eps, momentum=o.momentum or None)
    else:
        raise ValueError(f"unknown optimizer {o.name!r}; valid: sgd, adam, adamw, rmsprop")
    return Optimizer(make_clip(o), optax.chain(*decay, opt), schedule)
