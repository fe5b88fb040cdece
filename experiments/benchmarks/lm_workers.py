"""The measured steps of `speed.py` (and `micro.py`, `profile.py`): shared initial weights and
batches, the rnnlab / Flax step, the PyTorch step (pytorch/examples' word_language_model model,
weights written through `rnnlab.interop.torch`), each timed in its own worker process."""

from __future__ import annotations

import os
import resource
import statistics
import time

import numpy as np

CELLS = ("lstm", "gru", "rnn_tanh")
LONG_ONLY_CELLS = ("mingru", "minlstm")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "mingru": 2, "minlstm": 3}
LR = 0.1


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


def layer_params(cell: str, w: dict, l: int) -> dict:
    """rnnlab's parameters of layer `l` from the shared weights (numpy)."""
    wi, wh, bi, bh = (w[f"{k}{l}"] for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
    if cell == "gru":
        return {"w_ih": wi, "w_hh": wh, "b_ih": bi, "b_hh": bh}
    if cell in LONG_ONLY_CELLS:
        return {"w_ih": wi, "b": bi + bh}
    return {"w_ih": wi, "w_hh": wh, "b": bi + bh}


def jax_train_step(spec, w):
    """rnnlab or Flax: (train_step(params, carry, x, y) -> (params, carry, loss), params,
    carry0) for `spec` (impl, cell, cfg; rnnlab options remat, unroll, fused, dtype)."""
    import jax
    import jax.numpy as jnp

    cell, cfg, impl = spec["cell"], spec["cfg"], spec["impl"]
    h, n_layers = cfg["hidden"], cfg["layers"]
    if impl == "rnnlab":
        import rnnlab
        from rnnlab.cells import Stack, make

        stack = Stack(tuple(make(cell, h) for _ in range(n_layers)))
        rnn_params = tuple(jax.tree_util.tree_map(jnp.asarray, layer_params(cell, w, l))
                           for l in range(n_layers))
        kw = {"remat": spec.get("remat", False), "fused": spec.get("fused", "auto"),
              "compute_dtype": None if spec.get("dtype", "float32") == "float32"
              else spec["dtype"]}
        if spec.get("unroll"):
            kw["unroll"] = "auto" if spec["unroll"] == "auto" else int(spec["unroll"])

        def run_rnn(p, carry, e):
            return rnnlab.unroll(stack, p, e, carry, **kw)

        # the lookup as `rnnlab.Embedded`: the first LSTM layer may fold it into its projection
        embed = rnnlab.Embedded
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

        def embed(table, x):
            return jnp.take(table, x, axis=0)

        def run_rnn(p, carry, e):
            new = []
            for l in range(n_layers):
                c, e = rnns[l].apply(p[l], e, initial_carry=carry[l])
                new.append(c)
            return tuple(new), e

    params = {"emb": jnp.asarray(w["emb"]), "rnn": rnn_params,
              "w_out": jnp.asarray(w["w_out"]), "b_out": jnp.asarray(w["b_out"])}

    def loss_fn(p, carry, x, y):
        carry, hs = run_rnn(p["rnn"], carry, embed(p["emb"], x))
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
    import jax
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
    import jax
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


def torch_lm(cell: str, vocab: int, emb: int, hidden: int, layers: int, dropout: float = 0.0):
    """pytorch/examples word_language_model's RNNModel (untied): nn.Embedding -> dropout ->
    nn.LSTM/GRU/RNN(num_layers, dropout between layers) -> dropout -> nn.Linear."""
    import torch

    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[cell]

    class RNNModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(dropout)
            self.encoder = torch.nn.Embedding(vocab, emb)
            self.rnn = cls(emb, hidden, layers, dropout=dropout if layers > 1 else 0.0,
                           batch_first=True)
            self.decoder = torch.nn.Linear(hidden, vocab)

        def forward(self, x, carry):
            out, carry = self.rnn(self.drop(self.encoder(x)), carry)
            return self.decoder(self.drop(out)), carry

    return RNNModel()


def worker_torch(spec, w, xs, ys):
    """PyTorch on the shared weights (written through `rnnlab.interop.torch.to_torch`)."""
    import torch

    from rnnlab.cells import make
    from rnnlab.interop.torch import to_torch

    torch.set_num_threads(os.cpu_count())
    # on a CUDA GPU nn.LSTM/GRU/RNN run through cuDNN; float(loss) below synchronises
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cell, cfg = spec["cell"], spec["cfg"]
    h, n_layers = cfg["hidden"], cfg["layers"]
    model = torch_lm(cell, cfg["vocab"], cfg["emb"], h, n_layers)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        model.encoder.weight.copy_(t(w["emb"]))
        model.decoder.weight.copy_(t(w["w_out"].T))
        model.decoder.bias.copy_(t(w["b_out"]))
    for l in range(n_layers):
        to_torch(make(cell, h), layer_params(cell, w, l), model.rnn, layer=l)
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
    if spec["impl"].startswith("torch"):  # PyTorch with its own defaults
        res = worker_torch(spec, w, xs, ys)
    else:  # JAX as experiments' entry points run it
        from experiments.cli import keep_freed_memory

        malloc = keep_freed_memory()
        res = dict(worker_jax(spec, w, xs, ys), malloc=malloc)
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
