"""Statistics over seeds for ablation comparisons: intervals, Welch tests, steps to a threshold.

    lo, hi = t_interval(values)                 # 95% Student's t interval of the mean
    s = summary(values)                         # {"n", "mean", "std", "lo", "hi"}
    d = compare_to_baseline(values, baseline)   # Welch test and interval overlap, with a verdict
    step = steps_to_threshold(steps, values, condition("eval.mse<0.01"))
    steps, mean, lo, hi = mean_curve(curves)    # learning curves -> mean and band per step

Every function is pure and works on plain sequences of floats (one entry per seed). The interval
is Student's t (mean ± t_{n-1, 0.975} · s / √n): exact for normally distributed seed outcomes,
and honest about small n (with 3 seeds t is 4.30, not 1.96). NaN entries (a seed whose value
does not exist) are dropped before anything is computed.
"""

from __future__ import annotations

import math
import operator
import re
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
INTERVAL = "Student's t"
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _clean(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], float).ravel()
    return a[np.isfinite(a)]


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The Student's t interval of the mean; (nan, nan) with fewer than 2 values."""
    a = _clean(values)
    if a.size < 2:
        return math.nan, math.nan
    half = sps.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean() - half), float(a.mean() + half)


def summary(values, level: float = LEVEL) -> dict:
    """{"n", "mean", "std" (ddof 1), "lo", "hi" (the t interval)}; nan where undefined."""
    a = _clean(values)
    lo, hi = t_interval(a, level)
    return {"n": int(a.size), "mean": float(a.mean()) if a.size else math.nan,
            "std": float(a.std(ddof=1)) if a.size > 1 else math.nan, "lo": lo, "hi": hi}


def compare_to_baseline(values, baseline, alpha: float = 0.05) -> dict:
    """Is mean(values) − mean(baseline) larger than the seed-to-seed spread?

    Returns {"diff", "p" (Welch's two-sided t-test), "overlap" (do the two t intervals
    overlap), "verdict"}: "resolved" when p < alpha, "not resolved" otherwise, and "too few
    seeds" when either side has fewer than 2 values (no spread to compare against) or both
    have zero spread.
    """
    a, b = _clean(values), _clean(baseline)
    out = {"diff": float(a.mean() - b.mean()) if a.size and b.size else math.nan,
           "p": math.nan, "overlap": None, "verdict": "too few seeds"}
    if a.size < 2 or b.size < 2:
        return out
    (alo, ahi), (blo, bhi) = t_interval(a), t_interval(b)
    out["overlap"] = bool(alo <= bhi and blo <= ahi)
    if a.std() == 0 and b.std() == 0:
        return out
    out["p"] = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
    out["verdict"] = "resolved" if out["p"] < alpha else "not resolved"
    return out


class Condition(NamedTuple):
    """A threshold on one metric, e.g. `eval.mse<0.01`: split "eval", key "mse"."""
    split: str
    key: str
    op: str
    value: float

    def __str__(self):
        return f"{self.split}.{self.key}{self.op}{self.value:g}"

    def holds(self, v) -> bool:
        return v is not None and math.isfinite(v) and _OPS[self.op](v, self.value)


def condition(spec: str) -> Condition:
    """'eval.mse<0.01' -> Condition('eval', 'mse', '<', 0.01); ValueError naming the spec."""
    m = re.fullmatch(r"\s*(\w+)\.([\w/@.-]+?)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", spec)
    try:
        if m:
            return Condition(m.group(1), m.group(2), m.group(3), float(m.group(4)))
    except ValueError:
        pass
    raise ValueError(f"bad threshold {spec!r}: expected SPLIT.METRIC<VALUE (or <=, >, >=), "
                     "e.g. --solve='eval.mse<0.01'")


def steps_to_threshold(steps: Sequence[int], values: Sequence[float], cond: Condition):
    """The first logged step whose value meets `cond`, or None if none does."""
    for s, v in zip(steps, values):
        if cond.holds(v):
            return int(s)
    return None


def median_steps(per_seed: Sequence[int | None]) -> tuple[float, int, int]:
    """(median steps to solve over ALL seeds, solved, n): an unsolved seed counts as never
    (infinitely late), so the median is inf when half or more of the seeds did not solve."""
    n = len(per_seed)
    solved = sum(s is not None for s in per_seed)
    if not n:
        return math.nan, 0, 0
    med = float(np.median([math.inf if s is None else s for s in per_seed]))
    return med, solved, n


def mean_curve(curves: Sequence[tuple[Sequence[int], Sequence[float]]], level: float = LEVEL):
    """Learning curves (steps, values) of several seeds -> (steps, mean, lo, hi) on the steps
    every curve logged; lo/hi are the per-step t interval (nan with a single curve)."""
    if not curves:
        return (np.zeros(0),) * 4
    common = set(curves[0][0])
    for steps, _ in curves[1:]:
        common &= set(steps)
    steps = np.array(sorted(common), int)
    table = np.array([[dict(zip(s, v))[k] for k in steps] for s, v in curves], float)
    mean = table.mean(0) if table.size else np.zeros(0)
    bands = [t_interval(col, level) for col in table.T]
    lo = np.array([b[0] for b in bands]) if bands else np.zeros(0)
    hi = np.array([b[1] for b in bands]) if bands else np.zeros(0)
    return steps, mean, lo, hi
