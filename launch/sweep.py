"""Runs a grid of config overrides as separate runs, one workdir each, ready for
`python -m experiments.compare`: locally, or one Cloud TPU VM per run (launch/tpu.py).

    python launch/sweep.py --root=runs/adding_sweep \
        --command="python -m experiments.train --config=experiments/configs/adding.py" \
        --grid=model.cell=lstm,irnn,rnn_tanh --grid=task.length=100,200 [--dry_run]
    python launch/sweep.py --root=gs://BUCKET/sweeps/adding --command="..." --grid=... \
        --tpu=rnnlab-sweep --zone=us-central2-b --accelerator_type=v4-8 --spot --parallel=6
    python launch/sweep.py ... --grid=model.cell=lstm,irnn --seeds=0,1,2   # 3 runs per point

Each grid point becomes `<command> --workdir=<root>/<name> --config.<key>=<value> ...`, where
<name> joins the point's `key=value` pairs (last key component only). With `--seeds=S1,S2,...`
every point runs once per seed: workdir `<root>/<name>,seed=S` with `--config.seed=S` (so the
run's config.json names its seed, and `experiments.compare` groups the seeds of one point by
reading the configs). Locally the runs go `--parallel` at a time (default one after another).
With `--tpu=PREFIX` run i (one per point and seed) runs as `python launch/tpu.py launch
--name=PREFIX-i ...` (its own VM: create, set up, run, copy the workdir back to
`<results>/<name>`, delete; relaunched after spot preemptions), `--parallel` VMs at a time.
A run whose workdir already holds a checkpoint resumes (the training engine's behaviour), so
re-running an interrupted sweep finishes it. `--dry_run` prints the commands.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import shlex
import subprocess
import sys
import time

from absl import app, flags

import tpu as tpu_lib  # launch/tpu.py (this script's directory is on sys.path)

_ROOT = flags.DEFINE_string("root", None, "Directory that receives one workdir per run "
                            "(gs://... for TPU runs on spot or multi-host VMs).", required=True)
_COMMAND = flags.DEFINE_string("command", None, "Experiment command without --workdir.",
                               required=True)
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,... (repeatable): config overrides.")
_SEEDS = flags.DEFINE_string("seeds", "", "S1,S2,... : run every grid point once per seed "
                             "(--config.seed=S, workdir <name>,seed=S); '' = the config's seed.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_KEEP_GOING = flags.DEFINE_bool("keep_going", False, "Continue after a failed run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs (or TPU VMs) at a time.")
_TPU = flags.DEFINE_string("tpu", "", "Run every point on its own Cloud TPU VM named "
                           "<tpu>-<index> (launch/tpu.py launch); '' = run locally.")
_ZONE = flags.DEFINE_string("zone", "", "--tpu: the zone, e.g. us-central2-b.")
_PROJECT = flags.DEFINE_string("project", "", "--tpu: the GCP project (default: gcloud's).")
_ACCELERATOR = flags.DEFINE_string("accelerator_type", "v4-8", "--tpu: the accelerator type.")
_VERSION = flags.DEFINE_string("version", "", "--tpu: the TPU runtime version (default: the "
                               "one for the accelerator type).")
_SPOT = flags.DEFINE_bool("spot", False, "--tpu: spot VMs (relaunched after preemption).")
_QUEUED = flags.DEFINE_bool("queued", False, "--tpu: create the VMs as queued resources.")
_RESULTS = flags.DEFINE_string("results", "", "--tpu: local directory that receives each run's "
                               "workdir (default runs/<basename of --root>).")


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


def parse_seeds(spec: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '' -> [] (no seed axis); errors name the bad spec."""
    if not spec.strip():
        return []
    try:
        seeds = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"bad --seeds {spec!r}: expected integers S1,S2,... (e.g. "
                         "--seeds=0,1,2)") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bad --seeds {spec!r}: a seed is repeated")
    return seeds


def points(root: str, grid, seeds=()) -> list[tuple[str, str, list[str]]]:
    """All runs as (name, workdir, ["--config.KEY=VALUE", ...]): every grid point, once per
    seed when `seeds` is given (seed last in the name, `--config.seed=S` last)."""
    if any(k == "seed" for k, _ in grid) and seeds:
        raise ValueError("give seeds either as --seeds or as --grid=seed=..., not both")
    out = []
    keys = [k for k, _ in grid]
    for values in itertools.product(*[v for _, v in grid]) if grid else [()]:
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values))
        name = name.replace("/", "_")
        overrides = [f"--config.{k}={v}" for k, v in zip(keys, values)]
        for seed in seeds or [None]:
            run = name if seed is None else ",".join(filter(None, [name, f"seed={seed}"]))
            extra = [] if seed is None else [f"--config.seed={seed}"]
            out.append((run or "run", posixpath.join(root, run or "run"), overrides + extra))
    return out


def expand(command: str, root: str, grid, seeds=()) -> list[tuple[str, list[str]]]:
    """All runs (grid points x seeds) as local runs: (workdir, argv)."""
    return [(workdir, shlex.split(command) + [f"--workdir={workdir}"] + overrides)
            for _, workdir, overrides in points(root, grid, seeds)]


def tpu_runs(command: str, root: str, grid, tpu: dict, seeds=()) -> list[tuple[str, list[str]]]:
    """All grid points as `launch/tpu.py launch` commands: (workdir, argv). `tpu` holds
    prefix, zone, project, accelerator_type, version, spot, queued, results."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,50}", tpu["prefix"]):
        raise ValueError(f"bad --tpu {tpu['prefix']!r}: TPU names are lowercase letters, digits "
                         "and hyphens, starting with a letter")
    if not tpu["zone"]:
        raise ValueError("--tpu needs --zone (e.g. --zone=us-central2-b)")
    if tpu["spot"] and not root.startswith("gs://"):
        raise ValueError(f"--spot needs a gs:// --root (got {root!r}): a preempted VM loses its "
                         "disk, and with it the checkpoints the relaunch resumes from")
    results = tpu["results"] or posixpath.join("runs", posixpath.basename(root.rstrip("/")))
    runs = []
    for i, (_, workdir, overrides) in enumerate(points(root, grid, seeds)):
        argv = ["python", "launch/tpu.py", "launch", f"--name={tpu['prefix']}-{i}",
                f"--zone={tpu['zone']}", f"--accelerator_type={tpu['accelerator_type']}"]
        argv += [f"--{k}={tpu[k]}" for k in ("project", "version") if tpu[k]]
        argv += [f"--{k}" for k in ("spot", "queued") if tpu[k]]
        argv += [f"--workdir={workdir}", f"--results={results}",
                 f"--command={shlex.join(shlex.split(command) + overrides)}"]
        runs.append((workdir, argv))
    return runs


def run_all(runs, parallel: int, keep_going: bool, cwd: str | None = None) -> list[str]:
    """Runs the commands (in `cwd`), `parallel` at a time; returns the failed workdirs."""
    pending, running, failed = list(enumerate(runs)), [], []
    while pending or running:
        while pending and len(running) < parallel and (keep_going or not failed):
            i, (workdir, cmd) = pending.pop(0)
            print(f"[{i + 1}/{len(runs)}] {tpu_lib.join(cmd)}", flush=True)
            running.append((workdir, subprocess.Popen(cmd, cwd=cwd)))
        if not running:
            break
        for workdir, proc in list(running):
            if proc.poll() is not None:
                running.remove((workdir, proc))
                if proc.returncode != 0:
                    failed.append(workdir)
        time.sleep(0.2)
    return failed


def main(argv):
    del argv
    try:
        grid = parse_grid(_GRID.value)
        seeds = parse_seeds(_SEEDS.value)
        if _PARALLEL.value < 1:
            raise ValueError(f"--parallel={_PARALLEL.value} must be >= 1")
        if _TPU.value:
            runs = tpu_runs(_COMMAND.value, _ROOT.value, grid, dict(
                prefix=_TPU.value, zone=_ZONE.value, project=_PROJECT.value,
                accelerator_type=_ACCELERATOR.value, version=_VERSION.value, spot=_SPOT.value,
                queued=_QUEUED.value, results=_RESULTS.value), seeds)
        else:
            runs = expand(_COMMAND.value, _ROOT.value, grid, seeds)
    except ValueError as e:
        sys.exit(f"sweep: {e}")
    if _DRY_RUN.value:
        for _, cmd in runs:
            print(tpu_lib.join(cmd))
        return
    failed = run_all(runs, _PARALLEL.value, _KEEP_GOING.value,
                     cwd=tpu_lib.ROOT if _TPU.value else None)  # tpu.py: repository root
    if failed and not _KEEP_GOING.value:
        sys.exit(f"sweep: run failed: {failed[0]} (rerun the sweep to resume; --keep_going to "
                 "continue past failures)")
    if failed:
        sys.exit(f"sweep: {len(failed)} of {len(runs)} runs failed: {failed}")
    local = (_RESULTS.value or posixpath.join("runs", posixpath.basename(_ROOT.value.rstrip("/")))
             if _TPU.value else _ROOT.value)
    # OUT (local) beside the root, not in it: a later '<root>/*' would take it for a run
    out = local.rstrip("/") + "_compare"
    if "://" in out:
        out = posixpath.join("runs", posixpath.basename(out))
    print(f"compare them: python -m experiments.compare '{local.rstrip('/')}/*' --out={out}")


if __name__ == "__main__":
    app.run(main)
