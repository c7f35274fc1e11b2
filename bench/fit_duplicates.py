"""Fit the duplicate finder's score (lib/duplicates.py SCORE_WEIGHTS) on the *tuning* half only.

    python bench/fit_duplicates.py

Labelled pairs, all with their test image in the tuning half (lib/planted.py cifair_halves):
  - same shot: ciFAIR's train-test pairs judged 0 (exact) or 1 (near-duplicate);
  - our judgments of pairs ciFAIR does not list (bench/cifair_tuning_judgments.csv, 1 same shot,
    0 not, -1 unsure and left out). They were drawn, seeded, from the unlisted candidates of an
    earlier version of this finder, in two strata of its score (stratum, stratum_size, stratum_drawn):
    a judged pair stands for stratum_size / stratum_drawn unlisted pairs in the false-flag estimate.
bench/cifair_tuning_delta_judgments.csv holds 101 more tuning-half pairs judged the same way (every
unlisted pair on which this finder and a colour-signal experiment, commit aedb97f, disagreed at 0.90;
many are different objects in the same studio pose, or recoloured copies); this fit does not use them.
Each pair's signals (pixel, gradient, similarity - hub) are computed as score_pairs does; a
logistic regression (Newton's method, no penalty) gives the four weights. The table then shows,
for thresholds on the score, the share of ciFAIR's tuning pairs scored at or above it (their
retrieval is not counted here) and the weighted number of judged-false pairs at or above it (a rough
false-flag estimate for the 5,000 tuning test images). The report half is never read.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("MEMAUDIT_REFERENCE_DIR") and (ROOT.parent / "shared" / "data" / "reference").is_dir():
    os.environ["MEMAUDIT_REFERENCE_DIR"] = str(ROOT.parent / "shared" / "data" / "reference")  # as tests/conftest.py
from lib import cifair, data, duplicates, planted, reference  # noqa: E402


def logistic_fit(x: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """(w0, w1, ...) maximising the Bernoulli likelihood of y given sigmoid(w0 + x @ w), by Newton's method."""
    a = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(a @ w, -50, 50)))
        h = a.T @ (a * (p * (1 - p))[:, None]) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, a.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return w


def main() -> None:
    ds = data.load_cifar(dataset="cifar100")
    data.require_official(ds, "ciFAIR's duplicate list")
    tune = planted.cifair_halves(len(ds.x_test))
    listed = cifair.read_list(reference.fetch("cifair_cifar100"))
    pos = listed[tune[listed["test_idx"]] & listed["judgment"].isin([0, 1])]
    judged = pd.read_csv(ROOT / "bench" / "cifair_tuning_judgments.csv")
    assert tune[judged["test_idx"]].all(), "tuning judgments must come from the tuning half"
    judged = judged[judged["judgment"] >= 0]
    lab = pd.concat([pd.DataFrame({"q": pos["test_idx"], "r": pos["train_idx"], "y": 1, "weight": 1.0, "cifair": True}),
                     pd.DataFrame({"q": judged["test_idx"], "r": judged["train_idx"], "y": judged["judgment"],
                                   "weight": judged["stratum_size"] / judged["stratum_drawn"], "cifair": False})],
                    ignore_index=True)
    pairs = lab[["q", "r"]].to_numpy()
    sim, hub = duplicates._pair_similarity(x_query=ds.x_test[pairs[:, 0]], x_ref=ds.x_train, cand=pairs[:, 1:2])
    _, pix, grad, _ = duplicates._score(x_query=ds.x_test[pairs[:, 0]], x_ref=ds.x_train, cand=pairs[:, 1:2],
                                        sim=sim, hub=hub, gate=None)
    x = np.column_stack([pix[:, 0], grad[:, 0], sim[:, 0] - hub])
    w = logistic_fit(x, lab["y"].to_numpy(float))
    print(f"labelled tuning pairs: {int(lab['cifair'].sum())} ciFAIR (judgment 0/1), "
          f"{int((~lab['cifair']).sum())} judged by us ({int(lab.loc[~lab['cifair'], 'y'].sum())} same shot)")
    print(f"SCORE_WEIGHTS = ({w[0]:.3f}, {w[1]:.3f}, {w[2]:.3f}, {w[3]:.3f})   # (w0, w_pixel, w_gradient, w_gap)")
    print(f"in use:         {tuple(duplicates.SCORE_WEIGHTS)}")
    p = 1 / (1 + np.exp(-(np.column_stack([np.ones(len(x)), x]) @ np.asarray(duplicates.SCORE_WEIGHTS))))
    false_w = lab["weight"].to_numpy() * ((~lab["cifair"]) & (lab["y"] == 0)).to_numpy()
    print("\nscore >= t (weights in use): share of ciFAIR tuning pairs 0/1 scored >= t; judged-false pairs >= t, "
          "weighted (estimate for 5,000 test images)")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        print(f"  t={t:.2f}: ciFAIR {np.mean(p[lab['cifair'].to_numpy()] >= t):.3f}   false ~{false_w[p >= t].sum():5.0f} "
              f"({int(((p >= t) & (false_w > 0)).sum())} judged pairs)")


if __name__ == "__main__":
    main()
