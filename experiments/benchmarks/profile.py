"""Where a JAX training step of the speed benchmark spends its time, op by op.

    python -m experiments.benchmarks.profile --workload=B --cell=lstm
    python -m experiments.benchmarks.profile --workload=B --cell=gru --fused=scan --top=40

Builds the same jitted step as `speed.py` (rnnlab or Flax, same weights and batches), runs
`--warmup` steps, records `--steps` steps with `jax.profiler`, and prints the compiled
program's operations (XLA thunks: `ynn_fusion` / `dot` are matmuls, the rest fusions and copies)
ranked by wall time per step, with their output shapes and the JAX operation they came from.
The trace stays in `--trace_dir` for TensorBoard / Perfetto. When several threads run the same
operation at once its time is counted once (the union of its intervals), and operations that
run concurrently each count in full, so the column can sum to more than the step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from absl import app, flags

from experiments.benchmarks import lm_workers, speed

# --workload, --quick, --fused, --unroll, --dtype, --warmup and --steps are speed.py's flags (with
# defaults B, 3 and 3 here); these are this script's own
FLAGS = flags.FLAGS
flags.DEFINE_enum("cell", "lstm", sorted(lm_workers.GATES), "cell")
flags.DEFINE_enum("impl", "rnnlab", ["rnnlab", "flax"], "JAX implementation")
flags.DEFINE_integer("top", 25, "operations to print")
flags.DEFINE_string("trace_dir", "", "where the trace goes ('' = a temporary directory)")


def op_table(trace_dir: str, hlo_text: str, steps: int) -> list[tuple]:
    """[(ms per step, calls per step, name, shape, JAX op)] from a jax.profiler trace of
    `steps` steps, longest first."""
    files = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}/plugins/profile")
    with gzip.open(max(files, key=os.path.getmtime)) as f:
        events = json.load(f)["traceEvents"]
    shape = dict(re.findall(r"^\s*%?([\w.\-]+) = (\S+) ", hlo_text, re.M))
    origin = dict(re.findall(r'^\s*%?([\w.\-]+) = .*?op_name="([^"]+)"', hlo_text, re.M))
    spans = collections.defaultdict(list)
    for e in events:
        # XLA:CPU names its per-operation events after the HLO instruction
        if e.get("ph") == "X" and e.get("name") in shape:
            spans[e["name"]].append((e["ts"], e["ts"] + e["dur"]))
    rows = []
    for name, iv in spans.items():
        iv.sort()
        wall, calls, (lo, hi) = 0.0, 0, iv[0]
        for a, b in iv[1:] + [(float("inf"), float("inf"))]:
            if a <= hi:
                hi = max(hi, b)
            else:
                wall, calls, (lo, hi) = wall + hi - lo, calls + 1, (a, b)
        rows.append((wall / 1e3 / steps, calls / steps, name, shape[name],
                     origin.get(name, "").split("/", 1)[-1]))
    return sorted(rows, reverse=True)


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp

    from experiments.cli import keep_freed_memory

    print(f"malloc: {keep_freed_memory()} (speed.py's --malloc; RNNLAB_MALLOC=system: glibc's)")
    if FLAGS.workload not in speed.WORKLOADS:
        raise app.UsageError(f"--workload={FLAGS.workload!r}: profile one of "
                             f"{sorted(speed.WORKLOADS)}")
    cfg = (speed.QUICK if FLAGS.quick else speed.WORKLOADS)[FLAGS.workload]
    spec = dict(impl=FLAGS.impl, cell=FLAGS.cell, cfg=cfg, fused=FLAGS.fused,
                unroll=FLAGS.unroll, dtype=FLAGS.dtype)
    xs, ys = lm_workers.make_batches(cfg)
    x, y = jnp.asarray(xs[0]), jnp.asarray(ys[0])
    w = lm_workers.make_weights(FLAGS.cell, cfg)
    step, state, _, _ = lm_workers.compile_jax_step(spec, w, x, y)
    hlo = step.as_text()

    def run(n):
        for _ in range(n):
            state["p"], state["c"], loss = step(state["p"], state["c"], x, y)
            float(loss)  # blocks

    run(FLAGS.warmup)
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="rnnlab_profile_")
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        run(FLAGS.steps)
    per_step = (time.perf_counter() - t0) / FLAGS.steps * 1e3
    rows = op_table(trace_dir, hlo, FLAGS.steps)
    print(f"{FLAGS.impl} {FLAGS.cell} workload {FLAGS.workload}: {per_step:.0f} ms per step "
          f"while recording; operations {sum(r[0] for r in rows):.0f} ms per step in all; "
          f"trace in {trace_dir}")
    print(f"{'ms/step':>8} {'calls':>6}  {'operation':36s} {'shape':28s} from")
    for ms, calls, name, shp, src in rows[:FLAGS.top]:
        print(f"{ms:8.1f} {calls:6.0f}  {name:36s} {shp[:28]:28s} {src[:60]}")


if __name__ == "__main__":
    for name, value in (("workload", "B"), ("warmup", 3), ("steps", 3)):
        FLAGS.set_default(name, value)
    app.run(main)
