"""rnnlab.train.optim: schedules, clipping and optimisers built from config; iterate averaging
against a numpy running mean of SGD iterates (with per-step update scales); the NT-ASGD trigger
against a plain-Python statement of Merity et al.'s rule on hand-made and random histories."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab.config import base_config
from rnnlab.train.config import CLIPPING, OPTIMIZERS
from rnnlab.train.optim import AverageState, average_info, find_average_state, make_optimizer


def _optim(**kw):
    o = base_config().optim
    o.update(kw)
    return o


def test_step_decay_schedule_zaremba():
    """lr kept for `decay_after_epochs` epochs, then multiplied by the factor every epoch."""
    opt = make_optimizer(_optim(name="sgd", lr=1.0, schedule="step", decay_after_epochs=4,
                                decay_factor=0.5), steps_per_epoch=10, total_steps=100)
    lrs = [float(opt.schedule(s)) for s in (0, 39, 40, 49, 50, 60)]
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]


def test_multistep_schedule_awd_when():
    """lr multiplied by the factor at the start of each milestone epoch (AWD's --when)."""
    opt = make_optimizer(_optim(lr=2e-3, schedule="multistep", milestone_epochs=(3, 5),
                                decay_factor=0.1), steps_per_epoch=10, total_steps=100)
    lrs = [float(opt.schedule(s)) for s in (0, 29, 30, 49, 50, 99)]
    np.testing.assert_allclose(lrs, [2e-3, 2e-3, 2e-4, 2e-4, 2e-5, 2e-5], rtol=1e-6)


def test_warmup_then_cosine():
    opt = make_optimizer(_optim(lr=2.0, schedule="cosine", warmup_steps=10,
                                final_lr_fraction=0.1), steps_per_epoch=1, total_steps=110)
    assert float(opt.schedule(0)) == 0.0
    assert float(opt.schedule(5)) == pytest.approx(1.0)
    assert float(opt.schedule(10)) == pytest.approx(2.0)
    assert float(opt.schedule(110)) == pytest.approx(0.2)


def test_global_norm_clip_bounds_applied_norm():
    opt = make_optimizer(_optim(clip="global_norm", clip_value=0.5), 1, 1)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    for seed in range(5):
        g = jax.tree_util.tree_map(
            lambda p: 10.0 * jax.random.normal(jax.random.PRNGKey(seed), p.shape), params)
        clipped, _ = opt.clip.update(g, opt.clip.init(params), params)
        assert float(optax.tree.norm(clipped)) <= 0.5 * (1 + 1e-5)


def test_value_clip():
    opt = make_optimizer(_optim(clip="value", clip_value=0.1), 1, 1)
    g = {"a": jnp.array([-3.0, 0.05, 2.0])}
    clipped, _ = opt.clip.update(g, opt.clip.init(g), g)
    np.testing.assert_allclose(clipped["a"], [-0.1, 0.05, 0.1])


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("clip", CLIPPING)
def test_every_optimizer_and_clip_builds_and_steps(name, clip):
    opt = make_optimizer(_optim(name=name, clip=clip, momentum=0.9, weight_decay=1e-4), 10, 100)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    g = jax.tree_util.tree_map(jnp.ones_like, params)
    cg, _ = opt.clip.update(g, opt.clip.init(params), params)
    updates, _ = opt.update.update(cg, opt.update.init(params), params)
    new = optax.apply_updates(params, updates)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new))
    assert not np.allclose(new["w"], params["w"])


def test_sgd_weight_decay_is_l2():
    opt = make_optimizer(_optim(name="sgd", lr=0.5, clip="none", weight_decay=0.1), 1, 1)
    params = {"w": jnp.full(3, 2.0)}
    zero = {"w": jnp.zeros(3)}
    updates, _ = opt.update.update(zero, opt.update.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5 * 0.1 * 2.0, rtol=1e-6)


# --- iterate averaging (optim.average) and the per-step update scale ------------------------

def _sgd_iterates(w0, grads, lr, wd, scales):
    """Plain numpy SGD with an L2 term: w_{k+1} = w_k - lr s_k (g_k + wd w_k)."""
    ws = [np.asarray(w0, np.float64)]
    for g, s in zip(grads, scales):
        ws.append(ws[-1] - lr * s * (g + wd * ws[-1]))
    return ws


def test_average_from_step_is_the_mean_of_the_iterates_since_the_start():
    """eval_params after k updates = mean(w_T .. w_k) for k >= T (else w_k), with the update of
    each step scaled by its update_scale after clipping."""
    T, K, lr, wd = 3, 9, 0.3, 0.05
    opt = make_optimizer(_optim(name="sgd", lr=lr, clip="none", weight_decay=wd,
                                average="from_step", average_start=T), 1, K)
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = rng.normal(size=(K, 4, 3)).astype(np.float32)
    scales = rng.uniform(0.5, 1.5, size=K).astype(np.float32)
    ws = _sgd_iterates(w0, grads, lr, wd, scales)
    params = {"w": jnp.asarray(w0)}
    state = opt.update.init(params)
    update = jax.jit(opt.update.update)
    for k in range(K):
        got = np.asarray(opt.eval_params(state, params)["w"])
        want = np.mean(ws[T:k + 1], axis=0) if k >= T else ws[k]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"step {k}")
        updates, state = update({"w": jnp.asarray(grads[k])}, state, params,
                                update_scale=scales[k])
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params["w"], ws[k + 1], rtol=1e-5, atol=1e-6)
    assert average_info(state) == {"average_start": T, "averaged_iterates": K - T + 1}


def _nt_reference(losses, n):
    """Index of the first evaluation at which Merity et al.'s Algorithm 1 triggers, else None:
    t > n and v_t > min(v_0 .. v_{t-n-1})."""
    for t, v in enumerate(losses):
        if t > n and v > min(losses[: t - n]):
            return t
    return None


def _nt_fire_index(losses, n, steps_per_eval=10):
    opt = make_optimizer(_optim(name="sgd", average="nt_asgd", nt_asgd_nonmono=n), 1, 1)
    state = opt.update.init({"w": jnp.zeros(2)})
    observe = jax.jit(opt.observe)
    for t, v in enumerate(losses):  # evaluation t after steps_per_eval * (t + 1) updates
        state = observe(_with_count(state, steps_per_eval * (t + 1)), v)
    start = int(find_average_state(state).start)
    return None if start < 0 else start // steps_per_eval - 1


def _with_count(opt_state, count):
    return jax.tree_util.tree_map(
        lambda s: s._replace(count=jnp.int32(count)) if isinstance(s, AverageState) else s,
        opt_state, is_leaf=lambda x: isinstance(x, AverageState))


@pytest.mark.parametrize("losses, n, fires_at", [
    ([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], 2, None),          # always improving
    ([5.0, 4.0, 3.0, 4.5, 3.9, 2.0, 3.5], 2, 6),        # 4.5, 3.9: not worse than 5 / 4;
    #                                                     3.5 > min(5, 4, 3, 4.5)
    ([5.0, 4.0, 3.0, 4.5, 3.9, 2.0, 3.5], 1, 3),        # n = 1: 4.5 > min(5, 4)
    ([3.0, 3.0, 3.0, 3.0], 1, None),                    # equal is not worse
    ([3.0, 9.0, 9.0, 3.0, 3.5], 2, 4),                  # only 3.0 (t=0) counts at t = 3, 4
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 5, 6),        # fires only once t > n
])
def test_nt_asgd_trigger_on_hand_made_histories(losses, n, fires_at):
    assert _nt_reference(losses, n) == fires_at  # the hand-made expectation is the rule's
    assert _nt_fire_index(losses, n) == fires_at


def test_nt_asgd_trigger_matches_the_rule_on_random_histories():
    rng = np.random.default_rng(1)
    for trial in range(12):
        n = int(rng.integers(1, 4))
        losses = list(np.round(5.0 - 0.3 * np.arange(10) + rng.normal(0, 0.4, 10), 1))
        assert _nt_fire_index(losses, n) == _nt_reference(losses, n), (losses, n)


def test_no_averaging_state_without_average():
    opt = make_optimizer(_optim(name="sgd"), 1, 1)
    params = {"w": jnp.ones(2)}
    state = opt.update.init(params)
    assert find_average_state(state) is None and average_info(state) == {}
    assert opt.eval_params(state, params) is params
    assert opt.observe(state, 1.0) is state
