"""rnnlab.cells.tdnn: the causal convolution against numpy and PyTorch's Conv1d, its carry (the
partial sums of the next outputs) and its errors. The generic cell-contract tests
(tests/test_cells.py, test_unroll.py) cover it too: they parametrise over every registered
cell."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import rnnlab
from rnnlab.config import make_cells

ACT = {"relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh, "identity": lambda v: v}


def numpy_causal_conv(params, xs, window, hidden, activation):
    """y_t = f(b + sum_k x_{t-k} W_k) with zeros before the start: a plain double loop."""
    w = np.asarray(params["w_ih"], np.float64)
    b = np.asarray(params["b"], np.float64)
    xs = np.asarray(xs, np.float64)
    batch, time, _ = xs.shape
    ys = np.zeros((batch, time, hidden))
    for t in range(time):
        z = np.tile(b, (batch, 1))
        for k in range(window):
            if t - k >= 0:
                z = z + xs[:, t - k] @ w[:, k * hidden:(k + 1) * hidden]
        ys[:, t] = ACT[activation](z)
    return ys


@pytest.mark.parametrize("window,activation", [(1, "relu"), (4, "tanh")])
def test_unroll_equals_numpy_causal_convolution(window, activation):
    cell = rnnlab.cells.make("tdnn", 6, window=window, activation=activation)
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (3, 11, 4))
    _, ys = jax.jit(lambda p, x: rnnlab.unroll(cell, p, x))(params, xs)
    np.testing.assert_allclose(np.asarray(ys), numpy_causal_conv(params, xs, window, 6,
                                                                 activation), atol=1e-5)


@pytest.mark.slow  # imports torch (~5 s); the numpy reference above is the default check
def test_matches_torch_conv1d_with_left_padding():
    torch = pytest.importorskip("torch")
    window, hidden, features = 4, 5, 3
    cell = rnnlab.cells.make("tdnn", hidden, window=window, activation="identity")
    params = cell.init(jax.random.key(0), features)
    xs = np.array(jax.random.normal(jax.random.key(1), (2, 9, features)))  # writable copy
    conv = torch.nn.Conv1d(features, hidden, window)
    w = np.asarray(params["w_ih"]).reshape(features, window, hidden)  # [in, k, out]
    with torch.no_grad():  # cross-correlation: kernel tap j multiplies x_{t-(K-1)+j}
        conv.weight.copy_(torch.from_numpy(w[:, ::-1].transpose(2, 0, 1).copy()))
        conv.bias.copy_(torch.from_numpy(np.array(params["b"])))
        padded = torch.nn.functional.pad(torch.from_numpy(xs).transpose(1, 2), (window - 1, 0))
        want = conv(padded).transpose(1, 2).numpy()
    _, ys = rnnlab.unroll(cell, params, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(ys), want, atol=1e-5)


def test_carry_is_the_partial_sums_of_the_next_outputs():
    """After t steps, continuing from the carry with zero inputs gives exactly the outputs the
    last K-1 inputs still owe (here: equal to running the whole zero-padded sequence)."""
    cell = rnnlab.cells.make("tdnn", 3, window=4, activation="identity")
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 2))
    carry, _ = rnnlab.unroll(cell, params, xs)
    assert carry.shape == (2, 3 * 3)
    padded = jnp.concatenate([xs, jnp.zeros((2, 3, 2))], axis=1)
    _, ys_full = rnnlab.unroll(cell, params, padded)
    _, ys_tail = rnnlab.unroll(cell, params, jnp.zeros((2, 3, 2)), carry)
    np.testing.assert_allclose(np.asarray(ys_tail), np.asarray(ys_full[:, 6:]), atol=1e-6)


def test_selectable_wherever_a_cell_is():
    cfg = ml_collections.ConfigDict({"cell": "tdnn", "hidden": 8, "num_layers": 2,
                                     "cell_kwargs": "window=2,activation=tanh"})
    assert make_cells(cfg) == (rnnlab.cells.TDNN(8, window=2, activation="tanh"),) * 2
    assert "tdnn" in rnnlab.cells.names()


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, "window must be a positive integer, got 0"),
    ({"window": 2.5}, "window must be a positive integer, got 2.5"),
    ({"activation": "gelu"}, r"activation 'gelu'.*'identity', 'relu', 'tanh'"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnlab.cells.make("tdnn", 4, **kwargs)
