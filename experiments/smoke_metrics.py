"""Behaviour unchanged? Runs every config's `:smoke` variant and compares the records it writes
against a snapshot taken before a change: bitwise, apart from timing keys.

    python -m experiments.smoke_metrics record --out=runs/smoke_before     # before the change
    python -m experiments.smoke_metrics record --out=runs/smoke_after      # after it
    python -m experiments.smoke_metrics compare runs/smoke_before runs/smoke_after

`record` trains each `experiments/configs/*.py:smoke` that is a training config (IMDB's on
`tfds.testing.mock_data`; configs that cannot run offline record their one-line error instead)
and runs the gradient-flow study's smoke variant; it writes `<out>/<config>.jsonl` (the run's
metrics.jsonl) and `<out>/gradient_flow.json` (the study's result without wall times).
`compare` reads two such folders and prints every record that differs (keys in `IGNORED` are
left out: they measure time, not behaviour); it exits 1 when anything differs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import tempfile

IGNORED = {"steps_per_sec", "sweep_time_s", "train_time_s", "wall_time_s", "command", "plots",
           "device", "time_s", "seconds", "elapsed_s", "workdir"}  # workdir: a temporary path
NOT_TRAINING = {"gradient_flow", "esn_mackey_glass"}  # study / experiment configs


def smoke_configs(root: str = os.path.join(os.path.dirname(__file__), "configs")) -> list:
    names = []
    for f in sorted(os.listdir(root)):
        if f.endswith(".py") and not f.startswith("_"):
            with open(os.path.join(root, f)) as fh:
                if '"smoke"' in fh.read() and f[:-3] not in NOT_TRAINING:
                    names.append(f[:-3])
    return names


@contextlib.contextmanager
def _mock_imdb():
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "plot", "film", "the", "a", "was"]

    def as_dataset(self, split, **kwargs):
        n = 60 if str(split).startswith("train") else 40
        texts = [" ".join(rng.choice(words, 12)) for _ in range(n)]
        labels = [int("good" in t or "great" in t) for t in texts]
        return tf.data.Dataset.from_tensor_slices(
            {"text": texts, "label": tf.constant(labels, tf.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield


def record(out: str) -> None:
    from rnnlab.train import train_and_evaluate
    from rnnlab.train.metrics import read_metrics

    os.makedirs(out, exist_ok=True)
    for name in smoke_configs():
        config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
        config.checkpoint.async_save = False
        with tempfile.TemporaryDirectory() as workdir:
            ctx = _mock_imdb() if name == "imdb" else contextlib.nullcontext()
            try:
                with ctx:
                    train_and_evaluate(config, workdir)
                rows = read_metrics(workdir)
            except Exception as e:  # noqa: BLE001 - the error is the recorded behaviour
                rows = [{"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}]
        with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        print(f"{name}: {len(rows)} records", flush=True)
    from experiments import gradient_flow as study
    from experiments.gradient_flow.common import json_default
    from experiments.configs import gradient_flow as study_config

    with tempfile.TemporaryDirectory() as workdir:
        result = study.run_study(study_config.get_config("smoke"), workdir)
    with open(os.path.join(out, "gradient_flow.json"), "w") as f:
        json.dump(_strip(json.loads(json.dumps(result, default=json_default))), f,
                  sort_keys=True, indent=0)
    print("gradient_flow: study result", flush=True)


def _strip(tree):
    if isinstance(tree, dict):
        return {k: _strip(v) for k, v in tree.items() if k not in IGNORED}
    if isinstance(tree, list):
        return [_strip(v) for v in tree]
    return tree


def _load(path: str):
    with open(path) as f:
        if path.endswith(".jsonl"):
            return [_strip(json.loads(line)) for line in f if line.strip()]
        return _strip(json.load(f))


def compare(before: str, after: str) -> list[str]:
    """Human-readable differences between two `record` folders (empty: identical)."""
    diffs = []
    names = sorted(set(os.listdir(before)) | set(os.listdir(after)))
    for name in names:
        a, b = os.path.join(before, name), os.path.join(after, name)
        if not (os.path.exists(a) and os.path.exists(b)):
            diffs.append(f"{name}: only in {before if os.path.exists(a) else after}")
            continue
        x, y = _load(a), _load(b)
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                diffs.append(f"{name}: {len(x)} records before, {len(y)} after")
            for i, (r, s) in enumerate(zip(x, y)):
                if r != s:
                    keys = sorted(k for k in set(r) | set(s) if r.get(k) != s.get(k))
                    diffs.append(f"{name}: record {i} ({r.get('split')} step {r.get('step')}) "
                                 f"differs in {keys[:6]}")
        else:
            diffs += [f"{name}: {path} differs" for path in _paths(x, y)]
    return diffs


def _paths(x, y, path: str = "") -> list[str]:
    """Where two JSON trees differ: 'a.b[2]' per differing leaf (or subtree of another type)."""
    if isinstance(x, dict) and isinstance(y, dict):
        return [p for k in sorted(set(x) | set(y), key=str) if x.get(k) != y.get(k)
                for p in _paths(x.get(k), y.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [p for i, (a, b) in enumerate(zip(x, y)) if a != b
                for p in _paths(a, b, f"{path}[{i}]")]
    return [path or "(the whole file)"]


def main(argv):
    if len(argv) == 3 and argv[1] == "record" and argv[2].startswith("--out="):
        record(argv[2][len("--out="):])
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        for d in argv[2:]:
            if not os.path.isdir(d):
                print(f"smoke_metrics: {d} is not a folder written by `record`", file=sys.stderr)
                return 2
        diffs = compare(argv[2], argv[3])
        print("\n".join(diffs) if diffs else "identical (timing keys ignored)")
        return 1 if diffs else 0
    print("usage: python -m experiments.smoke_metrics record --out=DIR | compare DIR_BEFORE "
          "DIR_AFTER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
