"""expRNN: an orthogonal recurrence parametrised by the matrix exponential of a skew matrix."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import expm

from rnnlab.cells.base import Cell, check_choice, dot

SKEW_INITS = ("henaff", "cayley")


def modrelu(z: jax.Array, b: jax.Array) -> jax.Array:
    """modReLU(z) = sign(z) · ReLU(|z| + b) (Arjovsky et al. 2016, real form)."""
    return jnp.sign(z) * jax.nn.relu(jnp.abs(z) + b)


def skew(m: jax.Array) -> jax.Array:
    """A = U - Uᵀ with U the strict upper triangle of the free matrix m: skew-symmetric."""
    u = jnp.triu(m, 1)
    return u - u.T


def skew_init(rng, n: int, kind: str, dtype=jnp.float32) -> jax.Array:
    """The free matrix m whose `skew(m)` is block-diagonal with 2x2 blocks [[0, s], [-s, 0]]
    (odd n: the last unit is alone), s per block from `kind`:

      "henaff"  s = θ, θ ~ U(-π, π) (Henaff et al. 2016);
      "cayley"  s = -sqrt((1 - cos θ)/(1 + cos θ)), θ ~ U(0, π/2) (Helfrich et al. 2018).

    expm of a block [[0, s], [-s, 0]] is the rotation by s, so B = expm(A) starts as a
    block-diagonal rotation."""
    check_choice("skew_init", kind, SKEW_INITS)
    k = n // 2
    if kind == "henaff":
        s = jax.random.uniform(rng, (k,), jnp.float32, -np.pi, np.pi)
    else:
        theta = jax.random.uniform(rng, (k,), jnp.float32, 0.0, np.pi / 2)
        s = -jnp.sqrt((1.0 - jnp.cos(theta)) / (1.0 + jnp.cos(theta)))
    rows = 2 * jnp.arange(k)
    return jnp.zeros((n, n), dtype).at[rows, rows + 1].set(s.astype(dtype))


@dataclasses.dataclass(frozen=True)
class ExpRNN(Cell):
    """expRNN (Lezcano-Casado & Martínez-Rubio 2019, "Cheap orthogonal constraints in neural
    networks", official code Lezcano/expRNN).

        B = expm(A),  A = U - Uᵀ (U the strict upper triangle of the free matrix "skew")
        h_t = modReLU(x_t W_ih + h_{t-1} B),    modReLU(z) = sign(z) · ReLU(|z| + b)
        y_t = h_t

    B is orthogonal for every value of the free parameters, so ‖h_{t-1} B‖ = ‖h_{t-1}‖ and the
    linear part of the recurrence neither explodes nor vanishes. B is computed once per unroll
    (`prepare`, `jax.scipy.linalg.expm` in float32 or wider), not per step.

    Init as in their code: the skew generator by `skew_init` ("henaff": θ ~ U(-π, π),
    "cayley": θ ~ U(0, π/2), s = -sqrt((1 - cos θ)/(1 + cos θ)), 2x2 blocks), W_ih ~ N(0, 2/in)
    (He, their `kaiming_normal_`), no input bias, the modReLU bias b ~ U(±0.01). Their copy
    task trains the generator with lr/10 (`optim.lr_scales="skew=0.1"`).
    """

    skew_init: str = "henaff"

    def __post_init__(self):
        super().__post_init__()
        check_choice("skew_init", self.skew_init, SKEW_INITS)

    def init(self, rng, input_size):
        k_ih, k_a, k_b = jax.random.split(rng, 3)
        h = self.hidden_size
        return {
            "w_ih": jax.random.normal(k_ih, (input_size, h)) * np.sqrt(2.0 / input_size),
            "skew": skew_init(k_a, h, self.skew_init),
            "b": jax.random.uniform(k_b, (h,), jnp.float32, -0.01, 0.01),
        }

    def recurrent_matrix(self, params) -> jax.Array:
        """B = expm(A) [hidden, hidden], orthogonal (the prepared one when present)."""
        if "_B" in params:
            return params["_B"]
        m = params["skew"]
        a = skew(m.astype(jnp.promote_types(m.dtype, jnp.float32)))
        return expm(a).astype(m.dtype)

    def prepare(self, params):
        return {**params, "_B": self.recurrent_matrix(params)}

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"])

    def step(self, params, carry, xp):
        h = modrelu(xp + dot(carry, self.recurrent_matrix(params)), params["b"])
        return h, h
