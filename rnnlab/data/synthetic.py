"""Long-range synthetic tasks, generated on the fly from a PRNG key.

Every generator is a pure JAX function of `(key, batch_size, length)`; a training run draws batch
`step` from `jax.random.fold_in(key, step)`, so the data position is just the step counter and a
resumed run sees exactly the batches an uninterrupted one would.

    inputs, target = adding(key, batch_size=64, length=100)   # [64, 100, 2] float, [64] float
    tokens, labels = copy_memory(key, 64, length=100)          # [64, 120] int, [64, 120] int
    tokens, label = temporal_order(key, 64, length=100)        # [64, 100] int, [64] int

Baselines (the loss of the best predictor that ignores the long-range dependency):

- adding: always predict 1 -> MSE = Var(u1 + u2) = 2/12 ≈ 0.167 (`ADDING_BASELINE_MSE`);
- copy memory: predict blank until the delimiter, then uniformly over the 8 data symbols ->
  cross-entropy 10·ln 8 / (T + 20) per step (`copy_memory_baseline(T)`);
- temporal order: 4 balanced classes -> cross-entropy ln 4, accuracy 0.25.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ADDING_BASELINE_MSE = 1.0 / 6.0

COPY_DATA_SYMBOLS = 8  # symbols 1..8
COPY_BLANK = 0
COPY_DELIMITER = 9
COPY_VOCAB = 10
COPY_RECALL = 10  # number of symbols to remember

ORDER_SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")  # token ids 0..7
ORDER_VOCAB = len(ORDER_SYMBOLS)
ORDER_CLASSES = 4  # XX, XY, YX, YY


def _check_length(name: str, length: int, minimum: int) -> None:
    if not isinstance(length, int) or length < minimum:
        raise ValueError(f"{name}: length must be an integer >= {minimum}, got {length!r}")


ADDING_MARKS = ("anywhere", "halves")


def adding(key: jax.Array, batch_size: int, length: int, marks: str = "anywhere"):
    """The adding problem (Hochreiter & Schmidhuber 1997), in the form of Le et al. 2015.

    Channel 0 holds values u_t ~ U[0, 1]; channel 1 marks two distinct positions with 1 (0
    elsewhere). The target is the sum of the two marked values. `marks`: "anywhere" draws the
    two positions uniformly without replacement (Le et al. 2015); "halves" draws one uniformly
    in [0, T // 2) and one in [T // 2, T) (the coRNN and LEM code, tk-rusch/coRNN and
    tk-rusch/LEM `adding_task.py`). The baseline of predicting 1 has MSE 1/6 in both.

    Returns (inputs [batch, length, 2] float32, targets [batch] float32).
    """
    _check_length("adding", length, 2)
    if marks not in ADDING_MARKS:
        raise ValueError(f"marks={marks!r}; valid: {list(ADDING_MARKS)}")
    k_val, k_pos = jax.random.split(key)
    values = jax.random.uniform(k_val, (batch_size, length))
    if marks == "anywhere":  # two distinct positions: the two smallest of `length` scores
        scores = jax.random.uniform(k_pos, (batch_size, length))
        _, idx = jax.lax.top_k(-scores, 2)
    else:
        half = length // 2
        k_first, k_second = jax.random.split(k_pos)
        idx = jnp.stack([jax.random.randint(k_first, (batch_size,), 0, half),
                         jax.random.randint(k_second, (batch_size,), half, length)], axis=1)
    marks = jnp.zeros((batch_size, length)).at[jnp.arange(batch_size)[:, None], idx].set(1.0)
    return jnp.stack([values, marks], axis=-1), jnp.sum(values * marks, axis=-1)


def copy_memory(key: jax.Array, batch_size: int, length: int):
    """The copy-memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    Input (length T + 20): 10 data symbols from {1..8}, T - 1 blanks (0), the delimiter (9),
    then 10 blanks. Target: T + 10 blanks, then the 10 data symbols. The model must recall the
    symbols T steps after seeing them; loss is cross-entropy averaged over all T + 20 steps.

    Returns (tokens [batch, T + 20] int32, labels [batch, T + 20] int32).
    """
    _check_length("copy_memory", length, 1)
    data = jax.random.randint(key, (batch_size, COPY_RECALL), 1, COPY_DATA_SYMBOLS + 1)
    blanks = jnp.zeros((batch_size, length - 1), jnp.int32)
    delim = jnp.full((batch_size, 1), COPY_DELIMITER, jnp.int32)
    tail = jnp.zeros((batch_size, COPY_RECALL), jnp.int32)
    tokens = jnp.concatenate([data, blanks, delim, tail], axis=1)
    labels = jnp.concatenate([jnp.zeros((batch_size, length + COPY_RECALL), jnp.int32), data], 1)
    return tokens, labels


def copy_memory_baseline(length: int) -> float:
    """Memoryless cross-entropy per step for copy memory with delay T: 10·ln 8 / (T + 20)."""
    return COPY_RECALL * math.log(COPY_DATA_SYMBOLS) / (length + 2 * COPY_RECALL)


def temporal_order(key: jax.Array, batch_size: int, length: int):
    """The temporal-order problem (Hochreiter & Schmidhuber 1997, experiment 6a), length T.

    The sequence starts with B and ends with E; every other position holds a distractor from
    {a, b, c, d}, except two: position t1 ∈ [0.1T, 0.2T) and t2 ∈ [0.5T, 0.6T) hold X or Y.
    The class is the ordered pair (XX, XY, YX, YY) -> 0..3. (T = 100 gives the paper's
    t1 ∈ [10, 20], t2 ∈ [50, 60].) Tokens index `ORDER_SYMBOLS`.

    Returns (tokens [batch, T] int32, labels [batch] int32).
    """
    _check_length("temporal_order", length, 20)
    k_dis, k_t1, k_t2, k_sym = jax.random.split(key, 4)
    tokens = jax.random.randint(k_dis, (batch_size, length), 0, 4)
    tokens = tokens.at[:, 0].set(4).at[:, -1].set(5)
    lo1, hi1 = length // 10, max(length // 5, length // 10 + 1)
    lo2, hi2 = length // 2, max(length * 3 // 5, length // 2 + 1)
    t1 = jax.random.randint(k_t1, (batch_size,), lo1, hi1)
    t2 = jax.random.randint(k_t2, (batch_size,), lo2, hi2)
    sym = jax.random.randint(k_sym, (batch_size, 2), 0, 2)  # 0 = X, 1 = Y
    rows = jnp.arange(batch_size)
    tokens = tokens.at[rows, t1].set(6 + sym[:, 0]).at[rows, t2].set(6 + sym[:, 1])
    return tokens.astype(jnp.int32), (2 * sym[:, 0] + sym[:, 1]).astype(jnp.int32)


GENERATORS = {"adding": adding, "copy": copy_memory, "temporal_order": temporal_order}
