"""The cell contract and the initialisers every cell family shares.

A cell is a frozen, hashable dataclass of hyperparameters (so it can be a static argument of
`jax.jit`); its parameters are an explicit pytree (a dict of arrays) that the caller owns.

    params = cell.init(rng, input_size)
    carry = cell.initial_carry(batch_shape)            # zeros unless the cell says otherwise
    carry, y = cell(params, carry, x)                   # one time step: x [..., input_size]

The step is split in two so that `unroll` can hoist the input half of every gate out of the
time loop:

    xp = cell.project_inputs(params, xs)                # any leading shape, e.g. [batch, time, in]
    carry, y = cell.step(params, carry, xp[:, t])       # only the recurrent half per step

`cell(params, carry, x) == cell.step(params, carry, cell.project_inputs(params, x))`.

Work that depends on the parameters only (the matrix exponential of expRNN, the antisymmetric
matrix of AntisymmetricRNN) is done once per unroll, not once per step:

    prepared = cell.prepare(params)                     # `unroll` calls it before the time loop
    carry, y = cell.step(prepared, carry, xp_t)         # == cell.step(params, carry, xp_t)

`prepare` returns the params with derived entries added (keys starting with "_"); `step`
accepts either form, so a single `cell(params, carry, x)` needs no preparation.

Cells whose step is one recurrent matmul followed by elementwise work also expose that split,
which lets `rnnlab.fused.split_vjp` write their backward pass by hand:

    zh = dot(cell.recurrent_input(carry), params[cell.recurrent_weight])
    carry, y = cell.combine(params, carry, xp_t, zh)    # == cell.step(params, carry, xp_t)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # a pytree of arrays, normally a dict
Carry = Any  # a pytree of arrays with leading batch shape

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


def activation_fn(name: str):
    """Looks up an activation by name; ValueError lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid choices: {sorted(ACTIVATIONS)}"
        ) from None


def check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {sorted(choices)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Embedded:
    """Embedded tokens `table[ids]`, [*batch, time, features], not yet formed: `rnnlab.unroll`
    takes them in place of xs, and where the first layer is the plain LSTM on the fused CPU
    kernel with a vocabulary no larger than time x batch, that layer reads the rows of the
    table W_ih [vocab, 4 hidden] per token and sums its gradient per token inside the
    kernel's loops (no x W_ih, dZ W_ih^T or x^T dZ over all time steps). Anywhere else the
    rows are looked up first (`lookup`). Out-of-range ids clamp, as `table[ids]` does."""

    table: jax.Array  # [vocab, features]
    ids: jax.Array  # [*batch, time] ints

    @property
    def shape(self) -> tuple:
        return tuple(self.ids.shape) + tuple(self.table.shape[-1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        return self.table.dtype

    def lookup(self) -> jax.Array:
        return jnp.take(self.table, self.ids, axis=0, mode="clip")


def padding_mask(mask, lengths, time: int, batch_shape: tuple | None = None):
    """[*batch, time] booleans (True = a real step) from `mask` or from `lengths` (the real
    steps at the start of each row), reshaped to `batch_shape + (time,)` when given; None when
    neither is given. `rnnlab.unroll` normalises its padding with it once, on entry."""
    if lengths is not None:
        lengths = lengths if batch_shape is None else lengths.reshape(batch_shape)
        return jnp.arange(time) < lengths[..., None]
    if mask is None:
        return None
    mask = mask.astype(bool)
    return mask if batch_shape is None else mask.reshape(*batch_shape, time)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradient(x: jax.Array, bound: float) -> jax.Array:
    """x in the forward pass; in the backward pass the cotangent of x clipped elementwise to
    [-bound, bound] (Theano's `grad_clip`, which Lasagne's recurrent layers apply to the
    pre-activation at every step with `grad_clipping`). Reverse mode only."""
    return x


def _clip_gradient_fwd(x, bound):
    return x, None


def _clip_gradient_bwd(bound, _, g):
    return (jnp.clip(g, -bound, bound),)


clip_gradient.defvjp(_clip_gradient_fwd, _clip_gradient_bwd)


def dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w. With mixed dtypes (float32 activations, bfloat16 weights cast by
    `rnnlab.unroll(compute_dtype=...)`) it multiplies in w's dtype and accumulates and returns
    the promoted dtype (float32); with equal dtypes it is exactly `x @ w`."""
    if x.dtype == w.dtype:
        return x @ w
    out = jnp.result_type(x.dtype, w.dtype)
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=out)


COMPUTE_DTYPES = (None, "float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Cell:
    """Base class: subclasses set `hidden_size` and implement `init`, `step`, and (where the
    input half of the step can be computed for all steps at once) `project_inputs`."""

    hidden_size: int
    # dtype of the matmuls under `rnnlab.unroll` (None = the parameters' own, "bfloat16" = mixed
    # precision: parameters, carry, gates and accumulation stay float32; see `dot`)
    compute_dtype: str | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self):
        if not isinstance(self.hidden_size, (int, np.integer)) or self.hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {self.hidden_size!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown compute_dtype {self.compute_dtype!r}; valid choices: "
                             f"{list(COMPUTE_DTYPES)}")

    # --- the contract -------------------------------------------------------------------
    @property
    def output_size(self) -> int:
        """Size of the per-step output y."""
        return self.hidden_size

    def init(self, rng: jax.Array, input_size: int) -> Params:
        raise NotImplementedError

    def initial_carry(self, batch_shape=(), dtype=jnp.float32) -> Carry:
        return jnp.zeros((*tuple(batch_shape), self.hidden_size), dtype)

    def input_size(self, params: Params) -> int:
        """The input width these parameters expect (used to check shapes with a clear error)."""
        return params["w_ih"].shape[0]

    def project_inputs(self, params: Params, xs: jax.Array) -> jax.Array:
        """Input half of the step for any leading shape [..., input_size] -> [..., G]."""
        return xs

    def step(self, params: Params, carry: Carry, xp: jax.Array):
        """Recurrent half: (carry, projected input [..., G]) -> (carry, y [..., output_size])."""
        raise NotImplementedError

    def __call__(self, params: Params, carry: Carry, x: jax.Array):
        return self.step(params, carry, self.project_inputs(params, x))

    def prepare(self, params: Params) -> Params:
        """Parameter-only work hoisted out of the time loop (see the module docstring)."""
        return params

    def param_bounds(self) -> dict:
        """{parameter name: max |value|} that the optimiser keeps after every update
        (`rnnlab.train.optim.project_params`; IndRNN's |u| <= 2^{1/T}); {} for most cells."""
        return {}

    def dynamics(self) -> "Cell":
        """The cell as a dynamical system: the same forward map without changes a cell makes
        to its reverse-mode gradient only (IndRNN's `grad_clip`). The diagnostics
        differentiate this one, forward (`jax.jacfwd`) and reverse mode alike; itself for
        most cells."""
        return self

    def for_layer(self, index: int, num_layers: int) -> "Cell":
        """This cell as layer `index` of `num_layers` (`make_cells`); cells whose init depends
        on the position in a stack (IndRNN) return a changed copy."""
        return self

    # --- the split step (optional) -------------------------------------------------------
    # the name of the parameter the step multiplies `recurrent_input(carry)` by, when the rest
    # of the step is `combine`; None: the step has no such split
    recurrent_weight = None

    def recurrent_input(self, carry: Carry) -> jax.Array:
        """The part of the carry the recurrent matmul takes."""
        return carry

    def combine(self, params: Params, carry: Carry, xp: jax.Array, zh: jax.Array):
        """The step after its recurrent matmul zh: (carry, y)."""
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------
    def check_input(self, params: Params, xs: jax.Array) -> None:
        expected = self.input_size(params)
        if xs.shape[-1] != expected:
            raise ValueError(
                f"{type(self).__name__}: input feature size {xs.shape[-1]} (inputs of shape "
                f"{tuple(xs.shape)}) does not match the parameters' input_size {expected}; "
                f"initialise with cell.init(rng, input_size={xs.shape[-1]}) or fix the inputs"
            )


# --- initialisers ----------------------------------------------------------------------------


def uniform(rng, shape, scale, dtype=jnp.float32):
    """U(-scale, scale): PyTorch's default for recurrent layers uses scale = 1/sqrt(hidden)."""
    return jax.random.uniform(rng, shape, dtype, -scale, scale)


def spectral_radius(w: jax.Array) -> jax.Array:
    """Largest |eigenvalue| of a square matrix.

    Non-symmetric eigendecomposition exists in XLA only on CPU, so it runs on the host through
    `pure_callback`; this keeps `init` usable under `jit` on any backend.
    """

    def host(m):
        return np.asarray(np.max(np.abs(np.linalg.eigvals(np.asarray(m, np.float64)))), m.dtype)

    return jax.pure_callback(host, jax.ShapeDtypeStruct((), w.dtype), w,
                             vmap_method="sequential")


def recurrent_matrix(rng, n: int, kind: str, spectral_radius_: float = 1.0,
                     scale: float | None = None, dtype=jnp.float32) -> jax.Array:
    """An [n, n] recurrent matrix (right-multiplied: h @ W).

    kind:
      "default"    U(-1/sqrt(n), 1/sqrt(n)) (PyTorch), or U(-scale, scale) when scale is given;
      "orthogonal" a random orthogonal matrix (all singular values 1), times `spectral_radius_`;
      "identity"   spectral_radius_ * I (IRNN, Le et al. 2015, uses 1.0);
      "spectral"   N(0, 1/n) rescaled so that its spectral radius is exactly `spectral_radius_`.
    """
    check_choice("recurrent_init", kind, RECURRENT_INITS)
    if kind == "default":
        return uniform(rng, (n, n), scale if scale is not None else 1.0 / np.sqrt(n), dtype)
    if kind == "orthogonal":
        return spectral_radius_ * jax.nn.initializers.orthogonal()(rng, (n, n), dtype)
    if kind == "identity":
        return spectral_radius_ * jnp.eye(n, dtype=dtype)
    w = jax.random.normal(rng, (n, n), jnp.float32) / np.sqrt(n)
    return (w * (spectral_radius_ / spectral_radius(w))).astype(dtype)


RECURRENT_INITS = ("default", "orthogonal", "identity", "spectral")
