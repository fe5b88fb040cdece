"""Trains one experiment config; resumes if the workdir holds a checkpoint.

    python -m experiments.train --config=experiments/configs/adding.py[:smoke] --workdir=DIR \
        [--config.model.cell=gru --config.task.length=200 ...]

Writes DIR/metrics.jsonl, DIR/tensorboard/, DIR/config.json and DIR/checkpoints/ (DIR may be a
gs:// path). A problem the user fixes stops with one line naming it and the fix, no traceback
(`--debug` shows it): before any work for a config error (a missing config file, unknown
variant, key, wrong type, invalid choice, a batch size the device mesh cannot split), an
unreadable data file, a workdir that is a file or not writable, checkpoints that cannot be used
(`rnnlab.train.checkpoint`); during training for a non-finite loss. Exit status 1 for those;
143: stopped by SIGTERM (a preemption) after saving a checkpoint, or during start-up before any
step; the same command resumes.

Multi-host (TPU pod slices, GPU clusters): run the same command on every host with
`--distributed` or RNNLAB_DISTRIBUTED=1, which calls `jax.distributed.initialize()` first (TPU
VMs, SLURM and Open MPI need nothing else; other clusters add --coordinator_address=HOST:PORT
--num_processes=N --process_id=I). Only process 0 prints progress.
"""

from __future__ import annotations

import os
import signal
import sys


def _startup_sigterm(signum, frame):
    # replaced by the training loop's own handler (which saves a checkpoint) while it runs
    print("train: stopped by SIGTERM outside the training steps (during start-up, or after the "
          "last step); the same command resumes from the newest checkpoint", file=sys.stderr,
          flush=True)
    sys.exit(143)


if __name__ == "__main__":  # first of all: a SIGTERM while JAX imports is a clean exit too
    signal.signal(signal.SIGTERM, _startup_sigterm)

import importlib.util  # noqa: E402
import traceback  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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
_DEBUG = flags.DEFINE_bool("debug", False, "On an error, show the full traceback, not one line.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str, debug: bool | None = None):
    """Exits with `train: message` (the traceback too with --debug)."""
    if debug if debug is not None else _DEBUG.value:
        traceback.print_exc()
    sys.exit(f"train: {message}")


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


def _config_spec_problem(argv) -> str:
    """Why `--config=PATH[:variant]` cannot be loaded ("" if it can)."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return ""
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        return (f"--config={spec}: no config file {path}; give experiments/configs/<name>.py"
                "[:variant]")
    try:
        _load_config(spec)
    except Exception as e:  # the config file's own error, e.g. an unknown variant
        return f"--config={spec}: {type(e).__name__}: {e}"
    return ""


def _parse_flags(argv):
    debug = "--debug" in argv
    try:
        parsed = flags.FLAGS(argv)
        spec = flags.FLAGS["config"].config_filename if flags.FLAGS["config"].present else ""
        if spec and not os.path.isfile(spec.partition(":")[0]):  # ml_collections fails later
            _fail(_config_spec_problem(argv), debug)
        return parsed
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        _fail(_config_spec_problem(argv) or _unknown_override(argv) or str(e), debug)
    except flags.Error as e:
        _fail(_config_spec_problem(argv) or str(e), debug)
    except Exception as e:  # the config file failed to load (missing, unknown variant, ...)
        _fail(_config_spec_problem(argv) or f"{type(e).__name__}: {e}", debug)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train: unexpected arguments {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    from rnnlab.train import ConfigError, RunError, train_and_evaluate, validate  # after flags
    from rnnlab.train.mesh import initialize_distributed

    try:  # before anything touches the devices
        initialize_distributed(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    except ValueError as e:
        _fail(str(e))
    config = _CONFIG.value
    try:
        validate(config)
        result = train_and_evaluate(config, _WORKDIR.value,
                                    progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        _fail(f"bad config: {e}")
    except RunError as e:  # data files, workdir, checkpoints, a diverged run
        _fail(str(e))
    if result.preempted:
        sys.exit(143)  # 128 + SIGTERM: the launcher may restart; the run resumes


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
