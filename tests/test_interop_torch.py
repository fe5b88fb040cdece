"""Tests for rnnlab.interop.torch: PyTorch's nn.RNN / nn.LSTM / nn.GRU as the oracle for
the Elman, LSTM and GRU cells, the stack, masks and the bidirectional engine; the LSTM with a
projection (nn.LSTM(proj_size=P)) forwards and backwards; and the conversion back (to_torch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the parity tests need it (pip install torch==2.13.0)")

import rnnlab  # noqa: E402
from rnnlab.cells import LSTMCarry, Stack  # noqa: E402
from rnnlab.interop.torch import from_torch, to_torch  # noqa: E402

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


# --- the LSTM with a projection (Sak et al. 2014; nn.LSTM(proj_size=P)) ---------------------

P = 3


def _scaled_close(got, want, rtol=3e-5):
    """|got - want| <= rtol * max|want|: float32 resolution at the scale of the compared
    quantity."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    assert scale > 1e-3  # a comparison of zeros would prove nothing
    np.testing.assert_allclose(got, want, atol=rtol * scale, rtol=0)


def _proj_module(num_layers=1, bidirectional=False, seed=10):
    torch.manual_seed(seed)
    m = torch.nn.LSTM(IN, H, num_layers=num_layers, bidirectional=bidirectional,
                      batch_first=True, proj_size=P)
    with torch.no_grad():
        for name, t in m.named_parameters():
            if name.startswith("bias"):
                t.uniform_(-0.5, 0.5)
    return m


def _proj_loss_weights(num_dirs):
    rng = np.random.default_rng(11)
    return rng.standard_normal((B, T, num_dirs * P)).astype(np.float32)


@pytest.mark.parametrize("layout", ["single+h0", "stack", "bidirectional"])
def test_projection_lstm_matches_torch_forward_and_backward(layout):
    """Outputs, final (h, c) and the gradients of a loss of all three with respect to every
    weight, bias, the inputs and the initial state, against autograd of nn.LSTM(proj_size)."""
    layers, bidi = {"single+h0": (1, False), "stack": (2, False), "bidirectional": (1, True)}[
        layout]
    dirs = 2 if bidi else 1
    m = _proj_module(layers, bidi)
    cell = rnnlab.cells.make("lstm", H, proj_size=P)
    xs = _inputs(12)
    w_out = _proj_loss_weights(dirs)
    rng = np.random.default_rng(13)
    h0 = (0.5 * rng.standard_normal((layers * dirs, B, P))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((layers * dirs, B, H))).astype(np.float32)
    if layout == "stack":
        model, params = Stack((cell, cell)), from_torch(Stack((cell, cell)), m)
        carry = tuple(LSTMCarry(jnp.asarray(h0[i]), jnp.asarray(c0[i])) for i in range(2))
    elif bidi:
        model, params = cell, (from_torch(cell, m), from_torch(cell, m, reverse=True))
        carry = tuple(LSTMCarry(jnp.asarray(h0[i]), jnp.asarray(c0[i])) for i in range(2))
    else:
        model, params = cell, from_torch(cell, m)
        carry = LSTMCarry(jnp.asarray(h0[0]), jnp.asarray(c0[0]))

    def run(p, x, c):
        if bidi:
            (c_fw, c_bw), ys = rnnlab.bidirectional(model, p, x, carry=c)
            finals = (c_fw, c_bw)
        else:
            finals, ys = rnnlab.unroll(model, p, x, carry=c)
            finals = finals if layout == "stack" else (finals,)
        return ys, finals

    def loss(p, x, c):
        ys, finals = run(p, x, c)
        return (jnp.sum(ys * w_out) + sum(jnp.sum(jnp.tanh(f.h)) + jnp.sum(f.c ** 2)
                                          for f in finals)), (ys, finals)

    (g_p, g_x, g_c), (ys, finals) = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(
        params, jnp.asarray(xs), carry)

    x_t = torch.from_numpy(xs).requires_grad_(True)
    h0_t, c0_t = torch.from_numpy(h0).requires_grad_(True), torch.from_numpy(c0).requires_grad_(
        True)
    out, (h_n, c_n) = m(x_t, (h0_t, c0_t))
    t_loss = (out * torch.from_numpy(w_out)).sum() + torch.tanh(h_n).sum() + (c_n ** 2).sum()
    t_loss.backward()
    assert abs(float(loss(params, jnp.asarray(xs), carry)[0]) - t_loss.item()) <= 3e-5 * abs(
        t_loss.item())

    _scaled_close(ys, out.detach().numpy())
    assert ys.shape == (B, T, dirs * P)
    for i, f in enumerate(finals):
        assert f.h.shape == (B, P) and f.c.shape == (B, H)
        _scaled_close(f.h, h_n[i].detach().numpy())
        _scaled_close(f.c, c_n[i].detach().numpy())
    _scaled_close(g_x, x_t.grad.numpy())
    g_c = (g_c,) if isinstance(g_c, LSTMCarry) else g_c
    for i, g in enumerate(g_c):
        _scaled_close(g.h, h0_t.grad[i].numpy())
        _scaled_close(g.c, c0_t.grad[i].numpy())
    grads = g_p if isinstance(g_p, tuple) else (g_p,)
    for i, g in enumerate(grads):
        sfx = f"_l{i}" if not bidi else f"_l0{'_reverse' if i else ''}"
        tg = {n: getattr(m, n + sfx).grad.numpy() for n in
              ("weight_ih", "weight_hh", "weight_hr", "bias_ih", "bias_hh")}
        _scaled_close(g["w_ih"], tg["weight_ih"].T)
        _scaled_close(g["w_hh"], tg["weight_hh"].T)
        _scaled_close(g["w_hr"], tg["weight_hr"].T)
        _scaled_close(g["b"], tg["bias_ih"])  # b = b_ih + b_hh: the same gradient reaches both
        _scaled_close(g["b"], tg["bias_hh"])


def test_projection_lstm_masked_matches_packed_sequences():
    m = _proj_module(bidirectional=True, seed=14)
    cell = rnnlab.cells.make("lstm", H, proj_size=P)
    lengths = np.array([T, 4, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    xs = _inputs(14) * mask[..., None]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(xs), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out_p, (h_n, c_n) = m(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    (c_fw, c_bw), ys = rnnlab.bidirectional(
        cell, (from_torch(cell, m), from_torch(cell, m, reverse=True)), jnp.asarray(xs),
        mask=jnp.asarray(mask))
    _scaled_close(ys, out.numpy())
    for i, c in enumerate((c_fw, c_bw)):
        _scaled_close(c.h, h_n[i].numpy())
        _scaled_close(c.c, c_n[i].numpy())


# --- rnnlab -> torch -----------------------------------------------------------------------

TO_TORCH = {  # name -> (rnnlab cell, fresh torch module of the same sizes)
    "lstm": (lambda: rnnlab.cells.make("lstm", H), lambda: torch.nn.LSTM(IN, H)),
    "lstm_proj": (lambda: rnnlab.cells.make("lstm", H, proj_size=P),
                  lambda: torch.nn.LSTM(IN, H, proj_size=P)),
    "gru": (lambda: rnnlab.cells.make("gru", H), lambda: torch.nn.GRU(IN, H)),
    "rnn_relu": (lambda: rnnlab.cells.make("rnn_relu", H),
                 lambda: torch.nn.RNN(IN, H, nonlinearity="relu")),
}


@pytest.mark.parametrize("name", list(TO_TORCH))
def test_to_torch_runs_like_rnnlab_and_round_trips(name):
    make_cell, make_module = TO_TORCH[name]
    cell = make_cell()
    params = cell.init(jax.random.key(3), IN)
    params = {k: v + 0.1 * jax.random.normal(jax.random.key(i), v.shape)  # biases non-zero
              for i, (k, v) in enumerate(sorted(params.items()))}
    m = make_module()
    m.batch_first = True
    assert to_torch(cell, params, m) is m
    xs = _inputs(15)
    out, state = _run_torch(m, xs)
    carry, ys = rnnlab.unroll(cell, params, jnp.asarray(xs))
    _scaled_close(ys, out)
    for got, want in zip(_state("lstm" if "lstm" in name else name, carry), state):
        _scaled_close(got, want[0])
    back = from_torch(cell, m)
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(params[k]))


def test_to_torch_stack_bidirectional_and_errors():
    cell = rnnlab.cells.make("lstm", H, proj_size=P)
    stack = Stack((cell, rnnlab.cells.make("lstm", H, proj_size=P)))
    params = stack.init(jax.random.key(4), IN)
    m = torch.nn.LSTM(IN, H, num_layers=2, proj_size=P, batch_first=True)
    to_torch(stack, params, m)
    xs = _inputs(16)
    out, _ = _run_torch(m, xs)
    _scaled_close(rnnlab.unroll(stack, params, jnp.asarray(xs))[1], out)
    bi = torch.nn.LSTM(IN, H, proj_size=P, bidirectional=True, batch_first=True)
    pair = (cell.init(jax.random.key(5), IN), cell.init(jax.random.key(6), IN))
    to_torch(cell, pair[0], bi)
    to_torch(cell, pair[1], bi, reverse=True)
    out, _ = _run_torch(bi, xs)
    _scaled_close(rnnlab.bidirectional(cell, pair, jnp.asarray(xs))[1], out)
    with pytest.raises(ValueError, match="proj_size differs: torch module 0, cell 3"):
        to_torch(cell, pair[0], torch.nn.LSTM(IN, H))
    with pytest.raises(ValueError, match=r"weight_ih_l0: the torch module has shape \(32, 4\)"):
        to_torch(cell, pair[0], torch.nn.LSTM(IN - 1, H, proj_size=P))
    with pytest.raises(ValueError, match="a Stack of 2 layers needs a tuple"):
        to_torch(stack, pair[0], m)
    with pytest.raises(ValueError, match="not 'gru_cho'"):
        gru = rnnlab.cells.make("gru_cho", H)
        to_torch(gru, gru.init(jax.random.key(0), IN), torch.nn.GRU(IN, H))


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
    with pytest.raises(ValueError, match=r"proj_size differs: torch module 4, cell 0; use "
                       r"make\('lstm', 8, proj_size=4\)"):
        from_torch(cell, torch.nn.LSTM(IN, H, proj_size=4))
    with pytest.raises(ValueError, match="proj_size differs: torch module 0, cell 3"):
        from_torch(rnnlab.cells.make("lstm", H, proj_size=3), torch.nn.LSTM(IN, H))
    with pytest.raises(ValueError, match=r"unsupported torch module Linear; valid: nn.RNN"):
        from_torch(cell, torch.nn.Linear(IN, H))
