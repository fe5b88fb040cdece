"""Tests for rnnlab.interop.torch: PyTorch's nn.RNN / nn.LSTM / nn.GRU as the oracle for
the Elman, LSTM and GRU cells, the stack, masks and the bidirectional engine."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the parity tests need it (pip install torch==2.13.0)")

import rnnlab  # noqa: E402
from rnnlab.cells import LSTMCarry, Stack  # noqa: E402
from rnnlab.interop.torch import from_torch  # noqa: E402

H, IN, B, T = 8, 5, 3, 7
ATOL = 1e-5

# name -> (rnnlab cell name, torch constructor)
KINDS = {
    "lstm": ("lstm", lambda **kw: torch.nn.LSTM(**kw)),
    "gru": ("gru", lambda **kw: torch.nn.GRU(**kw)),
    "rnn_tanh": ("rnn_tanh", lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw)),
    "rnn_relu": ("rnn_relu", lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw)),
}


def _module(kind, num_layers=1, bidirectional=False, seed=0, hidden=H):
    torch.manual_seed(seed)
    m = KINDS[kind][1](input_size=IN, hidden_size=hidden, num_layers=num_layers,
                       bidirectional=bidirectional, batch_first=True)
    with torch.no_grad():  # biases non-trivial, so that b_ih/b_hh handling is exercised
        for name, t in m.named_parameters():
            if name.startswith("bias"):
                t.uniform_(-0.5, 0.5)
    return m.eval()


def _inputs(seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, IN)).astype(np.float32)


def _run_torch(m, xs, h0=None):
    with torch.no_grad():
        out, state = m(torch.from_numpy(xs), h0)
    if isinstance(state, tuple):
        return out.numpy(), tuple(s.numpy() for s in state)
    return out.numpy(), (state.numpy(),)


def _state(kind, carry):
    """rnnlab carry -> tuple like torch's (h,) or (h, c)."""
    if kind == "lstm":
        return (np.asarray(carry.h), np.asarray(carry.c))
    return (np.asarray(carry),)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_single_layer_matches_torch(kind):
    m = _module(kind)
    cell = rnnlab.cells.make(KINDS[kind][0], H)
    params = from_torch(cell, m)
    xs = _inputs()
    out, state = _run_torch(m, xs)
    carry, ys = rnnlab.unroll(cell, params, jnp.asarray(xs))
    _close(ys, out)
    for got, want in zip(_state(kind, carry), state):
        _close(got, want[0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_single_layer_from_initial_state(kind):
    m = _module(kind, seed=1)
    cell = rnnlab.cells.make(KINDS[kind][0], H)
    params = from_torch(cell, m)
    xs = _inputs(1)
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal((1, B, H)).astype(np.float32)
    c0 = rng.standard_normal((1, B, H)).astype(np.float32)
    if kind == "lstm":
        out, state = _run_torch(m, xs, (torch.from_numpy(h0), torch.from_numpy(c0)))
        carry0 = LSTMCarry(jnp.asarray(h0[0]), jnp.asarray(c0[0]))
    else:
        out, state = _run_torch(m, xs, torch.from_numpy(h0))
        carry0 = jnp.asarray(h0[0])
    carry, ys = rnnlab.unroll(cell, params, jnp.asarray(xs), carry=carry0)
    _close(ys, out)
    for got, want in zip(_state(kind, carry), state):
        _close(got, want[0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_two_layers_via_stack(kind):
    m = _module(kind, num_layers=2, seed=3)
    name = KINDS[kind][0]
    stack = Stack((rnnlab.cells.make(name, H), rnnlab.cells.make(name, H)))
    params = from_torch(stack, m)
    assert isinstance(params, tuple) and len(params) == 2
    assert params[1]["w_ih"].shape[0] == H
    xs = _inputs(3)
    out, state = _run_torch(m, xs)
    carries, ys = rnnlab.unroll(stack, params, jnp.asarray(xs))
    _close(ys, out)
    for layer in range(2):
        for got, want in zip(_state(kind, carries[layer]), state):
            _close(got, want[layer])


@pytest.mark.parametrize("kind", list(KINDS))
def test_two_layers_via_layer_argument(kind):
    m = _module(kind, num_layers=2, seed=4)
    cell = rnnlab.cells.make(KINDS[kind][0], H)
    p0, p1 = from_torch(cell, m, layer=0), from_torch(cell, m, layer=1)
    xs = _inputs(4)
    out, state = _run_torch(m, xs)
    c0, y0 = rnnlab.unroll(cell, p0, jnp.asarray(xs))
    c1, y1 = rnnlab.unroll(cell, p1, y0)
    _close(y1, out)
    for layer, c in enumerate((c0, c1)):
        for got, want in zip(_state(kind, c), state):
            _close(got, want[layer])


@pytest.mark.parametrize("kind", list(KINDS))
def test_bidirectional_matches_torch(kind):
    m = _module(kind, bidirectional=True, seed=5)
    cell = rnnlab.cells.make(KINDS[kind][0], H)
    p_fw, p_bw = from_torch(cell, m), from_torch(cell, m, reverse=True)
    xs = _inputs(5)
    out, state = _run_torch(m, xs)
    (c_fw, c_bw), ys = rnnlab.bidirectional(cell, (p_fw, p_bw), jnp.asarray(xs))
    _close(ys, out)  # torch concatenates [forward, backward] on the feature axis
    # The reverse direction alone.
    c_rev, y_rev = rnnlab.unroll(cell, p_bw, jnp.asarray(xs), reverse=True)
    _close(y_rev, out[..., H:])
    for got, want in zip(_state(kind, c_fw), state):
        _close(got, want[0])
    for got, want in zip(_state(kind, c_bw), state):
        _close(got, want[1])
    for got, want in zip(_state(kind, c_rev), state):
        _close(got, want[1])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_bidirectional_masked_matches_packed_sequences(kind):
    """Variable lengths: torch's packed sequences against rnnlab's padding mask."""
    m = _module(kind, bidirectional=True, seed=6)
    cell = rnnlab.cells.make(KINDS[kind][0], H)
    p_fw, p_bw = from_torch(cell, m), from_torch(cell, m, reverse=True)
    xs = _inputs(6)
    lengths = np.array([T, 4, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    xs = xs * mask[..., None]  # padding content must not matter; zero it for torch
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(xs), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out_p, state = m(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    state = state if isinstance(state, tuple) else (state,)
    (c_fw, c_bw), ys = rnnlab.bidirectional(cell, (p_fw, p_bw), jnp.asarray(xs),
                                            mask=jnp.asarray(mask))
    _close(ys, out.numpy())
    for got, want in zip(_state(kind, c_fw), state):
        _close(got, want[0].numpy())
    for got, want in zip(_state(kind, c_bw), state):
        _close(got, want[1].numpy())


def test_two_layer_bidirectional_second_layer():
    """Layer 1 of a 2-layer bidirectional module takes the concatenated layer-0 outputs."""
    torch.manual_seed(7)
    m = torch.nn.GRU(IN, H, num_layers=2, bidirectional=True, batch_first=True).eval()
    cell0 = rnnlab.cells.make("gru", H)
    xs = _inputs(7)
    out, (h_n,) = _run_torch(m, xs)
    _, y0 = rnnlab.bidirectional(cell0, (from_torch(cell0, m, 0), from_torch(cell0, m, 0, True)),
                                 jnp.asarray(xs))
    (c_fw, c_bw), y1 = rnnlab.bidirectional(
        cell0, (from_torch(cell0, m, 1), from_torch(cell0, m, 1, True)), y0)
    _close(y1, out)
    _close(c_fw, h_n[2])
    _close(c_bw, h_n[3])


# --- errors --------------------------------------------------------------------------------


def test_hidden_size_mismatch():
    with pytest.raises(ValueError, match="hidden_size differs: torch module 8, cell 6"):
        from_torch(rnnlab.cells.make("lstm", 6), _module("lstm"))


@pytest.mark.parametrize("kind,rnnlab_name,match", [
    ("lstm", "gru", r"cannot load torch.nn.LSTM into GRU; use a LSTM cell"),
    ("gru", "lstm", r"cannot load torch.nn.GRU into LSTM; use a GRU cell"),
    ("rnn_tanh", "lstm", r"cannot load torch.nn.RNN into LSTM; use a Elman cell"),
    ("lstm", "esn", r"cannot load torch.nn.LSTM into ESN"),
    ("gru", "gru_cho", r"make\('gru', ...\) \(variant 'cudnn'\), not 'gru_cho'"),
    ("rnn_tanh", "rnn_relu", r"nonlinearity differs: torch 'tanh', cell 'relu'"),
    ("rnn_relu", "elman", r"nonlinearity differs: torch 'relu', cell 'tanh'"),
])
def test_wrong_cell_type(kind, rnnlab_name, match):
    with pytest.raises(ValueError, match=match):
        from_torch(rnnlab.cells.make(rnnlab_name, H), _module(kind))


@pytest.mark.parametrize("kw", [{"peepholes": True}, {"layer_norm": True}])
def test_lstm_variants_rejected(kw):
    with pytest.raises(ValueError, match="no peepholes or layer norm"):
        from_torch(rnnlab.cells.make("lstm", H, **kw), _module("lstm"))


def test_layer_and_direction_errors():
    cell = rnnlab.cells.make("gru", H)
    with pytest.raises(ValueError, match="layer 2 out of range: the module has 2 layers"):
        from_torch(cell, _module("gru", num_layers=2), layer=2)
    with pytest.raises(ValueError, match="layer -1 out of range"):
        from_torch(cell, _module("gru"), layer=-1)
    with pytest.raises(ValueError, match="layer 1 out of range"):
        from_torch(Stack((cell, cell)), _module("gru"))  # a 2-layer stack, a 1-layer module
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional torch module"):
        from_torch(cell, _module("gru"), reverse=True)


def test_unsupported_modules():
    cell = rnnlab.cells.make("lstm", H)
    with pytest.raises(ValueError, match=r"bias=False\) is not supported"):
        from_torch(cell, torch.nn.LSTM(IN, H, bias=False))
    with pytest.raises(ValueError, match="proj_size > 0"):
        from_torch(cell, torch.nn.LSTM(IN, H, proj_size=4))
    with pytest.raises(ValueError, match=r"unsupported torch module Linear; valid: nn.RNN"):
        from_torch(cell, torch.nn.Linear(IN, H))
