"""The speed of what users run: tokens/s of `experiments.train`'s own jitted train step on an LM
config, next to PyTorch training the same model the way pytorch/examples' word_language_model
does (nn.Embedding -> dropout -> nn.LSTM(num_layers, dropout) -> dropout -> nn.Linear,
cross-entropy, loss.backward(), clip_grad_norm_, SGD), on the same batches.

    python -m experiments.benchmarks.train_step --config=experiments/configs/ptb_zaremba.py:small \
        --config.task.download_dir=DIR --config.task.download=False --out=runs/bench/small.json
    python -m experiments.benchmarks.train_step \
        --config=experiments/configs/ptb_zaremba.py:medium ...
    python -m experiments.benchmarks.train_step --config=experiments/configs/ptb_zaremba.py:smoke \
        --steps=3 --warmup=1                                          # seconds, toy corpus

rnnlab's step is the engine's (`rnnlab.train.steps.make_step_fns`: LanguageModel, optax chain
with clipping and the schedule, dropout RNG, carried state, non-finite guard), built from the
config exactly as `experiments.train` builds it; only the step is timed, on batches fetched
beforehand (the loop's data fetch is not in it). PyTorch's model has the config's sizes, init
(U(±init_scale)), dropout and clipping; its loss is summed over time and averaged over rows when
the config says `loss_reduction=sum_time` (Zaremba's scale), as rnnlab's. Each implementation
runs in its own subprocess; the table's first loss is the mean NLL per token of the first step
for both (the weights are drawn independently, so they agree to the ~1% a fresh model's loss
varies, not bitwise).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags



def define_flags() -> None:
    """Defined only when run as a program (importing this module never collides with another
    entry point's flags)."""
    config_flags.DEFINE_config_file("config", None, "an LM config file (with :variant)")
    flags.DEFINE_integer("steps", 30, "timed steps")
    flags.DEFINE_integer("warmup", 3, "untimed steps after the compile")
    flags.DEFINE_list("impls", ["rnnlab", "torch"], "rnnlab, torch")
    flags.DEFINE_string("out", "", "write the results as JSON here")
    flags.DEFINE_string("worker", "", "internal: run one implementation and print it")


def _batches(task, n):
    return [task.train_batch(i) for i in range(n)]


def worker_rnnlab(config, steps, warmup):
    import jax

    from experiments.cli import keep_freed_memory

    from rnnlab import tasks as tasks_lib
    from rnnlab.train import mesh as mesh_lib
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.state import create_sharded_state
    from rnnlab.train.steps import make_step_fns

    malloc = keep_freed_memory()  # as experiments.train does
    task = tasks_lib.make_task(config)
    layout = mesh_lib.Layout.from_config(config.mesh)
    optimizer = make_optimizer(config.optim, task.steps_per_epoch, config.train.steps)
    state, shardings = create_sharded_state(task, optimizer, config.seed, layout)
    train_fn, _ = make_step_fns(task, optimizer, layout, shardings)
    batches = _batches(task, min(steps + warmup + 1, 64))
    t0 = time.perf_counter()
    state, m = train_fn(state, batches[0])
    first = float(jax.device_get(m["loss"]))
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, m = train_fn(state, batches[(i + 1) % len(batches)])
        jax.block_until_ready(m)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"first_loss": first, "compile_s": compile_s, "times": times,
            "device": jax.devices()[0].platform, "malloc": malloc}


def worker_torch(config, steps, warmup):
    import numpy as np
    import torch

    from experiments.benchmarks.lm_workers import torch_lm
    from rnnlab import tasks as tasks_lib
    from rnnlab.config import parse_cell_kwargs

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(config.seed)
    task = tasks_lib.make_task(config)
    m, t, o = config.model, config.task, config.optim
    if m.cell != "lstm" or m.tie_weights or m.last_hidden:
        raise ValueError("the PyTorch peer is word_language_model's untied nn.LSTM model; "
                         f"this config has cell={m.cell!r}, tie_weights={m.tie_weights}")
    vocab, p = len(task.vocab), float(m.dropout)
    cell_kwargs = parse_cell_kwargs(m.cell_kwargs)  # the config's own parser, parsed once
    init = float(cell_kwargs.get("init_scale", m.embed_init_scale))
    fb = float(cell_kwargs.get("forget_bias", 1.0))

    model = torch_lm("lstm", vocab, m.embed_dim, m.hidden, m.num_layers, dropout=p)
    with torch.no_grad():
        for w in model.parameters():
            w.uniform_(-init, init)
        for l in range(m.num_layers):  # forget-gate bias as the config's cell (0 for Zaremba)
            for name in (f"bias_ih_l{l}", f"bias_hh_l{l}"):
                b = getattr(model.rnn, name)
                b[m.hidden:2 * m.hidden] += fb / 2
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=float(o.lr))
    zeros = torch.zeros(m.num_layers, t.batch_size, m.hidden)
    hidden = [(zeros, zeros.clone())]
    loss_f = torch.nn.CrossEntropyLoss()
    batches = [(torch.from_numpy(np.asarray(b["inputs"])).long(),
                torch.from_numpy(np.asarray(b["targets"])).long())
               for b in _batches(task, min(steps + warmup + 1, 64))]
    scale = t.bptt if t.loss_reduction == "sum_time" else 1.0

    def step(i):
        x, y = batches[i % len(batches)]
        hidden[0] = tuple(h.detach() for h in hidden[0])
        opt.zero_grad(set_to_none=True)
        logits, hidden[0] = model(x, hidden[0])
        loss = loss_f(logits.reshape(-1, vocab), y.reshape(-1)) * scale
        loss.backward()
        if o.clip == "global_norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(o.clip_value))
        opt.step()
        return float(loss) / scale  # mean NLL per token, as rnnlab's `loss` metric

    t0 = time.perf_counter()
    first = step(0)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step(i + 1)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"first_loss": first, "compile_s": compile_s, "times": times, "device": "cpu"}


def _summary(impl, res, config):
    tokens = config.task.batch_size * config.task.bptt
    med = statistics.median(res["times"])
    return {"impl": impl, "device": res["device"], "first_loss": res["first_loss"],
            "compile_s": res["compile_s"], "steps": len(res["times"]), "step_median_s": med,
            "step_min_s": min(res["times"]), "tokens_per_s": tokens / med,
            **({"malloc": res["malloc"]} if "malloc" in res else {})}


def main(argv):
    f = flags.FLAGS
    config = f.config
    if config is None:
        raise app.UsageError("--config is required")
    if f.worker:
        fn = {"rnnlab": worker_rnnlab, "torch": worker_torch}[f.worker]
        print("RESULT " + json.dumps(_summary(f.worker, fn(config, f.steps, f.warmup), config)))
        return
    rows = []
    for impl in f.impls:
        if impl not in ("rnnlab", "torch"):
            raise app.UsageError(f"--impls: unknown {impl!r}; valid: rnnlab, torch")
        cmd = [sys.executable, "-m", "experiments.benchmarks.train_step", f"--worker={impl}",
               *[a for a in sys.argv[1:] if a.startswith("--")
                 and not a.startswith(("--worker", "--out"))]]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            err = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            rows.append({"impl": impl, "error": err[0]})
            continue
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    ok = {r["impl"]: r for r in rows if "error" not in r}
    print(f"{'impl':8} {'tok/s':>10} {'step ms':>9} {'compile s':>9} {'first loss':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:8} error: {r['error']}")
            continue
        print(f"{r['impl']:8} {r['tokens_per_s']:10.0f} {1e3 * r['step_median_s']:9.1f} "
              f"{r['compile_s']:9.2f} {r['first_loss']:10.3f}")
    if "rnnlab" in ok and "torch" in ok:
        print(f"rnnlab / PyTorch tokens/s: "
              f"{ok['rnnlab']['tokens_per_s'] / ok['torch']['tokens_per_s']:.2f}x")
    if f.out:
        os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
        with open(f.out, "w") as fh:
            json.dump({"rows": rows, "argv": sys.argv[1:]}, fh, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
