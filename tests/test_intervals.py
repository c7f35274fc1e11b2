"""Why the bootstrap interval needs 10 models per group: its coverage, simulated beside Welch's."""
import numpy as np

from lib import stats


def coverage(n: int, reps: int = 300, seed: int = 0) -> tuple[float, float]:
    """Share of simulated experiments (n normal accuracies per group, no true drop) whose 95 % interval holds 0."""
    rng = np.random.default_rng(seed)
    boot = welch = 0
    for r in range(reps):
        b, c = rng.normal(0, 1, n), rng.normal(0, 1, n)
        lo, hi = stats.bootstrap_ci(baseline=b, condition=c, seed=r, n_boot=2000)
        d = stats.drop(baseline=b, condition=c)
        boot += lo <= 0 <= hi
        welch += d.ci_low <= 0 <= d.ci_high
    return boot / reps, welch / reps


def test_bootstrap_undercovers_below_the_threshold_and_welch_does_not():
    boot3, welch3 = coverage(3)
    boot_min, welch_min = coverage(stats.MIN_MODELS_FOR_BOOTSTRAP)
    assert boot3 < 0.85 and welch3 > 0.92        # 3 models per group (quick): the bootstrap claims too much
    assert boot_min > 0.9 and welch_min > 0.92   # at the threshold both are close to nominal


def test_table2_hides_the_bootstrap_below_the_threshold():
    from lib import tables
    rng = np.random.default_rng(1)
    few = {"full_nowd": rng.normal(0.5, 0.01, 3), "minus_memorized_nowd": rng.normal(0.48, 0.01, 3)}
    many = {k: np.resize(v, stats.MIN_MODELS_FOR_BOOTSTRAP) + rng.normal(0, 0.001, stats.MIN_MODELS_FOR_BOOTSTRAP)
            for k, v in few.items()}
    t_few = tables.table2(acc=few, n_remove={"minus_memorized_nowd": 5}, seed=0, n_boot=500)
    t_many = tables.table2(acc=many, n_remove={"minus_memorized_nowd": 5}, seed=0, n_boot=500)
    assert np.isnan(t_few.loc["Original (FZ)", "boot_low"]) and not np.isnan(t_few.loc["Original (FZ)", "ci_low"])
    assert np.isfinite(t_many.loc["Original (FZ)", "boot_low"])
