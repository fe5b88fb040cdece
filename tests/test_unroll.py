"""Tests for rnnlab.unroll: scan vs a Python loop, masks, reverse, bidirectional, stacks,
gradients vs finite differences, jit/vmap/remat, bfloat16, errors, and the Flax `Recurrent`
module that wraps `unroll`."""

from __future__ import annotations

import re

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (BATCH, HIDDEN, INPUT, TIME, build_cell, cut, jit_unroll, python_loop,
                      tree_allclose)
from jax.test_util import check_grads

import rnnlab
from rnnlab.cells import LSTMCarry, Stack

# --- scan == Python loop -------------------------------------------------------------------


@pytest.mark.each_once("cell_name")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("unroll", [1, 4])
def test_unroll_equals_python_loop(cell, params, xs, unroll, reverse):
    want_carry, want_ys = python_loop(cell, params, xs, reverse=reverse)
    carry, ys = rnnlab.unroll(cell, params, xs, unroll=unroll, reverse=reverse)
    assert ys.shape == (BATCH, TIME, cell.output_size)
    tree_allclose(ys, want_ys)
    tree_allclose(carry, want_carry)


def test_unroll_from_a_given_carry(cell, params, xs):
    start, _ = python_loop(cell, params, xs[:, ::-1] * 0.5)  # some non-zero state
    assert any(np.abs(np.asarray(leaf)).max() > 1e-3 for leaf in jax.tree_util.tree_leaves(start))
    tree_allclose(jit_unroll(cell, params, xs, carry=start),
                  python_loop(cell, params, xs, carry=start))


@pytest.mark.parametrize("name", ["lstm", "jordan", "stack[gru,lstm]"])
def test_chained_unrolls_equal_one_unroll(name, xs):
    """Truncated BPTT: two windows with the carry passed across equal one run."""
    cell = build_cell(name)
    params = cell.init(jax.random.key(0), INPUT)
    c_full, ys_full = jit_unroll(cell, params, xs)
    c1, ys1 = jit_unroll(cell, params, xs[:, :3])
    c2, ys2 = jit_unroll(cell, params, xs[:, 3:], carry=c1)
    tree_allclose(jnp.concatenate([ys1, ys2], axis=1), ys_full)
    tree_allclose(c2, c_full)


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.each_once("cell_name")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_masked_equals_cut_sequences(cell, params, xs, mask, lengths, reverse):
    """Padding at the end: the final carry and real outputs equal a plain loop over each
    sequence cut to its length (read backwards with reverse=True); padded outputs are zero."""
    carry, ys = jit_unroll(cell, params, xs, mask=mask, reverse=reverse)
    for b, n in enumerate(lengths):
        c_cut, y_cut = python_loop(cell, params, cut(xs[b:b + 1], n), reverse=reverse)
        tree_allclose(jax.tree_util.tree_map(lambda a, b=b: a[b:b + 1], carry), c_cut)
        tree_allclose(ys[b:b + 1, :n], y_cut)
        np.testing.assert_array_equal(np.asarray(ys[b, n:]), 0.0)


def test_all_true_and_integer_masks():
    cell = rnnlab.cells.make("lstm", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    full = jnp.ones(xs.shape[:-1], bool)
    tree_allclose(rnnlab.unroll(cell, p, xs, mask=full), rnnlab.unroll(cell, p, xs))
    m = jnp.arange(TIME)[None] < jnp.array([[7], [4], [1]])
    tree_allclose(rnnlab.unroll(cell, p, xs, mask=m.astype(jnp.int32)),
                  rnnlab.unroll(cell, p, xs, mask=m))


def test_mask_in_the_middle_skips_steps():
    """A False step in the middle leaves the carry unchanged: same as deleting that step."""
    cell = rnnlab.cells.make("lstm", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    xs = jax.random.normal(jax.random.key(1), (1, TIME, INPUT))
    m = jnp.ones((1, TIME), bool).at[0, 2].set(False)
    c, ys = rnnlab.unroll(cell, p, xs, mask=m)
    c_del, ys_del = rnnlab.unroll(cell, p, jnp.delete(xs, 2, axis=1))
    tree_allclose(c, c_del)
    tree_allclose(jnp.delete(ys, 2, axis=1), ys_del)
    np.testing.assert_array_equal(np.asarray(ys[0, 2]), 0.0)


# --- bidirectional -------------------------------------------------------------------------

BIDI_CELLS = ["lstm", "gru", "rnn_relu", "jordan", "stack[gru,lstm]", "lstm[proj]"]


@pytest.mark.parametrize("name", BIDI_CELLS)
def test_bidirectional_equals_two_manual_runs(name, xs):
    cell = build_cell(name)
    p_fw, p_bw = cell.init(jax.random.key(0), INPUT), cell.init(jax.random.key(1), INPUT)
    (c_fw, c_bw), ys = rnnlab.bidirectional(cell, (p_fw, p_bw), xs)
    want_c_fw, want_fw = python_loop(cell, p_fw, xs)
    want_c_bw, want_bw = python_loop(cell, p_bw, xs, reverse=True)
    assert ys.shape == (BATCH, TIME, 2 * cell.output_size)
    tree_allclose(ys, jnp.concatenate([want_fw, want_bw], -1))
    tree_allclose(c_fw, want_c_fw)
    tree_allclose(c_bw, want_c_bw)

    _, summed = rnnlab.bidirectional(cell, (p_fw, p_bw), xs, merge="sum")
    tree_allclose(summed, want_fw + want_bw)
    _, (y_fw, y_bw) = rnnlab.bidirectional(cell, (p_fw, p_bw), xs, merge="none")
    tree_allclose(y_fw, want_fw)
    tree_allclose(y_bw, want_bw)


@pytest.mark.parametrize("name", BIDI_CELLS)
def test_bidirectional_masked_equals_cut_runs(name, xs, mask, lengths):
    cell = build_cell(name)
    p_fw, p_bw = cell.init(jax.random.key(0), INPUT), cell.init(jax.random.key(1), INPUT)
    (c_fw, c_bw), ys = rnnlab.bidirectional(cell, (p_fw, p_bw), xs, mask=mask)
    out = cell.output_size
    for b, n in enumerate(lengths):
        xb = cut(xs[b:b + 1], n)
        wc_fw, w_fw = python_loop(cell, p_fw, xb)
        wc_bw, w_bw = python_loop(cell, p_bw, xb, reverse=True)
        tree_allclose(ys[b:b + 1, :n, :out], w_fw)
        tree_allclose(ys[b:b + 1, :n, out:], w_bw)
        np.testing.assert_array_equal(np.asarray(ys[b, n:]), 0.0)
        tree_allclose(jax.tree_util.tree_map(lambda a, b=b: a[b:b + 1], c_fw), wc_fw)
        tree_allclose(jax.tree_util.tree_map(lambda a, b=b: a[b:b + 1], c_bw), wc_bw)


def test_bidirectional_backward_cell_and_carry(xs):
    fw, bw = rnnlab.cells.make("gru", HIDDEN), rnnlab.cells.make("lstm", 4)
    p_fw, p_bw = fw.init(jax.random.key(0), INPUT), bw.init(jax.random.key(1), INPUT)
    c0_bw = LSTMCarry(jnp.full((BATCH, 4), 0.3), jnp.full((BATCH, 4), -0.2))
    c0_fw = jnp.full((BATCH, HIDDEN), 0.1)
    (c_fw, c_bw), ys = rnnlab.bidirectional(fw, (p_fw, p_bw), xs, carry=(c0_fw, c0_bw),
                                            backward_cell=bw)
    assert ys.shape == (BATCH, TIME, HIDDEN + 4)
    want_fw = python_loop(fw, p_fw, xs, carry=c0_fw)
    want_bw = python_loop(bw, p_bw, xs, carry=c0_bw, reverse=True)
    tree_allclose((c_fw, ys[..., :HIDDEN]), want_fw)
    tree_allclose((c_bw, ys[..., HIDDEN:]), want_bw)


def test_bidirectional_errors(xs):
    cell = rnnlab.cells.make("gru", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    with pytest.raises(ValueError, match=r"unknown merge 'mean'.*'concat'"):
        rnnlab.bidirectional(cell, (p, p), xs, merge="mean")
    with pytest.raises(ValueError, match=r"params = \(forward_params, backward_params\)"):
        rnnlab.bidirectional(cell, p, xs)


# --- stacks --------------------------------------------------------------------------------


def test_stack_equals_layer_by_layer_unrolls(xs):
    l1, l2 = rnnlab.cells.make("lstm", HIDDEN), rnnlab.cells.make("gru", HIDDEN)
    p1, p2 = l1.init(jax.random.key(0), INPUT), l2.init(jax.random.key(1), HIDDEN)
    c1, y1 = rnnlab.unroll(l1, p1, xs)
    c2, y2 = rnnlab.unroll(l2, p2, y1)
    tree_allclose(rnnlab.unroll(Stack((l1, l2)), (p1, p2), xs), ((c1, c2), y2))
    # With residual connections, the second layer's output gets its input added; the first
    # layer's input width (INPUT != HIDDEN) is exempt.
    tree_allclose(rnnlab.unroll(Stack((l1, l2), residual=True), (p1, p2), xs),
                  ((c1, c2), y2 + y1))
    assert Stack((l1, l2)).init(jax.random.key(2), INPUT)[1]["w_ih"].shape == (HIDDEN, 3 * HIDDEN)


def test_stack_with_projection_layers_feeds_the_projected_width(xs, mask):
    """An LSTMP layer's output [proj_size] is the next layer's input; a residual connection
    applies only where widths agree (proj -> proj of the same P)."""
    l1 = rnnlab.cells.make("lstm", HIDDEN, proj_size=3)
    l2, l3 = rnnlab.cells.make("gru", 3), rnnlab.cells.make("lstm", HIDDEN, proj_size=3)
    stack = Stack((l1, l2, l3), residual=True)
    params = stack.init(jax.random.key(3), INPUT)
    assert params[1]["w_ih"].shape == (3, 9) and params[2]["w_ih"].shape == (3, 4 * HIDDEN)
    c1, y1 = rnnlab.unroll(l1, params[0], xs, mask=mask)
    c2, y2 = rnnlab.unroll(l2, params[1], y1, mask=mask)
    c3, y3 = rnnlab.unroll(l3, params[2], y1 + y2, mask=mask)
    tree_allclose(rnnlab.unroll(stack, params, xs, mask=mask), ((c1, c2, c3), y3 + y1 + y2))


def test_residual_stack_masked_outputs_are_zero(xs, mask, lengths):
    stack = Stack((rnnlab.cells.make("gru", INPUT), rnnlab.cells.make("gru", INPUT)),
                  residual=True)  # residual applies to both layers
    p = stack.init(jax.random.key(0), INPUT)
    _, ys = rnnlab.unroll(stack, p, xs, mask=mask)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(np.asarray(ys[b, n:]), 0.0)
        tree_allclose(ys[b:b + 1, :n], python_loop(stack, p, cut(xs[b:b + 1], n))[1])


# --- gradients vs finite differences (float64 only inside these tests) ---------------------

GRAD_CASES = [  # (cell, masked, reverse)
    ("jordan", False, True), ("lstm", True, False), ("lstm[peepholes,layer_norm]", True, False),
    ("gru", True, True), ("gru_cho", False, False), ("stack[elman,gru,residual]", True, False),
    ("lstm[proj]", True, True),
]


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _grad_problem(name, masked, reverse):
    """A float64 loss over (params, xs) touching every output and the final carry."""
    cell = build_cell(name, 4)
    params = _f64(cell.init(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool) if masked else None
    w_out = jax.random.normal(jax.random.key(2), (2, 5, cell.output_size), jnp.float64)

    def loss(p, xs):
        carry, ys = rnnlab.unroll(cell, p, xs, mask=mask, reverse=reverse)
        final = sum(jnp.sum(jnp.tanh(c)) for c in jax.tree_util.tree_leaves(carry))
        return jnp.sum(ys * w_out) + final

    return loss, params, xs


@pytest.mark.parametrize("name,masked,reverse", GRAD_CASES,
                         ids=[f"{n}-{'masked' if m else 'full'}{'-rev' if r else ''}"
                              for n, m, r in GRAD_CASES])
def test_gradients_match_finite_differences(name, masked, reverse):
    with jax.enable_x64(True):
        loss, params, xs = _grad_problem(name, masked, reverse)
        assert loss(params, xs).dtype == jnp.float64
        check_grads(jax.jit(loss), (params, xs), order=1, modes=("rev",), eps=1e-6,
                    atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_forward_mode_autodiff_through_unroll(name):
    """jax.jvp / jacfwd through unroll (forward-mode Jacobians for gradient studies)."""
    with jax.enable_x64(True):
        loss, params, xs = _grad_problem(name, True, False)
        check_grads(jax.jit(loss), (params, xs), order=1, modes=("fwd",), eps=1e-6,
                    atol=1e-6, rtol=1e-6)


def test_gradient_elementwise_central_differences():
    """Every entry of dL/dW_hh (masked, reverse GRU) against its own central difference."""
    with jax.enable_x64(True):
        cell = rnnlab.cells.make("gru", 3)
        params = _f64(cell.init(jax.random.key(0), 2))
        xs = jax.random.normal(jax.random.key(1), (2, 6, 2), jnp.float64)
        mask = jnp.array([[1] * 6, [1, 1, 1, 1, 0, 0]], bool)

        def loss(w_hh):
            p = {**params, "w_hh": w_hh}
            carry, ys = rnnlab.unroll(cell, p, xs, mask=mask, reverse=True)
            return jnp.sum(ys ** 2) + jnp.sum(carry)

        grad = np.asarray(jax.jit(jax.grad(loss))(params["w_hh"]))
        w = np.asarray(params["w_hh"])
        eps = 1e-6
        fd = np.zeros_like(w)
        loss_j = jax.jit(loss)
        for idx in np.ndindex(w.shape):
            d = np.zeros_like(w)
            d[idx] = eps
            fd[idx] = (float(loss_j(w + d)) - float(loss_j(w - d))) / (2 * eps)
        np.testing.assert_allclose(grad, fd, atol=1e-7, rtol=1e-6)
        assert np.abs(grad).max() > 1e-3


@pytest.mark.slow
def test_esn_input_gradients_match_finite_differences():
    with jax.enable_x64(True):
        cell = rnnlab.cells.make("esn", 4, sparsity=0.5, leak_rate=0.5)
        params = _f64(cell.init(jax.random.key(0), 3))
        xs = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
        check_grads(jax.jit(lambda x: jnp.sum(rnnlab.unroll(cell, params, x)[1] ** 2)), (xs,),
                    order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


def test_x64_does_not_leak():
    assert jnp.zeros(()).dtype == jnp.float32
    cell = rnnlab.cells.make("lstm", 4)
    xs = jax.random.normal(jax.random.key(0), (1, 2, INPUT))
    assert rnnlab.unroll(cell, cell.init(jax.random.key(0), INPUT), xs)[1].dtype == jnp.float32


# --- jit, grad, vmap, dtypes ---------------------------------------------------------------


def test_grad_under_jit(cell, params, xs, mask):
    def loss(p, x):
        return jnp.mean(jnp.sin(rnnlab.unroll(cell, p, x, mask=mask)[1]))

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(np.asarray(leaf)))
    g_x = np.asarray(g[1])
    assert np.abs(g_x).max() > 0
    np.testing.assert_array_equal(g_x[~np.asarray(mask)], 0.0)  # padded inputs are ignored


@pytest.mark.parametrize("name", ["lstm", "gru_cho", "stack[gru,lstm]"])
def test_remat_gives_same_values_and_gradients(name, xs, mask):
    cell = build_cell(name)
    params = cell.init(jax.random.key(0), INPUT)

    def loss(p, remat):
        return jnp.mean(jnp.sin(rnnlab.unroll(cell, p, xs, mask=mask, remat=remat)[1]))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    tree_allclose(grad(params, True), grad(params, False), atol=1e-6)
    tree_allclose(jit_unroll(cell, params, xs, remat=True), jit_unroll(cell, params, xs))


def test_vmap_over_batch_axis_equals_batched_call(cell, params, xs, mask):
    """Each vmapped call sees one unbatched [time, features] sequence."""
    got = jax.jit(jax.vmap(lambda x, m: rnnlab.unroll(cell, params, x, mask=m)))(xs, mask)
    tree_allclose(got, jit_unroll(cell, params, xs, mask=mask))


@pytest.mark.parametrize("name", ["lstm", "jordan", "stack[elman,gru,residual]"])
def test_vmap_over_extra_axis_equals_batched_call(name, xs, mask):
    cell = build_cell(name)
    params = cell.init(jax.random.key(0), INPUT)
    xs2 = jnp.stack([xs, -xs, 0.5 * xs])  # [3, batch, time, in]
    m2 = jnp.stack([mask, mask[::-1], jnp.ones_like(mask)])
    got = jax.jit(jax.vmap(lambda x, m: rnnlab.unroll(cell, params, x, mask=m)))(xs2, m2)
    want = jit_unroll(cell, params, xs2, mask=m2)  # two leading batch axes
    tree_allclose(got, want)
    flat = jit_unroll(cell, params, xs2.reshape(3 * BATCH, TIME, INPUT),
                      mask=m2.reshape(3 * BATCH, TIME))
    tree_allclose(jax.tree_util.tree_map(lambda a: a.reshape(3 * BATCH, *a.shape[2:]), want),
                  flat)


@pytest.mark.parametrize("name", ["lstm", "stack[elman,gru,residual]"])
def test_vmap_over_params_ensemble(name, xs):
    cell = build_cell(name)
    keys = jax.random.split(jax.random.key(7), 2)
    ens = jax.vmap(lambda k: cell.init(k, INPUT))(keys)
    got = jax.jit(jax.vmap(lambda p: rnnlab.unroll(cell, p, xs)))(ens)
    for i in range(2):
        want = jit_unroll(cell, cell.init(keys[i], INPUT), xs)
        tree_allclose(jax.tree_util.tree_map(lambda a, i=i: a[i], got), want)


def test_per_step_hidden_state_jacobian(xs):
    """The gradient-study use: d h_T / d x_t via jax.jacrev through unroll."""
    cell = rnnlab.cells.make("rnn_tanh", 4)
    p = cell.init(jax.random.key(0), INPUT)
    jac = jax.jacrev(lambda x: rnnlab.unroll(cell, p, x)[0])(xs[0])  # [hidden, time, in]
    assert jac.shape == (4, TIME, INPUT)
    # The last input enters h_T only through the last step.
    h_prev = rnnlab.unroll(cell, p, xs[0, :-1])[0]
    direct = jax.jacrev(lambda x: cell(p, h_prev, x)[1])(xs[0, -1])
    np.testing.assert_allclose(np.asarray(jac[:, -1]), np.asarray(direct), atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bfloat16_close_to_float32(name, xs, mask):
    cell = build_cell(name)
    params = cell.init(jax.random.key(0), INPUT)
    c32, y32 = jit_unroll(cell, params, xs, mask=mask)

    # bfloat16 inputs, float32 params.
    c, y = jit_unroll(cell, params, xs.astype(jnp.bfloat16), mask=mask)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y32), atol=3e-2)

    # Everything in bfloat16.
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    c, y = rnnlab.unroll(cell, p16, xs.astype(jnp.bfloat16), mask=mask)
    assert y.dtype == jnp.bfloat16
    for leaf in jax.tree_util.tree_leaves(c):
        assert leaf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y32), atol=6e-2)
    tree_allclose(jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), c), c32, atol=6e-2,
                  rtol=6e-2)
    g = jax.jit(jax.grad(lambda p: jnp.sum(rnnlab.unroll(cell, p, xs.astype(jnp.bfloat16))[1]
                                           .astype(jnp.float32))))(p16)
    for leaf in jax.tree_util.tree_leaves(g):
        assert leaf.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(leaf, np.float32)))


# --- clear errors --------------------------------------------------------------------------


def test_wrong_input_feature_size(cell, params):
    bad = jnp.zeros((BATCH, TIME, INPUT + 1))
    with pytest.raises(ValueError, match=rf"input feature size {INPUT + 1}.*input_size {INPUT}"):
        rnnlab.unroll(cell, params, bad)


def test_wrong_mask_shape(xs):
    cell = rnnlab.cells.make("gru", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    for m in (jnp.ones((BATCH, TIME + 1), bool), jnp.ones((BATCH,), bool),
              jnp.ones((BATCH, TIME, 1), bool)):
        want = re.escape(f"mask shape {tuple(m.shape)} must equal the inputs' [batch..., time] "
                         f"shape {(BATCH, TIME)}")
        with pytest.raises(ValueError, match=want):
            rnnlab.unroll(cell, p, xs, mask=m)


@pytest.mark.parametrize("name,bad_carry", [
    ("gru", lambda: jnp.zeros((BATCH, HIDDEN + 1))),
    ("gru", lambda: jnp.zeros((BATCH + 1, HIDDEN))),
    ("lstm", lambda: jnp.zeros((BATCH, HIDDEN))),  # a bare array where (h, c) is expected
    ("lstm", lambda: LSTMCarry(jnp.zeros((BATCH, HIDDEN)), jnp.zeros((BATCH, 2)))),
    ("stack[gru,lstm]", lambda: (jnp.zeros((BATCH, HIDDEN)),)),
])
def test_wrong_carry_shape(name, bad_carry, xs):
    cell = build_cell(name)
    p = cell.init(jax.random.key(0), INPUT)
    with pytest.raises(ValueError, match=r"carry does not match.*batch shape \(3,\)"):
        rnnlab.unroll(cell, p, xs, carry=bad_carry())


def test_not_a_cell_and_bad_rank(xs):
    with pytest.raises(ValueError, match="unroll needs a cell"):
        rnnlab.unroll("lstm", {}, xs)
    cell = rnnlab.cells.make("gru", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    with pytest.raises(ValueError, match=r"inputs must be \[batch..., time, features\]"):
        rnnlab.unroll(cell, p, jnp.zeros((INPUT,)))


def test_stack_params_count():
    stack = build_cell("stack[gru,lstm]")
    p = stack.init(jax.random.key(0), INPUT)
    with pytest.raises(ValueError, match="Stack of 2 layers got params for 1"):
        rnnlab.unroll(stack, p[:1], jnp.zeros((1, 2, INPUT)))


# --- the Flax module wrapping unroll -------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "stack[elman,gru,residual]"])
def test_flax_recurrent_equals_unroll(name, xs, mask):
    from rnnlab.models.recurrent import Recurrent

    cell = build_cell(name)
    model = Recurrent(cell=cell, reverse=True, unroll=2)
    variables = model.init(jax.random.key(0), xs)
    params = variables["params"]["cell"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        cell.init(jax.random.key(0), INPUT))
    got = model.apply(variables, xs, mask=mask)
    tree_allclose(got, jit_unroll(cell, params, xs, mask=mask, reverse=True, unroll=2))
    # Gradients reach the params collection.
    g = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, xs)[1])))(variables)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(variables)


# --- lengths, chunked remat, unroll="auto", mixed precision --------------------------------


@pytest.mark.parametrize("name", ["lstm", pytest.param("stack[elman,gru,residual]",
                                                        marks=pytest.mark.slow)])
def test_lengths_equal_the_padding_mask(name, xs, mask, lengths):
    cell = build_cell(name)
    p = cell.init(jax.random.key(0), INPUT)
    lens = jnp.asarray(lengths)
    for reverse in (False, True):
        tree_allclose(jit_unroll(cell, p, xs, lengths=lens, reverse=reverse),
                      jit_unroll(cell, p, xs, mask=mask, reverse=reverse))
    with pytest.raises(ValueError, match="either mask= or lengths=, not both"):
        rnnlab.unroll(cell, p, xs, mask=mask, lengths=lens)
    with pytest.raises(ValueError, match=r"lengths shape \(3, 1\) must equal the inputs' batch"):
        rnnlab.unroll(cell, p, xs, lengths=lens[:, None])


@pytest.mark.parametrize("remat,reverse", [pytest.param(3, False, marks=pytest.mark.slow),
                                           (2, True),
                                           pytest.param(True, True, marks=pytest.mark.slow)])
def test_chunked_remat_equals_no_remat(remat, reverse, xs, mask):
    """Chunks of k steps plus a shorter tail (7 = 2 x 3 + 1, 3 x 2 + 1), in either direction."""
    cell = rnnlab.cells.make("lstm", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)

    def loss(p, x, remat):
        carry, ys = rnnlab.unroll(cell, p, x, mask=mask, reverse=reverse, remat=remat)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry.c ** 2), (carry, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
    tree_allclose(grad(p, xs, remat), grad(p, xs, False), atol=1e-6)


def test_chunked_remat_halves_memory():
    """XLA's temp buffers for the gradient of a 256-step LSTM: chunks of ~16 steps need at
    most half of no remat (measured: 13%; checkpointing every step keeps ~60%)."""
    from rnnlab.unroll import remat_chunk

    cell = rnnlab.cells.make("lstm", 32)
    p = cell.init(jax.random.key(0), 16)
    xs = jnp.zeros((8, 256, 16))

    def temp_bytes(remat):
        loss = lambda p, x: jnp.sum(rnnlab.unroll(cell, p, x, remat=remat)[1] ** 2)  # noqa
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(p, xs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert remat_chunk(256) == 16
    none, chunked = temp_bytes(False), temp_bytes(True)
    assert chunked <= 0.5 * none, (none, chunked)


def test_auto_unroll_choice_and_results(xs):
    from rnnlab.unroll import auto_unroll

    # the measured CPU table: batch 1, or large hidden with batch > 16 -> 2; else 1
    assert auto_unroll(1, 64, 35, "cpu") == auto_unroll(20, 650, 35, "cpu") == 2
    assert auto_unroll(32, 256, 35, "cpu") == auto_unroll(8, 650, 35, "cpu") == 1
    assert auto_unroll(1, 650, 1, "cpu") == 1  # never more than the sequence
    assert auto_unroll(1, 650, 35, "tpu") == 1  # unmeasured backends: 1
    cell = rnnlab.cells.make("gru", HIDDEN)
    p = cell.init(jax.random.key(0), INPUT)
    for auto in ("auto", 0):  # batch 1: unrolled by 2 on CPU
        tree_allclose(jit_unroll(cell, p, xs[:1], unroll=auto), jit_unroll(cell, p, xs[:1]))
    with pytest.raises(ValueError, match=r"unroll='fast' must be a positive int, or 'auto'"):
        rnnlab.unroll(cell, p, xs, unroll="fast")
    with pytest.raises(ValueError, match=r"remat=-2 must be False, True"):
        rnnlab.unroll(cell, p, xs, remat=-2)


@pytest.mark.parametrize("name", ["lstm", pytest.param("gru", marks=pytest.mark.slow),
                                  pytest.param("rnn_tanh", marks=pytest.mark.slow)])
def test_bfloat16_compute_policy(name):
    """compute_dtype=bfloat16: matmuls take bfloat16 operands and return float32; carry,
    outputs and gradients stay float32 and close to the float32 run (outputs within 2e-2,
    gradients within 3% of their largest entry), and the parameters are untouched float32."""
    cell = rnnlab.cells.make(name, 32)
    p = cell.init(jax.random.key(0), 16)
    xs = jax.random.normal(jax.random.key(1), (4, 20, 16))

    def loss(p, cd):
        carry, ys = rnnlab.unroll(cell, p, xs, compute_dtype=cd)
        return jnp.sum(jnp.sin(ys)), (carry, ys)

    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    (g16, (c16, y16)), (g32, (_, y32)) = grad(p, jnp.bfloat16), grad(p, None)
    for leaf in jax.tree_util.tree_leaves((g16, c16, y16)):
        assert leaf.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y16), np.asarray(y32), atol=2e-2)
    assert np.abs(np.asarray(y16) - np.asarray(y32)).max() > 1e-5  # bfloat16 was really used
    for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                   atol=3e-2 * float(np.abs(np.asarray(b)).max()))
    # every matmul of the forward pass, inside the loop or not (the LSTM's CPU default path
    # runs its loop inside a custom VJP), takes bfloat16 and returns float32
    dots = _eqns(jax.make_jaxpr(lambda p: loss(p, jnp.bfloat16))(p).jaxpr, "dot_general")
    assert any(e.invars[0].aval.shape[0] == 4 for e in dots)  # the per-step [batch, h] matmul
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    assert all(e.outvars[0].aval.dtype == jnp.float32 for e in dots)


def _eqns(jaxpr, name):
    """The equations of primitive `name` in a jaxpr and all the jaxprs nested in it."""
    found = []
    for e in jaxpr.eqns:
        if e.primitive.name == name:
            found.append(e)
        for sub in jax.extend.core.jaxprs_in_params(e.params):
            found += _eqns(sub, name)
    return found


def test_flax_recurrent_compute_dtype_keeps_float32_params(xs):
    from rnnlab.models.recurrent import Recurrent

    cell = rnnlab.cells.make("lstm", HIDDEN)
    model = Recurrent(cell=cell, compute_dtype=jnp.bfloat16, unroll="auto", remat=True)
    variables = model.init(jax.random.key(0), xs)
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype == jnp.float32
    carry, ys = model.apply(variables, xs)
    assert ys.dtype == carry.h.dtype == carry.c.dtype == jnp.float32
    want = jit_unroll(cell, variables["params"]["cell"], xs)
    tree_allclose((carry, ys), want, atol=2e-2, rtol=0)
