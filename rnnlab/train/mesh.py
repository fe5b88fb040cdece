"""The device mesh every run trains on, how arrays are laid out on it, and the multi-host bootstrap.

    initialize_distributed()                      # multi-host: before anything touches JAX
    layout = Layout.from_config(config.mesh)      # default: every device on one "data" axis
    batch = layout.global_batch(task.train_batch(step))   # this process's rows -> global arrays

One code path: a single device is a mesh of one. The mesh has one axis, "data", of
`config.mesh.data` devices (-1 = every visible device), ordered by process so that process p's
devices hold the contiguous rows `rnnlab.data.hosts.process_rows(R, p, P)` of every batch.
Batches (and the carried hidden state of truncated BPTT) are split along their leading (batch)
axis; scalar leaves are replicated. Parameters and optimiser state are replicated, or with
`config.mesh.fsdp` sharded along "data" on their largest axis that the device count divides
(leaves smaller than `fsdp_min_size` elements, or with no such axis, stay replicated; XLA
gathers them where the step needs them).

Multi-host: `initialize_distributed` calls `jax.distributed.initialize()` when asked by its
argument or by the environment variable RNNLAB_DISTRIBUTED=1 (TPU pods, SLURM and Open MPI find
every setting themselves; other clusters pass coordinator address, process count and id). Any
decision that starts collective work (save now? evaluate the test split?) must be the same on
every process: `agree` hands every process process 0's value.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rnnlab.config import ConfigError

AXIS = "data"  # the mesh axis that splits batches (and FSDP-sharded parameters)
DISTRIBUTED_ENV = "RNNLAB_DISTRIBUTED"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def distributed_requested(flag: bool | None = None, environ=None) -> bool:
    """`flag` if given, else whether $RNNLAB_DISTRIBUTED is set to 1/true/yes/on."""
    if flag is not None:
        return bool(flag)
    value = (os.environ if environ is None else environ).get(DISTRIBUTED_ENV, "")
    value = value.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{DISTRIBUTED_ENV}={value!r} is not valid; use 1 (call "
                         "jax.distributed.initialize()) or 0")
    return value in _TRUE


def initialize_distributed(flag: bool | None = None, *, coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Calls `jax.distributed.initialize(...)` if `distributed_requested(flag)`; returns whether
    it did. Must run before any JAX computation. The arguments default to what JAX detects (TPU
    VMs, SLURM, Open MPI; JAX_COORDINATOR_ADDRESS)."""
    if not distributed_requested(flag):
        return False
    if not jax.distributed.is_initialized():
        # CPU-only clusters need a cross-process collective backend; TPU and GPU ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def is_primary() -> bool:
    """Process 0: the one that writes metrics.jsonl, TensorBoard events and config.json."""
    return jax.process_index() == 0


def agree(value: bool) -> bool:
    """Process 0's `value` on every process (one host-to-device broadcast; free on one host)."""
    if jax.process_count() == 1:
        return bool(value)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.bool_(value)))


def make_mesh(data: int = -1) -> Mesh:
    """A 1-D mesh ("data",) of `data` devices (-1 = all), ordered by (process, device id)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if data == -1:
        data = len(devices)
    if not 0 < data <= len(devices):
        raise ConfigError(f"config.mesh.data={data} devices requested but {len(devices)} are "
                          f"visible ({devices[0].platform}); use -1 (all) or a number in "
                          f"[1, {len(devices)}]")
    if data < len(devices) and jax.process_count() > 1:
        raise ConfigError(f"config.mesh.data={data}: a multi-host run uses every device "
                          f"({len(devices)} over {jax.process_count()} processes); use -1")
    return Mesh(np.array(devices[:data]), (AXIS,))


def fsdp_spec(shape: tuple, n: int, min_size: int = 0) -> P:
    """PartitionSpec sharding a leaf of `shape` over `n` devices on its largest axis that `n`
    divides (the first such axis on ties); P() (replicated) if none or smaller than `min_size`."""
    if n == 1 or not shape or math.prod(shape) < max(min_size, 1):
        return P()
    axes = [i for i, s in enumerate(shape) if s % n == 0]
    if not axes:
        return P()
    best = max(axes, key=lambda i: (shape[i], -i))
    return P(*([None] * best + [AXIS]))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run's arrays live: the mesh and the parameter placement rule."""

    mesh: Mesh
    fsdp: bool = False  # shard params and optimiser state along "data" (else replicate)
    fsdp_min_size: int = 0  # FSDP: leaves with fewer elements stay replicated

    @classmethod
    def from_config(cls, mesh_cfg) -> "Layout":
        """The layout `config.mesh` describes (see rnnlab.config.base_config)."""
        return cls(make_mesh(mesh_cfg.data), bool(mesh_cfg.fsdp), int(mesh_cfg.fsdp_min_size))

    @property
    def size(self) -> int:
        """Devices on the data axis."""
        return self.mesh.shape[AXIS]

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def rows(self) -> NamedSharding:
        """Leading (batch) axis split across the data axis."""
        return NamedSharding(self.mesh, P(AXIS))

    def param_shardings(self, tree):
        """NamedSharding per leaf of a params-like tree (params, optimiser state): replicated,
        or FSDP's `fsdp_spec` with `fsdp`."""
        def one(leaf):
            if not self.fsdp:
                return self.replicated
            return NamedSharding(self.mesh, fsdp_spec(tuple(leaf.shape), self.size,
                                                      self.fsdp_min_size))
        return jax.tree_util.tree_map(one, tree)

    def place(self, tree, shardings):
        """Arrays every process holds in full (the same values) -> global arrays laid out by
        `shardings` (a matching tree of NamedShardings); each device gets only its shard."""
        def one(x, sharding):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return jax.tree_util.tree_map(one, tree, shardings)

    def check_rows(self, rows: int, what: str) -> None:
        """ConfigError unless `rows` (global) splits evenly across the data axis."""
        if rows % self.size:
            raise ConfigError(
                f"{what} has {rows} rows, which cannot be split across the {self.size} devices "
                f"of the mesh's '{AXIS}' axis; make it a multiple of {self.size}, or set "
                f"config.mesh.data to a divisor of {rows} (e.g. --config.mesh.data=1)")

    def global_rows(self, batch) -> int:
        """Global rows of a process-local batch (its leading axis times the process count)."""
        shapes = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch) if np.ndim(x)}
        if len(shapes) != 1:
            raise ValueError(f"a batch's array leaves must share one leading (batch) axis; "
                             f"got leading sizes {sorted(shapes)}")
        return shapes.pop() * jax.process_count()

    def global_batch(self, batch, what: str = "a batch"):
        """This process's rows of a batch (numpy or jax arrays) -> global jax arrays split along
        the data axis (`jax.make_array_from_process_local_data`); scalars are replicated."""
        rows = self.global_rows(batch)
        self.check_rows(rows, what)

        def put(x):
            if jax.process_count() == 1:  # one host: no round trip through host memory
                return jax.device_put(x, self.replicated if np.ndim(x) == 0 else self.rows)
            x = np.asarray(x)
            if x.ndim == 0:
                return jax.make_array_from_process_local_data(self.replicated, x, x.shape)
            return jax.make_array_from_process_local_data(self.rows, x, (rows,) + x.shape[1:])

        return jax.tree_util.tree_map(put, batch)
