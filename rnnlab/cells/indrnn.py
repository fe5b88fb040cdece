"""IndRNN: independently recurrent neurons with a bounded diagonal recurrence."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, activation_fn, check_choice, clip_gradient, dot, uniform

POSITIONS = ("first", "last")


@dataclasses.dataclass(frozen=True)
class IndRNN(Cell):
    """Independently recurrent neural network (Li, Li, Cook, Zhu & Gao 2018, CVPR).

        h_t = σ(x_t W_ih + u ⊙ h_{t-1} + b),    y_t = h_t

    σ is ReLU (or tanh); u [hidden] is a per-unit recurrent weight, so ∂h_t/∂h_{t-1} is
    diagonal, σ'(·) ⊙ u, and the gradient over k steps is the product of k such factors.

    The constraint |u| <= m with m = 2^{1/T} (T = `max_length`, or m = `recurrent_max` when
    given) keeps u^T <= 2: it is applied after every optimiser update, not in the forward pass
    (`param_bounds` -> `rnnlab.train.optim.project_params`, which the train loop adds when a
    cell asks for it). Their init of u for the adding problem: U(0, m) in the first layers and
    U(1/m, m) in the last one (`position`, set per layer by `make_cells` through `for_layer`;
    a single layer is the last). With neither `max_length` nor `recurrent_max`: u ~ U(0, 1)
    and no constraint. W_ih ~ U(±1/sqrt(hidden)) (the PyTorch recurrent default), or
    N(0, input_std²) when `input_std` > 0 (their adding code: 0.001); b = 0.

    `grad_clip` > 0 clips the gradient with respect to the pre-activation x_t W_ih + u ⊙ h_{t-1}
    + b elementwise to ±grad_clip at every step of the backward pass (`clip_gradient`), as
    their code does through Lasagne's `grad_clipping=10`; it leaves the forward pass and
    forward-mode derivatives unchanged (`dynamics()`, which the diagnostics measure, drops it).
    """

    activation: str = "relu"
    max_length: int = 0  # T: the bound 2^{1/T} and the init ranges (0: none)
    recurrent_max: float | None = None  # the bound m itself (overrides 2^{1/T})
    position: str = "last"  # "first" (U(0, m)) | "last" (U(1/m, m)): set by for_layer
    input_std: float = 0.0  # > 0: W_ih ~ N(0, input_std²); 0: U(±1/sqrt(hidden))
    grad_clip: float = 0.0  # > 0: ∂L/∂(pre-activation) clipped to ±this at every step

    def __post_init__(self):
        super().__post_init__()
        check_choice("activation", self.activation, ("relu", "tanh"))
        check_choice("position", self.position, POSITIONS)
        if not isinstance(self.max_length, (int, np.integer)) or self.max_length < 0:
            raise ValueError(f"max_length must be an integer >= 0 (0: no bound), got "
                             f"{self.max_length!r}")
        if not self.input_std >= 0:
            raise ValueError(f"input_std must be >= 0 (0: uniform init), got {self.input_std!r}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0: none), got {self.grad_clip!r}")
        if self.recurrent_max is not None and not self.recurrent_max > 0:
            raise ValueError(f"recurrent_max must be > 0 (or None), got {self.recurrent_max!r}")

    @property
    def bound(self) -> float | None:
        """m: the largest |u| the constraint allows (None: unconstrained)."""
        if self.recurrent_max is not None:
            return float(self.recurrent_max)
        return 2.0 ** (1.0 / self.max_length) if self.max_length else None

    def dynamics(self):
        return dataclasses.replace(self, grad_clip=0.0) if self.grad_clip else self

    def for_layer(self, index, num_layers):
        return dataclasses.replace(self, position="last" if index == num_layers - 1 else "first")

    def param_bounds(self):
        m = self.bound
        return {} if m is None else {"u_hh": m}

    def init(self, rng, input_size):
        k_ih, k_u = jax.random.split(rng)
        h, m = self.hidden_size, self.bound
        if m is None:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (1.0 / m if self.position == "last" else 0.0), m
        w_ih = (self.input_std * jax.random.normal(k_ih, (input_size, h)) if self.input_std
                else uniform(k_ih, (input_size, h), 1.0 / np.sqrt(h)))
        return {"w_ih": w_ih,
                "u_hh": jax.random.uniform(k_u, (h,), jnp.float32, lo, hi),
                "b": jnp.zeros((h,))}

    def project_inputs(self, params, xs):
        return dot(xs, params["w_ih"]) + params["b"]

    def step(self, params, carry, xp):
        pre = xp + params["u_hh"] * carry
        if self.grad_clip:
            pre = clip_gradient(pre, self.grad_clip)
        h = activation_fn(self.activation)(pre)
        return h, h
