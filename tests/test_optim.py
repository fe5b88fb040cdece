"""rnnlab.train.optim: schedules, clipping and optimisers built from config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab.train.config import CLIPPING, OPTIMIZERS, base_config
from rnnlab.train.optim import make_optimizer


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
