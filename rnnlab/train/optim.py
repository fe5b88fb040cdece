"""Optax transformations from `config.optim`.

    opt = make_optimizer(config.optim, steps_per_epoch=1000, total_steps=config.train.steps)
    g_clipped, clip_state = opt.clip.update(grads, clip_state, params)
    updates, opt_state = opt.update.update(g_clipped, opt_state, params, update_scale=s)
    lr_now = opt.schedule(step)
    params_to_evaluate = opt.eval_params(opt_state, params)  # the averaged iterate, if any
    opt_state = opt.observe(opt_state, val_loss)             # after each evaluation (NT-ASGD)

The clipping transform is kept apart from the rest of the chain so that the train step can
report the gradient norm after clipping (what the optimiser actually receives). The optional
extra argument `update_scale` (a scalar, default 1) multiplies the optimiser's update, i.e. the
learning rate of this one step, after clipping (AWD-LSTM: lr · window length / bptt).

Schedules (learning rate as a function of the optimiser step s, epoch e = s // steps_per_epoch):
  constant  lr
  step      lr · factor^max(0, e - k + 1) with k = decay_after_epochs (Zaremba et al. 2014: lr 1
            for 4 epochs, then halved every epoch)
  cosine    lr · (f + (1 - f)(1 + cos(π s / S)) / 2) over S = total_steps - warmup_steps
and `warmup_steps > 0` prepends a linear ramp from 0 to lr.

Per-parameter pieces, matched by the parameter's own key name (the last key of its path, e.g.
"skew" for expRNN's generator, "u_hh" for IndRNN's recurrent weights):
  lr_scales      "name=factor,...": the updates of those leaves times factor, i.e. their own
                 learning rate (expRNN trains its skew generator at lr/10: "skew=0.1");
  param_bounds   {name: m} (from the cells, `Cell.param_bounds`): after every update the leaf is
                 projected onto |w| <= m (`project_params`; IndRNN's |u| <= 2^{1/T}, Li et al. 2018).

Iterate averaging (`average`; Polyak & Juditsky 1992). Once started at step T, training goes on
with the plain iterate w_k (the parameters after k updates) while the model that is evaluated,
kept as the best checkpoint, tested and sampled from is the mean of w_T, w_{T+1}, ..., w_k:
  none       no averaging
  from_step  averaging starts at step `average_start`
  nt_asgd    non-monotonically triggered ASGD (Merity et al. 2017, Algorithm 1): averaging starts
             at the first evaluation whose validation loss v is worse than the best of those more
             than n = `nt_asgd_nonmono` evaluations before it: with earlier losses l_0..l_{t-1},
             t > n and v > min(l_0, ..., l_{t-n-1}). `observe` decides it after each evaluation
             and stores it in the optimiser state, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Optimizer(NamedTuple):
    clip: optax.GradientTransformation  # gradient clipping (identity for clip = none)
    update: optax.GradientTransformationExtraArgs  # weight decay + optimiser + learning rate
    #                                                (x update_scale, then iterate averaging)
    schedule: Callable  # step -> learning rate
    eval_params: Callable  # (opt_state, params) -> the parameters to evaluate and test
    observe: Callable  # (opt_state, validation loss) -> opt_state, after each evaluation


class AverageState(NamedTuple):
    """State of `average_iterates`: the running mean and the NT-ASGD evaluation history."""
    count: jax.Array  # int32 []: updates applied so far (the optimiser step)
    start: jax.Array  # int32 []: step where averaging starts (-1: not decided yet)
    mean: Any  # params-like: mean of the iterates w_start .. w_count (meaningful when num > 0)
    num: jax.Array  # int32 []: iterates in `mean` (0: none yet)
    recent: jax.Array  # float32 [n]: the last n validation losses, newest last (NaN: none)
    older_best: jax.Array  # float32 []: min of the losses observed before `recent` (+inf: none)
    num_evals: jax.Array  # int32 []: validation losses observed so far


def with_update_scale(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`tx` whose updates are multiplied by the extra argument `update_scale` (none given:
    unchanged). The state is `tx`'s own, so checkpoints keep their structure."""
    tx = optax.with_extra_args_support(tx)

    def update(updates, state, params=None, *, update_scale=None, **extra_args):
        updates, state = tx.update(updates, state, params, **extra_args)
        if update_scale is not None:
            updates = jax.tree_util.tree_map(
                lambda u: u * jnp.asarray(update_scale, u.dtype), updates)
        return updates, state

    return optax.GradientTransformationExtraArgs(tx.init, update)


def average_iterates(start: int = -1, nonmono: int = 5) -> optax.GradientTransformation:
    """Running mean of the iterates from step `start` on (-1: from the step `nt_asgd_observe`
    picks). Put it last in the chain: it needs the final updates. Updates pass unchanged."""
    if nonmono < 1:
        raise ValueError(f"nonmono must be >= 1, got {nonmono!r}")

    def init(params):
        return AverageState(
            count=jnp.zeros((), jnp.int32), start=jnp.full((), start, jnp.int32),
            mean=optax.tree.zeros_like(params), num=jnp.zeros((), jnp.int32),
            recent=jnp.full((nonmono,), jnp.nan, jnp.float32),
            older_best=jnp.full((), jnp.inf, jnp.float32), num_evals=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("average_iterates needs the params: update(updates, state, params)")
        active = (state.start >= 0) & (state.count >= state.start)
        num = jnp.maximum(state.num, 1)  # the first averaged update starts from w_start = params

        def running_mean(m, p, u):
            m0 = jnp.where(state.num == 0, p, m)
            return jnp.where(active, m0 + (p + u - m0) / (num + 1).astype(m0.dtype), m)

        mean = jax.tree_util.tree_map(running_mean, state.mean, params, updates)
        return updates, state._replace(count=state.count + 1, mean=mean,
                                       num=jnp.where(active, num + 1, state.num))

    return optax.GradientTransformation(init, update)


def _leaf_name(path) -> str:
    last = path[-1] if path else None
    for attr in ("key", "name", "idx"):
        if hasattr(last, attr):
            return str(getattr(last, attr))
    return str(last)


def leaf_names(tree) -> set:
    """The key names (last path entries) of a pytree's leaves, as `lr_scales` matches them."""
    return {_leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def scale_by_name(scales: dict) -> optax.GradientTransformation:
    """Multiplies the updates of the leaves whose key name is in `scales` by its factor."""

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(
            lambda p, u: u * jnp.asarray(scales.get(_leaf_name(p), 1.0), u.dtype),
            updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def project_params(bounds: dict) -> optax.GradientTransformation:
    """Rewrites the updates so that params + updates lies in |w| <= bounds[name] for every leaf
    whose key name is in `bounds` (a projection after each step: Li et al. 2018's IndRNN
    constraint). Needs the params. Leaves not named pass unchanged."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_params needs the params: update(updates, state, params)")

        def one(path, u, p):
            m = bounds.get(_leaf_name(path))
            if m is None:
                return u
            return jnp.clip(p + u, -m, m) - p

        return jax.tree_util.tree_map_with_path(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def parse_lr_scales(spec: str) -> dict:
    """'skew=0.1,u_hh=0.5' -> {'skew': 0.1, 'u_hh': 0.5}; ValueError naming a bad item."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = None
        if not sep or not key.strip() or factor is None or not factor >= 0:
            raise ValueError(f"optim.lr_scales: bad item {item!r}; expected name=factor pairs "
                             "(factor >= 0) separated by commas, e.g. 'skew=0.1'")
        out[key.strip()] = factor
    return out


def _is_average(x) -> bool:
    return isinstance(x, AverageState)


def find_average_state(opt_state) -> AverageState | None:
    """The `AverageState` inside `opt_state` (any nesting), or None without averaging."""
    found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_average)
             if _is_average(s)]
    return found[0] if found else None


def eval_params(opt_state, params):
    """The parameters to evaluate: the averaged iterate once averaging holds one, else params."""
    s = find_average_state(opt_state)
    if s is None:
        return params
    return jax.tree_util.tree_map(lambda m, p: jnp.where(s.num > 0, m, p), s.mean, params)


def nt_asgd_observe(opt_state, loss):
    """Records the validation `loss` in the `AverageState` inside `opt_state` and starts the
    averaging at the current step if the NT-ASGD rule (module docstring) fires. Pure."""

    def observe(s: AverageState) -> AverageState:
        v = jnp.asarray(loss, jnp.float32)
        fire = (s.start < 0) & (v > s.older_best)  # older_best is +inf while t <= n
        leaving = s.num_evals >= s.recent.shape[0]  # recent[0] then moves to the older ones
        return s._replace(
            start=jnp.where(fire, s.count, s.start),
            recent=jnp.concatenate([s.recent[1:], v[None]]),
            older_best=jnp.where(leaving, jnp.minimum(s.older_best, s.recent[0]), s.older_best),
            num_evals=s.num_evals + 1)

    return jax.tree_util.tree_map(lambda s: observe(s) if _is_average(s) else s, opt_state,
                                  is_leaf=_is_average)


def average_info(opt_state) -> dict:
    """{} without averaging; else {"average_start": the step averaging starts at (-1: not
    decided yet), "averaged_iterates": iterates in the mean `eval_params` returns (0: it returns
    the plain params)}."""
    s = find_average_state(opt_state)
    if s is None:
        return {}
    return {"average_start": int(s.start), "averaged_iterates": int(s.num)}


def make_schedule(o, steps_per_epoch: int, total_steps: int) -> Callable:
    if o.schedule == "constant":
        main = optax.constant_schedule(o.lr)
    elif o.schedule == "step":
        k, factor, spe = o.decay_after_epochs, o.decay_factor, max(int(steps_per_epoch), 1)

        def main(step):
            epoch = jnp.asarray(step) // spe
            return o.lr * factor ** jnp.maximum(0, epoch - k + 1).astype(jnp.float32)
    elif o.schedule == "multistep":
        spe = max(int(steps_per_epoch), 1)
        main = optax.piecewise_constant_schedule(
            o.lr, {int(m) * spe: float(o.decay_factor) for m in sorted(o.milestone_epochs)})
    elif o.schedule == "cosine":
        main = optax.cosine_decay_schedule(o.lr, max(total_steps - o.warmup_steps, 1),
                                           alpha=o.final_lr_fraction)
    else:
        raise ValueError(f"unknown schedule {o.schedule!r}; valid: constant, step, multistep, cosine")
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


def make_averaging(o) -> list:
    """[] or [average_iterates(...)] for `o.average`."""
    if o.average == "none":
        return []
    if o.average == "from_step":
        return [average_iterates(start=o.average_start)]
    if o.average == "nt_asgd":
        return [average_iterates(start=-1, nonmono=o.nt_asgd_nonmono)]
    raise ValueError(f"unknown average {o.average!r}; valid: none, from_step, nt_asgd")


def make_optimizer(o, steps_per_epoch: int, total_steps: int,
                   param_bounds: dict | None = None) -> Optimizer:
    """The clipping transform, the update chain, the schedule and the averaging hooks for
    `config.optim`; `param_bounds` {name: max |w|} adds `project_params` (the train loop passes
    the cells' own, `rnnlab.config.param_bounds`)."""
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
    scales = parse_lr_scales(o.lr_scales)
    per_param = ([scale_by_name(scales)] if scales else []) + (
        [project_params(dict(param_bounds))] if param_bounds else [])
    chain = optax.chain(*decay, with_update_scale(opt), *per_param, *make_averaging(o))
    observe = nt_asgd_observe if o.average == "nt_asgd" else (lambda opt_state, loss: opt_state)
    return Optimizer(make_clip(o), chain, schedule, eval_params, observe)
