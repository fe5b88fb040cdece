"""Elman (simple) RNN and its IRNN preset."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import (RECURRENT_INITS, Cell, activation_fn, check_choice, dot,
                               recurrent_matrix, uniform)


@dataclasses.dataclass(frozen=True)
class Elman(Cell):
    """Elman / simple RNN (Elman 1990).

        h_t = f(x_t W_ih + h_{t-1} W_hh + b),    y_t = h_t

    x_t [..., in], h_t [..., hidden]; f is tanh or ReLU. PyTorch's `nn.RNN` keeps two biases
    (b_ih + b_hh); here they are one vector, and `interop.torch` adds them.

    Initialisation of W_hh (`recurrent_init`): "default" U(±1/sqrt(hidden)), "orthogonal",
    "identity" (IRNN, Le et al. 2015) or "spectral" (Gaussian rescaled to `spectral_radius`);
    "orthogonal" and "identity" are multiplied by `spectral_radius` too. W_ih and b are
    U(±1/sqrt(hidden)), or U(±init_scale) when given; `zero_bias` starts b at 0.
    """

    activation: str = "tanh"
    recurrent_init: str = "default"
    spectral_radius: float = 1.0
    init_scale: float | None = None
    zero_bias: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_choice("activation", self.activation, ("tanh", "relu"))
        check_choice("recurrent_init", self.recurrent_init, RECURRENT_INITS)

    def init(self, rng, input_size):
        k_ih, k_hh, k_b = jax.random.split(rng, 3)
        h = self.hidden_size
        s = self.init_scale if self.init_scale is not None else 1.0 / np.sqrt(h)
        return {
            "w_ih": uniform(k_ih, (input_size, h), s),
            "w_hh": recurrent_matrix(k_hh, h, self.recurrent_init, self.spectral_radius,
                                     self.init_scale),
            "b": jnp.zeros((h,)) if self.zero_bias else uniform(k_b, (h,), s),
        }

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b"]

    recurrent_weight = "w_hh"

    def step(self, params, carry, xp):
        return self.combine(params, carry, xp, dot(carry, params["w_hh"]))

    def combine(self, params, carry, xp, zh):
        h = activation_fn(self.activation)(xp + zh)
        return h, h

