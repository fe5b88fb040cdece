"""Gated recurrent unit: the cuDNN/PyTorch form and the original Cho et al. 2014 form."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, check_choice, dot, recurrent_matrix, uniform


@dataclasses.dataclass(frozen=True)
class GRU(Cell):
    """GRU. Gate order r, z, n as in PyTorch; W_ih [in, 3 hidden], W_hh [hidden, 3 hidden].

    `variant="cudnn"` (PyTorch `nn.GRU`, cuDNN): the reset gate multiplies *after* the
    recurrent matmul, so one fused [hidden, 3 hidden] matmul serves all gates:

        [a_r, a_z, a_n] = x_t W_ih + b_ih,    [u_r, u_z, u_n] = h_{t-1} W_hh + b_hh
        r = σ(a_r + u_r),  z = σ(a_z + u_z),  n = tanh(a_n + r ⊙ u_n)
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1},    y_t = h_t

    `variant="cho"` (Cho et al. 2014): the reset gate multiplies h *before* its matmul,

        n = tanh(a_n + (r ⊙ h_{t-1}) W_hn + b_hn)

    which needs a second, dependent matmul per step.

    Init: U(±1/sqrt(hidden)) for all weights and biases (PyTorch), or U(±init_scale).
    """

    variant: str = "cudnn"
    init_scale: float | None = None
    recurrent_init: str = "default"

    def __post_init__(self):
        super().__post_init__()
        check_choice("variant", self.variant, ("cudnn", "cho"))
        check_choice("recurrent_init", self.recurrent_init, ("default", "orthogonal"))

    def init(self, rng, input_size):
        h = self.hidden_size
        k_ih, k_hh, k_bi, k_bh = jax.random.split(rng, 4)
        s = self.init_scale if self.init_scale is not None else 1.0 / np.sqrt(h)
        w_hh = jnp.concatenate([recurrent_matrix(k, h, self.recurrent_init, 1.0, s)
                                for k in jax.random.split(k_hh, 3)], axis=1)
        return {
            "w_ih": uniform(k_ih, (input_size, 3 * h), s),
            "w_hh": w_hh,
            "b_ih": uniform(k_bi, (3 * h,), s),
            "b_hh": uniform(k_bh, (3 * h,), s),
        }

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b_ih"]

    @property
    def recurrent_weight(self):  # the Cho form's second matmul depends on r: no split
        return "w_hh" if self.variant == "cudnn" else None

    def combine(self, params, carry, xp, zh):
        h = carry
        a_r, a_z, a_n = jnp.split(xp, 3, axis=-1)
        u_r, u_z, u_n = jnp.split(zh + params["b_hh"], 3, axis=-1)
        r, z = jax.nn.sigmoid(a_r + u_r), jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        h = (1.0 - z) * n + z * h
        return h, h

    def step(self, params, carry, xp):
        w, b = params["w_hh"], params["b_hh"]
        if self.variant == "cudnn":
            return self.combine(params, carry, xp, dot(carry, w))
        h, n_ = carry, self.hidden_size
        a_r, a_z, a_n = jnp.split(xp, 3, axis=-1)
        u_r, u_z = jnp.split(dot(h, w[:, :2 * n_]) + b[:2 * n_], 2, axis=-1)
        r, z = jax.nn.sigmoid(a_r + u_r), jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + dot(r * h, w[:, 2 * n_:]) + b[2 * n_:])
        h = (1.0 - z) * n + z * h
        return h, h
