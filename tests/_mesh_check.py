"""Run by tests/test_mesh.py in a subprocess that sees 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts):

    python tests/_mesh_check.py OUT_DIR parity|resume    # writes OUT_DIR/report.json

Trains tiny configs on a 1-device and an 8-device mesh of the same process, resumes checkpoints
across mesh sizes (and FSDP), and reports the largest differences; the test asserts on them.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _config_helpers import smoke_config  # noqa: E402

from rnnlab.train import ConfigError, train_and_evaluate  # noqa: E402
from rnnlab.train.checkpoint import Checkpointer  # noqa: E402
from rnnlab.train.mesh import Layout, make_mesh  # noqa: E402
from rnnlab.train.metrics import read_metrics  # noqa: E402
from rnnlab.train.state import state_shardings  # noqa: E402

# 8 rows: one per device; a constant learning rate, so a 3-step run is the start of a 6-step one
LM = {"task.batch_size": 8, "task.eval_batch_size": 8, "optim.schedule": "constant",
      "model.num_layers": 1}


def run(name, workdir, data, steps=6, fsdp=False, **overrides):
    config = smoke_config(name, **{"mesh.data": data, "mesh.fsdp": fsdp,
                                   "mesh.fsdp_min_size": 0, "train.steps": steps, **overrides})
    lines = []
    result = train_and_evaluate(config, workdir, progress=lines.append)
    return config, result, lines


def records(workdir):
    """{(split, step, key): value} for every numeric metric except speed."""
    return {(r["split"], r["step"], k): v for r in read_metrics(workdir) for k, v in r.items()
            if k not in ("split", "step", "steps_per_sec") and isinstance(v, (int, float))}


def compare_records(a, b):
    """Largest relative difference over the records both runs wrote (a run resumed after a
    3-step run also holds that run's step-3 train and test records)."""
    common = a.keys() & b.keys()
    rel = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in common]
    return {"n": len(common), "n_ref": len(b), "max_rel": max(rel)}


def compare_trees(a, b, rtol=1e-5):
    """max |a - b| and max(|a - b| - rtol |b|) (the atol that np.allclose would need)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    la, lb = ([np.asarray(x, np.float64) for x in t] for t in (la, lb))
    diffs = [np.abs(x - y) for x, y in zip(la, lb)]
    return {"n": len(la), "max_abs": float(max(d.max() for d in diffs)),
            "atol_needed": float(max((d - rtol * np.abs(y)).max() for d, y in zip(diffs, lb)))}


def bitwise(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def sharded_leaves(tree):
    """How many leaves are split over more than one device."""
    return sum(any(s is not None for s in x.sharding.spec)
               for x in jax.tree_util.tree_leaves(tree))


def restore_on(workdir, config, result, layout):
    """The checkpoint at the run's last step restored onto `layout`."""
    abstract = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        result.state, state_shardings(result.state, layout))
    ckpt = Checkpointer(workdir, config.checkpoint, "loss", "min")
    try:
        return ckpt.restore(int(result.state.step), abstract)
    finally:
        ckpt.close()


def compare_runs(report, key, a_dir, a, b_dir, b):
    report[f"{key}_records"] = compare_records(records(a_dir), records(b_dir))
    report[f"{key}_params"] = compare_trees(a.state.params, b.state.params)
    report[f"{key}_opt_state"] = compare_trees(a.state.opt_state, b.state.opt_state)


def check_parity(out, report):
    """8 devices (LM: data parallel; adding: FSDP) vs 1 device; checkpoints restored across."""
    c1, lm1, _ = run("char_shakespeare", f"{out}/lm1", 1, **LM)
    c8, lm8, _ = run("char_shakespeare", f"{out}/lm8", 8, **LM)
    compare_runs(report, "lm", f"{out}/lm8", lm8, f"{out}/lm1", lm1)
    report["lm_carry"] = compare_trees(lm8.state.carry, lm1.state.carry)
    report["lm8_carry_devices"] = len(jax.tree_util.tree_leaves(lm8.state.carry)[0].devices())
    report["lm_has_test"] = any(k[0] == "test" for k in records(f"{out}/lm8"))

    # checkpoints: 8 devices -> 1 device, 1 device -> 8 devices with FSDP (bitwise)
    r81 = restore_on(f"{out}/lm8", c8, lm8, Layout(make_mesh(1)))
    report["restore_8_to_1_bitwise"] = bitwise(r81, lm8.state)
    report["restore_8_to_1_devices"] = len(jax.tree_util.tree_leaves(r81.params)[0].devices())
    r18 = restore_on(f"{out}/lm1", c1, lm1, Layout(make_mesh(8), fsdp=True))
    report["restore_1_to_8fsdp_bitwise"] = bitwise(r18, lm1.state)
    report["restore_1_to_8fsdp_sharded_leaves"] = sharded_leaves(r18.params)

    # a long-range task (adding, LSTM) with FSDP on 8 devices
    _, add1, _ = run("adding", f"{out}/add1", 1)
    _, add8, _ = run("adding", f"{out}/add8", 8, fsdp=True)
    compare_runs(report, "adding", f"{out}/add8", add8, f"{out}/add1", add1)
    report["adding_fsdp_sharded_leaves"] = sharded_leaves(add8.state.params)
    report["adding_fsdp_opt_sharded_leaves"] = sharded_leaves(add8.state.opt_state)

    # a batch the mesh cannot split: a clear error before any work
    try:
        run("adding", f"{out}/bad", 8, **{"task.batch_size": 6})
        report["bad_batch_error"] = ""
    except ConfigError as e:
        report["bad_batch_error"] = str(e)
    report["bad_batch_workdir_created"] = os.path.exists(f"{out}/bad")


def check_resume(out, report):
    """Through the training loop: 3 steps on one mesh, resumed on another up to step 6."""
    for key, name, first, then, over in (("lm_8fsdp_to_1", "char_shakespeare", (8, True),
                                          (1, False), LM),
                                         ("adding_1_to_8", "adding", (1, False), (8, False), {})):
        _, ref, _ = run(name, f"{out}/{key}_ref", 1, **over)
        run(name, f"{out}/{key}", first[0], steps=3, fsdp=first[1], **over)
        _, resumed, lines = run(name, f"{out}/{key}", then[0], fsdp=then[1], **over)
        report[f"{key}_resumed"] = any("resumed from checkpoint at step 3" in x for x in lines)
        compare_runs(report, key, f"{out}/{key}", resumed, f"{out}/{key}_ref", ref)


def main(out, which):
    assert jax.device_count() == 8, jax.devices()
    report = {}
    {"parity": check_parity, "resume": check_resume}[which](out, report)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
