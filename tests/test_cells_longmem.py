"""Tests for the long-memory cells (expRNN, coRNN, LEM, IndRNN, AntisymmetricRNN): their step
against a NumPy transcription of the papers' equations, gradients through `unroll` against
finite differences, expRNN's orthogonality and inits, IndRNN's constraint and per-layer init,
bidirectional runs and stacks, the gradient-flow diagnostics, and the adding task's
"solved" metric. (Scan vs Python loop, masks, vmap and jit for every registered cell run in
test_unroll.py and test_cells.py.)"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import jit_unroll, python_loop, tree_allclose
from jax.test_util import check_grads

import rnnlab
from rnnlab import diagnostics as D
from rnnlab.cells import Stack
from rnnlab.cells.exprnn import skew
from rnnlab.config import base_config, make_cells, param_bounds
from rnnlab.train.optim import make_optimizer

NAMES = ["exprnn", "cornn", "lem", "indrnn", "antisymmetric", "antisymmetric_gated"]
EPS32 = float(np.finfo(np.float32).eps)


def _np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(name, cell, p, carry, x):
    """The papers' equations in NumPy float64 (one step): (new carry as a tuple/array, y)."""
    p = _np(p)
    if name == "exprnn":
        a = skew(jnp.asarray(p["skew"]))
        from scipy.linalg import expm
        b_mat = expm(np.asarray(a, np.float64))
        z = x @ p["w_ih"] + carry @ b_mat
        h = np.sign(z) * np.maximum(np.abs(z) + p["b"], 0.0)
        return h, h
    if name == "cornn":
        y, z = carry
        f = np.tanh(y @ p["w_y"] + z @ p["w_z"] + x @ p["w_ih"] + p["b"])
        z = z + cell.dt * (f - cell.gamma * y - cell.epsilon * z)
        y = y + cell.dt * z
        return (y, z), y
    if name == "lem":
        y, z = carry
        h = cell.hidden_size
        a = x @ p["w_ih"] + p["b"]
        c = y @ p["w_hh"]
        dt_bar = cell.dt * _sigmoid(a[:, :h] + c[:, :h])
        dt = cell.dt * _sigmoid(a[:, h:2 * h] + c[:, h:2 * h])
        z = (1 - dt) * z + dt * np.tanh(a[:, 3 * h:] + c[:, 2 * h:])
        y = (1 - dt_bar) * y + dt_bar * np.tanh(z @ p["w_z"] + p["b_z"] + a[:, 2 * h:3 * h])
        return (y, z), y
    if name == "indrnn":
        h = np.maximum(x @ p["w_ih"] + p["u_hh"] * carry + p["b"], 0.0)
        return h, h
    m = p["w_hh"] - p["w_hh"].T - cell.gamma * np.eye(cell.hidden_size)
    if name == "antisymmetric":
        h = carry + cell.epsilon * np.tanh(carry @ m + x @ p["w_ih"] + p["b"])
        return h, h
    v = x @ p["w_ih"] + p["b"]
    n = cell.hidden_size
    gate = _sigmoid(carry @ m + v[:, n:])
    h = carry + cell.epsilon * gate * np.tanh(carry @ m + v[:, :n])
    return h, h


@pytest.mark.parametrize("name", NAMES)
def test_step_matches_the_papers_equations(name):
    cell = rnnlab.cells.make(name, 6, **({"dt": 0.3} if name == "lem" else {}))
    p = cell.init(jax.random.key(0), 4)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 4)))
    # a non-zero state so that every recurrent term matters
    carry = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(2), a.shape),
        cell.initial_carry((3,)))
    new, y = cell(p, carry, jnp.asarray(x, jnp.float32))
    want_new, want_y = reference_step(name, cell, p, _np(tuple(carry) if isinstance(
        carry, tuple) else carry), x.astype(np.float64))
    scale = max(np.abs(np.asarray(want_y)).max(), 1e-3)
    np.testing.assert_allclose(np.asarray(y), want_y, atol=50 * EPS32 * scale)
    for got, want in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(want_new)):
        np.testing.assert_allclose(np.asarray(got), want,
                                   atol=50 * EPS32 * max(np.abs(want).max(), 1e-3))


@pytest.mark.parametrize("name,masked,reverse", [
    *[(n, True, True) for n in NAMES],
    *[pytest.param(n, False, False, marks=pytest.mark.slow) for n in NAMES]])
def test_gradients_through_unroll_match_finite_differences(name, masked, reverse):
    with jax.enable_x64(True):
        cell = rnnlab.cells.make(name, 4, **({"dt": 0.5} if name == "lem" else {}))
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                        cell.init(jax.random.key(0), 3))
        xs = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
        mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool) if masked else None
        w_out = jax.random.normal(jax.random.key(2), (2, 5, cell.output_size), jnp.float64)

        def loss(p, xs):
            carry, ys = rnnlab.unroll(cell, p, xs, mask=mask, reverse=reverse)
            final = sum(jnp.sum(jnp.tanh(c)) for c in jax.tree_util.tree_leaves(carry))
            return jnp.sum(ys * w_out) + final

        check_grads(jax.jit(loss), (params, xs), order=1, modes=("rev",), eps=1e-6,
                    atol=1e-6, rtol=1e-6)


# --- expRNN ----------------------------------------------------------------------------------


def _skew_blocks(m):
    a = np.asarray(skew(m), np.float64)
    n = a.shape[0]
    s = np.array([a[2 * k, 2 * k + 1] for k in range(n // 2)])
    blocks = np.zeros_like(a)
    for k in range(n // 2):
        blocks[2 * k, 2 * k + 1], blocks[2 * k + 1, 2 * k] = s[k], -s[k]
    return a, blocks, s


def test_exprnn_inits_are_2x2_rotation_blocks():
    henaff = rnnlab.cells.make("exprnn", 64).init(jax.random.key(0), 3)
    a, blocks, s = _skew_blocks(henaff["skew"])
    np.testing.assert_array_equal(a, blocks)  # block diagonal, nothing else
    assert np.all(np.abs(s) <= np.pi) and s.min() < -1.0 and s.max() > 1.0  # U(-π, π)
    cayley = rnnlab.cells.make("exprnn", 64, skew_init="cayley").init(jax.random.key(0), 3)
    a, blocks, s = _skew_blocks(cayley["skew"])
    np.testing.assert_array_equal(a, blocks)
    # s = -sqrt((1 - cos θ)/(1 + cos θ)) = -tan(θ/2), θ ~ U(0, π/2): s in (-1, 0)
    assert np.all((s < 0) & (s > -1.0))
    # expm of a block [[0, s], [-s, 0]] is the rotation by s
    b = np.asarray(rnnlab.cells.make("exprnn", 64).recurrent_matrix(henaff), np.float64)
    _, _, s = _skew_blocks(henaff["skew"])
    np.testing.assert_allclose(b[0:2, 0:2], [[np.cos(s[0]), np.sin(s[0])],
                                             [-np.sin(s[0]), np.cos(s[0])]], atol=10 * EPS32)


def test_exprnn_recurrent_matrix_stays_orthogonal_after_training():
    cell = rnnlab.cells.make("exprnn", 16)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (4, 12, 3))
    target = jax.random.normal(jax.random.key(2), (4, 16))
    opt = optax.adam(3e-2)

    def loss(p):
        _, ys = rnnlab.unroll(cell, p, xs)
        return jnp.mean(jnp.square(ys[:, -1] - target))

    @jax.jit
    def train(p, s):
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, state = params, opt.init(params)
    for _ in range(20):
        p, state = train(p, state)
    moved = np.abs(np.asarray(p["skew"] - params["skew"])).max()
    assert moved > 0.1  # the generator did train
    assert float(loss(p)) < float(loss(params))
    b = np.asarray(cell.recurrent_matrix(p), np.float64)
    # float32 resolution at the scale of an orthogonal matrix's entries (<= 1), n = 16
    np.testing.assert_allclose(b.T @ b, np.eye(16), atol=16 * 16 * EPS32)
    np.testing.assert_allclose(b @ b.T, np.eye(16), atol=16 * 16 * EPS32)


def _scan_bodies(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn.params["jaxpr"].jaxpr
        for v in eqn.params.values():
            inner = getattr(v, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield from _scan_bodies(inner)


def _all_primitives(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _all_primitives(inner)
    return names


def test_exprnn_expm_runs_once_per_unroll_not_per_step():
    """expm (LU solves of the Padé approximant) sits outside the time loop."""
    cell = rnnlab.cells.make("exprnn", 8)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((2, 6, 3))
    jaxpr = jax.make_jaxpr(lambda p: rnnlab.unroll(cell, p, xs))(params).jaxpr
    assert "lu" in _all_primitives(jaxpr)
    bodies = list(_scan_bodies(jaxpr))
    assert bodies and all("lu" not in _all_primitives(b) for b in bodies)


def test_lr_scales_scale_only_the_named_leaves():
    o = base_config().optim
    o.name, o.lr, o.clip, o.lr_scales = "sgd", 1.0, "none", "skew=0.1"
    opt = make_optimizer(o, 1, 1)
    params = {"cell": {"skew": jnp.ones((2, 2)), "w_ih": jnp.ones((2, 2))}}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = opt.update.update(grads, opt.update.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["cell"]["skew"]), -0.1)
    np.testing.assert_allclose(np.asarray(updates["cell"]["w_ih"]), -1.0)


# --- IndRNN ----------------------------------------------------------------------------------


def _model_cfg(**kw):
    m = base_config().model
    m.cell, m.hidden = "indrnn", 64
    for k, v in kw.items():
        m[k] = v
    return m


def test_indrnn_per_layer_init_and_bound():
    m = _model_cfg(num_layers=3, cell_kwargs="max_length=100")
    cells = make_cells(m)
    assert [c.position for c in cells] == ["first", "first", "last"]
    bound = 2.0 ** (1 / 100)
    assert param_bounds(m) == {"u_hh": pytest.approx(bound)}
    u_first = np.asarray(cells[0].init(jax.random.key(0), 2)["u_hh"])
    u_last = np.asarray(cells[-1].init(jax.random.key(0), 2)["u_hh"])
    assert u_first.min() >= 0 and u_first.max() <= bound and u_first.min() < 0.2
    assert u_last.min() >= 1 / bound and u_last.max() <= bound
    assert param_bounds(_model_cfg()) == {}  # no max_length, no recurrent_max: no constraint
    w = np.asarray(rnnlab.cells.make("indrnn", 256, input_std=0.001).init(
        jax.random.key(1), 64)["w_ih"])  # their adding code's N(0, 0.001²) input weights
    assert abs(w.std() - 0.001) < 5e-5 and abs(w.mean()) < 5e-5
    with pytest.raises(ValueError, match="input_std"):
        rnnlab.cells.make("indrnn", 4, input_std=-1.0)


def test_indrnn_bound_is_kept_after_every_update():
    o = base_config().optim
    o.name, o.lr, o.clip = "sgd", 10.0, "none"
    bound = 2.0 ** (1 / 50)
    opt = make_optimizer(o, 1, 1, param_bounds={"u_hh": bound})
    params = {"rnn_0": {"cell": {"u_hh": jnp.array([0.5, 1.0, -0.2, 1.01]),
                                 "w_ih": jnp.zeros((3,))}}}
    grads = {"rnn_0": {"cell": {"u_hh": jnp.array([-1.0, 1.0, 1.0, 0.0]),
                                "w_ih": jnp.full((3,), -1.0)}}}
    updates, _ = opt.update.update(grads, opt.update.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(new["rnn_0"]["cell"]["u_hh"]),
                               [bound, -bound, -bound, 1.01], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["rnn_0"]["cell"]["w_ih"]), 10.0)  # untouched


def test_indrnn_fitted_rate_and_lyapunov_equal_log_u():
    """All units active (ReLU' = 1) and u = c: ∂h_T/∂h_{T-k} = c^k I, so the fitted gradient
    rate and the Lyapunov exponent are both log c."""
    cell = rnnlab.cells.make("indrnn", 8)
    p = cell.init(jax.random.key(0), 2)
    c = 0.97
    p = {**p, "u_hh": jnp.full((8,), c), "b": jnp.full((8,), 5.0), "w_ih": p["w_ih"] * 0.1}
    xs = jax.random.uniform(jax.random.key(1), (4, 40, 2))
    flow = D.gradient_flow(cell, p, xs)
    np.testing.assert_allclose(float(flow["rate"]), np.log(c), atol=1e-4)
    np.testing.assert_allclose(float(flow["lyapunov"]), np.log(c), atol=1e-4)


def test_indrnn_grad_clip_clips_the_pre_activation_gradient_only():
    """grad_clip leaves the forward pass alone and clips ∂L/∂(pre-activation) elementwise at
    every step (Lasagne's grad_clipping); the diagnostics measure the unclipped dynamics."""
    plain = rnnlab.cells.make("indrnn", 6, max_length=20)
    clipped = rnnlab.cells.make("indrnn", 6, max_length=20, grad_clip=10.0)
    p = plain.init(jax.random.key(0), 2)
    p = {**p, "b": jnp.full((6,), 5.0)}  # every unit active: ReLU' = 1
    xs = jax.random.uniform(jax.random.key(1), (3, 4, 2))

    def loss(cell, scale, p):
        _, ys = rnnlab.unroll(cell, p, xs, fused="scan")
        return scale * ys[:, -1].sum()

    tree_allclose(rnnlab.unroll(clipped, p, xs)[1], rnnlab.unroll(plain, p, xs)[1])
    small = [jax.grad(functools.partial(loss, c, 1.0))(p) for c in (plain, clipped)]
    tree_allclose(small[0], small[1])  # |∂L/∂pre| = |u|^k <= 2^{k/20} < 10: nothing clipped
    g = jax.grad(functools.partial(loss, clipped, 100.0))(p)
    # the last step's ∂L/∂pre is 100 per unit and sample, clipped to 10; each earlier step's
    # is u ⊙ (the later, clipped one) < 10 * 2^{1/20}, clipped to 10 again where it exceeds it
    u = np.asarray(p["u_hh"])
    per_step = [np.full(6, 10.0)]
    for _ in range(3):
        per_step.append(np.minimum(u * per_step[-1], 10.0))
    want_b = 3 * np.sum(per_step, axis=0)
    np.testing.assert_allclose(np.asarray(g["b"]), want_b, rtol=1e-5)
    big = jax.grad(functools.partial(loss, plain, 100.0))(p)
    assert np.all(np.asarray(big["b"]) > 3 * 100.0)  # unclipped: 100 at the last step alone
    assert clipped.dynamics() == plain
    flows = [D.gradient_flow(c, p, xs) for c in (plain, clipped)]  # jacfwd inside: no error
    np.testing.assert_array_equal(np.asarray(flows[0]["rate"]), np.asarray(flows[1]["rate"]))
    with pytest.raises(ValueError, match="grad_clip"):
        rnnlab.cells.make("indrnn", 4, grad_clip=-1.0)


# --- composition and diagnostics for every new cell ------------------------------------------


def _some_slow(fast):
    """NAMES, those not in `fast` marked slow (each costs a few compiles)."""
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]


@pytest.mark.parametrize("name", _some_slow(("exprnn", "lem")))
def test_bidirectional_with_mask(name):
    cell = rnnlab.cells.make(name, 5)
    p_fw, p_bw = cell.init(jax.random.key(0), 3), cell.init(jax.random.key(1), 3)
    xs = jax.random.normal(jax.random.key(2), (2, 6, 3))
    mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2], bool)
    (_, c_bw), ys = rnnlab.bidirectional(cell, (p_fw, p_bw), xs, mask=mask)
    assert ys.shape == (2, 6, 10)
    # the second sequence's backward half equals a reverse loop over its 4 real steps
    want_c, want = python_loop(cell, p_bw, xs[1:, :4], reverse=True)
    tree_allclose(ys[1:, :4, 5:], want)
    tree_allclose(jax.tree_util.tree_map(lambda a: a[1:], c_bw), want_c)
    np.testing.assert_array_equal(np.asarray(ys[1, 4:]), 0.0)


def test_stack_of_long_memory_cells_equals_python_loop():
    cell = Stack(tuple(rnnlab.cells.make(n, 5) for n in ("exprnn", "lem", "cornn")))
    p = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    tree_allclose(jit_unroll(cell, p, xs), python_loop(cell, p, xs))


@pytest.mark.parametrize("name", _some_slow(("exprnn", "cornn", "antisymmetric_gated")))
def test_gradient_flow_diagnostics_run_and_agree(name):
    """The fitted rate and its Lyapunov reference are finite, and agree to a small fraction
    of a nat per step (they measure the same backward product)."""
    kwargs = {"lem": {"dt": 0.5}, "indrnn": {"max_length": 60}}.get(name, {})
    cell = rnnlab.cells.make(name, 8, **kwargs)
    p = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (4, 60, 2))
    flow = jax.device_get(D.gradient_flow(cell, p, xs))
    assert flow["finite"] and np.isfinite(flow["rate"]) and np.isfinite(flow["lyapunov"])
    assert abs(float(flow["rate"]) - float(flow["lyapunov"])) < 0.05


# --- the adding task's solved metric ----------------------------------------------------------


def test_adding_solved_metric_is_hochreiters_criterion():
    from rnnlab.tasks.synthetic import Adding

    class Fixed(Adding):  # predictions given directly, no model
        def __init__(self, preds):
            self.preds = preds

        def apply(self, params, inputs, rng, train):
            return self.preds[:, None]

    targets = jnp.linspace(0.5, 1.5, 100)
    for wrong, solved in ((5, 1.0), (6, 0.0)):  # errors 0.1 on `wrong` sequences, 0.039 else
        err = jnp.where(jnp.arange(100) < wrong, 0.1, 0.039)
        task = Fixed(targets + err)
        _, (stats, _) = task.loss(None, {"inputs": None, "targets": targets}, None, None, False)
        metrics = task.metrics(stats)
        assert float(metrics["within_tol"]) == pytest.approx(1 - wrong / 100)
        assert float(metrics["solved"]) == solved
        assert float(metrics["mse"]) == pytest.approx(float(jnp.mean(err ** 2)), rel=1e-5)


def test_long_range_configs_validate_and_bad_variant_is_named():
    import importlib

    from rnnlab.train.config import validate

    mod = importlib.import_module("experiments.configs.long_range")
    for name in mod.NAMES:
        for suffix in ("", "_2000", "_smoke"):
            validate(mod.get_config(name + suffix))
    c = mod.get_config("indrnn_adding_2000")
    assert c.model.cell_kwargs == "max_length=2000,input_std=0.001,grad_clip=10.0"
    assert (c.task.length, c.optim.clip) == (2000, "none")  # their clip is the cell's own
    for name in ("lem_adding", "cornn_adding", "indrnn_adding"):  # their code's marks
        assert mod.get_config(name).task.marks == "halves"
    c.task.marks = "middle"
    with pytest.raises(ValueError, match=r"task.marks='middle'.*anywhere.*halves"):
        validate(c)
    with pytest.raises(ValueError, match="unknown variant 'lstm_adding'.*lem_adding"):
        mod.get_config("lstm_adding")


@pytest.mark.slow
def test_train_loop_keeps_the_indrnn_bound(tmp_path):
    """The loop adds the cells' bounds to the optimiser: with a large learning rate u would
    leave |u| <= 2^{1/T} within a few steps, the projection keeps it there."""
    from _config_helpers import smoke_config

    from rnnlab.train import train_and_evaluate

    config = smoke_config("long_range", "indrnn_adding_smoke",
                          **{"optim.lr": 0.5, "checkpoint.every_steps": 0})
    result = train_and_evaluate(config, str(tmp_path))
    bound = 2.0 ** (1 / config.task.length)
    us = [np.asarray(result.state.params[f"rnn_{l}"]["cell"]["u_hh"]) for l in range(2)]
    assert max(np.abs(u).max() for u in us) <= bound * (1 + EPS32)
    assert any(np.isclose(np.abs(u), bound, rtol=1e-6).any() for u in us)  # it was needed


def test_lr_scales_naming_no_parameter_is_a_config_error(tmp_path):
    from _config_helpers import smoke_config

    from rnnlab.train import ConfigError, train_and_evaluate

    config = smoke_config("long_range", "exprnn_copy_smoke", **{"optim.lr_scales": "skw=0.1"})
    with pytest.raises(ConfigError, match=r"lr_scales names \['skw'\].*'skew'"):
        train_and_evaluate(config, str(tmp_path))
    with pytest.raises(ConfigError, match="lr_scales: bad item 'skew'"):
        train_and_evaluate(smoke_config("long_range", "exprnn_copy_smoke",
                                        **{"optim.lr_scales": "skew"}), str(tmp_path))
