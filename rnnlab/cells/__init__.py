"""Pure recurrent cells. `make(name, hidden_size, **kwargs)` builds one by name.

    cell = rnnlab.cells.make("lstm", hidden_size=64, forget_bias=1.0)
    params = cell.init(jax.random.key(0), input_size=16)
    carry, y = cell(params, cell.initial_carry((batch,)), x)
"""

from __future__ import annotations

import dataclasses

from rnnlab.cells.antisymmetric import AntisymmetricRNN
from rnnlab.cells.base import RECURRENT_INITS, Cell, recurrent_matrix, spectral_radius
from rnnlab.cells.elman import Elman
from rnnlab.cells.esn import ESN, ridge_readout
from rnnlab.cells.exprnn import ExpRNN
from rnnlab.cells.gru import GRU
from rnnlab.cells.indrnn import IndRNN
from rnnlab.cells.jordan import Jordan
from rnnlab.cells.lstm import LSTM, LSTMCarry
from rnnlab.cells.oscillatory import LEM, CoRNN, YZCarry
from rnnlab.cells.parallel import LRU, MinGRU, MinLSTM
from rnnlab.cells.stack import Stack
from rnnlab.cells.tdnn import TDNN

# name -> (class, preset keyword arguments)
REGISTRY = {
    "elman": (Elman, {}),
    "rnn_tanh": (Elman, {"activation": "tanh"}),
    "rnn_relu": (Elman, {"activation": "relu"}),
    "irnn": (Elman, {"activation": "relu", "recurrent_init": "identity", "zero_bias": True}),
    "jordan": (Jordan, {}),
    "esn": (ESN, {}),
    "lstm": (LSTM, {}),
    "gru": (GRU, {"variant": "cudnn"}),
    "gru_cho": (GRU, {"variant": "cho"}),
    "mingru": (MinGRU, {}),
    "minlstm": (MinLSTM, {}),
    "lru": (LRU, {}),
    "tdnn": (TDNN, {}),  # non-recurrent baseline: causal conv over `window` steps
    # long-memory cells
    "exprnn": (ExpRNN, {}),
    "cornn": (CoRNN, {}),
    "lem": (LEM, {}),
    "indrnn": (IndRNN, {}),
    "antisymmetric": (AntisymmetricRNN, {}),
    "antisymmetric_gated": (AntisymmetricRNN, {"gated": True}),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def register(name: str, cls, **preset) -> None:
    """Adds a cell family to `make` (used by modules that define further cells)."""
    REGISTRY[name] = (cls, preset)


def make(name: str, hidden_size: int, **kwargs) -> Cell:
    """Builds the cell `name` with `hidden_size`; kwargs override the preset's fields.

    Raises ValueError naming the bad value and the valid choices for an unknown name or field.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown cell {name!r}; valid choices: {names()}")
    cls, preset = REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"hidden_size"}
    bad = sorted(set(kwargs) - fields)
    if bad:
        raise ValueError(f"cell {name!r} has no field(s) {bad}; valid fields: {sorted(fields)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)} | preset
    for key, value in kwargs.items():
        _check_type(name, key, value, defaults.get(key, dataclasses.MISSING))
    return cls(hidden_size=hidden_size, **{**preset, **kwargs})


def _check_type(name: str, key: str, value, default) -> None:
    """ValueError if `value` is text where the field holds a number or flag, or the reverse
    (what would otherwise fail deep inside JAX); the cell checks its own ranges."""
    if isinstance(default, (bool, int, float)) and isinstance(value, str):
        kind = "True or False" if isinstance(default, bool) else "a number"
    elif isinstance(default, str) and not isinstance(value, str):
        kind = "a name"
    else:
        return
    raise ValueError(f"cell {name!r} field {key}={value!r} is not valid: it must be {kind} "
                     f"(default {default!r})")


__all__ = [
    "AntisymmetricRNN", "Cell", "CoRNN", "Elman", "ESN", "ExpRNN", "GRU", "IndRNN", "Jordan",
    "LEM", "LRU", "LSTM", "LSTMCarry", "MinGRU", "MinLSTM", "Stack", "TDNN", "YZCarry",
    "RECURRENT_INITS",
    "make", "names", "recurrent_matrix", "register", "ridge_readout", "spectral_radius",
]
