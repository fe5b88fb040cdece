"""Timing helpers shared by the benchmarks (no flags: any entry point may import this)."""

from __future__ import annotations

import os
import time


def load_avg() -> float:
    """The 1-minute load average, printed beside timings taken on a shared machine."""
    return round(os.getloadavg()[0], 2)


def time_round_robin(fns: dict, seconds: float, min_reps: int = 5) -> dict:
    """{name: [seconds per call]}: calls each fn in turn until every one has `min_reps`
    timings and `seconds` per fn have passed (so a drift in the machine's speed hits all
    alike)."""
    times = {k: [] for k in fns}
    start = time.perf_counter()
    while (min(len(v) for v in times.values()) < min_reps
           or time.perf_counter() - start < seconds * len(fns)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times
