"""Stacked layers as one cell: a step runs every layer once (for generation); `unroll`
runs a stack layer by layer, so each layer's input projection is hoisted out of its scan."""

from __future__ import annotations

import dataclasses

import jax

from rnnlab.cells.base import Cell


@dataclasses.dataclass(frozen=True)
class Stack:
    """Layers l = 1..L: y^l_t = cell_l(y^{l-1}_t) (+ y^{l-1}_t with `residual`), y^0 = x.

    params and carry are tuples with one entry per layer. With `residual=True` a layer's input
    and output widths must agree (the first layer's input is exempt when they differ).
    """

    cells: tuple[Cell, ...]
    residual: bool = False

    def __post_init__(self):
        if not isinstance(self.cells, tuple) or not self.cells:
            raise ValueError("Stack needs a non-empty tuple of cells, got "
                             f"{type(self.cells).__name__} {self.cells!r}")

    @property
    def hidden_size(self) -> int:
        return self.cells[-1].hidden_size

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    def init(self, rng, input_size):
        params, size = [], input_size
        for cell, key in zip(self.cells, jax.random.split(rng, len(self.cells))):
            params.append(cell.init(key, size))
            size = cell.output_size
        return tuple(params)

    def initial_carry(self, batch_shape=(), dtype=None):
        kw = {} if dtype is None else {"dtype": dtype}
        return tuple(cell.initial_carry(batch_shape, **kw) for cell in self.cells)

    def input_size(self, params):
        return self.cells[0].input_size(params[0])

    def check_input(self, params, xs):
        if len(params) != len(self.cells):
            raise ValueError(f"Stack of {len(self.cells)} layers got params for {len(params)}")
        self.cells[0].check_input(params[0], xs)

    def residual_applies(self, layer: int, x_size: int) -> bool:
        return self.residual and x_size == self.cells[layer].output_size

    def prepare(self, params):
        return tuple(cell.prepare(p) for cell, p in zip(self.cells, params))

    def param_bounds(self):
        return {k: v for cell in self.cells for k, v in cell.param_bounds().items()}

    def project_inputs(self, params, xs):
        return xs  # each layer projects its own input inside `step`

    def step(self, params, carry, x):
        new_carry = []
        for l, (cell, p, c) in enumerate(zip(self.cells, params, carry)):
            c, y = cell(p, c, x)
            x = y + x if self.residual_applies(l, x.shape[-1]) else y
            new_carry.append(c)
        return tuple(new_carry), x

    def __call__(self, params, carry, x):
        return self.step(params, carry, x)
