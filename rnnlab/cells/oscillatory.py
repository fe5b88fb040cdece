"""Cells from discretised ODEs with two state vectors: coRNN and LEM (Rusch & Mishra)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, dot, uniform


class YZCarry(NamedTuple):
    y: jax.Array  # [..., hidden]: the output state
    z: jax.Array  # [..., hidden]: the second state (velocity for coRNN, memory for LEM)


class _TwoStateCell(Cell):
    """Shared carry of coRNN and LEM (subclasses are frozen dataclasses)."""

    dt: float

    def _check_dt(self):
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt!r}")

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        shape = (*tuple(batch_shape), self.hidden_size)
        return YZCarry(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


@dataclasses.dataclass(frozen=True)
class CoRNN(_TwoStateCell):
    """Coupled oscillatory RNN (Rusch & Mishra 2021, ICLR; official code tk-rusch/coRNN): an
    IMEX discretisation of y'' = tanh(W y + 𝒲 y' + V u + b) - γ y - ε y'.

        z_n = z_{n-1} + Δt [tanh(y_{n-1} W + z_{n-1} 𝒲 + u_n V + b) - γ y_{n-1} - ε z_{n-1}]
        y_n = y_{n-1} + Δt z_n,    output y_n

    Parameters: w_ih = V [in, hidden], w_y = W and w_z = 𝒲 [hidden, hidden], b [hidden]. Init
    as their single `nn.Linear(in + 2 hidden, hidden)`: every weight and the bias
    U(±1/sqrt(in + 2 hidden)). Defaults Δt = 0.06, γ = 66, ε = 15: their adding-problem
    setting (`adding/adding_task.py`).
    """

    dt: float = 0.06
    gamma: float = 66.0
    epsilon: float = 15.0

    def __post_init__(self):
        super().__post_init__()
        self._check_dt()

    def init(self, rng, input_size):
        h = self.hidden_size
        s = 1.0 / np.sqrt(input_size + 2 * h)
        k_ih, k_y, k_z, k_b = jax.random.split(rng, 4)
        return {"w_ih": uniform(k_ih, (input_size, h), s), "w_y": uniform(k_y, (h, h), s),
                "w_z": uniform(k_z, (h, h), s), "b": uniform(k_b, (h,), s)}

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b"]

    def step(self, params, carry, xp):
        y, z = carry
        force = jnp.tanh(xp + dot(y, params["w_y"]) + dot(z, params["w_z"]))
        z = z + self.dt * (force - self.gamma * y - self.epsilon * z)
        y = y + self.dt * z
        return YZCarry(y, z), y


@dataclasses.dataclass(frozen=True)
class LEM(_TwoStateCell):
    """Long expressive memory (Rusch, Mishra, Erichson & Mahoney 2022, ICLR; official code
    tk-rusch/LEM): two learned, input-dependent time steps, exactly as in their `LEMCell`.

        [a_1, a_2, a_z, a_y] = u_n W_ih + b                  (W_ih [in, 4 hidden])
        [c_1, c_2, c_y]      = y_{n-1} W_hh                  (W_hh [hidden, 3 hidden])
        Δt̄_n = Δt σ(a_1 + c_1),   Δt_n = Δt σ(a_2 + c_2)
        z_n = (1 - Δt_n) ⊙ z_{n-1} + Δt_n ⊙ tanh(a_y + c_y)
        y_n = (1 - Δt̄_n) ⊙ y_{n-1} + Δt̄_n ⊙ tanh(z_n W_z + b_z + a_z),    output y_n

    Their `inp2hid` and `hid2hid` biases are one vector b here (their sum). Init as their
    `reset_parameters`: every weight and bias U(±1/sqrt(hidden)). Δt defaults to 1 (their
    `LEM` class); their adding problem uses Δt = 0.0242 (`adding/adding_task.py`).
    """

    dt: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self._check_dt()

    def init(self, rng, input_size):
        h = self.hidden_size
        s = 1.0 / np.sqrt(h)
        k_ih, k_hh, k_z, k_b, k_bz = jax.random.split(rng, 5)
        return {"w_ih": uniform(k_ih, (input_size, 4 * h), s),
                "w_hh": uniform(k_hh, (h, 3 * h), s),
                "w_z": uniform(k_z, (h, h), s),
                "b": uniform(k_b, (4 * h,), s) + jnp.concatenate(
                    [uniform(jax.random.fold_in(k_b, 1), (2 * h,), s), jnp.zeros((h,)),
                     uniform(jax.random.fold_in(k_b, 2), (h,), s)]),
                "b_z": uniform(k_bz, (h,), s)}

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b"]

    def step(self, params, carry, xp):
        y, z = carry
        a1, a2, a_z, a_y = jnp.split(xp, 4, axis=-1)
        c1, c2, c_y = jnp.split(dot(y, params["w_hh"]), 3, axis=-1)
        dt_bar = self.dt * jax.nn.sigmoid(a1 + c1)
        dt = self.dt * jax.nn.sigmoid(a2 + c2)
        z = (1.0 - dt) * z + dt * jnp.tanh(a_y + c_y)
        y = (1.0 - dt_bar) * y + dt_bar * jnp.tanh(dot(z, params["w_z"]) + params["b_z"] + a_z)
        return YZCarry(y, z), y
