"""The recurrent language model: shapes, carried state, weight tying, dropout variants,
metrics against independent references, scoring and generation."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.models.lm import (LanguageModel, ar_tar, bits_per_char, generate, masked_mean,
                              masked_sum_count, perplexity, score, token_nll, weight_drop)

V, B, T = 23, 3, 6


@functools.partial(jax.jit, static_argnames=("m", "train"))
def run(m, params, x, carry=None, mask=None, train=False, rng=None):
    """m.apply, jitted (eager Flax on CPU dispatches op by op and is slow)."""
    rngs = None if rng is None else {"dropout": rng}
    return m.apply({"params": params}, x, carry, mask=mask, train=train, rngs=rngs)


def make_model(**kw):
    cells = (rnnlab.cells.make("lstm", 16), rnnlab.cells.make("gru", 12))
    return LanguageModel(vocab_size=V, cells=cells, embed_size=10, **kw)


def tokens(t=T, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, t)), jnp.int32)


@pytest.fixture(scope="module")
def model_params():
    m = make_model(tie_weights=True)
    return m, jax.jit(m.init)(jax.random.key(0), tokens())["params"]


def test_shapes_and_carry(model_params):
    m, params = model_params
    out = run(m, params, tokens())
    assert out.logits.shape == (B, T, V)
    assert out.hidden.shape == out.hidden_dropped.shape == (B, T, 12)
    assert out.carry[0].h.shape == (B, 16) and out.carry[1].shape == (B, 12)
    assert jax.tree_util.tree_structure(out.carry) == jax.tree_util.tree_structure(
        m.initial_carry(B))


def test_carry_threading_equals_concatenated_window(model_params):
    m, params = model_params
    x = tokens(t=10, seed=1)
    full = run(m, params, x)
    a = run(m, params, x[:, :4])
    b = run(m, params, x[:, 4:], a.carry)
    np.testing.assert_allclose(np.concatenate([a.logits, b.logits], 1), full.logits,
                               atol=1e-5, rtol=1e-5)
    for u, v in zip(jax.tree_util.tree_leaves(b.carry), jax.tree_util.tree_leaves(full.carry)):
        np.testing.assert_allclose(u, v, atol=1e-5, rtol=1e-5)


def test_padding_mask_keeps_carry(model_params):
    m, params = model_params
    x = tokens(t=4, seed=2)
    mask = jnp.asarray([[True] * 4, [True, True, False, False], [True] * 4])
    out = run(m, params, x, mask=mask)
    short = run(m, params, x[1:2, :2])
    np.testing.assert_allclose(out.carry[1][1], short.carry[1][0], atol=1e-6)


def test_weight_tying_shares_the_matrix(model_params):
    m, params = model_params
    assert "readout" not in params and "tie_projection" in params  # 12 != 10: projection
    out = run(m, params, tokens())
    proj = out.hidden @ params["tie_projection"]["kernel"]
    np.testing.assert_allclose(out.logits, proj @ params["embedding"].T + params["readout_bias"],
                               atol=1e-5)
    # The gradient of the readout reaches the embedding through the tied matrix.
    same = LanguageModel(vocab_size=V, cells=(rnnlab.cells.make("lstm", 10),), embed_size=10,
                         tie_weights=True)
    p = same.init(jax.random.key(1), tokens())["params"]
    assert set(p) == {"embedding", "readout_bias", "cell_0"}


def test_dropout_deterministic_at_eval_and_random_in_train():
    m = make_model(dropout_embedding=0.2, dropout_input=0.3, dropout_hidden=0.3,
                   dropout_output=0.3, weight_drop=0.5, variational=True)
    x = tokens()
    params = m.init(jax.random.key(0), x)["params"]
    e1 = run(m, params, x, train=False)
    e2 = run(m, params, x, train=False)
    np.testing.assert_array_equal(e1.logits, e2.logits)
    np.testing.assert_array_equal(e1.hidden, e1.hidden_dropped)
    t1 = run(m, params, x, train=True, rng=jax.random.key(1))
    t2 = run(m, params, x, train=True, rng=jax.random.key(2))
    assert not np.allclose(t1.logits, t2.logits)
    # Locked dropout: the output mask is the same at every time step.
    zero = (t1.hidden_dropped == 0) & (t1.hidden != 0)
    assert zero.any() and bool((zero == zero[:, :1]).all())


def test_weight_drop_changes_only_w_hh():
    m = make_model()
    params = m.init(jax.random.key(0), tokens())["params"]
    dropped = weight_drop(params["cell_0"], 0.5, jax.random.key(3))
    for k in params["cell_0"]:
        same = np.array_equal(dropped[k], params["cell_0"][k])
        assert same == (k != "w_hh"), k
    w, d = params["cell_0"]["w_hh"], dropped["w_hh"]
    kept = d != 0
    np.testing.assert_allclose(d[kept], 2 * w[kept], rtol=1e-6)
    assert 0.3 < kept.mean() < 0.7
    # In the model: weight drop alone changes train outputs, not eval outputs.
    wd = make_model(weight_drop=0.5)
    x = tokens()
    e = run(wd, params, x, train=False)
    np.testing.assert_array_equal(e.logits, run(m, params, x).logits)
    t = run(wd, params, x, train=True, rng=jax.random.key(4))
    assert not np.allclose(t.logits, e.logits)


def test_embedding_dropout_drops_whole_words():
    m = LanguageModel(vocab_size=V, cells=(rnnlab.cells.make("elman", 8),), embed_size=8,
                      dropout_embedding=0.5)
    x = jnp.full((1, 5), 7, jnp.int32)  # one word repeated: dropped everywhere or nowhere
    params = m.init(jax.random.key(0), x)["params"]
    emb = params["embedding"]
    dropped = run(m, {**params, "embedding": emb.at[7].set(0.0)}, x).logits
    kept = run(m, {**params, "embedding": emb.at[7].multiply(2.0)}, x).logits
    seen = set()
    for s in range(6):
        out = run(m, params, x, train=True, rng=jax.random.key(s)).logits
        is_dropped = bool(np.allclose(out, dropped, atol=1e-5))
        assert is_dropped or np.allclose(out, kept, atol=1e-5)
        seen.add(is_dropped)
    assert seen == {True, False}


def test_metrics_against_independent_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5))
    mask = rng.random((2, 5)) > 0.3
    ref = []
    for i in range(2):
        for t in range(5):
            if mask[i, t]:
                z = logits[i, t].astype(np.float64)
                ref.append(-(z[targets[i, t]] - math.log(np.exp(z).sum())))
    nll = token_nll(jnp.asarray(logits), jnp.asarray(targets))
    mean = float(masked_mean(nll, jnp.asarray(mask)))
    assert mean == pytest.approx(np.mean(ref), rel=1e-5)
    s, n = masked_sum_count(nll, jnp.asarray(mask))
    assert float(s) == pytest.approx(np.sum(ref), rel=1e-5) and int(n) == len(ref)
    assert float(perplexity(jnp.asarray(mean))) == pytest.approx(math.exp(np.mean(ref)), rel=1e-5)
    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert bits_per_char(1.0) == pytest.approx(1 / math.log(2))


def test_ar_tar():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
    hd = h * 2
    ref_ar = np.mean(np.square(np.asarray(hd)))
    ref_tar = np.mean(np.square(np.diff(np.asarray(h), axis=1)))
    assert float(ar_tar(h, hd, 2.0, 1.0)) == pytest.approx(2 * ref_ar + ref_tar, rel=1e-5)


def test_score_matches_token_nll(model_params):
    m, params = model_params
    ids = tokens(t=8, seed=5)[0]
    res = score(m, params, ids)
    logits = run(m, params, ids[None, :-1]).logits[0]
    z = np.asarray(logits, np.float64)
    lp = sum(z[t, int(ids[t + 1])] - np.log(np.exp(z[t]).sum()) for t in range(7))
    assert float(res["log_prob"]) == pytest.approx(lp, rel=1e-4)
    assert float(res["perplexity"]) == pytest.approx(math.exp(-lp / 7), rel=1e-4)


def test_generation_in_vocab_and_reproducible(model_params):
    m, params = model_params
    prompt = tokens(t=4, seed=6)[0]
    a = generate(m, params, prompt, 12, jax.random.key(7), temperature=0.9, top_k=5)
    b = generate(m, params, prompt, 12, jax.random.key(7), temperature=0.9, top_k=5)
    c = generate(m, params, prompt, 12, jax.random.key(8), temperature=0.9, top_k=5)
    assert a.shape == (12,) and a.dtype == jnp.int32
    assert ((a >= 0) & (a < V)).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Greedy decoding equals repeated argmax with the full-window model.
    g = generate(m, params, prompt, 3, jax.random.key(0), temperature=0.0)
    out = run(m, params, prompt[None])
    seq = [int(jnp.argmax(out.logits[0, -1]))]
    for _ in range(2):
        out = run(m, params, jnp.asarray([[seq[-1]]]), out.carry)
        seq.append(int(jnp.argmax(out.logits[0, -1])))
    np.testing.assert_array_equal(g, seq)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dropout_input"):
        make_model(dropout_input=1.0).init(jax.random.key(0), tokens())
    with pytest.raises(ValueError, match="tokens must be"):
        make_model().init(jax.random.key(0), jnp.zeros((3,), jnp.int32))


def test_projection_lstm_layers_and_document_resets():
    """LSTMP layers (output width P) feed the next layer and the tied readout; `resets`
    restarts every layer at a document start: the logits after it equal a fresh run."""
    cells = (rnnlab.cells.make("lstm", 8, proj_size=3), rnnlab.cells.make("lstm", 8, proj_size=4))
    m = LanguageModel(vocab_size=V, cells=cells, embed_size=10, tie_weights=True)
    x = tokens(8, seed=3)
    params = jax.jit(m.init)(jax.random.key(1), x)["params"]
    assert params["cell_1"]["w_ih"].shape == (3, 32) and "tie_projection" in params
    out = m.apply({"params": params}, x)
    assert out.logits.shape == (B, 8, V) and out.hidden.shape == (B, 8, 4)
    assert [c.h.shape[-1] for c in out.carry] == [3, 4]
    resets = jnp.zeros((B, 8), bool).at[:, 5].set(True)
    carry_in = jax.tree_util.tree_map(lambda a: a + 0.5, m.initial_carry(B))
    got = m.apply({"params": params}, x, carry_in, resets=resets)
    fresh = m.apply({"params": params}, x[:, 5:])
    np.testing.assert_allclose(got.logits[:, 5:], fresh.logits, atol=1e-5)
    before = m.apply({"params": params}, x[:, :5], carry_in)
    np.testing.assert_allclose(got.logits[:, :5], before.logits, atol=1e-5)
    assert not np.allclose(m.apply({"params": params}, x, carry_in).logits[:, 5:],
                           fresh.logits, atol=1e-3)


@pytest.mark.skipif(rnnlab.fused.cpu.unavailable() is not None, reason="no CPU kernel here")
def test_first_lstm_layer_folds_the_lookup_unless_input_dropout_applies(monkeypatch):
    """With 36 tokens per window (> vocab 23) and no input dropout, the first LSTM layer reads
    the embedding through the CPU kernel's token path (the ids are an operand of its forward
    call); logits and every gradient match the model with the rows looked up first. With
    input dropout in training the rows are looked up (and dropped) as before."""
    m = make_model(dropout_input=0.3)
    x = tokens(t=12)
    params = jax.jit(m.init)(jax.random.key(0), x)["params"]

    def loss(p, model, train):
        out = model.apply({"params": p}, x, train=train, rngs={"dropout": jax.random.key(1)})
        return jnp.mean(token_nll(out.logits, jnp.roll(x, -1, axis=1))), out.logits

    def program(model, train):
        return jax.jit(lambda p: loss(p, model, train)[0]).lower(params).as_text()

    token_call = f"tensor<12x{B}xi32>"
    calls = lambda text: [ln for ln in text.splitlines() if "rnnlab_lstm_fwd" in ln]  # noqa: E731
    assert any(token_call in ln for ln in calls(program(m, train=False)))
    assert calls(program(m, train=True)) and not any(
        token_call in ln for ln in calls(program(m, train=True)))
    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=(1, 2))
    g_fold, logits_fold = grad(params, m, False)
    monkeypatch.setattr("rnnlab.models.lm.Embedded", lambda t, i: rnnlab.Embedded(t, i).lookup())
    g_dense, logits_dense = jax.jit(jax.grad(lambda p: loss(p, m, False), has_aux=True))(params)
    for a, b in zip(jax.tree_util.tree_leaves((logits_fold, g_fold)),
                    jax.tree_util.tree_leaves((logits_dense, g_dense))):
        scale = float(jnp.abs(b).max())
        assert float(jnp.abs(a - b).max()) <= 2e-5 * max(scale, 1e-6)
