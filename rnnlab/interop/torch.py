"""Port PyTorch `nn.RNN`, `nn.LSTM` and `nn.GRU` weights to rnnlab parameters.

    params = rnnlab.interop.torch.from_torch(cell, torch_module, layer=0)

PyTorch stores W as [gates * hidden, in] and applies x W^T; rnnlab stores [in, gates * hidden]
and applies x W, so weights are transposed. Gate orders agree (LSTM i, f, g, o; GRU r, z, n).
LSTM and Elman keep one bias (b_ih + b_hh); GRU keeps both because b_hn sits inside r ⊙ (...).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rnnlab.cells.elman import Elman
from rnnlab.cells.gru import GRU
from rnnlab.cells.lstm import LSTM
from rnnlab.cells.stack import Stack


def _get(module, name):
    t = getattr(module, name, None)
    if t is None:
        raise ValueError(f"{type(module).__name__} has no parameter {name!r}; it has "
                         f"{sorted(n for n, _ in module.named_parameters())}")
    return np.asarray(t.detach().cpu().numpy(), np.float32)


def _check(cell, module, expected_cls, torch_name, extra=""):
    if not isinstance(cell, expected_cls):
        raise ValueError(f"cannot load torch.nn.{type(module).__name__} into "
                         f"{type(cell).__name__}; use a {expected_cls.__name__} cell{extra}")
    if module.hidden_size != cell.hidden_size:
        raise ValueError(f"hidden_size differs: torch module {module.hidden_size}, "
                         f"cell {cell.hidden_size}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTMs with proj_size > 0 are not supported")
    if not module.bias:
        raise ValueError(f"torch.nn.{torch_name}(bias=False) is not supported: rnnlab cells "
                         "always have biases")


def from_torch(cell, module, layer: int = 0, reverse: bool = False):
    """Returns rnnlab params for `cell` holding layer `layer` of `module`.

    cell: an LSTM (no peepholes / layer norm) for `nn.LSTM`, a GRU with variant "cudnn" for
    `nn.GRU`, an Elman cell with the same nonlinearity for `nn.RNN`; or a `Stack` of such cells,
    which takes layers `layer`, `layer + 1`, ... . `reverse=True` takes the backward direction
    of a bidirectional module.
    """
    if isinstance(cell, Stack):
        return tuple(from_torch(c, module, layer + i, reverse) for i, c in enumerate(cell.cells))
    kind = type(module).__name__
    expected = {"LSTM": LSTM, "GRU": GRU, "RNN": Elman}
    if kind not in expected:
        raise ValueError(f"unsupported torch module {kind}; valid: nn.RNN, nn.LSTM, nn.GRU")
    _check(cell, module, expected[kind], kind)  # before reading weights: clearer errors
    if not 0 <= layer < module.num_layers:
        raise ValueError(f"layer {layer} out of range: the module has {module.num_layers} layers")
    if reverse and not module.bidirectional:
        raise ValueError("reverse=True needs a bidirectional torch module")
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    w_ih, w_hh = _get(module, "weight_ih" + sfx).T, _get(module, "weight_hh" + sfx).T
    b_ih, b_hh = _get(module, "bias_ih" + sfx), _get(module, "bias_hh" + sfx)
    if kind == "LSTM":
        if cell.peepholes or cell.layer_norm:
            raise ValueError("torch.nn.LSTM has no peepholes or layer norm; use "
                             "make('lstm', ..., peepholes=False, layer_norm=False)")
        return {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh), "b": jnp.asarray(b_ih + b_hh)}
    if kind == "GRU":
        if cell.variant != "cudnn":
            raise ValueError("torch.nn.GRU applies the reset gate after the matmul; use "
                             "make('gru', ...) (variant 'cudnn'), not 'gru_cho'")
        return {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh),
                "b_ih": jnp.asarray(b_ih), "b_hh": jnp.asarray(b_hh)}
    if kind == "RNN":
        if cell.activation != module.nonlinearity:
            raise ValueError(f"nonlinearity differs: torch {module.nonlinearity!r}, "
                             f"cell {cell.activation!r}")
        return {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh), "b": jnp.asarray(b_ih + b_hh)}
