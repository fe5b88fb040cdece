"""rnnlab LSTM layers through cuDNN, via JAX's binding `jax.experimental.rnn`.

    flat = to_cudnn_weights(params)                       # rnnlab params -> cuDNN's flat vector
    params = from_cudnn_weights(flat, input_size, hidden) # and back (the two biases summed)
    carry, ys = cudnn_unroll(params, xs, carry, lengths=lengths, reverse=False)

Weight layout (one unidirectional layer; see the module docstring of `jax.experimental.rnn`):
flat = [W_ih (4h, in), W_hh (4h, h), b_ih (4h), b_hh (4h)] row-major, PyTorch's orientation
(x W_ih^T) and gate order i, f, g, o, which is rnnlab's order, so the conversion is a transpose
per matrix. rnnlab keeps one bias b = b_ih + b_hh: it goes to b_ih and b_hh is zero.

The binding supports float32 only, a padding mask only in the form of sequence lengths
(padding at the end), and has no vmap or forward-mode rule; `rnnlab.unroll` selects this path
only where it is valid (see `rnnlab.fused.select`). cuDNN allows TF32 matmuls unless
`jax.default_matmul_precision("highest")` is set, as XLA's own float32 matmuls on GPU do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab.cells.lstm import LSTMCarry


def to_cudnn_weights(params) -> jax.Array:
    """rnnlab LSTM params {"w_ih" [in, 4h], "w_hh" [h, 4h], "b" [4h]} -> flat [num_params]."""
    b = params["b"]
    return jnp.concatenate([params["w_ih"].T.reshape(-1), params["w_hh"].T.reshape(-1),
                            b, jnp.zeros_like(b)])


def from_cudnn_weights(flat: jax.Array, input_size: int, hidden_size: int) -> dict:
    """cuDNN's flat weights of one unidirectional LSTM layer -> rnnlab params (b = b_ih + b_hh)."""
    g = 4 * hidden_size
    want = g * (input_size + hidden_size + 2)
    if flat.shape != (want,):
        raise ValueError(f"flat cuDNN LSTM weights for input_size={input_size}, "
                         f"hidden_size={hidden_size} must have shape ({want},), got "
                         f"{tuple(flat.shape)}")
    n_ih, n_hh = g * input_size, g * hidden_size
    w_ih = flat[:n_ih].reshape(g, input_size)
    w_hh = flat[n_ih:n_ih + n_hh].reshape(g, hidden_size)
    b_ih, b_hh = flat[n_ih + n_hh:n_ih + n_hh + g], flat[n_ih + n_hh + g:]
    return {"w_ih": w_ih.T, "w_hh": w_hh.T, "b": b_ih + b_hh}


def flip_padded(xs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverses each sequence of xs [batch, time, ...] within its length (padding stays at
    the end); its own inverse. Without lengths, a plain reversal of the time axis."""
    if lengths is None:
        return xs[:, ::-1]
    time = xs.shape[1]
    t = jnp.arange(time)
    src = jnp.where(t[None] < lengths[:, None], lengths[:, None] - 1 - t[None], t[None])
    return jnp.take_along_axis(xs, src.reshape(*src.shape, *([1] * (xs.ndim - 2))), axis=1)


def _binding_lstm(*args, **kwargs):
    from jax.experimental import rnn  # imported on use: the module is GPU-only in practice

    return rnn.lstm(*args, **kwargs)


def cudnn_unroll(params, xs: jax.Array, carry: LSTMCarry, lengths: jax.Array | None = None,
                 reverse: bool = False, lstm_fn=None):
    """One LSTM layer over xs [batch, time, in] with cuDNN.

    carry: LSTMCarry with h, c [batch, hidden]; lengths: optional [batch] int (the real steps of
    each sequence, padding at the end; 0 leaves the carry unchanged). With reverse=True each
    sequence is read from its own last real step back to its first (as `rnnlab.unroll` does with
    a padding mask). `lstm_fn` defaults to `jax.experimental.rnn.lstm` (tests pass its pure-JAX
    reference, `lstm_ref`, through the same signature).

    Returns (LSTMCarry, ys [batch, time, hidden]) with ys zero at padded steps.
    """
    lstm_fn = lstm_fn or _binding_lstm
    batch, time, input_size = xs.shape
    hidden = params["w_hh"].shape[0]
    seq = (jnp.full((batch,), time, jnp.int32) if lengths is None
           else jnp.clip(lengths.astype(jnp.int32), 1, time))  # cuDNN needs >= 1 step
    x = flip_padded(xs, lengths) if reverse else xs
    ys, h_n, c_n = lstm_fn(x, carry.h[None], carry.c[None], to_cudnn_weights(params), seq,
                           input_size=input_size, hidden_size=hidden, num_layers=1,
                           dropout=0.0, bidirectional=False)
    if reverse:
        ys = flip_padded(ys, lengths)
    h, c = h_n[0], c_n[0]
    if lengths is not None:
        real = jnp.arange(time)[None] < lengths[:, None]
        ys = jnp.where(real[..., None], ys, jnp.zeros((), ys.dtype))
        empty = (lengths <= 0)[:, None]
        h, c = jnp.where(empty, carry.h, h), jnp.where(empty, carry.c, c)
    return LSTMCarry(h, c), ys
