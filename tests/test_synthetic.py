"""rnnlab.data.synthetic: shapes, structure, baselines and determinism of the long-range tasks."""

import math

import jax
import numpy as np
import optax
import pytest

from rnnlab.data import synthetic


def test_adding_structure_and_baseline():
    xs, ys = synthetic.adding(jax.random.PRNGKey(0), 4000, 50)
    xs, ys = np.asarray(xs), np.asarray(ys)
    assert xs.shape == (4000, 50, 2) and ys.shape == (4000,)
    assert np.all(xs[..., 1].sum(1) == 2), "exactly two marked positions per sequence"
    assert set(np.unique(xs[..., 1])) <= {0.0, 1.0}
    np.testing.assert_allclose(ys, (xs[..., 0] * xs[..., 1]).sum(1), rtol=1e-6)
    # Always predicting 1 (the mean of the target) gives MSE Var(u1 + u2) = 1/6.
    assert abs(np.mean((ys - 1.0) ** 2) - synthetic.ADDING_BASELINE_MSE) < 0.01
    assert abs(synthetic.ADDING_BASELINE_MSE - 0.167) < 1e-3


def test_adding_marks_in_halves():
    """marks="halves" (the LEM/coRNN/IndRNN code): one mark in [0, T/2), one in [T/2, T),
    each uniform there; same baseline. A bad value stops in the task's validation."""
    T = 51  # odd: the halves are [0, 25) and [25, 51)
    xs, ys = map(np.asarray, synthetic.adding(jax.random.PRNGKey(3), 4000, T, marks="halves"))
    marks = xs[..., 1]
    assert np.all(marks.sum(1) == 2)
    assert np.all(marks[:, : T // 2].sum(1) == 1) and np.all(marks[:, T // 2:].sum(1) == 1)
    first, second = np.argmax(marks[:, : T // 2], 1), T // 2 + np.argmax(marks[:, T // 2:], 1)
    assert first.min() == 0 and first.max() == T // 2 - 1
    assert second.min() == T // 2 and second.max() == T - 1
    np.testing.assert_allclose(ys, (xs[..., 0] * marks).sum(1), rtol=1e-6)
    assert abs(np.mean((ys - 1.0) ** 2) - synthetic.ADDING_BASELINE_MSE) < 0.01
    with pytest.raises(ValueError, match="marks"):
        synthetic.adding(jax.random.PRNGKey(3), 2, T, marks="middle")


def test_copy_structure():
    T = 30
    tokens, labels = map(np.asarray, synthetic.copy_memory(jax.random.PRNGKey(1), 64, T))
    assert tokens.shape == labels.shape == (64, T + 20)
    data = tokens[:, :10]
    assert data.min() >= 1 and data.max() <= 8
    assert np.all(tokens[:, 10:T + 9] == synthetic.COPY_BLANK)
    assert np.all(tokens[:, T + 9] == synthetic.COPY_DELIMITER)
    assert np.all(tokens[:, T + 10:] == synthetic.COPY_BLANK)
    assert np.all(labels[:, :T + 10] == synthetic.COPY_BLANK)
    np.testing.assert_array_equal(labels[:, -10:], data)


@pytest.mark.parametrize("T", [10, 100, 200])
def test_copy_baseline_formula(T):
    """The memoryless predictor (blank, then uniform over the 8 symbols) scores 10 ln 8/(T+20)."""
    tokens, labels = synthetic.copy_memory(jax.random.PRNGKey(2), 16, T)
    logits = np.full((16, T + 20, synthetic.COPY_VOCAB), -1e9, np.float32)
    logits[:, :T + 10, synthetic.COPY_BLANK] = 0.0
    logits[:, T + 10:, 1:9] = 0.0
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    assert abs(float(xent.mean()) - synthetic.copy_memory_baseline(T)) < 1e-5
    assert synthetic.copy_memory_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))


def test_temporal_order_structure():
    T = 100
    tokens, labels = map(np.asarray, synthetic.temporal_order(jax.random.PRNGKey(3), 2000, T))
    assert tokens.shape == (2000, T) and labels.shape == (2000,)
    assert np.all(tokens[:, 0] == 4) and np.all(tokens[:, -1] == 5)  # B ... E
    xy = tokens >= 6
    assert np.all(xy.sum(1) == 2)
    pos = np.argwhere(xy)[:, 1].reshape(-1, 2)
    assert np.all((pos[:, 0] >= 10) & (pos[:, 0] < 20))
    assert np.all((pos[:, 1] >= 50) & (pos[:, 1] < 60))
    sym = tokens[xy].reshape(-1, 2) - 6
    np.testing.assert_array_equal(labels, 2 * sym[:, 0] + sym[:, 1])
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / 2000, 0.25, atol=0.04)


@pytest.mark.parametrize("name", sorted(synthetic.GENERATORS))
def test_deterministic_given_key(name):
    gen = synthetic.GENERATORS[name]
    a = gen(jax.random.PRNGKey(7), 8, 40)
    b = gen(jax.random.PRNGKey(7), 8, 40)
    c = gen(jax.random.PRNGKey(8), 8, 40)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_bad_length_is_a_clear_error():
    with pytest.raises(ValueError, match="length must be"):
        synthetic.temporal_order(jax.random.PRNGKey(0), 2, 5)
