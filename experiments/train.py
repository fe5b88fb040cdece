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
    sys.stdout.flush()
    # not sys.exit: a SystemExit raised while Python runs a gc callback (JAX registers one) is
    # printed and ignored, and the run went on to the end; an immediate exit is as safe as a
    # kill at any moment, which runs survive (tests/test_faults.py)
    os._exit(143)


if __name__ == "__main__":  # first of all: a SIGTERM while JAX imports is a clean exit too
    signal.signal(signal.SIGTERM, _startup_sigterm)

from absl import flags  # noqa: E402

from experiments import cli  # noqa: E402


def define_flags() -> None:
    cli.define_config("Experiment config file, experiments/configs/<name>.py[:variant].")
    flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it has "
                        "checkpoints).")
    flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() before anything "
                      "else (multi-host); default: the environment variable RNNLAB_DISTRIBUTED=1.")
    flags.DEFINE_string("coordinator_address", None, "With --distributed on a cluster JAX does "
                        "not detect: process 0's HOST:PORT.")
    flags.DEFINE_integer("num_processes", None, "With --coordinator_address: the number of "
                         "processes.")
    flags.DEFINE_integer("process_id", None, "With --coordinator_address: this process's id in "
                         "[0, num_processes).")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    from rnnlab.config import RunError
    from rnnlab.train import train_and_evaluate, validate  # after the flags
    from rnnlab.train.mesh import initialize_distributed

    F = flags.FLAGS
    try:  # before anything touches the devices
        initialize_distributed(F.distributed, coordinator_address=F.coordinator_address,
                               num_processes=F.num_processes, process_id=F.process_id)
    except ValueError as e:
        raise RunError(str(e)) from None
    validate(F.config)
    result = train_and_evaluate(F.config, F.workdir, progress=lambda s: print(s, flush=True))
    if result.preempted:
        sys.exit(143)  # 128 + SIGTERM: the launcher may restart; the run resumes


if __name__ == "__main__":
    cli.run("train", main, define_flags)
