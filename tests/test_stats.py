"""rnnlab.stats: Student's t intervals (coverage on synthetic seeds with a known spread), Welch
tests against a baseline, thresholds and steps to reach them, mean curves with bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab import stats


def test_t_interval_matches_the_textbook_formula():
    x = [1.0, 2.0, 4.0]
    lo, hi = stats.t_interval(x)
    half = 4.302652729911275 * np.std(x, ddof=1) / math.sqrt(3)  # t_{2, 0.975}
    assert (lo, hi) == pytest.approx((np.mean(x) - half, np.mean(x) + half), rel=1e-9)
    assert all(math.isnan(v) for v in stats.t_interval([3.0]))
    s = stats.summary([1.0, None, float("nan"), 3.0])  # missing seeds are dropped
    assert s["n"] == 2 and s["mean"] == 2.0 and s["std"] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    """Synthetic 'final losses' of n seeds per group, drawn around a known mean with a known
    spread: the 95% interval must contain the true mean in ~95% of 2000 groups (binomial
    sd 0.5%, so [0.93, 0.97] is 4 sd wide each way) - and a normal-quantile interval, too narrow
    for n seeds, must not pass the same band (the check can fail)."""
    rng = np.random.default_rng(0)
    mu, sigma, trials = 0.3, 0.05, 2000
    draws = mu + sigma * rng.standard_normal((trials, n))
    ci = np.array([stats.t_interval(d) for d in draws])
    coverage = np.mean((ci[:, 0] <= mu) & (mu <= ci[:, 1]))
    assert 0.93 <= coverage <= 0.97, coverage
    half_z = 1.96 * draws.std(axis=1, ddof=1) / math.sqrt(n)
    mean = draws.mean(axis=1)
    z_coverage = np.mean((mean - half_z <= mu) & (mu <= mean + half_z))
    assert z_coverage < 0.93, z_coverage
    # and the interval is not trivially wide: its mean half-width is t * sigma * c4 / sqrt(n)
    expected = stats.sps.t.ppf(0.975, n - 1) * sigma / math.sqrt(n)
    width = np.mean(ci[:, 1] - ci[:, 0]) / 2 / expected
    assert 0.8 < width < 1.05, width


def test_mean_curve_band_covers_the_true_curve():
    """Curves of 5 seeds = a known decay + seed noise: the band holds the true curve at ~95% of
    (step, trial) pairs; steps only some seeds logged are dropped."""
    rng = np.random.default_rng(1)
    steps = np.arange(0, 1000, 100)
    truth = 0.2 * np.exp(-steps / 400)
    inside = []
    for _ in range(300):
        curves = [(list(steps), list(truth + 0.01 * rng.standard_normal(steps.size)))
                  for _ in range(5)]
        s, mean, lo, hi = stats.mean_curve(curves)
        assert list(s) == list(steps)
        inside.append((lo <= truth) & (truth <= hi))
    assert 0.93 <= np.mean(inside) <= 0.97
    s, mean, lo, hi = stats.mean_curve([([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 2], [3.0, 5.0])])
    assert list(s) == [0, 2] and list(mean) == [2.0, 4.0]


def test_baseline_verdicts():
    rng = np.random.default_rng(2)
    base = 1.0 + 0.01 * rng.standard_normal(3)
    far = 0.5 + 0.01 * rng.standard_normal(3)
    near = 1.0 + 0.01 * rng.standard_normal(3)
    d = stats.compare_to_baseline(far, base)
    assert d["verdict"] == "resolved" and d["p"] < 1e-3 and d["overlap"] is False
    assert d["diff"] == pytest.approx(np.mean(far) - np.mean(base))
    assert stats.compare_to_baseline(near, base)["verdict"] == "not resolved"
    assert stats.compare_to_baseline([0.5], base)["verdict"] == "too few seeds"
    assert stats.compare_to_baseline([0.2, 0.2], [0.2, 0.2])["verdict"] == "too few seeds"


def test_condition_parsing():
    assert stats.condition("eval.mse<0.01") == stats.Condition("eval", "mse", "<", 0.01)
    assert stats.condition(" eval.accuracy >= 0.9 ") == stats.Condition(
        "eval", "accuracy", ">=", 0.9)
    assert str(stats.condition("train.loss<=1e-3")) == "train.loss<=0.001"
    for bad in ("mse<0.01", "eval.mse=0.01", "eval.mse<abc", "eval.mse<"):
        with pytest.raises(ValueError, match="bad threshold"):
            stats.condition(bad)


def test_steps_to_threshold_on_hand_made_curves():
    c = stats.condition("eval.mse<0.01")
    steps = [100, 200, 300, 400]
    assert stats.steps_to_threshold(steps, [0.2, 0.009, 0.02, 0.001], c) == 200  # first hit
    assert stats.steps_to_threshold(steps, [0.2, 0.01, 0.02, 0.011], c) is None  # strict <
    assert stats.steps_to_threshold(steps, [0.2, float("nan"), 0.005, 0.1], c) == 300
    assert stats.steps_to_threshold(steps, [0.2, 0.01, 0.3, 0.4],
                                    stats.condition("eval.mse<=0.01")) == 200
    assert stats.steps_to_threshold(steps, [0.1, 0.5, 0.95, 0.2],
                                    stats.condition("eval.acc>0.9")) == 300
    assert stats.median_steps([200, 400, 300]) == (300.0, 3, 3)
    assert stats.median_steps([200, None, 400, None]) == (math.inf, 2, 4)  # half unsolved
    assert stats.median_steps([200, None, 400]) == (400.0, 2, 3)
