"""What the study's parts share: JSON-ready numbers, entry selection, the agreement criterion
and the lags and lengths every part measures at."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rnnlab.data.synthetic import COPY_RECALL

TRAIN_TASKS = ("adding", "copy")


def as_float(x):
    """A JSON-ready float (None for NaN/inf)."""
    x = float(x)
    return x if np.isfinite(x) else None


def json_default(v):
    """`json.dump(..., default=json_default)` for numpy/jax scalars and tuples."""
    if isinstance(v, (np.generic, jnp.ndarray)):
        return as_float(v) if np.asarray(v).dtype.kind == "f" else np.asarray(v).item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def where(entries, **match) -> list:
    """The entries whose fields equal every `match` value."""
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def agrees(rate, ref, findings) -> bool:
    """The study's criterion: within `findings.agree_rel` of the reference, or
    `findings.agree_abs` per step near zero."""
    return bool(np.isfinite(rate) and np.isfinite(ref)
                and abs(rate - ref) <= max(findings.agree_rel * abs(ref), findings.agree_abs))


def long_lag(length: int) -> int:
    """The lag that stands for "long range": the end of the default fit window, T − T//10
    (the last lags reach back to the first steps, where the trajectory leaves the zero carry)."""
    return length - length // 10


def sequence_length(task: str, length: int) -> int:
    """Steps of a training run's sequences: T for adding, T + 20 for copy (10 symbols, the
    delimiter's wait and 10 recalls)."""
    return length + (2 * COPY_RECALL if task == "copy" else 0)


def fmt_rate(v, fmt="{:+.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def fmt_norm(v) -> str:
    """A gradient norm for the report ("<1e-37": underflowed float32)."""
    if v is None:
        return "—"
    return "<1e-37" if v <= 1.01e-37 else f"{v:.3g}"
