"""Accuracy-drop statistics on hand-made accuracy arrays with hand-computed answers."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from lib import stats


def test_drop_hand_computed():
    # baseline mean 52, var 4 (ddof 1); condition mean 49, var 2
    d = stats.drop(baseline=np.array([50.0, 52.0, 54.0]), condition=np.array([48.0, 50.0]))
    assert d.n_baseline == 3 and d.n_condition == 2
    assert d.mean_baseline == pytest.approx(52.0) and d.mean_condition == pytest.approx(49.0)
    assert d.drop == pytest.approx(3.0)
    assert d.std == pytest.approx(math.sqrt(6.0))
    assert d.se == pytest.approx(math.sqrt(4 / 3 + 2 / 2))
    # Welch-Satterthwaite: (7/3)^2 / ((4/3)^2/2 + 1^2/1) = 49/17
    assert d.df == pytest.approx(49 / 17)
    assert d.t == pytest.approx(3.0 / math.sqrt(7 / 3))
    half = sps.t.ppf(0.975, 49 / 17) * math.sqrt(7 / 3)
    assert (d.ci_low, d.ci_high) == pytest.approx((3.0 - half, 3.0 + half))
    ref = sps.ttest_ind([50.0, 52.0, 54.0], [48.0, 50.0], equal_var=False)
    assert d.p == pytest.approx(ref.pvalue) and d.t == pytest.approx(ref.statistic)
    assert 0.05 < d.p < 0.5  # t = 1.96 on 2.9 df is not significant


def test_drop_sign_and_units_pass_through():
    # condition better than baseline: a negative drop; fractions in, fractions out
    b, c = np.array([0.40, 0.42]), np.array([0.50, 0.52, 0.54])
    d = stats.drop(baseline=b, condition=c)
    # by hand: means 0.41 and 0.52; variances (ddof 1) 2e-4 and 4e-4; se^2 = 1e-4 + 4e-4 / 3 = 7 / 30000;
    # df = (7/30000)^2 / ((1e-4)^2 / 1 + (4e-4 / 3)^2 / 2) = 49 / 17, as in the percent example above
    assert d.drop == pytest.approx(-0.11) and d.std == pytest.approx(math.sqrt(6e-4))
    assert d.se == pytest.approx(math.sqrt(7 / 30000)) and d.df == pytest.approx(49 / 17)
    assert d.t == pytest.approx(-0.11 / math.sqrt(7 / 30000))
    # scipy's Welch test of the same samples: statistic, p, df and 95% interval
    ref = sps.ttest_ind(b, c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (d.t, d.p, d.df) == pytest.approx((ref.statistic, ref.pvalue, ref.df))
    assert (d.ci_low, d.ci_high) == pytest.approx((ci.low, ci.high))
    assert d.ci_high < 0 and d.p < 0.05  # t = -7.2 on 2.9 df
    # the same models in percent: every location and spread scales by 100, t and p do not change
    pct = stats.drop(baseline=100 * b, condition=100 * c)
    for name in ("drop", "std", "se", "ci_low", "ci_high", "mean_baseline", "mean_condition"):
        assert getattr(pct, name) == pytest.approx(100 * getattr(d, name)), name
    assert (pct.t, pct.p, pct.df) == pytest.approx((d.t, d.p, d.df))
    # swapping the groups flips the drop and its interval, not the test
    sw = stats.drop(baseline=c, condition=b)
    assert (sw.drop, sw.ci_low, sw.ci_high) == pytest.approx((-d.drop, -d.ci_high, -d.ci_low))
    assert sw.p == pytest.approx(d.p)


def test_drop_matches_scipy_welch_on_unequal_groups():
    # unequal sizes and spreads, the case where Welch and the pooled t-test differ; other levels too
    rng = np.random.default_rng(5)
    b = 0.62 + 0.010 * rng.standard_normal(7)
    c = 0.60 + 0.030 * rng.standard_normal(4)
    ref = sps.ttest_ind(b, c, equal_var=False)
    pooled = sps.ttest_ind(b, c, equal_var=True)
    assert abs(ref.pvalue - pooled.pvalue) > 0.01  # the example tells the two tests apart
    for level in (0.9, 0.95, 0.99):
        d = stats.drop(baseline=b, condition=c, level=level)
        ci = ref.confidence_interval(level)
        assert d.level == level
        assert (d.p, d.df, d.ci_low, d.ci_high) == pytest.approx((ref.pvalue, ref.df, ci.low, ci.high))


def test_drop_clear_difference_is_significant():
    rng = np.random.default_rng(0)
    base = 0.60 + 0.002 * rng.standard_normal(20)
    cond = 0.55 + 0.002 * rng.standard_normal(20)
    d = stats.drop(baseline=base, condition=cond)
    assert d.p < 1e-10 and d.ci_low < 0.05 < d.ci_high


def test_drop_undefined_spread_is_nan_not_zero():
    one = stats.drop(baseline=np.array([0.5]), condition=np.array([0.4, 0.41]))
    assert one.drop == pytest.approx(0.095) and math.isnan(one.std) and math.isnan(one.p)
    flat = stats.drop(baseline=np.array([0.5, 0.5]), condition=np.array([0.4, 0.4]))
    assert flat.std == 0 and math.isnan(flat.p) and math.isnan(flat.ci_low)
    with pytest.raises(ValueError):
        stats.drop(baseline=np.array([]), condition=np.array([0.4]))


def test_bootstrap_ci_known_answers():
    # no spread: every resample gives the same difference
    assert stats.bootstrap_ci(baseline=np.ones(4), condition=np.zeros(3), seed=0) == pytest.approx((1.0, 1.0))
    base, cond = np.array([50.0, 52.0, 54.0, 51.0]), np.array([48.0, 50.0, 49.0])
    a = stats.bootstrap_ci(baseline=base, condition=cond, seed=3, n_boot=2000)
    assert a == stats.bootstrap_ci(baseline=base, condition=cond, seed=3, n_boot=2000)  # seeded
    assert a != stats.bootstrap_ci(baseline=base, condition=cond, seed=4, n_boot=2000)
    # bounded by the extreme resamples: min(base) - max(cond) .. max(base) - min(cond)
    assert 0.0 <= a[0] < 2.75 < a[1] <= 6.0


def test_subset_accuracy():
    correct = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)  # (2 models, 4 test points)
    np.testing.assert_allclose(stats.subset_accuracy(test_correct=correct, idx=np.array([0, 2])), [1.0, 0.5])
    np.testing.assert_allclose(stats.subset_accuracy(test_correct=correct, idx=np.array([1])), [0.0, 0.0])
    assert np.isnan(stats.subset_accuracy(test_correct=correct, idx=np.array([], np.int64))).all()
