"""Port PyTorch `nn.RNN`, `nn.LSTM` and `nn.GRU` weights to rnnlab parameters and back.

    params = rnnlab.interop.torch.from_torch(cell, torch_module, layer=0)
    rnnlab.interop.torch.to_torch(cell, params, torch_module, layer=0)   # writes in place

PyTorch stores W as [gates * hidden, in] and applies x W^T; rnnlab stores [in, gates * hidden]
and applies x W, so weights are transposed. Gate orders agree (LSTM i, f, g, o; GRU r, z, n).
LSTM and Elman keep one bias (b_ih + b_hh); GRU keeps both because b_hn sits inside r ⊙ (...).
`to_torch` writes an LSTM's or Elman cell's bias to bias_ih and zeros to bias_hh.
`nn.LSTM(proj_size=P)` maps to `make("lstm", hidden, proj_size=P)`: weight_hh [4 hidden, P]
and weight_hr [P, hidden] become w_hh [P, 4 hidden] and w_hr [hidden, P].
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
    proj = getattr(module, "proj_size", 0)
    if proj != getattr(cell, "proj_size", 0):
        raise ValueError(f"proj_size differs: torch module {proj}, cell "
                         f"{getattr(cell, 'proj_size', 0)}; use make('lstm', "
                         f"{module.hidden_size}, proj_size={proj})")
    if not module.bias:
        raise ValueError(f"torch.nn.{torch_name}(bias=False) is not supported: rnnlab cells "
                         "always have biases")


def from_torch(cell, module, layer: int = 0, reverse: bool = False):
    """Returns rnnlab params for `cell` holding layer `layer` of `module`.

    cell: an LSTM (no peepholes / layer norm; the module's `proj_size`) for `nn.LSTM`, a GRU
    with variant "cudnn" for `nn.GRU`, an Elman cell with the same nonlinearity for `nn.RNN`;
    or a `Stack` of such cells, which takes layers `layer`, `layer + 1`, ... . `reverse=True`
    takes the backward direction of a bidirectional module.
    """
    if isinstance(cell, Stack):
        return tuple(from_torch(c, module, layer + i, reverse) for i, c in enumerate(cell.cells))
    kind, sfx = _locate(cell, module, layer, reverse)
    w_ih, w_hh = _get(module, "weight_ih" + sfx).T, _get(module, "weight_hh" + sfx).T
    b_ih, b_hh = _get(module, "bias_ih" + sfx), _get(module, "bias_hh" + sfx)
    if kind == "LSTM":
        params = {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh),
                  "b": jnp.asarray(b_ih + b_hh)}
        if cell.proj_size:
            params["w_hr"] = jnp.asarray(_get(module, "weight_hr" + sfx).T)
        return params
    if kind == "GRU":
        return {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh),
                "b_ih": jnp.asarray(b_ih), "b_hh": jnp.asarray(b_hh)}
    return {"w_ih": jnp.asarray(w_ih), "w_hh": jnp.asarray(w_hh), "b": jnp.asarray(b_ih + b_hh)}


def _check_variant(kind, cell, module):
    if kind == "LSTM" and (cell.peepholes or cell.layer_norm):
        raise ValueError("torch.nn.LSTM has no peepholes or layer norm; use "
                         "make('lstm', ..., peepholes=False, layer_norm=False)")
    if kind == "GRU" and cell.variant != "cudnn":
        raise ValueError("torch.nn.GRU applies the reset gate after the matmul; use "
                         "make('gru', ...) (variant 'cudnn'), not 'gru_cho'")
    if kind == "RNN" and cell.activation != module.nonlinearity:
        raise ValueError(f"nonlinearity differs: torch {module.nonlinearity!r}, "
                         f"cell {cell.activation!r}")


def _locate(cell, module, layer, reverse):
    """Checks that `cell` fits layer `layer` of `module`; returns (kind, parameter suffix)."""
    kind = type(module).__name__
    expected = {"LSTM": LSTM, "GRU": GRU, "RNN": Elman}
    if kind not in expected:
        raise ValueError(f"unsupported torch module {kind}; valid: nn.RNN, nn.LSTM, nn.GRU")
    _check(cell, module, expected[kind], kind)  # before reading weights: clearer errors
    if not 0 <= layer < module.num_layers:
        raise ValueError(f"layer {layer} out of range: the module has {module.num_layers} layers")
    if reverse and not module.bidirectional:
        raise ValueError("reverse=True needs a bidirectional torch module")
    _check_variant(kind, cell, module)
    return kind, f"_l{layer}" + ("_reverse" if reverse else "")


def _put(module, name, value):
    import torch

    t = getattr(module, name, None)
    if t is None:
        raise ValueError(f"{type(module).__name__} has no parameter {name!r}")
    value = np.array(value, np.float32)  # a writable copy: torch.from_numpy shares memory
    if tuple(t.shape) != value.shape:
        raise ValueError(f"{name}: the torch module has shape {tuple(t.shape)}, the rnnlab "
                         f"parameter gives {value.shape}; build the module with the cell's sizes")
    with torch.no_grad():
        t.copy_(torch.from_numpy(value).to(t.dtype))


def to_torch(cell, params, module, layer: int = 0, reverse: bool = False):
    """Writes rnnlab `params` of `cell` into layer `layer` (the backward direction with
    `reverse=True`) of the torch module, in place, and returns the module; the inverse of
    `from_torch` (a `Stack` fills layers `layer`, `layer + 1`, ...)."""
    if isinstance(cell, Stack):
        if not isinstance(params, (tuple, list)) or len(params) != len(cell.cells):
            raise ValueError(f"a Stack of {len(cell.cells)} layers needs a tuple of as many "
                             "parameter dicts")
        for i, (c, p) in enumerate(zip(cell.cells, params)):
            to_torch(c, p, module, layer + i, reverse)
        return module
    kind, sfx = _locate(cell, module, layer, reverse)
    p = {k: np.asarray(v, np.float32) for k, v in params.items()}
    _put(module, "weight_ih" + sfx, p["w_ih"].T)
    _put(module, "weight_hh" + sfx, p["w_hh"].T)
    if kind == "GRU":
        _put(module, "bias_ih" + sfx, p["b_ih"])
        _put(module, "bias_hh" + sfx, p["b_hh"])
    else:
        _put(module, "bias_ih" + sfx, p["b"])
        _put(module, "bias_hh" + sfx, np.zeros_like(p["b"]))
    if kind == "LSTM" and cell.proj_size:
        _put(module, "weight_hr" + sfx, p["w_hr"].T)
    return module
