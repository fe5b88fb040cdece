"""Parallel-scan recurrences: minGRU, minLSTM (Feng et al. 2024) and the LRU (Orvieto et al. 2023).

Their state update is linear in the state with coefficients that depend on the input only,

    h_t = a_t ⊙ h_{t-1} + b_t,

so the whole sequence is one associative scan over the pairs (a_t, b_t) with the operator

    (a_1, b_1) • (a_2, b_2) = (a_1 a_2,  a_2 b_1 + b_2)          (apply 1, then 2)

(`jax.lax.associative_scan`: O(log T) depth instead of T dependent steps). With the composed
pair (A_t, B_t) of steps 1..t, h_t = A_t ⊙ h_0 + B_t for any initial state h_0.

Each cell keeps the ordinary cell contract (`cell(params, carry, x)` is one step, for generation
and as the independent reference) and adds

    carry, ys = cell.parallel_unroll(params, xs, carry, mask, reverse)

which `rnnlab.unroll` calls automatically. Masked steps are the identity pair (a = 1, b = 0), so
they leave the state unchanged; their outputs are zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell, uniform

_NEG = -1e30  # log(0) stand-in: finite so that gradients through logaddexp stay finite


def g(x):
    """g(x) = x + 1/2 for x >= 0, σ(x) otherwise: continuous, positive (Feng et al. 2024)."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x):
    """log g(x) computed stably: log(x + 1/2) for x >= 0, -softplus(-x) otherwise."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _compute_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def log_space_scan(log_a, log_b, axis, reverse=False):
    """Composes h -> a_t h + b_t (a, b > 0) along `axis` in log space.

    Returns (log A_t, log B_t) with h_t = A_t h_0 + B_t. The operator
    (la_1, lb_1) • (la_2, lb_2) = (la_1 + la_2, logaddexp(la_2 + lb_1, lb_2)) never forms a
    product of many gates, so it neither underflows nor loses precision at long T.
    """

    def op(e1, e2):
        la1, lb1 = e1
        la2, lb2 = e2
        return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)

    return jax.lax.associative_scan(op, (log_a, log_b), reverse=reverse, axis=axis)


def linear_scan(a, b, axis, reverse=False):
    """Composes h -> a_t h + b_t along `axis` (real or complex); returns (A_t, B_t)."""

    def op(e1, e2):
        a1, b1 = e1
        a2, b2 = e2
        return a1 * a2, a2 * b1 + b2

    return jax.lax.associative_scan(op, (a, b), reverse=reverse, axis=axis)


def _time_axis(xs):
    return xs.ndim - 2


def _final(hs, reverse):
    return hs[..., 0, :] if reverse else hs[..., -1, :]


class _ParallelCell(Cell):
    """Shared checks for the parallel cells (subclasses are frozen dataclasses)."""

    def _prepare(self, params, xs, carry, mask):
        xp = self.project_inputs(params, xs)
        if carry is None:
            carry = self.initial_carry(xs.shape[:-2], dtype=xp.dtype)
        keep = None if mask is None else mask.astype(bool)[..., None]  # [*batch, time, 1]
        return xp, carry, keep


@dataclasses.dataclass(frozen=True)
class MinGRU(_ParallelCell):
    """minGRU (Feng et al. 2024, "Were RNNs all we needed?"): gates see only x_t.

        z_t = σ(x_t W_z + b_z),   h̃_t = g(x_t W_h + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t,    y_t = h_t

    with g(x) = x + 1/2 (x >= 0), σ(x) (x < 0), which keeps h̃ > 0 so the parallel form can run
    in log space: log(1 - z) = -softplus(k), log z = -softplus(-k) (k the z pre-activation),
    log h̃ = log_g(·), and h_t = A_t h_0 + exp(log B_t) from `log_space_scan` over
    (log(1 - z_t), log z_t + log h̃_t). The h_0 term is kept outside the log so any carry
    (zero or negative) works.

    W_ih [in, 2 hidden] holds [W_z, W_h]; init U(±1/sqrt(in)) (PyTorch `nn.Linear`).
    """

    def init(self, rng, input_size):
        k_w, k_b = jax.random.split(rng)
        s = 1.0 / np.sqrt(input_size)
        return {"w_ih": uniform(k_w, (input_size, 2 * self.hidden_size), s),
                "b": uniform(k_b, (2 * self.hidden_size,), s)}

    def project_inputs(self, params, xs):
        return xs @ params["w_ih"] + params["b"]

    def step(self, params, carry, xp):
        k, pre_h = jnp.split(xp, 2, axis=-1)
        z = jax.nn.sigmoid(k)
        h = (1.0 - z) * carry + z * g(pre_h)
        return h, h

    def parallel_unroll(self, params, xs, carry=None, mask=None, reverse=False):
        """xs [*batch, time, in] -> (carry [*batch, hidden], ys [*batch, time, hidden])."""
        xp, carry, keep = self._prepare(params, xs, carry, mask)
        dt = _compute_dtype(xp.dtype)
        k, pre_h = jnp.split(xp.astype(dt), 2, axis=-1)
        log_a = -jax.nn.softplus(k)
        log_b = -jax.nn.softplus(-k) + log_g(pre_h)
        return _log_space_finish(log_a, log_b, carry, keep, xs, reverse, xp.dtype)


@dataclasses.dataclass(frozen=True)
class MinLSTM(_ParallelCell):
    """minLSTM (Feng et al. 2024): forget and input gates see only x_t and are normalised.

        f_t = σ(x_t W_f + b_f),  i_t = σ(x_t W_i + b_i),  h̃_t = g(x_t W_h + b_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t,    y_t = h_t

    Log space: d = softplus(-k_f) - softplus(-k_i), log f' = -softplus(d),
    log i' = -softplus(-d); then the same log-space scan as `MinGRU`.

    W_ih [in, 3 hidden] holds [W_f, W_i, W_h]; init U(±1/sqrt(in)).
    """

    def init(self, rng, input_size):
        k_w, k_b = jax.random.split(rng)
        s = 1.0 / np.sqrt(input_size)
        return {"w_ih": uniform(k_w, (input_size, 3 * self.hidden_size), s),
                "b": uniform(k_b, (3 * self.hidden_size,), s)}

    def project_inputs(self, params, xs):
        return xs @ params["w_ih"] + params["b"]

    def step(self, params, carry, xp):
        k_f, k_i, pre_h = jnp.split(xp, 3, axis=-1)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        h = (f * carry + i * g(pre_h)) / (f + i)
        return h, h

    def parallel_unroll(self, params, xs, carry=None, mask=None, reverse=False):
        """xs [*batch, time, in] -> (carry [*batch, hidden], ys [*batch, time, hidden])."""
        xp, carry, keep = self._prepare(params, xs, carry, mask)
        dt = _compute_dtype(xp.dtype)
        k_f, k_i, pre_h = jnp.split(xp.astype(dt), 3, axis=-1)
        d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
        log_a = -jax.nn.softplus(d)
        log_b = -jax.nn.softplus(-d) + log_g(pre_h)
        return _log_space_finish(log_a, log_b, carry, keep, xs, reverse, xp.dtype)


def _log_space_finish(log_a, log_b, carry, keep, xs, reverse, dtype):
    if keep is not None:
        log_a = jnp.where(keep, log_a, 0.0)
        log_b = jnp.where(keep, log_b, _NEG)
    la, lb = log_space_scan(log_a, log_b, _time_axis(xs), reverse)
    h0 = jnp.expand_dims(carry.astype(la.dtype), -2)
    hs = jnp.exp(la) * h0 + jnp.exp(lb)
    ys = hs if keep is None else jnp.where(keep, hs, 0.0)
    return _final(hs, reverse).astype(carry.dtype), ys.astype(dtype)


@dataclasses.dataclass(frozen=True)
class LRU(_ParallelCell):
    """Linear Recurrent Unit (Orvieto et al. 2023), state size N = `hidden_size`.

        λ = exp(-exp(ν) + i exp(θ))                        (diagonal, complex, |λ| < 1)
        h_t = λ ⊙ h_{t-1} + (x_t B) ⊙ γ,   γ = exp(γ_log), initialised to sqrt(1 - |λ|²)
        y_t = Re(h_t C) + x_t D

    B = B_re + i B_im [in, N], C = C_re + i C_im [N, out] with out = `out_features` (default
    hidden_size); D is the elementwise skip [in] when out == in (the paper's setting) and a full
    [in, out] matrix otherwise. "Ring" init: |λ| uniform
    on the ring r_min <= |λ| <= r_max (by area), arg λ ~ U(0, max_phase); B ~ N(0, 1/(2 in)),
    C ~ N(0, 1/N), D ~ N(0, 1).

    The carry is real, [*batch, 2N] = [Re h, Im h], so that it is an ordinary array for every
    tool that handles carries; the parallel form scans the complex pairs (λ, x_t B γ).
    """

    out_features: int | None = None
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * np.pi

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.r_min < self.r_max < 1.0:
            raise ValueError(f"need 0 <= r_min < r_max < 1, got r_min={self.r_min!r}, "
                             f"r_max={self.r_max!r}")

    @property
    def output_size(self):
        return self.out_features or self.hidden_size

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*tuple(batch_shape), 2 * self.hidden_size), dtype)

    def input_size(self, params):
        return params["B_re"].shape[0]

    def init(self, rng, input_size):
        n, out = self.hidden_size, self.output_size
        k1, k2, kb1, kb2, kc1, kc2, kd = jax.random.split(rng, 7)
        u1, u2 = jax.random.uniform(k1, (n,)), jax.random.uniform(k2, (n,))
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (self.r_max ** 2 - self.r_min ** 2)
                                        + self.r_min ** 2))
        theta_log = jnp.log(self.max_phase * u2)
        lam_abs = jnp.exp(-jnp.exp(nu_log))
        d_shape = (input_size,) if out == input_size else (input_size, out)
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": jnp.log(jnp.sqrt(1.0 - lam_abs ** 2)),
            "B_re": jax.random.normal(kb1, (input_size, n)) / np.sqrt(2 * input_size),
            "B_im": jax.random.normal(kb2, (input_size, n)) / np.sqrt(2 * input_size),
            "C_re": jax.random.normal(kc1, (n, out)) / np.sqrt(n),
            "C_im": jax.random.normal(kc2, (n, out)) / np.sqrt(n),
            "D": jax.random.normal(kd, d_shape),
        }

    def _lambda(self, params):
        nu, theta = jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])
        mod = jnp.exp(-nu)
        return mod * jnp.cos(theta), mod * jnp.sin(theta)  # Re λ, Im λ

    def project_inputs(self, params, xs):
        """[..., in] -> [..., 2N + out] = [Re(x B γ), Im(x B γ), x D]."""
        gamma = jnp.exp(params["gamma_log"])
        w = jnp.concatenate([params["B_re"] * gamma, params["B_im"] * gamma], axis=-1)
        d = params["D"]
        du = xs * d if d.ndim == 1 else xs @ d
        return jnp.concatenate([xs @ w, du], axis=-1)

    def _readout(self, params, h, du):
        c = jnp.concatenate([params["C_re"], -params["C_im"]], axis=0)  # Re(hC) = h_re C_re - h_im C_im
        return h @ c + du

    def step(self, params, carry, xp):
        n = self.hidden_size
        lr, li = self._lambda(params)
        bu_r, bu_i, du = xp[..., :n], xp[..., n:2 * n], xp[..., 2 * n:]
        h_r, h_i = carry[..., :n], carry[..., n:]
        h = jnp.concatenate([lr * h_r - li * h_i + bu_r, lr * h_i + li * h_r + bu_i], axis=-1)
        return h, self._readout(params, h, du)

    def parallel_unroll(self, params, xs, carry=None, mask=None, reverse=False):
        """xs [*batch, time, in] -> (carry [*batch, 2N], ys [*batch, time, out])."""
        n = self.hidden_size
        xp, carry, keep = self._prepare(params, xs, carry, mask)
        lr, li = self._lambda(params)
        lam = jax.lax.complex(lr, li)
        bu = jax.lax.complex(xp[..., :n], xp[..., n:2 * n])
        a = jnp.broadcast_to(lam, bu.shape)
        if keep is not None:
            a = jnp.where(keep, a, jnp.ones((), a.dtype))
            bu = jnp.where(keep, bu, jnp.zeros((), bu.dtype))
        a_cum, b_cum = linear_scan(a, bu, _time_axis(xs), reverse)
        h0 = jnp.expand_dims(jax.lax.complex(carry[..., :n], carry[..., n:]), -2)
        hc = a_cum * h0 + b_cum
        hs = jnp.concatenate([jnp.real(hc), jnp.imag(hc)], axis=-1).astype(carry.dtype)
        ys = self._readout(params, hs, xp[..., 2 * n:])
        if keep is not None:
            ys = jnp.where(keep, ys, jnp.zeros((), ys.dtype))
        return _final(hs, reverse), ys
