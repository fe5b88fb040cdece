"""Which part of the data each process (host) reads in a multi-host run.

A global batch of R rows is split into contiguous blocks in process order: process p of P holds
rows [p R / P, (p + 1) R / P). `rnnlab.train.mesh` orders the devices of the "data" axis by
process, so these rows are exactly the shards that live on process p's devices, and
`jax.make_array_from_process_local_data` assembles the global batch from them. A single process
(P = 1) holds every row; the code path is the same.

    rows = process_rows(20, jax.process_index(), jax.process_count())   # slice(0, 20) on one host
    split = process_split("train", jax.process_index(), jax.process_count())  # TFDS datasets
    batch = local_batch(global_batch)   # a task's batch dict: this process's rows of each array
"""

from __future__ import annotations

import jax
import numpy as np


def _check(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must lie in [0, process_count="
                         f"{process_count})")


def process_rows(rows: int, process_index: int, process_count: int) -> slice:
    """The rows of a global batch of `rows` rows that process `process_index` reads."""
    _check(process_index, process_count)
    if rows % process_count:
        raise ValueError(f"a batch of {rows} rows cannot be split evenly across {process_count} "
                         f"processes (hosts); make the batch size a multiple of {process_count}")
    n = rows // process_count
    return slice(process_index * n, (process_index + 1) * n)


def process_split(split: str, process_index: int, process_count: int) -> str:
    """This process's part of a TFDS split (`tfds.even_splits`, remainder dropped so every
    process reads the same number of examples), e.g. "train[0%:50%]"-style instructions."""
    _check(process_index, process_count)
    if process_count == 1:
        return split
    import tensorflow_datasets as tfds  # slow to import: only for multi-process dataset reads

    return tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]


def local_batch(batch, process_index: int | None = None, process_count: int | None = None):
    """This process's rows of `batch`, a pytree of arrays sharing one leading (row) axis
    (scalars are kept whole); the process defaults to `jax.process_index()` of
    `jax.process_count()`. On one process the batch itself is returned."""
    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    _check(p, n)
    if n == 1:
        return batch
    rows = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch) if np.ndim(x)}
    if len(rows) != 1:
        raise ValueError(f"a batch's arrays must share their leading (row) axis to be split "
                         f"across processes, got leading sizes {sorted(rows)}")
    mine = process_rows(rows.pop(), p, n)
    return jax.tree_util.tree_map(lambda x: x[mine] if np.ndim(x) else x, batch)
