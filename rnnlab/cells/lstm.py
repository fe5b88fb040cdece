"""Long short-term memory with fused gates, forget bias, peepholes, layer norm and a projection."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, check_choice, dot, recurrent_matrix, uniform


class LSTMCarry(NamedTuple):
    h: jax.Array  # [..., hidden], or [..., proj_size] with a projection
    c: jax.Array  # [..., hidden]


def _layer_norm(x, scale, bias=None, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * scale
    return y if bias is None else y + bias


@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    """LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

        [i, f, g, o] = x_t W_ih + h_{t-1} W_hh + b            (one fused [hidden, 4 hidden] matmul)
        i = σ(i + p_i ⊙ c_{t-1}),  f = σ(f + p_f ⊙ c_{t-1}),  g = tanh(g)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        o = σ(o + p_o ⊙ c_t)
        h_t = o ⊙ tanh(c_t),    y_t = h_t

    Gate order i, f, g, o is PyTorch's. The peephole terms p (Gers & Schmidhuber 2000) are
    present only with `peepholes=True`. With `layer_norm=True` (Ba et al. 2016) the gate
    pre-activations are LN(x W_ih; γ_x) + LN(h W_hh; γ_h) + b and h_t = o ⊙ tanh(LN(c_t; γ_c, β_c)).

    Init: W U(±1/sqrt(hidden)) (PyTorch), or U(±init_scale) for every weight and bias when
    given (Zaremba et al. 2014); b starts at 0 except the forget block, which gets `forget_bias`
    added (Jozefowicz et al. 2015). `recurrent_init="orthogonal"` makes each gate's block of
    W_hh orthogonal. `chrono_init=T_max > 0` replaces the forget bias by chrono initialisation
    (Tallec & Ollivier 2018): b_f = log(u), u ~ U(1, T_max - 1) per unit, and b_i = -b_f, so the
    units' memory time scales spread over the dependency lengths up to T_max.

    Projection (`proj_size=P > 0`; the LSTMP of Sak, Senior & Beaufays 2014, "Long short-term
    memory recurrent neural network architectures for large scale acoustic modeling"; PyTorch's
    `nn.LSTM(proj_size=P)`): the output and the recurrent state are projected to P < hidden units,

        h_t = (o ⊙ tanh(c_t)) W_hr,    y_t = h_t                 (W_hr [hidden, P], no bias)

    (tanh(LN(c_t)) with layer norm), and the recurrence reads the projected h: W_hh is
    [P, 4 hidden]. The carry is (h [P],
    c [hidden]) and `output_size` is P. W_hr starts U(±1/sqrt(hidden)) (PyTorch), or
    U(±init_scale); with `recurrent_init="orthogonal"` each gate's [P, hidden] block of W_hh has
    orthonormal rows. The step is then two matmuls, so `fused="auto"` runs it on the scan.
    """

    forget_bias: float = 1.0
    peepholes: bool = False
    layer_norm: bool = False
    init_scale: float | None = None
    recurrent_init: str = "default"
    chrono_init: int = 0
    proj_size: int = 0  # > 0: project h_t to this many units (Sak et al. 2014); 0 = off

    def __post_init__(self):
        super().__post_init__()
        check_choice("recurrent_init", self.recurrent_init, ("default", "orthogonal"))
        p = self.proj_size
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not (
                0 <= p < self.hidden_size):
            raise ValueError(f"proj_size={p!r} must be 0 (off) or an integer in "
                             f"[1, hidden_size={self.hidden_size}) (PyTorch's rule)")
        if self.chrono_init and self.chrono_init < 3:
            raise ValueError(f"chrono_init={self.chrono_init!r} must be 0 (off) or the longest "
                             "dependency length T_max >= 3 (Tallec & Ollivier 2018)")

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        batch_shape = tuple(batch_shape)
        # two buffers, not one array twice: a jitted step that donates its carry needs distinct ones
        return LSTMCarry(jnp.zeros((*batch_shape, self.output_size), dtype),
                         jnp.zeros((*batch_shape, self.hidden_size), dtype))

    def _recurrent_block(self, rng, scale):
        """One gate's block of W_hh: [hidden, hidden], or [P, hidden] with a projection."""
        h, p = self.hidden_size, self.proj_size
        if not p:
            return recurrent_matrix(rng, h, self.recurrent_init, 1.0, scale)
        if self.recurrent_init == "orthogonal":
            return jax.nn.initializers.orthogonal()(rng, (p, h), jnp.float32)
        return uniform(rng, (p, h), scale)

    def init(self, rng, input_size):
        h = self.hidden_size
        k_ih, k_hh, k_b, k_p = jax.random.split(rng, 4)
        s = self.init_scale if self.init_scale is not None else 1.0 / np.sqrt(h)
        w_hh = jnp.concatenate([self._recurrent_block(k, s)
                                for k in jax.random.split(k_hh, 4)], axis=1)
        b = uniform(k_b, (4 * h,), s) if self.init_scale is not None else jnp.zeros((4 * h,))
        if self.chrono_init:
            u = jax.random.uniform(jax.random.fold_in(k_b, 1), (h,), minval=1.0,
                                   maxval=self.chrono_init - 1.0)
            b_f = jnp.log(u)
            b = b.at[:h].set(-b_f).at[h:2 * h].set(b_f)
        else:
            b = b.at[h:2 * h].add(self.forget_bias)
        params = {
            "w_ih": uniform(k_ih, (input_size, 4 * h), s),
            "w_hh": w_hh,
            "b": b,
        }
        if self.peepholes:
            params["peep"] = uniform(k_p, (3, h), s)  # rows: p_i, p_f, p_o
        if self.layer_norm:
            params["ln"] = {"x": jnp.ones((4 * h,)), "h": jnp.ones((4 * h,)),
                            "c_scale": jnp.ones((h,)), "c_bias": jnp.zeros((h,))}
        if self.proj_size:  # its own key: the other parameters stay those of proj_size=0
            params["w_hr"] = uniform(jax.random.fold_in(rng, 7), (h, self.proj_size), s)
        return params

    def project_inputs(self, params, xs):
        z = dot(xs, params["w_ih"])
        if self.layer_norm:
            z = _layer_norm(z, params["ln"]["x"])
        return z + params["b"]

    recurrent_weight = "w_hh"

    def recurrent_input(self, carry):
        return carry.h

    def step(self, params, carry, xp):
        return self.combine(params, carry, xp, dot(carry.h, params["w_hh"]))

    def combine(self, params, carry, xp, zh):
        h, c = carry
        if self.layer_norm:
            zh = _layer_norm(zh, params["ln"]["h"])
        i, f, g, o = jnp.split(xp + zh, 4, axis=-1)
        if self.peepholes:
            p = params["peep"]
            i, f = i + p[0] * c, f + p[1] * c
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        if self.peepholes:
            o = o + params["peep"][2] * c
        cn = _layer_norm(c, params["ln"]["c_scale"], params["ln"]["c_bias"]) if self.layer_norm else c
        h = jax.nn.sigmoid(o) * jnp.tanh(cn)
        if self.proj_size:
            h = dot(h, params["w_hr"])
        return LSTMCarry(h, c), h
