"""Jordan network: the previous output, not the hidden state, is fed back."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, activation_fn, check_choice, uniform


@dataclasses.dataclass(frozen=True)
class Jordan(Cell):
    """Jordan network (Jordan 1986).

        h_t = f(x_t W_ih + y_{t-1} W_yh + b)
        y_t = g(h_t W_hy + b_y)

    The carry is y_{t-1} [..., output_size] (the "state units"); f is `activation`, g is
    `output_activation`. `output_features` defaults to `hidden_size`.
    """

    output_features: int | None = None
    activation: str = "tanh"
    output_activation: str = "tanh"
    init_scale: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_choice("activation", self.activation, ("tanh", "relu", "sigmoid"))
        check_choice("output_activation", self.output_activation,
                     ("tanh", "relu", "sigmoid", "identity"))

    @property
    def output_size(self):
        return self.output_features or self.hidden_size

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*tuple(batch_shape), self.output_size), dtype)

    def init(self, rng, input_size):
        k = jax.random.split(rng, 5)
        h, o = self.hidden_size, self.output_size
        s = self.init_scale if self.init_scale is not None else 1.0 / np.sqrt(h)
        return {
            "w_ih": uniform(k[0], (input_size, h), s),
            "w_yh": uniform(k[1], (o, h), s),
            "b": uniform(k[2], (h,), s),
            "w_hy": uniform(k[3], (h, o), s),
            "b_y": uniform(k[4], (o,), s),
        }

    def project_inputs(self, params, xs):
        return xs @ params["w_ih"] + params["b"]

    def step(self, params, carry, xp):
        h = activation_fn(self.activation)(xp + carry @ params["w_yh"])
        y = activation_fn(self.output_activation)(h @ params["w_hy"] + params["b_y"])
        return y, y
