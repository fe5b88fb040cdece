"""Cloud TPU VMs for rnnlab: create, install, run an experiment on every worker, stream its log,
copy the results back, delete; `launch` does all of it and survives spot preemptions.

    python launch/tpu.py launch --name=rnnlab-v4 --zone=us-central2-b --accelerator_type=v4-8 \
        --spot --workdir=gs://BUCKET/runs/shakespeare \
        --command="python -m experiments.train --config=experiments/configs/char_shakespeare.py"
    python launch/tpu.py create|setup|delete --name=... --zone=... [--accelerator_type ...]
    python launch/tpu.py run --name=... --zone=... --workdir=... --command="..."
    python launch/tpu.py logs|copy --name=... --zone=... [--workdir=...]

Every subcommand takes `--dry_run`, which prints the exact commands (gcloud, tar, mkdir) without
running them; lines starting with "#" say what happens between them. Commands run from the
repository root. Subcommands:

  create   `gcloud compute tpus tpu-vm create` (`--spot` for a spot VM), or with `--queued` a
           queued resource (`gcloud compute tpus queued-resources create`), then waits until it
           is ACTIVE. `--version` defaults to the runtime the TPU docs give for the type
           (v4: tpu-ubuntu2204-base, v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
           v6e: v2-alpha-tpuv6e).
  setup    packs the working tree (without .git, .venv, runs), copies it to every worker and
           runs launch/tpu_setup.sh there (Python 3.11 venv, `pip install -e .[tpu]`).
  run      runs `--command ... --workdir=WORKDIR` on all workers at once
           (`gcloud compute tpus tpu-vm ssh --worker=all`) with RNNLAB_DISTRIBUTED=1, so each
           host calls `jax.distributed.initialize()`; output streams to the console and to
           ~/rnnlab/logs/run.log on each worker. The same command after a preemption resumes
           from the last checkpoint in WORKDIR.
  logs     follows worker 0's log (`tail -F`; process 0 prints the progress lines).
  copy     copies WORKDIR to `<results>/<basename of WORKDIR>` (gs://: `gcloud storage rsync`;
           a path on the VM: `scp` from worker 0, the process that writes the metrics).
  delete   deletes the VM (or the queued resource with its VM).
  launch   create, setup, run, copy, delete. If the run fails because the spot VM was preempted
           (state PREEMPTED, or SUSPENDED for a queued resource) the VM is deleted, created and
           set up again and the same run command resumes from its checkpoint, up to
           `--max_restarts` times. Any other failure keeps the VM for inspection.

Workdirs: a multi-host slice (e.g. v4-16 and larger) and any spot run need a gs:// workdir (all
hosts write one checkpoint; a preempted VM's disk is gone); `--spot` refuses a local one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import posixpath
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/rnnlab"  # the project's directory on every worker (in ssh commands)
REMOTE_HOME_DIR = "rnnlab"  # the same, relative to the home directory (scp paths)
REMOTE_TARBALL = "/tmp/rnnlab.tar.gz"
RUNTIMES = {  # accelerator type prefix -> TPU software version for JAX (cloud.google.com/tpu)
    "v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite",
    "v4": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v2": "tpu-ubuntu2204-base"}
PREEMPTED_STATES = {"PREEMPTED", "TERMINATED", "SUSPENDED", "SUSPENDING"}
SIGTERM_EXIT = 143  # experiments.train after saving on SIGTERM


def default_version(accelerator_type: str) -> str:
    prefix = accelerator_type.split("-", 1)[0]
    if prefix not in RUNTIMES:
        raise ValueError(f"no default runtime version for --accelerator_type="
                         f"{accelerator_type!r} (known: {sorted(RUNTIMES)}); pass --version")
    return RUNTIMES[prefix]


@dataclasses.dataclass(frozen=True)
class Tpu:
    """One TPU VM (or queued resource) and the gcloud commands that act on it."""

    name: str
    zone: str
    accelerator_type: str = "v4-8"
    version: str = ""  # "" = default_version(accelerator_type)
    project: str = ""  # "" = gcloud's configured project
    spot: bool = False
    queued: bool = False

    def _gcloud(self, group: str, verb: str, *args: str, positional: int = 1) -> list[str]:
        """gcloud compute tpus GROUP VERB ARGS (the first `positional` of them, then --zone and
        --project, then the rest)."""
        project = [f"--project={self.project}"] if self.project else []
        return ["gcloud", "compute", "tpus", group, verb, *args[:positional],
                f"--zone={self.zone}", *project, *args[positional:]]

    def create(self) -> list[str]:
        version = self.version or default_version(self.accelerator_type)
        spot = ["--spot"] if self.spot else []
        if self.queued:
            return self._gcloud("queued-resources", "create", self.name, f"--node-id={self.name}",
                                f"--accelerator-type={self.accelerator_type}",
                                f"--runtime-version={version}", *spot)
        return self._gcloud("tpu-vm", "create", self.name,
                            f"--accelerator-type={self.accelerator_type}",
                            f"--version={version}", *spot)

    def state(self) -> list[str]:
        """Prints the VM's state (READY, PREEMPTED, ...) or the queued resource's (ACTIVE, ...)."""
        if self.queued:
            return self._gcloud("queued-resources", "describe", self.name,
                                "--format=value(state.state)")
        return self._gcloud("tpu-vm", "describe", self.name, "--format=value(state)")

    def delete(self) -> list[str]:
        if self.queued:
            return self._gcloud("queued-resources", "delete", self.name, "--force", "--quiet")
        return self._gcloud("tpu-vm", "delete", self.name, "--quiet")

    def ssh(self, command: str, worker: str = "all") -> list[str]:
        return self._gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}",
                            f"--command={command}")

    def scp(self, src: str, dest: str, worker: str = "all", recurse: bool = False) -> list[str]:
        """`gcloud compute tpus tpu-vm scp`; the remote side is `NAME:PATH` (relative to ~)."""
        return self._gcloud("tpu-vm", "scp", src, dest, f"--worker={worker}",
                            *(["--recurse"] if recurse else []), positional=2)


def join(argv: list[str]) -> str:
    """The command line for `argv` as a shell would take it, with --flag='quoted value'."""
    def quote(arg: str) -> str:
        key, sep, value = arg.partition("=")
        if arg.startswith("--") and sep and shlex.quote(value) != value:
            return f"{key}={shlex.quote(value)}"
        return shlex.quote(arg)
    return " ".join(quote(a) for a in argv)


def tarball(tpu: Tpu) -> str:
    return f"/tmp/{tpu.name}-src.tar.gz"


def setup_commands(tpu: Tpu) -> list[list[str]]:
    return [
        ["tar", "-czf", tarball(tpu), "--exclude=./.git", "--exclude=./.venv", "--exclude=./runs",
         "--exclude=__pycache__", "."],
        tpu.scp(tarball(tpu), f"{tpu.name}:{REMOTE_TARBALL}"),
        tpu.ssh(f"mkdir -p {REMOTE_DIR} && tar -xzf {REMOTE_TARBALL} -C {REMOTE_DIR} && "
                f"bash {REMOTE_DIR}/launch/tpu_setup.sh"),
    ]


def run_command(tpu: Tpu, command: str, workdir: str) -> list[str]:
    experiment = join(shlex.split(command) + [f"--workdir={workdir}"])
    return tpu.ssh(f"set -o pipefail; cd {REMOTE_DIR} && mkdir -p logs && "
                   f"export PATH=$HOME/rnnlab/.venv/bin:$PATH RNNLAB_DISTRIBUTED=1 && "
                   f"{experiment} 2>&1 | tee -a logs/run.log")


def logs_command(tpu: Tpu, lines: int) -> list[str]:
    return tpu.ssh(f"tail -n {lines} -F {REMOTE_DIR}/logs/run.log", worker="0")


def copy_commands(tpu: Tpu, workdir: str, results: str) -> list[list[str]]:
    dest = posixpath.join(results, posixpath.basename(workdir.rstrip("/")))
    if workdir.startswith("gs://"):
        return [["mkdir", "-p", dest], ["gcloud", "storage", "rsync", "--recursive", workdir, dest]]
    remote = workdir if workdir.startswith("/") else f"{REMOTE_HOME_DIR}/{workdir}"
    return [["mkdir", "-p", results],
            tpu.scp(f"{tpu.name}:{remote.rstrip('/')}", results, worker="0", recurse=True)]


class Shell:
    """Runs commands from the repository root, or with `dry_run` only prints them."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def note(self, text: str) -> None:
        print(f"# {text}" if self.dry_run else f"[tpu] {text}", flush=True)

    def __call__(self, argv: list[str], check: bool = True) -> int:
        line = join(argv)
        if self.dry_run:
            print(line)
            return 0
        print(f"[tpu] {line}", file=sys.stderr, flush=True)
        rc = subprocess.run(argv, cwd=ROOT).returncode
        if check and rc != 0:
            sys.exit(f"tpu: command failed (exit {rc}): {line}")
        return rc

    def output(self, argv: list[str]) -> str:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip()


def create(tpu: Tpu, sh: Shell, poll_secs: float = 30.0) -> None:
    sh(tpu.create())
    if not tpu.queued:
        return
    if sh.dry_run:
        sh.note(f"repeated every {poll_secs:g} s until it prints ACTIVE: {join(tpu.state())}")
        return
    while (state := sh.output(tpu.state())) != "ACTIVE":
        if state in ("FAILED", "SUSPENDED"):
            sys.exit(f"tpu: queued resource {tpu.name} is {state}; see "
                     f"{join(tpu.state()[:-1])}")
        print(f"[tpu] queued resource {tpu.name}: {state or 'not found yet'}; waiting",
              flush=True)
        time.sleep(poll_secs)


def setup(tpu: Tpu, sh: Shell) -> None:
    for argv in setup_commands(tpu):
        sh(argv)


def copy(tpu: Tpu, sh: Shell, workdir: str, results: str) -> None:
    for argv in copy_commands(tpu, workdir, results):
        sh(argv)


def launch(tpu: Tpu, sh: Shell, command: str, workdir: str, results: str,
           max_restarts: int) -> None:
    """create -> setup -> run (again after each preemption) -> copy -> delete."""
    create(tpu, sh)
    setup(tpu, sh)
    restarts = 0
    while True:
        rc = sh(run_command(tpu, command, workdir), check=False)
        if sh.dry_run:
            sh.note(f"if the run fails: {join(tpu.state())}; if it prints one of "
                    f"{'/'.join(sorted(PREEMPTED_STATES))} (a preemption), delete, create and "
                    f"set up again and rerun the same command, which resumes from the last "
                    f"checkpoint in the workdir (at most --max_restarts={max_restarts} times)")
            break
        if rc == 0:
            break
        state = sh.output(tpu.state())
        if restarts < max_restarts and (state in PREEMPTED_STATES or rc == SIGTERM_EXIT):
            restarts += 1
            sh.note(f"run exited {rc} with the VM {state or 'gone'}: restart {restarts} of "
                    f"{max_restarts}, resuming from the last checkpoint")
            if state != "READY" and state != "ACTIVE":
                sh(tpu.delete(), check=False)
                create(tpu, sh)
                setup(tpu, sh)
            continue
        copy(tpu, sh, workdir, results)
        sys.exit(f"tpu: the run failed (exit {rc}, VM state {state or 'unknown'}); the VM is "
                 f"kept: python launch/tpu.py logs --name={tpu.name} --zone={tpu.zone} to "
                 f"inspect, python launch/tpu.py delete --name={tpu.name} --zone={tpu.zone}"
                 f"{' --queued' if tpu.queued else ''} to delete it")
    copy(tpu, sh, workdir, results)
    sh(tpu.delete())


def parse_args(argv: list[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-east1-d")
    common.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    common.add_argument("--accelerator_type", default="v4-8",
                        help="v4-8, v5litepod-8, v5p-8, v6e-8, ... (default v4-8)")
    common.add_argument("--version", default="",
                        help="TPU runtime version (default: the one for the accelerator type)")
    common.add_argument("--spot", action="store_true", help="a spot (preemptible) VM")
    common.add_argument("--queued", action="store_true",
                        help="create/delete through a queued resource")
    common.add_argument("--dry_run", action="store_true",
                        help="print the commands instead of running them")
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--command", required=True,
                     help='experiment command without --workdir, e.g. "python -m '
                          'experiments.train --config=experiments/configs/adding.py"')
    run.add_argument("--workdir", required=True,
                     help="the run's workdir (gs://BUCKET/... for multi-host or spot)")
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument("--results", default="runs",
                         help="local directory that receives <basename of workdir>")
    parser = argparse.ArgumentParser(prog="launch/tpu.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("create", parents=[common])
    sub.add_parser("setup", parents=[common])
    sub.add_parser("run", parents=[common, run])
    logs = sub.add_parser("logs", parents=[common])
    logs.add_argument("--lines", type=int, default=100, help="lines of history to show first")
    copy_parser = sub.add_parser("copy", parents=[common, results])
    copy_parser.add_argument("--workdir", required=True, help="the run's workdir")
    sub.add_parser("delete", parents=[common])
    go = sub.add_parser("launch", parents=[common, run, results])
    go.add_argument("--max_restarts", type=int, default=5,
                    help="relaunches after preemptions (spot)")
    args = parser.parse_args(argv)
    if getattr(args, "workdir", None) and args.spot and not args.workdir.startswith("gs://"):
        parser.error(f"--spot needs a gs:// --workdir (got {args.workdir!r}): a preempted VM "
                     "loses its disk, and with it the checkpoints the relaunch resumes from")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tpu = Tpu(args.name, args.zone, args.accelerator_type, args.version, args.project, args.spot,
              args.queued)
    try:
        tpu.create()  # checks the accelerator type / runtime version before anything runs
    except ValueError as e:
        sys.exit(f"tpu: {e}")
    sh = Shell(args.dry_run)
    if args.action == "create":
        create(tpu, sh)
    elif args.action == "setup":
        setup(tpu, sh)
    elif args.action == "run":
        rc = sh(run_command(tpu, args.command, args.workdir), check=False)
        if rc:
            sys.exit(rc)
    elif args.action == "logs":
        sh(logs_command(tpu, args.lines), check=False)
    elif args.action == "copy":
        copy(tpu, sh, args.workdir, args.results)
    elif args.action == "delete":
        sh(tpu.delete())
    elif args.action == "launch":
        launch(tpu, sh, args.command, args.workdir, args.results, args.max_restarts)


if __name__ == "__main__":
    main()
