"""rnnlab.models.sequence: masks, "last"/"mean" pooling and the bidirectional option ignore
padding exactly (a padded sequence gives the output of the sequence alone), checked against
plain `unroll` runs on the cut sequences and a numpy masked mean; the unmasked model is
unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.models.sequence import SequenceModel, last_real_step, mask_from_lengths, pool

LENGTHS = np.array([5, 1, 3])
TIME = 5


def _tokens(seed=0):
    return jax.random.randint(jax.random.key(seed), (len(LENGTHS), TIME), 2, 11)


@pytest.mark.parametrize("readout,bidirectional,layers", [("last", True, 1), ("all", True, 2)])
def test_padded_sequences_give_the_unpadded_output(readout, bidirectional, layers):
    """Garbage in the padding (random tokens) changes nothing at the real steps."""
    cells = tuple(rnnlab.cells.make("gru", 4) for _ in range(layers))
    model = SequenceModel(cells=cells, output_size=3, readout=readout, vocab_size=11,
                          embed_dim=3, bidirectional=bidirectional)
    tokens, mask = _tokens(0), mask_from_lengths(LENGTHS, TIME)
    params = model.init(jax.random.key(0), tokens, mask=mask)["params"]
    apply = jax.jit(lambda t, m: model.apply({"params": params}, t, mask=m)[0])
    padded = np.asarray(apply(tokens, mask))
    other = jnp.where(mask, tokens, _tokens(1))  # different padding tokens
    np.testing.assert_allclose(np.asarray(apply(other, mask)), padded, atol=1e-6)
    for b, n in ((0, 5), (1, 1)):  # a full-length and a length-1 sequence, alone
        alone = np.asarray(apply(tokens[b:b + 1, :n], jnp.ones((1, n), bool)))[0]
        np.testing.assert_allclose(padded[b, :n] if readout == "all" else padded[b], alone,
                                   atol=1e-5)


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_bidirectional_pooling_against_unroll_on_cut_sequences(readout):
    """"last": forward output at the last real step and backward output at the first; "mean":
    the mean over the real steps; both from plain `unroll` calls on each cut sequence."""
    cell = rnnlab.cells.make("gru", 4)
    model = SequenceModel(cells=(cell,), output_size=2, readout=readout, bidirectional=True)
    xs = jax.random.normal(jax.random.key(3), (len(LENGTHS), TIME, 3))
    mask = mask_from_lengths(LENGTHS, TIME)
    params = model.init(jax.random.key(0), xs, mask=mask)["params"]
    assert set(params) == {"rnn_0", "rnn_0_bw", "readout"}
    out, (carry_pair,) = model.apply({"params": params}, xs, mask=mask)
    w, bias = np.asarray(params["readout"]["kernel"]), np.asarray(params["readout"]["bias"])
    for b, n in ((1, 1), (2, 3)):  # padded rows
        c_fw, y_fw = rnnlab.unroll(cell, params["rnn_0"]["cell"], xs[b, :n])
        _, y_bw = rnnlab.unroll(cell, params["rnn_0_bw"]["cell"], xs[b, :n], reverse=True)
        ys = np.concatenate([np.asarray(y_fw), np.asarray(y_bw)], axis=-1)  # [n, 8]
        feats = ys.mean(0) if readout == "mean" else np.concatenate([ys[-1, :4], ys[0, 4:]])
        np.testing.assert_allclose(np.asarray(out[b]), feats @ w + bias, atol=1e-5)
        np.testing.assert_allclose(np.asarray(carry_pair[0][b]), np.asarray(c_fw), atol=1e-5)


def test_pool_helpers():
    ys = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
    mask = jnp.array([[True, True, True, False], [False, True, True, False]])
    np.testing.assert_array_equal(np.asarray(last_real_step(mask)), [2, 2])
    np.testing.assert_allclose(np.asarray(pool(ys, mask, "last")), np.asarray(ys[:, 2]))
    np.testing.assert_allclose(np.asarray(pool(ys, mask, "last", backward_from=1)),
                               [[4.0, 1.0], [12.0, 11.0]])
    np.testing.assert_allclose(np.asarray(pool(ys, mask, "mean")),
                               [[2.0, 3.0], [11.0, 12.0]])
    np.testing.assert_allclose(np.asarray(pool(ys, None, "mean")), np.asarray(ys.mean(1)))
    empty = jnp.zeros((2, 4), bool)
    for how in ("last", "mean"):
        np.testing.assert_array_equal(np.asarray(pool(ys, empty, how)), 0.0)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(ys, mask, "max")


def test_unmasked_unidirectional_model_is_unchanged():
    """Without a mask, "last" is the last step's output and the parameter tree keeps its
    names (checkpoints of the synthetic tasks stay readable)."""
    cell = rnnlab.cells.make("gru", 4)
    model = SequenceModel(cells=(cell,), output_size=2)
    xs = jax.random.normal(jax.random.key(3), (len(LENGTHS), TIME, 3))
    params = model.init(jax.random.key(0), xs)["params"]
    assert set(params) == {"rnn_0", "readout"}
    out, _ = model.apply({"params": params}, xs)
    _, ys = rnnlab.unroll(cell, params["rnn_0"]["cell"], xs)
    want = np.asarray(ys[:, -1]) @ np.asarray(params["readout"]["kernel"])
    np.testing.assert_allclose(np.asarray(out), want + np.asarray(params["readout"]["bias"]),
                               atol=1e-5)


def test_bad_readout_and_mask_shape():
    xs = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match=r"unknown readout 'max'.*'last', 'mean', 'all'"):
        SequenceModel(cells=(rnnlab.cells.make("gru", 4),), output_size=1,
                      readout="max").init(jax.random.key(0), xs)
    model = SequenceModel(cells=(rnnlab.cells.make("gru", 4),), output_size=1)
    with pytest.raises(ValueError, match=r"mask shape \(2, 4\) must be .* \(2, 5\)"):
        model.init(jax.random.key(0), xs, mask=jnp.ones((2, 4), bool))
