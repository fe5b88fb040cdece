"""rnnlab.tasks.lm_eval against hand-written references on a tiny two-layer LSTM LM: the static
stream pass and the neural cache against a token-by-token Python loop with the full mixture
distribution in numpy; the RMS gradient statistics and dynamic evaluation against a Python loop
over windows/segments with the update written out in numpy (Krause et al.'s formula)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.data.lm import LMStream
from rnnlab.models.lm import LanguageModel
from rnnlab.tasks import lm_eval

V = 13


@pytest.fixture(scope="module")
def tiny():
    cells = (rnnlab.cells.make("lstm", 7), rnnlab.cells.make("lstm", 6))
    model = LanguageModel(vocab_size=V, cells=cells, embed_size=5, embed_init_scale=0.5)
    params = model.init(jax.random.key(1), jnp.zeros((1, 3), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, 43).astype(np.int32)
    ids[20:30] = ids[5:15]  # a repeat, so the cache has something to find
    return model, params, ids


@pytest.fixture(scope="module")
def reference_pass(tiny):
    return _token_by_token(*tiny)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, tokens, carry):
    out = model.apply({"params": params}, tokens, carry, train=False)
    return out.logits, out.hidden, out.carry


def _token_by_token(model, params, ids):
    """Per-step log-softmax [T, V] and last-layer outputs [T, H], one token at a time."""
    carry = model.initial_carry(1)
    logp, hid = [], []
    for t in range(len(ids) - 1):
        logits, h, carry = _apply(model, params, jnp.asarray(ids[t:t + 1])[None], carry)
        logits = np.asarray(logits[0, 0], np.float64)
        logp.append(logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
        hid.append(np.asarray(h[0, 0], np.float64))
    return np.array(logp), np.array(hid)


def _cache_reference(logp, hid, targets, lam, theta, window):
    nll = []
    for t in range(len(targets)):
        p = np.exp(logp[t])
        hist = list(range(max(0, t - window), t))
        if hist:
            s = theta * hid[hist] @ hid[t]
            a = np.exp(s - s.max())
            a /= a.sum()
            p_cache = np.zeros(V)
            for i, w in zip(hist, a):
                p_cache[targets[i]] += w
            p = (1 - lam) * p + lam * p_cache
        nll.append(-np.log(p[targets[t]]))
    return np.array(nll)


def test_stream_pass_matches_token_by_token(tiny, reference_pass):
    model, params, ids = tiny
    logp, hid = reference_pass
    static = lm_eval.stream_pass(model, params, ids, window=8)  # 42 targets: last window padded
    ref_nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(static.nll, ref_nll, rtol=1e-5, atol=1e-5 * ref_nll.max())
    np.testing.assert_allclose(static.hidden, hid, atol=1e-5)


@pytest.mark.parametrize("window,block", [(6, 4), (100, 16), (1, 42)])
def test_cache_matches_reference(tiny, reference_pass, window, block):
    model, params, ids = tiny
    logp, hid = reference_pass
    ref = _cache_reference(logp, hid, ids[1:], 0.3, 0.8, window)
    static = lm_eval.stream_pass(model, params, ids)
    got = lm_eval.cache_nll(static.nll, static.hidden, ids[1:], 0.3, 0.8, window, block)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * ref.max())
    assert np.abs(got - static.nll).max() > 0.05  # the cache did change the scores


def test_cache_lambda_zero_is_static(tiny):
    model, params, ids = tiny
    static = lm_eval.stream_pass(model, params, ids)
    got = lm_eval.cache_nll(static.nll, static.hidden, ids[1:], 0.0, 1.0, 10, 8)
    np.testing.assert_allclose(got, static.nll, rtol=1e-6, atol=1e-6 * static.nll.max())


def test_cache_rejects_bad_values(tiny):
    model, params, ids = tiny
    static = lm_eval.stream_pass(model, params, ids)
    with pytest.raises(ValueError, match=r"lam=1.0 must be in \[0, 1\)"):
        lm_eval.cache_nll(static.nll, static.hidden, ids[1:], 1.0)
    with pytest.raises(ValueError, match="one entry per target"):
        lm_eval.cache_nll(static.nll, static.hidden, ids[2:])


# --- dynamic evaluation ---------------------------------------------------------------------


def _window_loss(model, params, carry, inputs, targets, mask):
    out = model.apply({"params": params}, jnp.asarray(inputs), carry, mask=jnp.asarray(mask),
                      train=False)
    logp = jax.nn.log_softmax(out.logits)
    nll = -jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], -1)[..., 0]
    m = jnp.asarray(mask, jnp.float32)
    return (nll * m).sum() / m.sum(), (nll * m, out.carry)


@functools.lru_cache(maxsize=None)
def _grad(model):  # one jitted function per model: every test reuses its compilations
    return jax.jit(jax.value_and_grad(functools.partial(_window_loss, model), has_aux=True))


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def _ms_reference(model, params, train_ids, batch, bptt, max_batches):
    stream = LMStream(train_ids, batch, bptt)
    grad = _grad(model)
    carry, acc, n = model.initial_carry(batch), None, 0
    for w in list(stream)[:max_batches]:
        (_, (_, carry)), g = grad(params, carry, w.inputs, w.targets, w.mask)
        sq = [x ** 2 for x in _leaves(g)]
        acc = sq if acc is None else [a + s for a, s in zip(acc, sq)]
        n += 1
    return [np.sqrt(a / n) for a in acc]


def _dynamic_reference(model, params, ids, ms, lr, lamb, eps, n, rule="rms"):
    """Krause et al.'s evaluate() loop: per segment, loss, gradient, then
    dW = lamb * decrate * (theta0 - theta) - lr * g / (MS + eps)."""
    treedef = jax.tree_util.tree_structure(params)
    theta0 = _leaves(params)
    theta = [x.copy() for x in theta0]
    if rule == "rms":
        gsum = np.mean([m.mean() for m in ms])
        decrate = [np.minimum(m / gsum, 1 / lamb) if lamb else 0 * m for m in ms]
    grad = _grad(model)
    carry, nll = model.initial_carry(1), []
    for i in range(0, len(ids) - 1, n):
        x, y = ids[i:i + n], ids[i + 1:i + 1 + n]
        x = x[: len(y)]
        p = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(t, jnp.float32) for t in theta])
        ones = np.ones((1, len(y)), bool)
        (_, (seg_nll, carry)), g = grad(p, carry, x[None], y[None], ones)
        nll.extend(np.asarray(seg_nll[0]))
        for k, gk in enumerate(_leaves(g)):
            if rule == "rms":
                theta[k] += lamb * decrate[k] * (theta0[k] - theta[k]) - lr * gk / (ms[k] + eps)
            else:
                theta[k] += lamb * (theta0[k] - theta[k]) - lr * gk
    return np.array(nll), theta


@pytest.fixture(scope="module")
def train_ids():
    return np.random.default_rng(1).integers(0, V, 150).astype(np.int32)


@pytest.fixture(scope="module")
def ms(tiny, train_ids):
    model, params, _ = tiny
    return lm_eval.gradient_rms(model, params, train_ids, batch_size=4, bptt=5, max_batches=0)


def test_gradient_rms_matches_reference(tiny, train_ids, ms):
    model, params, _ = tiny
    n_all = len(LMStream(train_ids, 4, 5))  # 8 windows, the last one shorter
    ref = _ms_reference(model, params, train_ids, 4, 5, n_all)
    for got, want in zip(_leaves(ms), ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


@pytest.mark.parametrize("rule,lr,lamb,segment", [("rms", 3e-3, 0.05, 5), ("sgd", 0.5, 0.1, 5)])
def test_dynamic_eval_matches_reference(tiny, ms, rule, lr, lamb, segment):
    model, params, ids = tiny
    eps = 1e-3
    got, adapted = lm_eval.dynamic_eval(model, params, ids, ms, rule, lr, lamb, eps, segment,
                                        chunk=4)  # several chunks, the last one padded
    ref, theta = _dynamic_reference(model, params, ids, _leaves(ms), lr, lamb, eps, segment,
                                    rule)
    assert got.shape == (len(ids) - 1,)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.max())
    for a, b in zip(_leaves(adapted), theta):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    static = lm_eval.stream_pass(model, params, ids)
    assert np.abs(got - static.nll).max() > 1e-2  # adaptation did change the scores


def test_dynamic_eval_without_steps_is_static(tiny, ms):
    model, params, ids = tiny
    before = _leaves(params)
    got, adapted = lm_eval.dynamic_eval(model, params, ids, ms, lr=0.0, decay=0.0, segment=5,
                                        chunk=4)
    static = lm_eval.stream_pass(model, params, ids)
    np.testing.assert_allclose(got, static.nll, rtol=1e-5, atol=1e-5 * static.nll.max())
    for a, b, c in zip(_leaves(adapted), before, _leaves(params)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)  # the trained weights are left as they were


def test_update_coefficients_clip_decay_rate(tiny):
    _, params, _ = tiny
    ones = jax.tree_util.tree_leaves(jax.tree_util.tree_map(jnp.ones_like, params))
    big = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                       [ones[0] * 1e4] + ones[1:])
    step, pull = lm_eval.update_coefficients(params, big, "rms", 1e-3, 0.5, 1e-2)
    pulls = _leaves(pull)
    assert pulls[0].max() == pytest.approx(1.0)  # decay * decrate clipped at decay / decay
    assert np.all(pulls[1] < 1.0)
    assert _leaves(step)[1].max() == pytest.approx(1e-3 / (1 + 1e-2))
    with pytest.raises(ValueError, match="needs the RMS gradients"):
        lm_eval.update_coefficients(params, None, "rms")
    with pytest.raises(ValueError, match="rule 'adam' is not valid"):
        lm_eval.update_coefficients(params, None, "adam")
