"""Shared fixtures for the core tests: the cells under test, small inputs and masks.

Every test that takes a `cell_name` argument is run for every cell in
`rnnlab.cells.REGISTRY` (so cells registered later are covered automatically) plus the
variants listed in `VARIANTS` (LSTM with peepholes / layer norm / a projection, stacks with
and without residual connections).
"""

from __future__ import annotations

import functools
import os

# The suite's time is mostly XLA compiles of small programs, not running them: LLVM's backend
# optimisation off cuts compile time by about a third and changes no result a test checks
# (all comparisons are within one setting or to a tolerance). Set before JAX starts a backend;
# subprocesses inherit it (tests that add flags append to it: `xla_flags(...)`).
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)

# Many tests compile the same small programs again (each builds its own closures, so jit's
# in-memory cache misses): JAX's persistent compilation cache, keyed by the compiled program,
# the flags and the backend, serves the repeats within one run, across the xdist workers and
# the subprocesses tests spawn (they inherit this environment). One fresh directory per run,
# made by the first process that loads this file (the controller, before its workers start)
# and removed by it at the end (pytest_unconfigure below). ~10% of the suite's time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnlab-test-xla-")
    os.environ["RNNLAB_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if os.environ.get("RNNLAB_TEST_CACHE_OWNER") == str(os.getpid()):
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def xla_flags(*flags: str) -> str:
    """The suite's XLA_FLAGS plus `flags`, for a subprocess's environment."""
    return " ".join((os.environ["XLA_FLAGS"], *flags))


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.cells import Stack

HIDDEN = 8
INPUT = 5
BATCH = 3
TIME = 7

# name -> builder(hidden_size) for cells that are not a plain registry entry.
VARIANTS = {
    "lstm[peepholes]": lambda h: rnnlab.cells.make("lstm", h, peepholes=True),
    "lstm[layer_norm]": lambda h: rnnlab.cells.make("lstm", h, layer_norm=True),
    "lstm[proj]": lambda h: rnnlab.cells.make("lstm", h, proj_size=h // 2),
    "stack[gru,lstm]": lambda h: Stack((rnnlab.cells.make("gru", h),
                                        rnnlab.cells.make("lstm", h))),
    "stack[elman,gru,residual]": lambda h: Stack((rnnlab.cells.make("elman", h),
                                                  rnnlab.cells.make("gru", h)), residual=True),
}


def build_cell(name: str, hidden_size: int = HIDDEN):
    if name in VARIANTS:
        return VARIANTS[name](hidden_size)
    if name == "lstm[peepholes,layer_norm]":
        return rnnlab.cells.make("lstm", hidden_size, peepholes=True, layer_norm=True)
    return rnnlab.cells.make(name, hidden_size)


def all_cell_names() -> list[str]:
    """Registry names, then the variants; a name whose cell equals an earlier one (e.g.
    "rnn_tanh" is "elman") is left out, its tests would repeat exactly."""
    names, seen = [], set()
    for name in list(rnnlab.cells.names()) + list(VARIANTS):
        cell = build_cell(name)
        if cell not in seen:
            seen.add(cell)
            names.append(name)
    return names


def pytest_generate_tests(metafunc):
    if "cell_name" in metafunc.fixturenames:
        metafunc.parametrize("cell_name", all_cell_names())


def pytest_configure(config):
    config.addinivalue_line("markers", "each_once(param): each value of `param` once by "
                            "default, its cross product with the other parameters under -m slow")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.each_once("cell_name")` on a test parametrized by `cell_name` (or any
    parameter) and by further options: the default suite runs each value with one combination
    of the options (the combinations in turn, so each one meets several values); the rest of
    the cross product is marked slow."""
    values, combos, marked = {}, {}, []
    for item in items:
        mark = item.get_closest_marker("each_once")
        if mark is None or not hasattr(item, "callspec"):
            continue
        params = {k: repr(v) for k, v in item.callspec.params.items()}
        value = params.pop(mark.args[0])
        seen_values = values.setdefault(item.function, [])
        seen_combos = combos.setdefault(item.function, [])
        combo = tuple(sorted(params.items()))
        for seen, key in ((seen_values, value), (seen_combos, combo)):
            if key not in seen:
                seen.append(key)
        marked.append((item, seen_values.index(value), seen_combos.index(combo)))
    for item, i, k in marked:
        if k != i % len(combos[item.function]):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def cell(cell_name):
    return build_cell(cell_name)


@functools.lru_cache(maxsize=None)
def _params(cell):
    return cell.init(jax.random.key(0), INPUT)


@pytest.fixture
def params(cell):
    """Eager `cell.init(key(0), INPUT)`, computed once per cell and process (arrays are
    immutable, so tests can share them)."""
    return _params(cell)


@pytest.fixture
def xs():
    """[batch, time, input] float32 inputs."""
    return jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float32)


@pytest.fixture
def lengths():
    """Per-sequence lengths, including a full-length one and a length-1 one."""
    return np.array([TIME, 4, 1])


@pytest.fixture
def mask(lengths):
    """[batch, time] padding-at-end mask for `lengths`."""
    return jnp.asarray(np.arange(TIME)[None, :] < lengths[:, None])


@pytest.fixture(autouse=True)
def _no_x64_leak():
    """Fails any test that leaves float64 switched on (it would change every later test)."""
    assert not jax.config.jax_enable_x64, "float64 was left enabled by an earlier test"
    yield
    assert not jax.config.jax_enable_x64, "this test left float64 enabled"


def tree_allclose(a, b, atol=1e-5, rtol=1e-5):
    """Asserts two pytrees have the same structure and close leaves: |x - y| <= atol * s +
    rtol |y| with s = max(1, max |y| over the leaf). Entries of one leaf come out of one float32
    computation, so their error scales with its largest value, not with their own size (a
    gradient entry 1e-4 of the largest has no relative precision left)."""
    sa, sb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert sa == sb, f"tree structures differ: {sa} vs {sb}"
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.shape(x) == np.shape(y), f"shapes differ: {np.shape(x)} vs {np.shape(y)}"
        y = np.asarray(y, np.float64)
        scale = max(1.0, float(np.abs(y).max())) if y.size and np.isfinite(y).all() else 1.0
        np.testing.assert_allclose(np.asarray(x, np.float64), y, atol=atol * scale, rtol=rtol)


@functools.lru_cache(maxsize=None)
def jit_step(cell):
    """`cell(params, carry, x)` under jit, compiled once per cell (cells are hashable)."""
    return jax.jit(lambda params, carry, x: cell(params, carry, x))


# `rnnlab.unroll` under jit: compiled once per (cell, shapes, options) and reused across tests
# in a process. Tests of the eager path call `rnnlab.unroll` directly.
jit_unroll = jax.jit(rnnlab.unroll, static_argnums=(0,),
                     static_argnames=("reverse", "unroll", "remat"))


def python_loop(cell, params, xs, carry=None, reverse=False):
    """Independent reference: a plain Python loop over `cell(params, carry, x_t)`."""
    batch_shape = xs.shape[:-2]
    if carry is None:
        carry = cell.initial_carry(batch_shape)
    step = jit_step(cell)
    steps = range(xs.shape[-2])
    ys = [None] * xs.shape[-2]
    for t in (reversed(steps) if reverse else steps):
        carry, ys[t] = step(params, carry, xs[..., t, :])
    return carry, jnp.stack(ys, axis=-2)


def cut(xs, length):
    """xs[..., :length, :] for one sequence."""
    return xs[..., :length, :]
