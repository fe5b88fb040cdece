"""Training-speed benchmark: rnnlab against PyTorch and Flax on recurrent language models.

    python -m experiments.benchmarks.speed --workload=all --out=runs/bench/speed.json
    python -m experiments.benchmarks.speed --workload=A,B --rounds=3 # best of 3 interleaved
    python -m experiments.benchmarks.speed --quick                 # smoke run, small shapes

One measured step is a full training step: embedding -> 2 recurrent layers -> linear readout ->
cross-entropy over all positions -> backward -> SGD update, with the hidden state carried (and
cut from the graph) from one step to the next. Every (implementation, workload, cell) runs in its
own subprocess, all from the same initial weights (drawn here, in numpy) and the same batches, so
the initial losses must agree; the table prints them.

Workloads (float32):
  A  word LM, vocab 10k, emb 650, 2x650, batch 20, BPTT 35 (Zaremba et al. 2014, medium)
  B  char LM, vocab 65, emb 64, 2x512, batch 32, seq 128
  L  long sequences, vocab 65, emb 64, 2x256, batch 16, seq 1024 (adds minGRU / minLSTM, and
     rnnlab LSTM with remat (checkpointed chunks of ~sqrt(seq) steps) to report its memory)

rnnlab runs with `--unroll=auto` (the engine's per-shape choice), `--fused=auto` (cuDNN for the
LSTM on a CUDA GPU; on CPU the fused FFI kernel for the LSTM and the GRU, the hand-written-
backward "vjp" path for the tanh RNN: `rnnlab.fused.dispatch`) and `--dtype=float32` unless
told otherwise; the peers always in float32. The JAX workers (rnnlab and Flax) set glibc's
malloc as `experiments/` entry points do (`experiments.cli.keep_freed_memory`; `--malloc=system`
leaves glibc's defaults); PyTorch runs with its own defaults. Peers: PyTorch eager (`torch`),
the same with tcmalloc preloaded (`torch_tcmalloc`, LD_PRELOAD of Debian's
libtcmalloc-minimal4 or $RNNLAB_TCMALLOC), and Flax's `nn.RNN` cells (`flax`).

Reported per run: compile time (JAX: lower + compile of the step; PyTorch: eager, so the first
step's time), step time median and min over `--steps` steps after `--warmup` steps, tokens/s,
achieved GFLOP/s (matmul FLOPs counted analytically: forward 2*m*k*n per matmul, backward twice
that), peak RSS of the worker process (ru_maxrss; includes the framework itself), XLA's temp
buffer size for JAX runs, and the ratio of rnnlab's tokens/s to each peer's.

On a CUDA GPU (install `.[cuda,test]` so JAX sees it) every worker runs there: PyTorch's
`nn.LSTM`/`nn.GRU`/`nn.RNN` through cuDNN, rnnlab's LSTM through JAX's cuDNN binding
(`fused=auto`), and the table reports the device and its peak allocated memory. Each row names
its device, and the same-math lines warn when rnnlab and a peer ran on different ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from experiments.benchmarks.lm_workers import CELLS, GATES, LONG_ONLY_CELLS, run_worker

WORKLOADS = {
    "A": dict(vocab=10000, emb=650, hidden=650, layers=2, batch=20, seq=35),
    "B": dict(vocab=65, emb=64, hidden=512, layers=2, batch=32, seq=128),
    "L": dict(vocab=65, emb=64, hidden=256, layers=2, batch=16, seq=1024),
}
QUICK = {
    "A": dict(vocab=200, emb=32, hidden=32, layers=2, batch=4, seq=8),
    "B": dict(vocab=65, emb=16, hidden=32, layers=2, batch=4, seq=16),
    "L": dict(vocab=65, emb=16, hidden=16, layers=2, batch=2, seq=64),
}
IMPLS = ("rnnlab", "torch", "torch_tcmalloc", "flax")
# torch_tcmalloc: PyTorch with tcmalloc preloaded (the strongest CPU peer: its allocator-heavy
# eager steps gain most); the library comes from RNNLAB_TCMALLOC or Debian's usual places
TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4", "/usr/lib64/libtcmalloc_minimal.so.4")


def tcmalloc_path() -> str | None:
    """The tcmalloc shared library to preload for `torch_tcmalloc`, or None."""
    env = os.environ.get("RNNLAB_TCMALLOC")
    if env:
        return env if os.path.isfile(env) else None
    return next((p for p in TCMALLOC if os.path.isfile(p)), None)

FLAGS = flags.FLAGS
flags.DEFINE_string("workload", "all", "A, B, L, a comma list of them, or all")
flags.DEFINE_string("cells", ",".join(CELLS + LONG_ONLY_CELLS), "comma list of cells")
flags.DEFINE_string("impls", ",".join(IMPLS), "comma list of implementations")
flags.DEFINE_string("out", "runs/bench/speed.json", "where the JSON results go")
flags.DEFINE_integer("steps", 30, "timed steps per run (after warm-up)")
flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")
flags.DEFINE_bool("quick", False, "smoke run: small shapes, 3 steps, 1 warm-up")
flags.DEFINE_bool("remat", True, "also measure rnnlab LSTM with remat on workload L")
flags.DEFINE_string("unroll", "auto", "rnnlab scan unroll: an int, or auto (the engine's "
                    "per-shape table, rnnlab.unroll.auto_unroll)")
flags.DEFINE_enum("fused", "auto", ["auto", "scan", "cudnn", "pallas", "vjp", "cpu"],
                  "rnnlab LSTM/GRU path (rnnlab.fused); auto = cuDNN on a CUDA GPU, the fused "
                  "CPU kernel (cpu) or vjp on CPU")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "rnnlab compute dtype (bfloat16: params, carry, accumulation stay float32)")
flags.DEFINE_enum("malloc", "tuned", ["tuned", "system"],
                  "glibc malloc of the JAX workers: tuned = as experiments' entry points set it "
                  "(experiments.cli.keep_freed_memory), system = glibc's defaults")
flags.DEFINE_integer("rounds", 1, "measure every run this many times, round-robin over the "
                     "plan (so a drift in the machine's speed hits all alike), and report each "
                     "run's best round")
flags.DEFINE_integer("seq", 0, "sequence length of every chosen workload (0: its own; e.g. "
                     "--workload=L --seq=4096 for the parallel-scan cells' long-sequence check)")
flags.DEFINE_integer("timeout", 900, "seconds per worker before it is abandoned")
# worker mode (internal: the parent runs one subprocess per measurement)
flags.DEFINE_string("worker", None, "internal: JSON spec of one measurement")


def plan(workloads, cells, impls, quick, remat):
    specs = []
    for wl in workloads:
        for cell in cells:
            if cell in LONG_ONLY_CELLS and wl != "L":
                continue
            for impl in impls:
                if cell in LONG_ONLY_CELLS and impl != "rnnlab":
                    continue
                specs.append(dict(workload=wl, cell=cell, impl=impl, remat=False))
        if wl == "L" and remat and "lstm" in cells and "rnnlab" in impls:
            specs.append(dict(workload=wl, cell="lstm", impl="rnnlab", remat=True))
    return specs


def launch(spec, timeout):
    cmd = [sys.executable, "-m", "experiments.benchmarks.speed", "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", RNNLAB_MALLOC=spec.get("malloc", "tuned"))
    if spec["impl"] == "torch_tcmalloc":
        lib = tcmalloc_path()
        if lib is None:
            return {"error": "no tcmalloc (apt install libtcmalloc-minimal4, or set "
                             "RNNLAB_TCMALLOC=/path/to/libtcmalloc.so)"}
        env["LD_PRELOAD"] = lib
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root,
                             env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]}


def name(r):
    return r["impl"] + ("+remat" if r.get("remat") else "")


def table(results):
    lines = ["| workload | cell | impl | device | init loss | compile s | step ms (median / min) "
             "| tokens/s | GFLOP/s | peak MB (host RSS; GPU: device) | XLA temp MB | "
             "rnnlab / this |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['cell']} | {name(r)} | | error: {r['error']} "
                         "| | | | | | | |")
            continue
        temp = "" if r.get("xla_temp_mb") is None else f"{r['xla_temp_mb']:.0f}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        peak = r["peak_rss_mb"] if r.get("device_peak_mb") is None else r["device_peak_mb"]
        lines.append(
            f"| {r['workload']} | {r['cell']} | {name(r)} | {r.get('device', '')} | "
            f"{r['init_loss']:.4f} | "
            f"{r['compile_s']:.2f} | {1e3 * r['step_median_s']:.1f} / {1e3 * r['step_min_s']:.1f} "
            f"| {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} | {peak:.0f} | {temp} "
            f"| {ratio} |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (Linux; '' elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "")
    flags_ = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                       if line.startswith("flags")), []))
    vec = next((v for v in ("avx512f", "avx2", "avx", "sse4_2") if v in flags_), "")
    return f"{model} ({vec})" if vec else model


def best_round(runs):
    """The round with the most tokens/s (the one least slowed by the rest of the machine),
    with every round's tokens/s kept; an error only if every round failed."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = dict(max(ok, key=lambda r: r["tokens_per_s"]))
    if len(runs) > 1:
        best["rounds_tokens_per_s"] = [r.get("tokens_per_s") for r in runs]
    return best


def finish(results):
    """Adds rnnlab/peer ratios and the same-math check (initial losses agree)."""
    by_key = {(r["workload"], r["cell"], name(r)): r for r in results if "error" not in r}
    checks = []
    for r in results:
        ref = by_key.get((r["workload"], r["cell"], "rnnlab"))
        if "error" in r or ref is None:
            continue
        r["ratio"] = ref["tokens_per_s"] / r["tokens_per_s"] if r is not ref else None
        if r["impl"] != "rnnlab":
            if r.get("device") != ref.get("device"):
                checks.append(f"{r['workload']} {r['cell']} {r['impl']}: ran on "
                              f"{r.get('device')}, rnnlab on {ref.get('device')}: the ratio "
                              "compares different hardware (install rnnlab[cuda] for JAX's GPU)")
            diff = abs(r["init_loss"] - ref["init_loss"])
            r["init_loss_agrees"] = bool(diff <= 1e-4 * max(1.0, abs(ref["init_loss"])))
            checks.append(f"{r['workload']} {r['cell']} {r['impl']}: initial loss "
                          f"{r['init_loss']:.6f} vs rnnlab {ref['init_loss']:.6f} "
                          f"({'agree' if r['init_loss_agrees'] else 'DIFFER'})")
    return checks


def main(argv):
    del argv
    if FLAGS.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(FLAGS.worker))), flush=True)
        return
    workloads = list(WORKLOADS) if FLAGS.workload == "all" else FLAGS.workload.split(",")
    cells, impls = FLAGS.cells.split(","), FLAGS.impls.split(",")
    for what, got, valid in (("workload", workloads, WORKLOADS), ("cell", cells, GATES),
                             ("impl", impls, IMPLS)):
        bad = [g for g in got if g not in valid]
        if bad:
            raise app.UsageError(f"unknown {what} {bad}; valid choices: {sorted(valid)}")
    if FLAGS.unroll != "auto" and not FLAGS.unroll.isdigit():
        raise app.UsageError(f"--unroll={FLAGS.unroll!r} must be a non-negative int or auto")
    shapes = QUICK if FLAGS.quick else WORKLOADS
    if FLAGS.seq < 0:
        raise app.UsageError(f"--seq={FLAGS.seq} must be positive (or 0: the workload's own)")
    if FLAGS.seq:
        shapes = {k: dict(v, seq=FLAGS.seq) for k, v in shapes.items()}
    steps, warmup = (3, 1) if FLAGS.quick else (FLAGS.steps, FLAGS.warmup)
    load = os.getloadavg()
    specs = plan(workloads, cells, impls, FLAGS.quick, FLAGS.remat)
    for spec in specs:
        spec.update(cfg=shapes[spec["workload"]], steps=steps, warmup=warmup,
                    unroll=FLAGS.unroll, fused=FLAGS.fused, dtype=FLAGS.dtype, malloc=FLAGS.malloc)
    rounds = [[] for _ in specs]
    for r in range(FLAGS.rounds):
        for spec, runs in zip(specs, rounds):
            t0 = time.time()
            res = launch(spec, FLAGS.timeout)
            res.update({k: spec[k] for k in ("workload", "cell", "impl", "remat")})
            runs.append(res)
            print(f"  {f'round {r + 1}  ' if FLAGS.rounds > 1 else ''}{spec['workload']} "
                  f"{spec['cell']:8s} {name(spec):13s} "
                  + (f"error {res['error']}" if "error" in res else
                     f"{res['tokens_per_s']:10,.0f} tokens/s  ({time.time() - t0:.0f} s)"),
                  file=sys.stderr, flush=True)
    results = [best_round(runs) for runs in rounds]
    checks = finish(results)
    report = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "load_avg_start": load,
                    "load_avg_end": os.getloadavg(), "platform": sys.platform,
                    "python": sys.version.split()[0]},
        "quick": FLAGS.quick, "workloads": {k: shapes[k] for k in workloads},
        "rnnlab_options": {"unroll": FLAGS.unroll, "fused": FLAGS.fused, "dtype": FLAGS.dtype,
                           "malloc": FLAGS.malloc},
        "rounds": FLAGS.rounds, "steps": steps,
        "results": results, "same_math": checks,
    }
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump(report, f, indent=1)
    print(table(results))
    print()
    print("\n".join(checks))
    print(f"load average (1/5/15 min) at start {load}, at end {os.getloadavg()}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    app.run(main)
