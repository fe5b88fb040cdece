"""Tests for `rnnlab.unroll(..., resets=...)`: per-example carry resets inside one unroll
(Haiku's ResetCore). The reference is the definition: separate runs over the segments, each
from the initial carry (a plain Python loop over the cell's steps, or separate unrolls where
masks are involved), forwards and in reverse, for values and gradients; plus jit, vmap, remat,
stacks, bidirectional runs, parallel-scan cells, the Flax modules and the fused-path choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BATCH, INPUT, TIME, build_cell, python_loop, tree_allclose
from jax.test_util import check_grads

import rnnlab
from rnnlab.models.recurrent import Recurrent
from rnnlab.models.sequence import SequenceModel

# segment starts per row: none, one in the middle, the first step and two more, the last step
STARTS = ([], [3], [0, 2, 5])
RESET_CELLS = ["lstm[proj]", "gru", "jordan", "mingru", "lru", "stack[elman,gru,residual]",
               *(pytest.param(n, marks=pytest.mark.slow) for n in ("lstm", "esn", "tdnn"))]


def _resets(starts=STARTS, time=TIME):
    r = np.zeros((len(starts), time), bool)
    for b, s in enumerate(starts):
        r[b, s] = True
    return jnp.asarray(r)


def _segments(starts, time):
    """[(lo, hi), ...] covering 0..time, split before every start."""
    cuts = sorted({0, *starts, time})
    return list(zip(cuts[:-1], cuts[1:]))


def _take(tree, b):
    return jax.tree_util.tree_map(lambda a: a[b:b + 1], tree)


def _start_carry(cell, batch):
    """A non-zero carry, so that a missing or a spurious reset shows."""
    return jax.tree_util.tree_map(lambda z: z + 0.7, cell.initial_carry((batch,)))


def segment_reference(run, cell, xs, carry, starts, reverse=False):
    """Per row: `run(xs_segment, carry_segment)` over the segments in reading order, the first
    read from `carry` (forwards, unless a reset is at step 0), the others from the cell's
    initial carry. Returns (final carry [batch, ...], ys [batch, time, out])."""
    finals, rows = [], []
    for b, s in enumerate(starts):
        segs = _segments(s, xs.shape[1])
        order = segs[::-1] if reverse else segs
        c, ys = _take(carry, b), {}
        for i, (lo, hi) in enumerate(order):
            fresh = i > 0 or (not reverse and 0 in s)
            c, ys[lo] = run(xs[b:b + 1, lo:hi], cell.initial_carry((1,)) if fresh else c)
        finals.append(c)
        rows.append(jnp.concatenate([ys[lo] for lo, _ in segs], axis=1))
    return (jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *finals),
            jnp.concatenate(rows))


def _cell(name):
    cell = build_cell(name)
    return cell, cell.init(jax.random.key(0), INPUT)


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float32)


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name", RESET_CELLS)
def test_resets_equal_separate_runs_of_the_segments(name, reverse, xs):
    cell, params = _cell(name)
    carry = _start_carry(cell, BATCH)
    got = jax.jit(lambda p, x, c, r: rnnlab.unroll(cell, p, x, c, reverse=reverse, resets=r))(
        params, xs, carry, _resets())
    want = segment_reference(
        lambda x, c: python_loop(cell, params, x, carry=c, reverse=reverse), cell, xs, carry,
        STARTS, reverse)
    tree_allclose(got, want)
    # without resets the same call differs: the test can fail
    plain = rnnlab.unroll(cell, params, xs, carry, reverse=reverse)
    assert not np.allclose(np.asarray(plain[1]), np.asarray(got[1]), atol=1e-4)


def test_all_false_resets_change_nothing_and_reset_at_zero_drops_the_carry(xs):
    cell, params = _cell("lstm")
    carry = _start_carry(cell, BATCH)
    none = jnp.zeros((BATCH, TIME), bool)
    tree_allclose(rnnlab.unroll(cell, params, xs, carry, resets=none),
                  rnnlab.unroll(cell, params, xs, carry, fused="scan"), atol=1e-6)
    first = none.at[:, 0].set(True)
    tree_allclose(rnnlab.unroll(cell, params, xs, carry, resets=first),
                  rnnlab.unroll(cell, params, xs, fused="scan"), atol=1e-6)
    # integer resets are read as booleans, as masks are
    tree_allclose(rnnlab.unroll(cell, params, xs, carry, resets=first.astype(jnp.int32)),
                  rnnlab.unroll(cell, params, xs, fused="scan"), atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name", ["lstm",
                                  pytest.param("stack[gru,lstm]", marks=pytest.mark.slow)])
def test_resets_with_a_mask_equal_masked_runs_of_the_segments(name, reverse, xs):
    """Padding at the end plus a hole; a reset on a padded step (row 1, step 5) starts a
    segment of padding only, so the final carry of that row is the initial carry."""
    cell, params = _cell(name)
    carry = _start_carry(cell, BATCH)
    mask = jnp.asarray(np.arange(TIME)[None] < np.array([TIME, 5, 6])[:, None]).at[2, 3].set(
        False)
    starts = ([4], [2, 5], [0, 3])
    got = rnnlab.unroll(cell, params, xs, carry, mask=mask, reverse=reverse,
                        resets=_resets(starts))

    # the reference needs each segment's mask: run it row by row, segment by segment
    finals, rows = [], []
    for b, s in enumerate(starts):
        segs = _segments(s, TIME)
        order = segs[::-1] if reverse else segs
        c, ys = _take(carry, b), {}
        for i, (lo, hi) in enumerate(order):
            if i > 0 or (not reverse and 0 in s):
                c = cell.initial_carry((1,))
            c, ys[lo] = rnnlab.unroll(cell, params, xs[b:b + 1, lo:hi], c,
                                      mask=mask[b:b + 1, lo:hi], reverse=reverse, fused="scan")
        finals.append(c)
        rows.append(jnp.concatenate([ys[lo] for lo, _ in segs], axis=1))
    want = (jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *finals),
            jnp.concatenate(rows))
    tree_allclose(got, want)
    if not reverse:  # row 1's last segment is padding only
        tree_allclose(_take(got[0], 1), cell.initial_carry((1,)))
    # lengths= is the same padding as the mask
    lengths = jnp.array([TIME, 5, 6])
    got_len = rnnlab.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse,
                            resets=_resets(starts))
    got_mask = rnnlab.unroll(cell, params, xs, carry, reverse=reverse, resets=_resets(starts),
                             mask=jnp.arange(TIME)[None] < lengths[:, None])
    tree_allclose(got_len, got_mask, atol=1e-6)


def test_bidirectional_resets_equal_bidirectional_runs_of_the_segments(xs):
    cell, _ = _cell("lstm[proj]")
    params = (cell.init(jax.random.key(2), INPUT), cell.init(jax.random.key(3), INPUT))
    (c_fw, c_bw), ys = rnnlab.bidirectional(cell, params, xs, resets=_resets())
    for b, s in enumerate(STARTS):
        parts = [rnnlab.bidirectional(cell, params, xs[b:b + 1, lo:hi])
                 for lo, hi in _segments(s, TIME)]
        tree_allclose(ys[b:b + 1], jnp.concatenate([y for _, y in parts], axis=1))
        tree_allclose(_take(c_fw, b), parts[-1][0][0])  # forward ends in the last segment
        tree_allclose(_take(c_bw, b), parts[0][0][1])  # backward ends in the first


# --- gradients ---------------------------------------------------------------------------------


def _loss_parts(cell, w_out):
    def total(carry, ys):
        final = sum(jnp.sum(jnp.tanh(c)) for c in jax.tree_util.tree_leaves(carry))
        return jnp.sum(ys * w_out) + final
    return total


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name", ["lstm[proj]", "gru",
                                  pytest.param("stack[gru,lstm]", marks=pytest.mark.slow)])
def test_gradients_equal_those_of_the_separate_segments(name, reverse, xs):
    """d/d(params, xs, carry) of one loss over all outputs and the final carry: the reset run
    and the run over separate segments are the same function."""
    cell, params = _cell(name)
    carry = _start_carry(cell, BATCH)
    w_out = jax.random.normal(jax.random.key(5), (BATCH, TIME, cell.output_size))
    total = _loss_parts(cell, w_out)
    resets = _resets()

    def reset_loss(p, x, c):
        return total(*rnnlab.unroll(cell, p, x, c, reverse=reverse, resets=resets))

    def segment_loss(p, x, c):
        run = lambda xx, cc: rnnlab.unroll(cell, p, xx, cc, reverse=reverse,  # noqa: E731
                                           fused="scan")
        return total(*segment_reference(run, cell, x, c, STARTS, reverse))

    g = jax.jit(jax.grad(reset_loss, argnums=(0, 1, 2)))(params, xs, carry)
    want = jax.jit(jax.grad(segment_loss, argnums=(0, 1, 2)))(params, xs, carry)
    tree_allclose(g, want, atol=1e-5)
    # row 2 resets at step 0: forwards its initial carry gets no gradient; in reverse it does
    g_c2 = np.concatenate([np.ravel(a[2]) for a in jax.tree_util.tree_leaves(g[2])])
    if reverse:
        assert np.abs(g_c2).max() > 1e-3
    else:
        np.testing.assert_array_equal(g_c2, 0.0)


def test_reset_gradients_match_finite_differences():
    with jax.enable_x64(True):
        cell = build_cell("lstm[proj]", 4)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        cell.init(jax.random.key(0), 3))
        xs = jax.random.normal(jax.random.key(1), (2, 6, 3), jnp.float64)
        mask = jnp.array([[1] * 6, [1, 1, 1, 1, 0, 0]], bool)
        resets = jnp.zeros((2, 6), bool).at[0, 3].set(True).at[1, 1].set(True)
        w = jax.random.normal(jax.random.key(2), (2, 6, cell.output_size), jnp.float64)

        def loss(p, x):
            c, ys = rnnlab.unroll(cell, p, x, mask=mask, resets=resets)
            return jnp.sum(ys * w) + sum(jnp.sum(jnp.tanh(a)) for a in jax.tree_util.tree_leaves(c))

        check_grads(jax.jit(loss), (params, xs), order=1, modes=("rev", "fwd"), eps=1e-6,
                    atol=1e-6, rtol=1e-6)


# --- jit, vmap, remat, unroll ------------------------------------------------------------------


def test_resets_under_vmap_over_an_extra_axis_and_over_params(xs):
    cell, params = _cell("lstm[proj]")
    xs2 = jnp.stack([xs, xs[:, ::-1]])
    r2 = jnp.stack([_resets(), _resets(([1], [], [4]))])
    got = jax.vmap(lambda x, r: rnnlab.unroll(cell, params, x, resets=r))(xs2, r2)
    tree_allclose(got, rnnlab.unroll(cell, params, xs2, resets=r2))
    for i in range(2):
        tree_allclose(jax.tree_util.tree_map(lambda a: a[i], got),
                      rnnlab.unroll(cell, params, xs2[i], resets=r2[i]))
    ens = jax.vmap(lambda k: cell.init(k, INPUT))(jax.random.split(jax.random.key(9), 2))
    got = jax.jit(jax.vmap(lambda p: rnnlab.unroll(cell, p, xs, resets=_resets())))(ens)
    for i in range(2):
        tree_allclose(jax.tree_util.tree_map(lambda a: a[i], got),
                      rnnlab.unroll(cell, jax.tree_util.tree_map(lambda a: a[i], ens), xs,
                                    resets=_resets()))


@pytest.mark.parametrize("remat,reverse", [(True, False), (2, True), (1, False)])
def test_resets_with_remat_and_unroll_give_the_same_values_and_gradients(remat, reverse, xs):
    cell, params = _cell("lstm")
    resets, mask = _resets(), jnp.arange(TIME)[None] < jnp.array([[TIME], [5], [6]])

    def loss(p, remat, unroll):
        _, ys = rnnlab.unroll(cell, p, xs, mask=mask, reverse=reverse, remat=remat,
                              unroll=unroll, resets=resets)
        return jnp.mean(jnp.sin(ys) * jnp.arange(TIME)[:, None])

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=(1, 2))
    tree_allclose(grad(params, remat, 1), grad(params, False, 1), atol=1e-6)
    tree_allclose(grad(params, False, 3), grad(params, False, 1), atol=1e-6)


def test_truncated_windows_with_resets_equal_one_run(xs):
    """Truncated BPTT: two windows with the carry passed across and the resets cut at the
    window boundary equal one run over both (a reset on the second window's first step too)."""
    cell, params = _cell("stack[gru,lstm]")
    resets = _resets(([3], [4], [1, 5]))
    full = rnnlab.unroll(cell, params, xs, resets=resets)
    c1, y1 = rnnlab.unroll(cell, params, xs[:, :4], resets=resets[:, :4])
    c2, y2 = rnnlab.unroll(cell, params, xs[:, 4:], c1, resets=resets[:, 4:])
    tree_allclose((c2, jnp.concatenate([y1, y2], axis=1)), full)


# --- fused paths, Flax modules, errors ---------------------------------------------------------


def test_auto_falls_back_to_the_scan_and_forced_fused_paths_refuse(xs):
    cell, params = _cell("lstm")
    resets = _resets()
    fast = "vjp" if rnnlab.fused.cpu.unavailable() else "cpu"
    assert rnnlab.fused.select(cell, params, xs, requested="auto") == fast  # without resets
    assert rnnlab.fused.select(cell, params, xs, requested="auto", resets=resets) == "scan"
    tree_allclose(rnnlab.unroll(cell, params, xs, resets=resets),
                  rnnlab.unroll(cell, params, xs, resets=resets, fused="scan"), atol=0)
    with pytest.raises(ValueError, match="resets= run on the scan"):
        rnnlab.unroll(cell, params, xs, resets=resets, fused="pallas")


def test_flax_recurrent_and_sequence_model_take_resets(xs):
    cell, _ = _cell("lstm[proj]")
    resets = _resets()
    mod = Recurrent(cell)
    variables = mod.init(jax.random.key(0), xs)
    got = mod.apply(variables, xs, resets=resets)
    tree_allclose(got, rnnlab.unroll(cell, variables["params"]["cell"], xs, resets=resets))
    model = SequenceModel(cells=(cell, cell), output_size=2, readout="all", bidirectional=True)
    v = model.init(jax.random.key(1), xs)
    ys, _ = model.apply(v, xs, resets=resets)
    parts = [model.apply(v, xs[b:b + 1, lo:hi])[0]
             for b, s in enumerate(STARTS) for lo, hi in _segments(s, TIME)]
    rows, i = [], 0
    for s in STARTS:
        n = len(_segments(s, TIME))
        rows.append(jnp.concatenate(parts[i:i + n], axis=1))
        i += n
    tree_allclose(ys, jnp.concatenate(rows))


def test_bad_resets_shape_is_one_clear_error(xs):
    cell, params = _cell("gru")
    with pytest.raises(ValueError, match=r"resets shape \(3, 6\) must equal the inputs' "
                       r"\[batch..., time\] shape \(3, 7\)"):
        rnnlab.unroll(cell, params, xs, resets=jnp.zeros((BATCH, TIME - 1), bool))
