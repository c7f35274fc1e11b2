"""How many high-influence pairs, and how many grouped points, chance alone produces.

The null model: permute the rows (models) of test_correct against the masks. Each model's
test results then belong to another model's subset, so no training point truly influences
any test point, while every marginal (each model's accuracy, each point's mem, how often each
test point is right) stays as it was. Whatever passes FZ's pair rule under the null is chance;
with few subset models (the CPU sets) that is a large share of the real count. A few seeded
permutations give its typical size.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import memorization, subpop


def grouped_points(*, train_idx: np.ndarray, test_idx: np.ndarray, min_train: int) -> int:
    """Train points in sub-population groups (components with >= min_train train points) of these pairs."""
    nodes, comp, _, _ = subpop.components(train_idx=train_idx, test_idx=test_idx)
    if not len(nodes):
        return 0
    sizes = np.bincount(comp)
    return int((sizes[comp] >= min_train).sum())


def _counts(pairs: dict, *, threshold: float, min_train: int) -> dict[str, int]:
    keep = pairs["infl"] >= threshold
    tr, tt = pairs["train_idx"][keep], pairs["test_idx"][keep]
    return {"pairs": int(keep.sum()), "train points": len(np.unique(tr)),
            "grouped points": grouped_points(train_idx=tr, test_idx=tt, min_train=min_train)}


def real_vs_chance(*, masks: np.ndarray, test_correct: np.ndarray, scores: memorization.Scores,
                   train_labels: np.ndarray, test_labels: np.ndarray, mem_threshold: float,
                   infl_thresholds: list[float], min_train: int, block: int, n_perm: int = 3,
                   seed: int = 0) -> pd.DataFrame:
    """Pairs, their train points and grouped train points, real and under the null, per influence threshold.

    One row per threshold: real counts, and the mean (and max) over `n_perm` seeded permutations.
    chance share = mean null count / real count.
    """
    lowest = min(infl_thresholds)
    keep = scores.estimable & (scores.mem >= mem_threshold)
    rng = np.random.default_rng([seed, 0xC4A7CE])

    def pairs_of(correct: np.ndarray) -> dict:
        inf = memorization.influence(masks=masks, test_correct=correct, top_k=1, block=block,
                                     infl_threshold=lowest, train_keep=keep, train_labels=train_labels,
                                     test_labels=test_labels)
        return memorization.high_influence_pairs(train_idx=inf.train_idx, test_idx=inf.test_idx, infl=inf.infl,
                                                 scores=scores, train_labels=train_labels, test_labels=test_labels,
                                                 mem_threshold=mem_threshold, infl_threshold=lowest)

    real = pairs_of(np.asarray(test_correct))
    null = [pairs_of(np.asarray(test_correct)[rng.permutation(len(test_correct))]) for _ in range(n_perm)]
    rows = []
    for t in sorted(infl_thresholds):
        r = _counts(real, threshold=t, min_train=min_train)
        n = [_counts(p, threshold=t, min_train=min_train) for p in null]
        row = {"infl_threshold": t}
        for k in r:
            mean = float(np.mean([c[k] for c in n])) if n else np.nan
            row[f"{k}: real"], row[f"{k}: chance (mean)"] = r[k], mean
            row[f"{k}: chance (max)"] = max((c[k] for c in n), default=0)
            row[f"{k}: chance share"] = mean / r[k] if r[k] else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("infl_threshold")
