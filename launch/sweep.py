"""Runs a grid of config overrides as separate runs, one workdir each, ready for
`python -m experiments.compare`.

    python launch/sweep.py --root=runs/adding_sweep \
        --command="python -m experiments.train --config=experiments/configs/adding.py" \
        --grid=model.cell=lstm,irnn,rnn_tanh --grid=task.length=100,200 [--dry_run]

Each grid point becomes `<command> --workdir=<root>/<name> --config.<key>=<value> ...`, where
<name> joins the point's `key=value` pairs (last key component only). Runs go one after another
locally; a run whose workdir already holds a checkpoint resumes (the training engine's
behaviour), so re-running an interrupted sweep finishes it. `--dry_run` prints the commands.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys

from absl import app, flags

_ROOT = flags.DEFINE_string("root", None, "Directory that receives one workdir per run.",
                            required=True)
_COMMAND = flags.DEFINE_string("command", None, "Experiment command without --workdir.",
                               required=True)
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,... (repeatable): config overrides.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_KEEP_GOING = flags.DEFINE_bool("keep_going", False, "Continue after a failed run.")


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """'model.cell=lstm,gru' -> [('model.cell', ['lstm', 'gru'])]; errors name the bad spec."""
    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"bad --grid {spec!r}: expected KEY=V1,V2,... "
                             "(e.g. --grid=model.cell=lstm,gru)")
        grid.append((key.strip(), [v.strip() for v in values.split(",")]))
    return grid


def expand(command: str, root: str, grid) -> list[tuple[str, list[str]]]:
    """All grid points as (workdir, argv)."""
    runs = []
    keys = [k for k, _ in grid]
    for values in itertools.product(*[v for _, v in grid]) if grid else [()]:
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values)) or "run"
        workdir = os.path.join(root, name.replace("/", "_"))
        argv = shlex.split(command) + [f"--workdir={workdir}"]
        argv += [f"--config.{k}={v}" for k, v in zip(keys, values)]
        runs.append((workdir, argv))
    return runs


def main(argv):
    del argv
    try:
        runs = expand(_COMMAND.value, _ROOT.value, parse_grid(_GRID.value))
    except ValueError as e:
        sys.exit(f"sweep: {e}")
    failed = []
    for i, (workdir, cmd) in enumerate(runs):
        line = shlex.join(cmd)
        if _DRY_RUN.value:
            print(line)
            continue
        print(f"[{i + 1}/{len(runs)}] {line}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(workdir)
            if not _KEEP_GOING.value:
                sys.exit(f"sweep: run failed: {workdir} (rerun the sweep to resume; "
                         "--keep_going to continue past failures)")
    if failed:
        sys.exit(f"sweep: {len(failed)} of {len(runs)} runs failed: {failed}")
    if not _DRY_RUN.value:
        print(f"compare them: python -m experiments.compare {_ROOT.value}/* --out={_ROOT.value}/compare")


if __name__ == "__main__":
    app.run(main)
