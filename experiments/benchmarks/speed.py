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

rnnlab runs with `--unroll=auto` (the engine's per-shape choice), `--fused=auto` (for the LSTM:
cuDNN on a CUDA GPU, the hand-written-backward "vjp" path on CPU) and `--dtype=float32` unless
told otherwise; the peers always in float32.

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
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

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
CELLS = ("lstm", "gru", "rnn_tanh")
LONG_ONLY_CELLS = ("mingru", "minlstm")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "mingru": 2, "minlstm": 3}
IMPLS = ("rnnlab", "torch", "flax")
LR = 0.1

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
flags.DEFINE_integer("rounds", 1, "measure every run this many times, round-robin over the "
                     "plan (so a drift in the machine's speed hits all alike), and report each "
                     "run's best round")
flags.DEFINE_integer("seq", 0, "sequence length of every chosen workload (0: its own; e.g. "
                     "--workload=L --seq=4096 for the parallel-scan cells' long-sequence check)")
flags.DEFINE_integer("timeout", 900, "seconds per worker before it is abandoned")
# worker mode (internal: the parent runs one subprocess per measurement)
flags.DEFINE_string("worker", None, "internal: JSON spec of one measurement")


def matmul_flops(cell, cfg):
    """FLOPs of one training step's matmuls: forward + backward (2x forward)."""
    g, h = GATES[cell], cfg["hidden"]
    tokens = cfg["batch"] * cfg["seq"]
    fwd = 0
    for layer in range(cfg["layers"]):
        d_in = cfg["emb"] if layer == 0 else h
        fwd += 2 * d_in * g * h
        if cell not in LONG_ONLY_CELLS:
            fwd += 2 * h * g * h
    fwd += 2 * h * cfg["vocab"]
    return 3 * fwd * tokens


def make_weights(cell, cfg, seed=0):
    """Shared initial weights, PyTorch-style U(±1/sqrt(hidden)); rnnlab layout (x @ W)."""
    rng = np.random.default_rng(seed)
    g, h = GATES[cell], cfg["hidden"]
    s = 1.0 / np.sqrt(h)
    u = lambda *shape: rng.uniform(-s, s, shape).astype(np.float32)  # noqa: E731
    w = {"emb": rng.normal(0, 0.1, (cfg["vocab"], cfg["emb"])).astype(np.float32),
         "w_out": u(h, cfg["vocab"]), "b_out": u(cfg["vocab"])}
    for layer in range(cfg["layers"]):
        d_in = cfg["emb"] if layer == 0 else h
        w[f"w_ih{layer}"], w[f"w_hh{layer}"] = u(d_in, g * h), u(h, g * h)
        w[f"b_ih{layer}"], w[f"b_hh{layer}"] = u(g * h), u(g * h)
    return w


def make_batches(cfg, n=4, seed=1):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, cfg["vocab"], (n, cfg["batch"], cfg["seq"] + 1))
    return toks[:, :, :-1].astype(np.int32), toks[:, :, 1:].astype(np.int32)


# --- workers --------------------------------------------------------------------------------


def _timed_loop(step_fn, n_batches, warmup, steps):
    losses, times = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = step_fn(i % n_batches)
        dt = time.perf_counter() - t0
        losses.append(loss)
        if i >= warmup:
            times.append(dt)
    return losses, times


def _jax_setup():
    import jax
    return jax


def jax_train_step(spec, w):
    """rnnlab or Flax: (train_step(params, carry, x, y) -> (params, carry, loss), params,
    carry0) for `spec` (impl, cell, cfg; rnnlab options remat, unroll, fused, dtype)."""
    jax = _jax_setup()
    import jax.numpy as jnp

    cell, cfg, impl = spec["cell"], spec["cfg"], spec["impl"]
    h, n_layers = cfg["hidden"], cfg["layers"]
    if impl == "rnnlab":
        import rnnlab
        from rnnlab.cells import Stack, make

        stack = Stack(tuple(make(cell, h) for _ in range(n_layers)))
        layers = []
        for l in range(n_layers):
            wi, wh, bi, bh = (jnp.asarray(w[f"{k}{l}"]) for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
            if cell == "gru":
                layers.append({"w_ih": wi, "w_hh": wh, "b_ih": bi, "b_hh": bh})
            elif cell in LONG_ONLY_CELLS:
                layers.append({"w_ih": wi, "b": bi + bh})
            else:
                layers.append({"w_ih": wi, "w_hh": wh, "b": bi + bh})
        rnn_params = tuple(layers)
        kw = {"remat": spec.get("remat", False), "fused": spec.get("fused", "auto"),
              "compute_dtype": None if spec.get("dtype", "float32") == "float32"
              else spec["dtype"]}
        if spec.get("unroll"):
            kw["unroll"] = "auto" if spec["unroll"] == "auto" else int(spec["unroll"])

        def run_rnn(p, carry, e):
            return rnnlab.unroll(stack, p, e, carry, **kw)

        carry0 = stack.initial_carry((cfg["batch"],))
    else:
        import flax.linen as nn

        flax_cell = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell,
                     "rnn_tanh": nn.SimpleCell}[cell]
        rnns = [nn.RNN(flax_cell(h), return_carry=True) for _ in range(n_layers)]
        rnn_params = []
        for l in range(n_layers):
            wi, wh, bi, bh = (w[f"{k}{l}"] for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
            sl = lambda a, k: jnp.asarray(a[..., k * h:(k + 1) * h])  # noqa: E731
            if cell == "lstm":
                p = {}
                for k, gname in enumerate("ifgo"):
                    p["i" + gname] = {"kernel": sl(wi, k)}
                    p["h" + gname] = {"kernel": sl(wh, k), "bias": sl(bi + bh, k)}
            elif cell == "gru":
                p = {"ir": {"kernel": sl(wi, 0), "bias": sl(bi + bh, 0)},
                     "iz": {"kernel": sl(wi, 1), "bias": sl(bi + bh, 1)},
                     "in": {"kernel": sl(wi, 2), "bias": sl(bi, 2)},
                     "hr": {"kernel": sl(wh, 0)}, "hz": {"kernel": sl(wh, 1)},
                     "hn": {"kernel": sl(wh, 2), "bias": sl(bh, 2)}}
            else:
                p = {"i": {"kernel": sl(wi, 0), "bias": sl(bi + bh, 0)},
                     "h": {"kernel": sl(wh, 0)}}
            rnn_params.append({"params": {"cell": p}})
        rnn_params = tuple(rnn_params)
        cell0 = flax_cell(h)
        carry0 = tuple(cell0.initialize_carry(jax.random.key(0), (cfg["batch"], cfg["emb"]))
                       for _ in range(n_layers))

        def run_rnn(p, carry, e):
            new = []
            for l in range(n_layers):
                c, e = rnns[l].apply(p[l], e, initial_carry=carry[l])
                new.append(c)
            return tuple(new), e

    params = {"emb": jnp.asarray(w["emb"]), "rnn": rnn_params,
              "w_out": jnp.asarray(w["w_out"]), "b_out": jnp.asarray(w["b_out"])}

    def loss_fn(p, carry, x, y):
        e = jnp.take(p["emb"], x, axis=0)
        carry, hs = run_rnn(p["rnn"], carry, e)
        logits = hs @ p["w_out"] + p["b_out"]
        logz = jax.nn.logsumexp(logits, axis=-1)
        gold = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        return jnp.mean(logz - gold), carry

    def train_step(p, carry, x, y):
        (loss, carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, carry, x, y)
        p = jax.tree_util.tree_map(lambda a, g: a - LR * g, p, grads)
        return p, jax.lax.stop_gradient(carry), loss

    return train_step, params, carry0


def compile_jax_step(spec, w, x, y):
    """rnnlab or Flax: (compiled step with donated params and carry, its first state
    {"p", "c"}, compile seconds, XLA temp MB); also the profiler's step."""
    jax = _jax_setup()
    import jax.numpy as jnp

    train_step, params, carry0 = jax_train_step(spec, w)
    t0 = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, carry0, x, y).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp_mb = None if mem is None else mem.temp_size_in_bytes / 2**20
    fresh = lambda tree: jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)  # noqa: E731
    state = {"p": fresh(params), "c": fresh(carry0)}  # donated buffers must be distinct
    return compiled, state, compile_s, temp_mb


def worker_jax(spec, w, xs, ys):
    """rnnlab or Flax: the compiled step, timed."""
    jax = _jax_setup()
    import jax.numpy as jnp

    xs_d, ys_d = jnp.asarray(xs), jnp.asarray(ys)
    compiled, state, compile_s, temp_mb = compile_jax_step(spec, w, xs_d[0], ys_d[0])

    def step(i):
        state["p"], state["c"], loss = compiled(state["p"], state["c"], xs_d[i], ys_d[i])
        return float(loss)  # blocks

    losses, times = _timed_loop(step, len(xs), spec["warmup"], spec["steps"])
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}  # None on CPU
    peak = stats.get("peak_bytes_in_use")
    return {"compile_s": compile_s, "losses": losses, "times": times, "xla_temp_mb": temp_mb,
            "device": "cpu" if dev.platform == "cpu" else dev.device_kind,
            "device_peak_mb": None if peak is None else peak / 2**20}


def worker_torch(spec, w, xs, ys):
    import torch

    torch.set_num_threads(os.cpu_count())
    # on a CUDA GPU nn.LSTM/GRU/RNN run through cuDNN; float(loss) below synchronises
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cell, cfg = spec["cell"], spec["cfg"]
    h, n_layers = cfg["hidden"], cfg["layers"]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[cell]

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(cfg["vocab"], cfg["emb"])
            self.rnn = cls(cfg["emb"], h, num_layers=n_layers, batch_first=True)
            self.out = torch.nn.Linear(h, cfg["vocab"])

        def forward(self, x, carry):
            hs, carry = self.rnn(self.emb(x), carry)
            return self.out(hs), carry

    model = LM()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        model.emb.weight.copy_(t(w["emb"]))
        model.out.weight.copy_(t(w["w_out"].T))
        model.out.bias.copy_(t(w["b_out"]))
        for l in range(n_layers):
            getattr(model.rnn, f"weight_ih_l{l}").copy_(t(w[f"w_ih{l}"].T))
            getattr(model.rnn, f"weight_hh_l{l}").copy_(t(w[f"w_hh{l}"].T))
            getattr(model.rnn, f"bias_ih_l{l}").copy_(t(w[f"b_ih{l}"]))
            getattr(model.rnn, f"bias_hh_l{l}").copy_(t(w[f"b_hh{l}"]))
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    zeros = torch.zeros(n_layers, cfg["batch"], h, device=dev)
    state = {"c": (zeros, zeros.clone()) if cell == "lstm" else zeros}
    xs_t, ys_t = torch.from_numpy(xs).long().to(dev), torch.from_numpy(ys).long().to(dev)
    loss_f = torch.nn.CrossEntropyLoss()

    def step(i):
        opt.zero_grad(set_to_none=True)
        logits, carry = model(xs_t[i], state["c"])
        loss = loss_f(logits.reshape(-1, cfg["vocab"]), ys_t[i].reshape(-1))
        loss.backward()
        opt.step()
        state["c"] = tuple(c.detach() for c in carry) if cell == "lstm" else carry.detach()
        return float(loss)

    t0 = time.perf_counter()
    first = step(0)
    compile_s = time.perf_counter() - t0
    losses, times = _timed_loop(step, len(xs), spec["warmup"], spec["steps"])
    # the first timed-loop step repeats batch 0 on updated weights; report the very first loss
    gpu = dev.type == "cuda"
    return {"compile_s": compile_s, "losses": [first] + losses, "times": times,
            "xla_temp_mb": None, "device": torch.cuda.get_device_name() if gpu else "cpu",
            "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None}


def run_worker(spec):
    cfg = spec["cfg"]
    w = make_weights(spec["cell"], cfg)
    xs, ys = make_batches(cfg)
    fn = worker_torch if spec["impl"] == "torch" else worker_jax
    res = fn(spec, w, xs, ys)
    times = res.pop("times")
    tokens = cfg["batch"] * cfg["seq"]
    med = statistics.median(times)
    res.update(
        init_loss=res["losses"][0], final_loss=res["losses"][-1], steps=len(times),
        step_median_s=med, step_min_s=min(times), tokens_per_s=tokens / med,
        gflops=matmul_flops(spec["cell"], cfg) / med / 1e9,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    del res["losses"]
    return res


# --- parent ---------------------------------------------------------------------------------


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
    env = dict(os.environ, PYTHONWARNINGS="ignore")
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
                    unroll=FLAGS.unroll, fused=FLAGS.fused, dtype=FLAGS.dtype)
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
        "rnnlab_options": {"unroll": FLAGS.unroll, "fused": FLAGS.fused, "dtype": FLAGS.dtype},
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
