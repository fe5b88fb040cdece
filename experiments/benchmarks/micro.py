"""Micro-benchmarks behind the scan engine's choices (short; no peers, no full training runs).

    python -m experiments.benchmarks.micro --bench=unroll --json=runs/bench/unroll.json
    python -m experiments.benchmarks.micro --bench=memory --json=runs/bench/memory.json
    python -m experiments.benchmarks.micro --bench=xla_flags --json=runs/bench/xla_flags.json
    python -m experiments.benchmarks.micro --bench=matmul --json=runs/bench/matmul.json

unroll     one LSTM layer on the XLA `vjp` path (the fused CPU kernel has no unroll), forward +
           backward over `--time` steps, for hidden x batch shapes and
           unroll 1, 2, 4, 8 (timed round-robin, so load drifts hit all variants alike); prints
           ms per call (min over repetitions), the speedup over unroll=1, and the choice of
           `rnnlab.unroll.auto_unroll` for the shape. The source of its table `AUTO_UNROLL`.
memory     XLA's memory analysis (temp buffers of the compiled step; independent of load) of
           speed.py's workload-L training step (2x256 LSTM LM, batch 16) at several sequence
           lengths (all on the scan), without remat, with remat of every step, and with rnnlab's
           chunked remat.
xla_flags  one 2x650 LSTM (workload A's recurrent part: batch 20, 35 steps) under several
           XLA_FLAGS (`XLA_FLAG_SETS`), each in its own process, `--passes` passes in turn: the
           bare recurrent matmul [20, 650] x [650, 2600], the forward pass and forward +
           backward, as matmul GFLOP/s, with the largest output difference from the default
           flags (0 means the same kernels ran).
matmul     the speed benchmark's matmul shapes alone, XLA against PyTorch in one process
           (round-robin): does a step's gap come from the matmul library or from the rest?

Timings on a shared machine move with its load: every timing is printed with the 1-minute load
average (`os.getloadavg`) measured around it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

from experiments.benchmarks.timing import load_avg, time_round_robin

FLAGS = flags.FLAGS
flags.DEFINE_enum("bench", "unroll", ["unroll", "memory", "xla_flags", "matmul"],
                  "which micro-benchmark")
flags.DEFINE_string("json", "", "write the results here as JSON ('' = print only)")
flags.DEFINE_integer("time", 32, "unroll: time steps per call")
flags.DEFINE_string("hidden", "32,64,128,256,512,650", "unroll: comma list of hidden sizes")
flags.DEFINE_string("batch", "1,8,32", "unroll: comma list of batch sizes")
flags.DEFINE_float("seconds", 1.5, "unroll / xla_flags: timing budget per variant")
flags.DEFINE_string("seqs", "256,1024,4096", "memory: comma list of sequence lengths")
flags.DEFINE_integer("passes", 2, "xla_flags: passes over the flag sets (round-robin)")
flags.DEFINE_string("child", None, "internal: xla_flags child (prints one RESULT line)")

UNROLLS = (1, 2, 4, 8)
# flag sets tried by --bench=xla_flags (this jaxlib's XLA:CPU switches, from XLA_FLAGS=--help;
# which library runs the dots was checked in the optimised HLO: ynn_fusion / dot / onednn_fusion)
_NO_YNN_DOT = "--xla_cpu_experimental_ynn_fusion_type=reduce"
XLA_FLAG_SETS = {
    "default": "",  # dots run as YNNPACK fusions
    "eigen_dots": _NO_YNN_DOT,  # plain dots (Eigen)
    "ynn_dot_eltwise": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise",
    "onednn_dots": (_NO_YNN_DOT + " --xla_cpu_use_onednn=true"
                    " --xla_cpu_experimental_onednn_fusion_type=dot"),
    "single_thread_eigen": _NO_YNN_DOT + " --xla_cpu_multi_thread_eigen=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",  # changes results: not a candidate
}


# --- unroll ---------------------------------------------------------------------------------


def bench_unroll(hiddens, batches, steps, seconds):
    import jax
    import jax.numpy as jnp

    import rnnlab
    from rnnlab.unroll import auto_unroll

    rows = []
    for hidden in hiddens:
        for batch in batches:
            cell = rnnlab.cells.make("lstm", hidden)
            params = cell.init(jax.random.key(0), hidden)
            xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))

            def make(k, cell=cell, params=params, xs=xs):
                def loss(p, x):
                    # the XLA path that unrolls ("auto" would take the fused CPU kernel)
                    ys = rnnlab.unroll(cell, p, x, unroll=k, fused="vjp")[1]
                    return jnp.sum(jnp.sin(ys))

                fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
                fn(params, xs)  # compile
                return lambda: jax.block_until_ready(fn(params, xs))

            load0 = load_avg()
            times = time_round_robin({k: make(k) for k in UNROLLS}, seconds)
            best = {k: min(v) for k, v in times.items()}
            row = {"hidden": hidden, "batch": batch, "time": steps,
                   "ms": {k: 1e3 * v for k, v in best.items()},
                   "speedup": {k: best[1] / v for k, v in best.items()},
                   "fastest": min(best, key=best.get),
                   "auto": auto_unroll(batch, hidden, steps, "cpu"),
                   "load": [load0, load_avg()]}
            rows.append(row)
            print(f"hidden {hidden:4d} batch {batch:3d}: " + "  ".join(
                f"u{k} {row['ms'][k]:8.2f} ms ({row['speedup'][k]:.2f}x)" for k in UNROLLS)
                + f"  fastest u{row['fastest']}  auto u{row['auto']}  load {row['load']}",
                flush=True)
    return rows


# --- matmul ---------------------------------------------------------------------------------

# [m, k] x [k, n] matmuls of the speed benchmark's LSTM steps: per-step recurrent forward,
# backward dh and per-step dW (workloads B and A), and the hoisted input projection and softmax
MATMULS = ((32, 512, 2048), (32, 2048, 512), (512, 32, 2048), (4096, 512, 2048),
           (4096, 64, 2048), (20, 650, 2600), (20, 2600, 650), (700, 650, 2600),
           (700, 650, 10000))


def bench_matmul(shapes, seconds):
    """float32 [m, k] x [k, n] in XLA (jitted) and in PyTorch (threads = CPUs), timed
    round-robin in one process: GFLOP/s from each one's fastest call."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count())
    rows = []
    for m, k, n in shapes:
        a = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
        ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
        mm = jax.jit(jnp.matmul)
        mm(ja, jb).block_until_ready()
        times = time_round_robin({"xla": lambda: mm(ja, jb).block_until_ready(),
                                  "torch": lambda: torch.matmul(ta, tb)}, seconds)
        gf = {name: 2 * m * k * n / min(t) / 1e9 for name, t in times.items()}
        rows.append({"m": m, "k": k, "n": n, "gflops": gf, "xla_over_torch": gf["xla"] /
                     gf["torch"], "load": load_avg()})
        print(f"{m:5d} x {k:5d} x {n:5d}: XLA {gf['xla']:6.1f} GFLOP/s, PyTorch "
              f"{gf['torch']:6.1f}, ratio {gf['xla'] / gf['torch']:.2f}", flush=True)
    return rows


# --- memory ---------------------------------------------------------------------------------


def bench_memory(seqs):
    import jax
    import jax.numpy as jnp

    from experiments.benchmarks import lm_workers, speed

    rows = []
    for seq in seqs:
        cfg = dict(speed.WORKLOADS["L"], seq=seq)
        w = lm_workers.make_weights("lstm", cfg)
        x = jnp.zeros((cfg["batch"], seq), jnp.int32)
        row = {"seq": seq}
        for name, remat in (("none", False), ("every_step", 1), ("chunked", True)):
            # all three on the scan (remat runs there; without it "auto" would take the fused
            # CPU kernel, whose saved activations are another comparison)
            spec = dict(impl="rnnlab", cell="lstm", cfg=cfg, remat=remat, unroll=1,
                        fused="scan")
            step, params, carry0 = lm_workers.jax_train_step(spec, w)
            mem = jax.jit(step, donate_argnums=(0, 1)).lower(params, carry0, x, x).compile()
            row[name] = mem.memory_analysis().temp_size_in_bytes / 2**20
        row["chunked_over_none"] = row["chunked"] / row["none"]
        row["every_step_over_none"] = row["every_step"] / row["none"]
        rows.append(row)
        print(f"seq {seq:5d}: XLA temp MB  no remat {row['none']:8.1f}  remat every step "
              f"{row['every_step']:8.1f} ({row['every_step_over_none']:.0%})  chunked "
              f"{row['chunked']:8.1f} ({row['chunked_over_none']:.0%})", flush=True)
    return rows


# --- XLA flags ------------------------------------------------------------------------------


def lstm_step_worker(seconds):
    """Child of --bench=xla_flags: workload A's 2x650 recurrence under this process's flags."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnnlab
    from rnnlab.cells import Stack

    batch, steps, hidden = 20, 35, 650
    stack = Stack(tuple(rnnlab.cells.make("lstm", hidden) for _ in range(2)))
    params = stack.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    h = jax.random.normal(jax.random.key(2), (batch, hidden))
    w_hh = params[0]["w_hh"]

    matmul = jax.jit(lambda h, w: h @ w)
    forward = jax.jit(lambda p, x: rnnlab.unroll(stack, p, x)[1])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(rnnlab.unroll(stack, p, x)[1]))))
    outs = {"matmul": matmul(h, w_hh), "forward": forward(params, xs),
            "grad": grad(params, xs)[1]["w_hh"]}  # also compiles
    fns = {"matmul": lambda: matmul(h, w_hh).block_until_ready(),
           "forward": lambda: forward(params, xs).block_until_ready(),
           "grad": lambda: jax.block_until_ready(grad(params, xs))}
    one = 2 * batch * hidden * 4 * hidden  # one [batch, h] x [h, 4h] matmul
    flops = {"matmul": one, "forward": 2 * 2 * steps * one, "grad": 3 * 2 * 2 * steps * one}
    load0 = load_avg()
    times = time_round_robin(fns, seconds)
    return {"gflops": {k: flops[k] / min(v) / 1e9 for k, v in times.items()},
            "ms": {k: 1e3 * min(v) for k, v in times.items()},
            "load": [load0, load_avg()],
            "outputs": {k: np.asarray(v).ravel()[:4096].tolist() for k, v in outs.items()}}


def bench_xla_flags(seconds, rounds):
    """Each flag set in its own process, `rounds` passes in turn (load drift hits all sets);
    per set the best GFLOP/s over the passes, every pass kept in the JSON."""
    import numpy as np

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = {name: [] for name in XLA_FLAG_SETS}
    ref = None
    for _ in range(rounds):
        for name, xla_flags in XLA_FLAG_SETS.items():
            env = dict(os.environ, XLA_FLAGS=xla_flags, PYTHONWARNINGS="ignore")
            cmd = [sys.executable, "-m", "experiments.benchmarks.micro", "--child=lstm_step",
                   f"--seconds={seconds}"]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env,
                                 timeout=900, check=False)
            res = next((json.loads(line[7:]) for line in reversed(out.stdout.splitlines())
                        if line.startswith("RESULT ")), None)
            if res is None:
                runs[name].append({"error": (out.stderr.strip().splitlines()
                                             or ["no output"])[-1]})
                print(f"{name:20s} error: {runs[name][-1]['error']}", flush=True)
                continue
            outputs = {k: np.asarray(v) for k, v in res.pop("outputs").items()}
            ref = outputs if ref is None else ref
            res["max_diff_vs_default"] = {k: float(np.abs(outputs[k] - ref[k]).max())
                                          for k in outputs}
            runs[name].append(res)
            g = res["gflops"]
            print(f"{name:20s} GFLOP/s matmul {g['matmul']:6.1f}  forward {g['forward']:6.1f}  "
                  f"fwd+bwd {g['grad']:6.1f}  max diff "
                  f"{max(res['max_diff_vs_default'].values()):.1e}  load {res['load']}",
                  flush=True)
    rows = []
    for name, xla_flags in XLA_FLAG_SETS.items():
        ok = [r for r in runs[name] if "error" not in r]
        best = {k: max(r["gflops"][k] for r in ok) for k in ("matmul", "forward", "grad")} \
            if ok else None
        rows.append({"name": name, "flags": xla_flags, "best_gflops": best, "runs": runs[name]})
    print("best of the passes (GFLOP/s): " + "; ".join(
        f"{r['name']} {r['best_gflops']['grad']:.1f}" for r in rows if r["best_gflops"]))
    return rows


def main(argv):
    del argv
    if FLAGS.child == "lstm_step":
        print("RESULT " + json.dumps(lstm_step_worker(FLAGS.seconds)), flush=True)
        return
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    if FLAGS.bench == "unroll":
        rows = bench_unroll(ints(FLAGS.hidden), ints(FLAGS.batch), FLAGS.time, FLAGS.seconds)
    elif FLAGS.bench == "memory":
        rows = bench_memory(ints(FLAGS.seqs))
    elif FLAGS.bench == "matmul":
        rows = bench_matmul(MATMULS, FLAGS.seconds)
    else:
        rows = bench_xla_flags(FLAGS.seconds, FLAGS.passes)
    report = {"bench": FLAGS.bench, "cpus": os.cpu_count(), "rows": rows}
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    app.run(main)
