"""Echo-state network: a fixed random reservoir; only a linear readout is trained."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab.cells.base import Cell, spectral_radius, uniform


@dataclasses.dataclass(frozen=True)
class ESN(Cell):
    """Leaky echo-state network (Jaeger 2001; leaky form of Jaeger et al. 2007).

        h̃_t = tanh(x_t W_in + h_{t-1} W + b)
        h_t = (1 - a) h_{t-1} + a h̃_t,    y_t = h_t

    W [hidden, hidden] is sparse (a fraction `sparsity` of its entries is zero), U(-1, 1) on
    the rest, rescaled to `spectral_radius`; W_in ~ U(±input_scaling), b ~ U(±bias_scaling);
    a = `leak_rate`. The reservoir is fixed: `step` stops gradients into the parameters (state
    Jacobians are unaffected), and the readout is fitted with `ridge_readout`.
    """

    spectral_radius: float = 0.9
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    leak_rate: float = 1.0
    sparsity: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        if not 0.0 < self.leak_rate <= 1.0:
            raise ValueError(f"leak_rate must be in (0, 1], got {self.leak_rate!r}")

    def init(self, rng, input_size):
        k_in, k_w, k_mask, k_b = jax.random.split(rng, 4)
        n = self.hidden_size
        dense = uniform(k_w, (n, n), 1.0)
        w = dense * (jax.random.uniform(k_mask, (n, n)) >= self.sparsity)

        # A small, very sparse reservoir can be nilpotent (spectral radius 0, no rescaling
        # possible): redraw the sparsity pattern until it is not.
        def redraw(state):
            i, _, _ = state
            m = jax.random.uniform(jax.random.fold_in(k_mask, i), (n, n)) >= self.sparsity
            return i + 1, dense * m, spectral_radius(dense * m)

        _, w, radius = jax.lax.while_loop(lambda s: s[2] == 0, redraw,
                                          (1, w, spectral_radius(w)))
        w = w * (self.spectral_radius / radius)
        return {
            "w_ih": uniform(k_in, (input_size, n), self.input_scaling),
            "w_hh": w,
            "b": uniform(k_b, (n,), self.bias_scaling),
        }

    def project_inputs(self, params, xs):
        params = jax.lax.stop_gradient(params)
        return xs @ params["w_ih"] + params["b"]

    def step(self, params, carry, xp):
        w = jax.lax.stop_gradient(params["w_hh"])
        h = (1.0 - self.leak_rate) * carry + self.leak_rate * jnp.tanh(xp + carry @ w)
        return h, h


def ridge_readout(states: jax.Array, targets: jax.Array, alpha: float = 1e-6,
                  washout: int = 0):
    """Closed-form ridge regression readout: argmin_W,b ||S W + b - Y||² + alpha ||W||².

    states [..., time, hidden] and targets [..., time, out] (leading dims are flattened after
    dropping the first `washout` steps). Returns {"w": [hidden, out], "b": [out]}; predict with
    `states @ w + b`. The bias is not penalised.
    """
    if states.shape[:-1] != targets.shape[:-1]:
        raise ValueError(f"states {tuple(states.shape)} and targets {tuple(targets.shape)} "
                         "must agree on every axis but the last")
    if states.ndim >= 2 and washout:
        states, targets = states[..., washout:, :], targets[..., washout:, :]
    s = states.reshape(-1, states.shape[-1])
    y = targets.reshape(-1, targets.shape[-1])
    s_mean, y_mean = s.mean(0), y.mean(0)
    sc, yc = s - s_mean, y - y_mean
    gram = sc.T @ sc + alpha * jnp.eye(s.shape[-1], dtype=s.dtype)
    w = jnp.linalg.solve(gram, sc.T @ yc)
    return {"w": w, "b": y_mean - s_mean @ w}
