"""Run records: `<workdir>/metrics.jsonl`, TensorBoard events, `config.json`, a progress line.

    writer = MetricsWriter(workdir, resume_step=None)
    writer.write({"step": 100, "split": "train", "loss": 0.1, ...})
    line = progress_line(record, total_steps=1000)     # the caller decides where to print it

metrics.jsonl holds one JSON object per logged step and split: at least `step`, `split`
("train" or "eval"), `loss` and the task metric; train records also carry `grad_norm`,
`grad_norm_clipped`, `param_norm`, `update_norm`, `clipped`, `learning_rate`, `steps_per_sec`.
TensorBoard scalars go to `<workdir>/tensorboard` as `<split>/<key>`. On resume, records past
the restored step (written after the checkpoint by the interrupted run) are dropped, so the file
reads as one uninterrupted run. The workdir may be a `gs://` path (files go through
`etils.epath`; TensorBoard's writer handles gs:// itself).
"""

from __future__ import annotations

import json
import math

import numpy as np
from etils import epath


def write_config(workdir: str, config) -> None:
    (epath.Path(workdir) / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    """All records of metrics.jsonl (for tests, comparisons). A last line cut short (the
    process was killed while writing it) is left out."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(line) for line in lines[-1:]]
    except ValueError:
        pass
    return records


def _plain(v):
    if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "dtype"):
        v = np.asarray(v).item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the line parseable
    return v


class MetricsWriter:
    def __init__(self, workdir: str, resume_step: int | None = None):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
            tmp = self.path.parent / (self.path.name + ".tmp")  # a kill here loses no record
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run on this workdir
        self._file = self.path.open("a")
        from tensorboardX import SummaryWriter  # imported lazily: slow to import
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
        self._Summary, self._scalar = Summary, scalar

    def write(self, record: dict) -> dict:
        record = {k: _plain(v) for k, v in record.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        values = [value for k, v in record.items()
                  if k not in ("step", "split") and isinstance(v, (int, float))
                  for value in self._scalar(f"{record['split']}/{k}", v).value]
        if values:  # one event per record (add_scalar per key costs ~0.15 ms each)
            self._tb._get_file_writer().add_summary(self._Summary(value=values),
                                                    record["step"])
        return record

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def progress_line(record: dict, total_steps: int, metric: str | None = None) -> str:
    """'step 100/1000  train loss 0.1234  mse 0.1234  52.1 steps/s  ETA 0:17' (eval: no speed)."""
    parts = [f"step {record['step']}/{total_steps}",
             f"{record['split']:5s} loss {_fmt(record['loss'])}"]
    if metric and metric != "loss" and metric in record:
        parts.append(f"{metric} {_fmt(record[metric])}")
    if "steps_per_sec" in record:
        sps = record["steps_per_sec"]
        parts.append(f"{sps:.1f} steps/s")
        eta = (total_steps - record["step"]) / sps if sps > 0 else float("inf")
        parts.append(f"ETA {_duration(eta)}")
    return "  ".join(parts)
