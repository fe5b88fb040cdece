"""AntisymmetricRNN: a forward-Euler step of an ODE whose Jacobian has imaginary eigenvalues."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, dot


@dataclasses.dataclass(frozen=True)
class AntisymmetricRNN(Cell):
    """AntisymmetricRNN (Chang, Chen, Haber & Chi 2019, ICLR).

        M = W - Wᵀ - γ I                                   (eigenvalues -γ + i·ω)
        h_t = h_{t-1} + ε tanh(h_{t-1} M + x_t V + b),      y_t = h_t

    and with `gated=True` their gated variant, whose gate shares M:

        z_t = σ(h_{t-1} M + x_t V_z + b_z)
        h_t = h_{t-1} + ε z_t ⊙ tanh(h_{t-1} M + x_t V_h + b_h)

    M is skew-symmetric up to the diffusion -γ I, so the continuous system is stable and
    non-dissipative for γ = 0; ε is the step size. M is formed once per unroll (`prepare`).
    Init: W ~ N(0, σ²/hidden) with σ = `init_scale` (their σ_w, tuned per task), V ~ N(0, 1/in),
    b = 0 (w_ih [in, 2 hidden] holds [V_h, V_z] when gated). The defaults ε = γ = 0.01 are a
    starting point; their tables tune ε and γ per task.
    """

    gated: bool = False
    epsilon: float = 0.01
    gamma: float = 0.01
    init_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not self.epsilon > 0:
            raise ValueError(f"epsilon (the step size) must be > 0, got {self.epsilon!r}")
        if self.gamma < 0:
            raise ValueError(f"gamma (the diffusion) must be >= 0, got {self.gamma!r}")

    def init(self, rng, input_size):
        k_w, k_v = jax.random.split(rng)
        h, g = self.hidden_size, 2 if self.gated else 1
        return {"w_hh": jax.random.normal(k_w, (h, h)) * (self.init_scale / np.sqrt(h)),
                "w_ih": jax.random.normal(k_v, (input_size, g * h)) / np.sqrt(input_size),
                "b": jnp.zeros((g * h,))}

    def recurrent_matrix(self, params) -> jax.Array:
        """M = W - Wᵀ - γ I [hidden, hidden] (the prepared one when present)."""
        if "_M" in params:
            return params["_M"]
        w = params["w_hh"]
        return w - w.T - self.gamma * jnp.eye(w.shape[0], dtype=w.dtype)

    def prepare(self, params):
        return {**params, "_M": self.recurrent_matrix(params)}

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b"]

    def step(self, params, carry, xp):
        zh = dot(carry, self.recurrent_matrix(params))
        if self.gated:
            x_h, x_z = jnp.split(xp, 2, axis=-1)
            h = carry + self.epsilon * jax.nn.sigmoid(zh + x_z) * jnp.tanh(zh + x_h)
        else:
            h = carry + self.epsilon * jnp.tanh(zh + xp)
        return h, h
