"""Trains one experiment config; resumes if the workdir holds a checkpoint.

    python -m experiments.train --config=experiments/configs/adding.py[:smoke] --workdir=DIR \
        [--config.model.cell=gru --config.task.length=200 ...]

Writes DIR/metrics.jsonl, DIR/tensorboard/, DIR/config.json and DIR/checkpoints/ (DIR may be a
gs:// path). A config error (unknown key, wrong type, invalid choice, a batch size the device
mesh cannot split) stops before any work with a message naming it. Exit status 143: stopped by
a preemption (SIGTERM) after saving a checkpoint; the same command resumes.

Multi-host (TPU pod slices, GPU clusters): run the same command on every host with
`--distributed` or RNNLAB_DISTRIBUTED=1, which calls `jax.distributed.initialize()` first (TPU
VMs, SLURM and Open MPI need nothing else; other clusters add --coordinator_address=HOST:PORT
--num_processes=N --process_id=I). Only process 0 prints progress.
"""

from __future__ import annotations

import importlib.util
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, experiments/configs/<name>.py[:variant].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it has "
                               "checkpoints).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() before anything else (multi-host); "
    "default: the environment variable RNNLAB_DISTRIBUTED=1.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "With --distributed on a "
                                   "cluster JAX does not detect: process 0's HOST:PORT.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address: the "
                                      "number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address: this "
                                   "process's id in [0, num_processes).")
flags.mark_flags_as_required(["config", "workdir"])


def _load_config(spec: str):
    """The config that `--config=PATH[:variant]` names (to explain a bad override)."""
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_experiment_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _unknown_override(argv) -> str:
    """Names the first --config.a.b override whose key does not exist in the config."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return ""
    config = _load_config(spec)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node, path = config, arg[len("--config."):].split("=", 1)[0].split(".")
        for i, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                where = "config." + ".".join(path[:i]) if i else "config"
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                return (f"bad override {arg}: {where} has no field {key!r}; valid fields: "
                        f"{valid}")
            node = node[key]
    return ""


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        sys.exit(f"train: {_unknown_override(argv) or e}")
    except flags.Error as e:
        sys.exit(f"train: {e}")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train: unexpected arguments {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    from rnnlab.train import ConfigError, train_and_evaluate, validate  # after flag parsing
    from rnnlab.train.mesh import initialize_distributed

    try:  # before anything touches the devices
        initialize_distributed(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    except ValueError as e:
        sys.exit(f"train: {e}")
    config = _CONFIG.value
    try:
        validate(config)
        result = train_and_evaluate(config, _WORKDIR.value,
                                    progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        sys.exit(f"train: bad config: {e}")
    if result.preempted:
        sys.exit(143)  # 128 + SIGTERM: the launcher may restart; the run resumes


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
