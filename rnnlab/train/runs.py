"""Run directories read back: records, configs, completion, and grouping of seeds.

    dirs = expand_sources(["runs/sweep/*", "gs://bucket/sweeps/adding/*"])
    run = load_run(dirs[0])        # {"name", "dir", "config", "metrics", "study", "status", ...}
    keys = varying_keys([r["config"] for r in runs])            # ["model.cell", "seed"]
    groups = group_runs(runs)      # runs that differ only in `seed` share a group

Every path goes through `etils.epath`, so a local directory and a gs:// one (what TPU sweeps
write) read the same way; a glob pattern (`*`) is expanded by the same layer, so no shell glob
is needed for bucket paths. A run's status compares the last logged training step with
`train.steps` of its config.json: "complete", or "incomplete" (still running, preempted, or
stopped by an error); statistics are computed over complete runs only.
"""

from __future__ import annotations

import json
import math

from etils import epath

SEED_KEY = "seed"


def expand_sources(sources: list[str]) -> list[str]:
    """Paths as given, with glob patterns (`*`, `?`, `[`) expanded through epath (sorted)."""
    out = []
    for src in sources:
        if any(ch in src for ch in "*?["):
            parts = src.rstrip("/").split("/")
            i = next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))
            base = "/".join(parts[:i]) or ("/" if src.startswith("/") else ".")
            found = sorted(str(p) for p in epath.Path(base).glob("/".join(parts[i:]))
                           if p.is_dir())
            if not found:
                raise ValueError(f"{src!r} matches no directory; pass run directories or a "
                                 "pattern such as ROOT/*")
            out += found
        else:
            out.append(src)
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"cell": "lstm"}} -> {"model.cell": "lstm"}; lists become tuples."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return flat


def _number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else (
        float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else None)


def _read_text(path: epath.Path, name: str) -> str:
    try:
        return path.read_text()
    except Exception as e:  # noqa: BLE001 (any filesystem: the message names the file)
        raise ValueError(f"cannot read {str(path)!r} ({type(e).__name__}: {e}); check the "
                         f"path and permissions of the run's {name}") from None


def load_run(workdir: str) -> dict:
    """One run directory: {"name", "dir", "config" (flat dict or None), "metrics" (records),
    "study" (gradient_flow.json or None), "last_step", "total_steps", "status"}.

    ValueError naming the directory if it holds neither metrics.jsonl nor gradient_flow.json.
    """
    d = epath.Path(workdir)
    metrics_path, study_path = d / "metrics.jsonl", d / "gradient_flow.json"
    config_path = d / "config.json"
    has_metrics, has_study = metrics_path.exists(), study_path.exists()
    if not has_metrics and not has_study:
        raise ValueError(f"{workdir!r} holds neither metrics.jsonl nor gradient_flow.json; "
                         "pass the workdir of a training run or gradient-flow study")
    metrics = []
    if has_metrics:
        for i, line in enumerate(_read_text(metrics_path, "metrics.jsonl").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{str(metrics_path)!r} line {i} is not JSON; a run's "
                                 "metrics.jsonl holds one JSON object per line") from None
            metrics.append({k: (v if k in ("step", "split") or _number(v) is None else
                                _number(v)) for k, v in rec.items()})
    study = json.loads(_read_text(study_path, "gradient_flow.json")) if has_study else None
    config = None
    if config_path.exists():
        config = flatten(json.loads(_read_text(config_path, "config.json")))
    train_steps = [r["step"] for r in metrics if r.get("split") == "train"]
    last = max(train_steps) if train_steps else (0 if has_metrics else None)
    total = config.get("train.steps") if config else None
    if total is None or last is None:
        status = "unknown"
    else:
        status = "complete" if last >= total else "incomplete"
    name = d.name or str(workdir)
    return {"name": name, "dir": str(workdir), "config": config, "metrics": metrics,
            "study": study, "last_step": last, "total_steps": total, "status": status}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def varying_keys(configs: list[dict], ignore=()) -> list[str]:
    """The flat keys whose value differs between configs (a key missing from some counts as
    differing), in first-seen order; `ignore` is left out."""
    keys = []
    for c in configs:
        keys += [k for k in c if k not in keys and k not in ignore]
    missing = object()
    return [k for k in keys
            if any(not _same(c.get(k, missing), configs[0].get(k, missing)) for c in configs)]


def group_runs(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """Groups runs (each with a flat "config") that differ only in `seed`.

    Returns (keys, groups): keys = the varying keys other than seed (the table's columns);
    each group is {"values": {key: value}, "label", "runs": [runs sorted by seed]} in the order
    groups are first seen.
    """
    configs = [r["config"] for r in runs]
    keys = varying_keys(configs, ignore=(SEED_KEY,))
    groups = {}
    for run in runs:
        values = tuple(run["config"].get(k) for k in keys)
        g = groups.setdefault(values, {"values": dict(zip(keys, values)), "runs": []})
        g["runs"].append(run)
    short = short_names(keys)
    out = []
    for g in groups.values():
        g["runs"].sort(key=lambda r: (str(type(r["config"].get(SEED_KEY))),
                                      r["config"].get(SEED_KEY)))
        g["label"] = ", ".join(f"{short[k]}={format_value(v)}" for k, v in g["values"].items()
                               ) or "all runs"
        out.append(g)
    return keys, out


def short_names(keys: list[str]) -> dict:
    """Each dotted key by its last component, or the full key where that is ambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(v) -> str:
    if isinstance(v, tuple):
        return "(" + ",".join(format_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return "''" if v == "" else str(v)


def matches(value, text: str) -> bool:
    """Does a config value equal its command-line spelling (`1e-4` matches 0.0001)?"""
    if format_value(value) == text or str(value) == text:
        return True
    try:
        return isinstance(value, (int, float)) and float(text) == float(value)
    except ValueError:
        return False
