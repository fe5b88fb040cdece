"""launch/tpu.py and launch/sweep.py: the exact gcloud commands `--dry_run` prints (create / run
on all workers / copy / delete), the preemption relaunch loop against a fake gcloud, the sweep
across TPU VMs and locally in parallel, and the README's "Run on Cloud TPU" section, whose
commands must be exactly what `--dry_run` prints; launch/gpu_check.sh's offline route."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = "python -m experiments.train --config=experiments/configs/char_shakespeare.py"
BASE = ["--name=rnnlab-test", "--zone=us-central2-b", "--accelerator_type=v4-8"]


def script(name, *args, env=None):
    return subprocess.run([sys.executable, os.path.join("launch", name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)


def dry(*args):
    proc = script("tpu.py", *args, "--dry_run")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_launch_dry_run_prints_create_setup_run_copy_delete():
    lines = dry("launch", *BASE, "--spot", "--workdir=gs://b/runs/shakespeare",
                f"--command={TRAIN}")
    commands = [line for line in lines if not line.startswith("#")]
    assert commands[0] == ("gcloud compute tpus tpu-vm create rnnlab-test --zone=us-central2-b "
                           "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base --spot")
    assert commands[1].startswith("tar -czf /tmp/rnnlab-test-src.tar.gz --exclude=./.git")
    assert commands[2] == ("gcloud compute tpus tpu-vm scp /tmp/rnnlab-test-src.tar.gz "
                           "rnnlab-test:/tmp/rnnlab.tar.gz --zone=us-central2-b --worker=all")
    assert commands[3].startswith("gcloud compute tpus tpu-vm ssh rnnlab-test "
                                  "--zone=us-central2-b --worker=all --command=")
    assert "bash ~/rnnlab/launch/tpu_setup.sh" in commands[3]
    run = shlex.split(commands[4])
    assert run[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rnnlab-test",
                       "--zone=us-central2-b", "--worker=all"]
    remote = run[8].removeprefix("--command=")
    assert "RNNLAB_DISTRIBUTED=1" in remote and "set -o pipefail" in remote
    assert f"{TRAIN} --workdir=gs://b/runs/shakespeare 2>&1 | tee -a logs/run.log" in remote
    assert commands[5:] == [
        "mkdir -p runs/shakespeare",
        "gcloud storage rsync --recursive gs://b/runs/shakespeare runs/shakespeare",
        "gcloud compute tpus tpu-vm delete rnnlab-test --zone=us-central2-b --quiet"]
    assert any("PREEMPTED" in line and "describe rnnlab-test" in line for line in lines
               if line.startswith("#"))
    for line in commands:  # every line is valid shell
        assert subprocess.run(["bash", "-n", "-c", line]).returncode == 0, line


def test_queued_spot_resource_with_project():
    create = dry("create", *BASE[:2], "--accelerator_type=v5litepod-8", "--queued", "--spot",
                 "--project=my-proj")
    assert create[0] == ("gcloud compute tpus queued-resources create rnnlab-test "
                         "--zone=us-central2-b --project=my-proj --node-id=rnnlab-test "
                         "--accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite "
                         "--spot")
    assert create[1].startswith("# repeated") and create[1].endswith(
        "queued-resources describe rnnlab-test --zone=us-central2-b --project=my-proj "
        "--format='value(state.state)'")
    assert dry("delete", *BASE, "--queued") == [
        "gcloud compute tpus queued-resources delete rnnlab-test --zone=us-central2-b --force "
        "--quiet"]


def test_run_logs_copy_subcommands():
    run = dry("run", *BASE, "--workdir=runs/x", "--command=python -m experiments.train "
              "--config=experiments/configs/adding.py --config.model.cell=gru")
    assert len(run) == 1 and "--worker=all" in run[0]
    assert ("--config.model.cell=gru --workdir=runs/x 2>&1" in run[0]
            and "RNNLAB_DISTRIBUTED=1" in run[0])
    assert dry("logs", *BASE) == [
        "gcloud compute tpus tpu-vm ssh rnnlab-test --zone=us-central2-b --worker=0 "
        "--command='tail -n 100 -F ~/rnnlab/logs/run.log'"]
    assert dry("copy", *BASE, "--workdir=runs/x", "--results=out") == [
        "mkdir -p out",
        "gcloud compute tpus tpu-vm scp rnnlab-test:rnnlab/runs/x out --zone=us-central2-b "
        "--worker=0 --recurse"]


@pytest.mark.parametrize("args, message", [
    (["launch", *BASE, "--spot", "--workdir=runs/x", "--command=x"], "--spot needs a gs://"),
    (["create", "--name=a", "--zone=z", "--accelerator_type=v9-8"],
     "no default runtime version for --accelerator_type='v9-8'"),
])
def test_bad_arguments_are_refused(args, message):
    proc = script("tpu.py", *args, "--dry_run")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "gcloud" not in proc.stdout


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# records every call; the first experiment run "is preempted" (ssh drops, the VM is PREEMPTED)
echo "gcloud $*" >> "$FAKE_DIR/calls"
case "$*" in
  *describe*) cat "$FAKE_DIR/state" 2>/dev/null || echo READY ;;
  *" create "*) echo READY > "$FAKE_DIR/state" ;;
  *experiments.train*)
    n=$(( $(cat "$FAKE_DIR/runs" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_DIR/runs"
    if [ $n -eq 1 ]; then echo PREEMPTED > "$FAKE_DIR/state"; exit 255; fi ;;
esac
exit 0
"""


def test_launch_relaunches_after_a_spot_preemption(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("gcloud", FAKE_GCLOUD),
                       ("tar", '#!/usr/bin/env bash\necho "tar $*" >> "$FAKE_DIR/calls"\n')):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path))
    proc = script("tpu.py", "launch", *BASE, "--spot", "--workdir=gs://b/runs/x",
                  f"--results={tmp_path / 'results'}", f"--command={TRAIN}", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [re.sub(r" .*", "", c.removeprefix("gcloud compute tpus ").replace(
        "tpu-vm ", "")) if c.startswith("gcloud compute") else c.split()[0] + " " + c.split()[1]
        for c in (tmp_path / "calls").read_text().splitlines()]
    setup = ["tar -czf", "scp", "ssh"]
    assert calls == (["create", *setup, "ssh", "describe", "delete", "create", *setup, "ssh",
                      "gcloud storage", "delete"]), calls
    assert "restart 1 of 5" in proc.stdout
    assert (tmp_path / "results" / "x").is_dir()


def test_sweep_across_tpu_vms_dry_run():
    proc = script("sweep.py", "--root=gs://b/sweep", f"--command={TRAIN}",
                  "--grid=model.cell=lstm,gru", "--tpu=rnnlab-sw", "--zone=us-central2-b",
                  "--spot", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [
        f"python launch/tpu.py launch --name=rnnlab-sw-{i} --zone=us-central2-b "
        f"--accelerator_type=v4-8 --spot --workdir=gs://b/sweep/cell={c} --results=runs/sweep "
        f"--command='{TRAIN} --config.model.cell={c}'" for i, c in enumerate(("lstm", "gru"))]
    # each line is a working launch/tpu.py command: its own dry run prints the VM's commands
    argv = shlex.split(lines[1])
    out = dry(*argv[2:])
    assert out[0].startswith("gcloud compute tpus tpu-vm create rnnlab-sw-1 ")
    assert any("--config.model.cell=gru --workdir=gs://b/sweep/cell=gru" in x for x in out)
    bad = script("sweep.py", "--root=runs/sweep", f"--command={TRAIN}", "--tpu=rnnlab-sw",
                 "--zone=z", "--spot", "--dry_run")
    assert bad.returncode != 0 and "--spot needs a gs:// --root" in bad.stderr


def test_local_sweep_runs_in_parallel_and_reports_failures(tmp_path):
    command = (f"{sys.executable} -c \"import sys, os; w = sys.argv[1].split('=', 1)[1]; "
               "os.makedirs(w); sys.exit(sys.argv[2].endswith('=bad'))\"")
    proc = script("sweep.py", f"--root={tmp_path}", f"--command={command}",
                  "--grid=model.cell=a,bad,c", "--parallel=2", "--keep_going")
    assert proc.returncode != 0 and "1 of 3 runs failed" in proc.stderr, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["cell=a", "cell=bad", "cell=c"]


def readme_examples() -> list[tuple[str, str]]:
    """(command, expected output) of every `$ ...` console example in the README's "Run on
    Cloud TPU" section (a command may continue over lines ending in a backslash)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = re.search(r"^## Run on Cloud TPU\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, ('README.md has no "## Run on Cloud TPU" section (its text is in the '
                     "report of issue #7)")
    examples = []
    for block in re.findall(r"```console\n(.*?)```", section.group(1), re.S):
        command, output, lines = None, [], block.splitlines()
        for line in lines:
            if line.startswith("$ "):
                command, output = line[2:], []
                examples.append([command, output])
            elif examples and examples[-1][0].endswith("\\"):
                examples[-1][0] = examples[-1][0][:-1].rstrip() + " " + line.strip()
            elif examples:
                output.append(line)
    return [(c, "\n".join(o)) for c, o in examples]


def test_readme_cloud_tpu_commands_are_the_dry_run_output():
    examples = readme_examples()
    assert len(examples) >= 2
    for command, expected in examples:
        argv = shlex.split(command)
        assert argv[:2] in (["python", "launch/tpu.py"], ["python", "launch/sweep.py"])
        assert "--dry_run" in argv, command
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip("\n") == expected, command


def test_entry_points_import_together():
    """Every experiments/ program can be imported in one process (tests, notebooks): only
    `experiments.train` defines absl flags at import; the others define theirs when run."""
    code = ("import experiments.compare, experiments.esn_forecast, experiments.generate, "
            "experiments.gradient_flow, experiments.evaluate, experiments.lm_report, "
            "experiments.smoke_metrics, experiments.benchmarks.train_step, experiments.train")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _gpu_check(tmp_path, wheels):
    """launch/gpu_check.sh's preinstalled route on this CPU: a sitecustomize makes this Python's
    jax.default_backend() say "gpu", so the script takes this Python as the image's own, installs
    `wheels` offline into its TMPDIR and then finds no GPU device."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text("import jax\njax.default_backend = lambda: 'gpu'\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(fake), TMPDIR=str(tmp_path),
               RNNLAB_WHEELS=str(wheels), RNNLAB_GPU_OUT=str(out))
    proc = subprocess.run(["bash", os.path.join("launch", "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, json.loads((out / "summary.json").read_text())


def test_gpu_check_without_wheels_says_how_to_fetch_them(tmp_path):
    proc, summary = _gpu_check(tmp_path, tmp_path / "no_wheels")
    assert proc.returncode == 1
    assert summary["route"] == "preinstalled"
    assert [(s["step"], s["rc"]) for s in summary["steps"]] == [("install", 1)]
    assert "bash launch/gpu_check.sh --fetch-wheels" in proc.stderr


def test_gpu_check_installs_wheels_offline_then_stops_at_no_gpu(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "rnnlab_probe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("rnnlab_probe.py", "")
        whl.writestr("rnnlab_probe-1.0.dist-info/METADATA",
                     "Metadata-Version: 2.1\nName: rnnlab-probe\nVersion: 1.0\n")
        whl.writestr("rnnlab_probe-1.0.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                     "Tag: py3-none-any\n")
        whl.writestr("rnnlab_probe-1.0.dist-info/RECORD", "")
    proc, summary = _gpu_check(tmp_path, wheels)
    assert proc.returncode == 1
    assert [(s["step"], s["rc"]) for s in summary["steps"]] == [("install", 0), ("device", 1)]
    assert (tmp_path / "rnnlab-gpu-site" / "rnnlab_probe.py").exists()


def test_gpu_check_refuses_an_unknown_argument_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join("launch", "gpu_check.sh"), "--fetch-wheel"],
                          cwd=ROOT, env=dict(os.environ, RNNLAB_GPU_OUT=str(out)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_check.sh: unknown argument '--fetch-wheel'; usage: bash launch/gpu_check.sh "
        "[--fetch-wheels]"]
    assert not out.exists()
