"""Time-delay neural network (TDNN): a causal 1-D convolution over a fixed window, as a cell.

A non-recurrent baseline that runs wherever a cell does (`unroll`, `SequenceModel`, configs):
its output depends on the last `window` inputs only, so it cannot carry information further.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, activation_fn, check_choice, uniform


@dataclasses.dataclass(frozen=True)
class TDNN(Cell):
    """Time-delay neural network (Waibel et al. 1989), one causal convolution layer.

        y_t = f(b + Σ_{k=0}^{K-1} x_{t-k} W_k),    x_{t<0} = 0

    K = `window`, W_k [in, hidden] the weights for the input k steps back, f = `activation`.
    Parameters: w_ih [in, K·hidden] = [W_0 | W_1 | ... | W_{K-1}], b [hidden]; initialised
    U(±1/sqrt(in·K)) like PyTorch's `Conv1d`, or U(±init_scale) when given.

    As a cell the convolution is written in transposed (delay-line) form: `project_inputs`
    computes every x_t W_k at once (one matmul over all steps), and the carry
    a_t [..., (K-1)·hidden] holds the partial sums the last K-1 inputs already owe the next
    K-1 outputs, block j (0-based) for output t+1+j:

        z_t = x_t W_0 + b + a_{t-1}[0],         y_t = f(z_t)
        a_t[j] = a_{t-1}[j+1] + x_t W_{j+1}     (a_{t-1}[K-1] = 0)

    The carry depends only on the last K-1 inputs; a masked (padded) step leaves it unchanged,
    which is the same as deleting that step from the sequence.
    """

    window: int = 4
    activation: str = "relu"
    init_scale: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"window must be a positive integer, got {self.window!r}")
        check_choice("activation", self.activation, ("tanh", "relu", "identity"))

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*tuple(batch_shape), (self.window - 1) * self.hidden_size), dtype)

    def init(self, rng, input_size):
        k_w, k_b = jax.random.split(rng)
        h, k = self.hidden_size, self.window
        s = self.init_scale if self.init_scale is not None else 1.0 / np.sqrt(input_size * k)
        return {"w_ih": uniform(k_w, (input_size, k * h), s), "b": uniform(k_b, (h,), s)}

    def project_inputs(self, params, xs):
        """[..., in] -> [..., K·hidden]: x W_k for every k, the bias added to block 0."""
        h = self.hidden_size
        xp = xs @ params["w_ih"]
        return xp.at[..., :h].add(params["b"].astype(xp.dtype))

    def step(self, params, carry, xp):
        h = self.hidden_size
        if self.window == 1:
            return carry, activation_fn(self.activation)(xp)
        y = activation_fn(self.activation)(xp[..., :h] + carry[..., :h])
        shifted = jnp.concatenate([carry[..., h:], jnp.zeros_like(carry[..., :h])], axis=-1)
        return shifted + xp[..., h:], y
