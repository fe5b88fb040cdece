"""The fused CPU kernel (`rnnlab/fused/cpu_kernel.cc`) against another git revision's, call by call.

    python -m experiments.benchmarks.kernel_ab --base=HEAD --cell=lstm
    python -m experiments.benchmarks.kernel_ab --base=HEAD~3 --cell=gru --workloads=L --seconds=5

Builds the kernel of git revision `--base` and the working tree's (each into the kernel cache,
`rnnlab.fused.cpu`), loads both into this one process under different FFI target names and
times their forward and backward calls round-robin on the recurrent layer shapes of speed.py's
workloads (time x batch x hidden: A 35 x 20 x 650, B 128 x 32 x 512, L 1024 x 16 x 256), from
the same inputs. Separate runs on the shared development machines drift by 10-20% from one
minute to the next, which hides a change of a few percent; interleaving in one process does
not. Prints ms per call (min / median over the calls), the speedup of the working tree's
median over the base's, and whether the two kernels' outputs are bitwise equal (a change that
only moves work around must keep them equal; one that changes the arithmetic, such as another
tanh, will not).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

from absl import app, flags

from experiments.benchmarks.timing import load_avg, time_round_robin

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (importing this module never collides with another
    entry point's flags)."""
    flags.DEFINE_string("base", "HEAD", "the git revision whose cpu_kernel.cc is the baseline")
    flags.DEFINE_enum("cell", "lstm", ["lstm", "gru"], "which layer's calls")
    flags.DEFINE_string("workloads", "A,B,L", "comma list of speed.py workloads")
    flags.DEFINE_float("seconds", 3.0, "timing budget per call variant")
    flags.DEFINE_string("json", "", "write the results here as JSON ('' = print only)")


def call_layouts(source: str) -> list[str]:
    """The FFI bindings of a kernel source (its `XLA_FFI_DEFINE_HANDLER_SYMBOL` blocks, blanks
    and `.Ctx<...>()` context bindings removed, which XLA supplies and the caller never sees):
    two builds can be called through the same Python layouts only if these agree."""
    blocks = re.findall(r"XLA_FFI_DEFINE_HANDLER_SYMBOL\((.*?)\);", source, flags=re.DOTALL)
    return [re.sub(r"\.Ctx<[^()]*>\(\)", "", "".join(b.split())) for b in blocks]


def bench_kernel(base, cell, workloads: dict, seconds):
    """The CPU kernel at git revision `base` against the working tree's, interleaved in one
    process: per layer shape ({name: speed.py workload}), ms per forward and backward call and
    bitwise equality."""
    import ctypes
    import tempfile

    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.cli import keep_freed_memory
    from rnnlab.fused import cpu

    keep_freed_memory()  # as the training entry points: no page faults on fresh outputs
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rel = os.path.relpath(cpu.SOURCE, root)
    shown = subprocess.run(["git", "show", f"{base}:{rel}"], cwd=root, capture_output=True,
                           text=True, check=False)
    if shown.returncode != 0:
        why = (shown.stderr.strip().splitlines() or ["git failed"])[-1]
        sys.exit(f"kernel_ab: cannot read {rel} at git revision {base!r} ({why}); pass --base=REV "
                 "with a commit that has it")
    with open(cpu.SOURCE) as f:
        tree_layouts = call_layouts(f.read())
    if call_layouts(shown.stdout) != tree_layouts:
        sys.exit(f"kernel_ab: the kernel's FFI call layouts at {base!r} differ from the working "
                 "tree's (an interface change), so one set of calls cannot drive both; pass "
                 "--base=REV with a commit that has the working tree's layouts")
    with tempfile.NamedTemporaryFile("w", suffix=".cc", delete=False) as f:
        f.write(shown.stdout)
    try:
        for tag, path in (("base", f.name), ("tree", cpu.SOURCE)):
            handle = ctypes.CDLL(cpu._build(path))
            for target, symbol in cpu.TARGETS.items():
                jax.ffi.register_ffi_target(f"{tag}_{target}",
                                            jax.ffi.pycapsule(getattr(handle, symbol)),
                                            platform="cpu")
    except cpu.KernelUnavailable as e:
        sys.exit(f"kernel_ab: {e}")
    finally:
        os.unlink(f.name)

    f32 = jnp.float32
    rows = []
    for name, w in workloads.items():
        t, n, h = w["seq"], w["batch"], w["hidden"]
        gates = 4 if cell == "lstm" else 3
        g = gates * h
        rng = np.random.default_rng(0)
        xp = jnp.asarray(rng.normal(size=(t, n, g)).astype(np.float32))
        wh = jnp.asarray((rng.normal(size=(h, g)) / np.sqrt(h)).astype(np.float32))
        xs = jnp.asarray(rng.normal(size=(t, n, h)).astype(np.float32))  # the LSTM's x (xht)
        b, h0, mask = jnp.zeros((g,), f32), jnp.zeros((n, h), f32), jnp.zeros((0,), f32)
        calls, outs = {}, {}
        for tag in ("base", "tree"):
            pre = f"{tag}_"  # the same call layouts as the package's own, on this build
            if cell == "lstm":
                fwd = functools.partial(jax.jit(lambda xp, wh, xs, pre=pre: cpu._lstm_forward(
                    xp, wh, b, h0, h0, mask, xs, save=True, prefix=pre)), xs=xs)
                bwd = jax.jit(lambda acts, cs, hs, dhs, wh, pre=pre: cpu._lstm_backward(
                    acts, cs, hs, dhs, wh, h0, h0, h0, h0, mask, prefix=pre))
                hs, cs, acts = fwd(xp, wh)[:3]
                args = (acts, cs, hs, 0.01 * hs, wh)
            else:
                fwd = jax.jit(lambda xp, wh, pre=pre: cpu._gru_forward(
                    xp, wh, b, h0, mask, save=True, prefix=pre))
                bwd = jax.jit(lambda acts, hs, dhs, wh, pre=pre: cpu._gru_backward(
                    acts, hs, dhs, wh, h0, h0, mask, prefix=pre))
                hs, acts = fwd(xp, wh)[:2]
                args = (acts, hs, 0.01 * hs, wh)
            outs[tag] = jax.block_until_ready((fwd(xp, wh), bwd(*args)))
            calls[f"{tag} forward"] = lambda fwd=fwd: jax.block_until_ready(fwd(xp, wh))
            calls[f"{tag} backward"] = lambda bwd=bwd, args=args: jax.block_until_ready(
                bwd(*args))
        same = all(bool(jnp.array_equal(a, c)) for a, c in zip(
            jax.tree_util.tree_leaves(outs["base"]), jax.tree_util.tree_leaves(outs["tree"])))
        load0 = load_avg()
        times = time_round_robin(calls, seconds)
        ms = {k: {"min": min(v) * 1e3, "median": float(np.median(v)) * 1e3, "calls": len(v)}
              for k, v in times.items()}
        row = {"workload": name, "cell": cell, "shape": {"time": t, "batch": n, "hidden": h},
               "base": base, "ms": ms, "bitwise_equal": same, "load": [load0, load_avg()]}
        for part in ("forward", "backward"):
            row[f"speedup_{part}"] = ms[f"base {part}"]["median"] / ms[f"tree {part}"]["median"]
            print(f"{cell} {name} {part:8s}: {base} {ms[f'base {part}']['min']:7.2f} / "
                  f"{ms[f'base {part}']['median']:7.2f} ms, working tree "
                  f"{ms[f'tree {part}']['min']:7.2f} / {ms[f'tree {part}']['median']:7.2f} ms "
                  f"(min / median), speedup {row[f'speedup_{part}']:.3f}x", flush=True)
        print(f"{cell} {name}: outputs bitwise equal: {same}; load {row['load']}", flush=True)
        rows.append(row)
    return rows


def main(argv):
    del argv
    from experiments.benchmarks.speed import WORKLOADS

    names = [w for w in FLAGS.workloads.split(",") if w]
    if unknown := [w for w in names if w not in WORKLOADS]:
        sys.exit(f"kernel_ab: unknown workload {unknown[0]!r}; valid: {sorted(WORKLOADS)}")
    rows = bench_kernel(FLAGS.base, FLAGS.cell, {w: WORKLOADS[w] for w in names}, FLAGS.seconds)
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump({"cpus": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
