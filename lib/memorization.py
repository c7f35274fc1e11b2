"""Feldman & Zhang's memorization and influence estimates from many subset-trained models.

Model m trained on the training examples where masks[m] is True. For train example i
the models split into those that trained on it ("in", masks[:, i]) and those that held
it out ("out"); each estimate is a difference of two proportions over those models:

    mem_i     = mean_in(train_correct[:, i]) - mean_out(train_correct[:, i])
    infl(i,j) = mean_in(test_correct[:, j])  - mean_out(test_correct[:, j])

Standard errors treat the two means as independent binomial proportions over finite
model counts, with Agresti & Caffo's adjustment (one success and one failure added to each
group, p~ = (hits + 1) / (n + 2)): se = sqrt(p~_in (1 - p~_in) / (n_in + 2) + p~_out (1 - p~_out) / (n_out + 2)).
Unlike the plain Wald form it does not claim zero uncertainty when a handful of models all
agree (p = 0 or 1), and mem -/+ 1.96 se is then a 95% interval with close to nominal coverage.
An example that no model held out, or that every model held out, is not estimable:
`estimable` says so, and its mem / se are 0 (never NaN).

Influence of 50,000 train x 10,000 test examples is never built as one matrix: it is
computed per block of train examples as one float32 matmul (counts are exact in float32
up to 2^24 models), and only the top-k influencers per test example and the pairs
passing thresholds are kept. Pure functions on arrays: no file or store access.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Scores:
    mem: np.ndarray        # (n_train,) float32 memorization estimate; 0 where not estimable
    se: np.ndarray         # (n_train,) float32 standard error of mem (Agresti-Caffo); 0 where not estimable
    n_in: np.ndarray       # (n_train,) int32 models that trained on the example
    n_out: np.ndarray      # (n_train,) int32 models that held it out
    estimable: np.ndarray  # (n_train,) bool: n_in > 0 and n_out > 0
    center: np.ndarray | None = None  # (n_train,) float32 Agresti-Caffo adjusted difference p~_in - p~_out, the
    #                                  interval's centre; None: mem (no model counts, e.g. FZ's released scores)

    def __post_init__(self) -> None:
        if self.center is None:
            object.__setattr__(self, "center", np.asarray(self.mem, np.float32).copy())

    def ci(self, *, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Agresti-Caffo interval center -/+ z se (z = 1.96: 95%); (0, 0) where not estimable.

        Centred on the adjusted difference, not on mem: at a few dozen models the raw-centred
        interval covers the true difference only 84-93 % of the time (simulated; tests/test_memorization.py),
        the adjusted one at least 93 %.
        """
        return self.center - z * self.se, self.center + z * self.se

    def arrays(self) -> dict[str, np.ndarray]:
        """The run folder's scores.npz fields."""
        return dict(mem=self.mem, se=self.se, n_in=self.n_in, n_out=self.n_out, estimable=self.estimable,
                    center=self.center)


@dataclass(frozen=True)
class Influence:
    top_idx: np.ndarray    # (n_test, top_k) int64 train index, strongest first; -1 where fewer were estimable
    top_infl: np.ndarray   # (n_test, top_k) float32 their influence; 0 where top_idx is -1
    train_idx: np.ndarray     # (n_pairs,) int64 train index of each pair passing the thresholds
    test_idx: np.ndarray     # (n_pairs,) int64 test index
    infl: np.ndarray       # (n_pairs,) float64 influence of the pair, exact from the model counts


def difference_of_proportions(*, hits_in: np.ndarray, n_in: np.ndarray, hits_out: np.ndarray, n_out: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(diff, se, estimable) of hits_in / n_in - hits_out / n_out, elementwise, in float64.

    se: Agresti-Caffo (each proportion as (hits + 1) / (n + 2) over n + 2 trials).
    diff and se are 0 where n_in == 0 or n_out == 0 (not estimable).
    """
    n_in = np.asarray(n_in, np.float64)
    n_out = np.asarray(n_out, np.float64)
    estimable = (n_in > 0) & (n_out > 0)
    q_in = (np.asarray(hits_in, np.float64) + 1) / (n_in + 2)
    q_out = (np.asarray(hits_out, np.float64) + 1) / (n_out + 2)
    var = np.where(estimable, q_in * (1 - q_in) / (n_in + 2) + q_out * (1 - q_out) / (n_out + 2), 0.0)
    # one division of exact integers: a difference that is exactly a threshold stays exactly it
    num = np.asarray(hits_in, np.float64) * n_out - np.asarray(hits_out, np.float64) * n_in
    diff = np.divide(num, n_in * n_out, out=np.zeros_like(n_in), where=estimable)
    return diff, np.sqrt(var), estimable


def _check_models(masks: np.ndarray, correct: np.ndarray, what: str) -> None:
    if masks.ndim != 2 or correct.ndim != 2 or len(masks) != len(correct):
        raise ValueError(f"masks {masks.shape} and {what} {correct.shape} must be (n_models, n) with equal n_models")
    if masks.dtype != bool or correct.dtype != bool:
        raise ValueError(f"masks and {what} must be bool, got {masks.dtype} and {correct.dtype}")


def memorization(*, masks: np.ndarray, train_correct: np.ndarray, block: int = 8192) -> Scores:
    """FZ's memorization estimate of every training example, with its SE and model counts.

    masks  # (n_models, n_train) bool: model m trained on example i
    train_correct  # (n_models, n_train) bool: model m classifies train example i correctly
    Columns are read `block` at a time, so memmaps of thousands of models stay on disk.
    """
    _check_models(masks, train_correct, "train_correct")
    if masks.shape != train_correct.shape:
        raise ValueError(f"masks {masks.shape} and train_correct {train_correct.shape} differ in shape")
    n_models, n_train = masks.shape
    n_in = np.zeros(n_train, np.int64)
    hits_in = np.zeros(n_train, np.int64)
    hits_all = np.zeros(n_train, np.int64)
    for start in range(0, n_train, block):
        cols = slice(start, start + block)
        m, c = np.asarray(masks[:, cols]), np.asarray(train_correct[:, cols])
        n_in[cols] = m.sum(0)
        hits_in[cols] = (m & c).sum(0)
        hits_all[cols] = c.sum(0)
    n_out = n_models - n_in
    mem, se, estimable = difference_of_proportions(hits_in=hits_in, n_in=n_in, hits_out=hits_all - hits_in,
                                                   n_out=n_out)
    center = np.where(estimable, (hits_in + 1) / (n_in + 2) - (hits_all - hits_in + 1) / (n_out + 2), 0.0)
    return Scores(mem=mem.astype(np.float32), se=se.astype(np.float32), n_in=n_in.astype(np.int32),
                  n_out=n_out.astype(np.int32), estimable=estimable, center=center.astype(np.float32))


def memorized_idx(scores: Scores, *, mem_threshold: float) -> np.ndarray:
    """Sorted int64 indices of estimable training examples with mem >= mem_threshold."""
    return np.flatnonzero(scores.estimable & (scores.mem >= mem_threshold)).astype(np.int64)


@dataclass(frozen=True)
class SECurve:
    n_models: np.ndarray        # (n_points,) int64 models used: the first n of the store
    median_se: np.ndarray       # (n_points,) float64 median SE over the estimable examples
    q10_se: np.ndarray          # (n_points,) float64 10th percentile of the SE
    q90_se: np.ndarray          # (n_points,) float64 90th percentile of the SE
    frac_estimable: np.ndarray  # (n_points,) float64 fraction of training examples estimable
    mean_abs_change: np.ndarray  # (n_points,) float64 mean |mem(first n) - mem(all)| over examples estimable in both


def se_by_model_count(*, masks: np.ndarray, train_correct: np.ndarray, model_counts: list[int]) -> SECurve:
    """How the estimates' uncertainty shrinks as more models are used (the first n rows each time)."""
    full = memorization(masks=masks, train_correct=train_correct)
    counts = sorted({int(n) for n in model_counts if 0 < int(n) <= len(masks)})
    cols: dict[str, list[float]] = {k: [] for k in ("median", "q10", "q90", "frac", "change")}
    for n in counts:
        s = memorization(masks=masks[:n], train_correct=train_correct[:n])
        se = s.se[s.estimable].astype(np.float64)
        both = s.estimable & full.estimable
        q10, med, q90 = np.quantile(se, [0.1, 0.5, 0.9]) if len(se) else (np.nan, np.nan, np.nan)
        cols["median"].append(med), cols["q10"].append(q10), cols["q90"].append(q90)
        cols["frac"].append(float(s.estimable.mean()))
        cols["change"].append(float(np.abs(s.mem[both] - full.mem[both]).mean()) if both.any() else np.nan)
    as_arr = lambda k: np.asarray(cols[k], np.float64)  # noqa: E731
    return SECurve(n_models=np.asarray(counts, np.int64), median_se=as_arr("median"), q10_se=as_arr("q10"),
                   q90_se=as_arr("q90"), frac_estimable=as_arr("frac"), mean_abs_change=as_arr("change"))


def influence(*, masks: np.ndarray, test_correct: np.ndarray, top_k: int, block: int, infl_threshold: float,
              train_keep: np.ndarray | None = None, train_labels: np.ndarray | None = None,
              test_labels: np.ndarray | None = None, progress: bool = False) -> Influence:
    """Influence of every train example on every test example, in blocks of `block` train examples.

    masks  # (n_models, n_train) bool;  test_correct  # (n_models, n_test) bool
    Keeps the top_k estimable influencers of each test example, and the pairs with
    infl >= infl_threshold whose train example is estimable and in `train_keep` (n_train,) bool
    (None: all) and, when labels are given, whose train label equals the test label.
    Memory: test_correct as float32 plus two (n_test, block) float32 buffers.
    """
    _check_models(masks, test_correct, "test_correct")
    n_models, n_train = masks.shape
    n_test = test_correct.shape[1]
    if (train_labels is None) != (test_labels is None):
        raise ValueError("give both train_labels and test_labels, or neither")
    keep_rows = np.ones(n_train, bool) if train_keep is None else np.asarray(train_keep, bool)
    correct = torch.from_numpy(np.asarray(test_correct, dtype=np.float32))  # (n_models, n_test) 0/1
    hits_all = correct.sum(0)  # (n_test,) models right on j, in or out
    y_tr = None if train_labels is None else np.asarray(train_labels)
    y_te = None if test_labels is None else np.asarray(test_labels)

    k = min(top_k, n_train)
    best_infl = torch.full((n_test, k), float("-inf"))  # running top-k, (n_test, k)
    best_idx = torch.full((n_test, k), -1, dtype=torch.int64)
    pairs_train, pairs_test, pairs_infl = [], [], []
    starts = range(0, n_train, block)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="influence blocks", unit="block")
    for start in starts:
        stop = min(start + block, n_train)
        m = torch.from_numpy(np.asarray(masks[:, start:stop], dtype=np.float32))  # (n_models, b) 0/1
        n_in = m.sum(0)  # (b,)
        n_out = n_models - n_in
        ok = (n_in > 0) & (n_out > 0)
        inv_in = torch.where(ok, 1 / n_in.clamp(min=1), 0.0)
        inv_out = torch.where(ok, 1 / n_out.clamp(min=1), 0.0)
        # infl = hits_in / n_in - (hits_all - hits_in) / n_out = hits_in (1/n_in + 1/n_out) - hits_all / n_out
        infl = correct.T @ m  # (n_test, b) hits_in, exact integer counts
        infl.mul_(inv_in + inv_out).addr_(hits_all, inv_out, alpha=-1)
        infl[:, ~ok] = float("-inf")  # never a top influencer, never a pair

        vals, rows = torch.topk(infl, min(k, stop - start), dim=1)  # (n_test, <=k)
        cand_infl = torch.cat([best_infl, vals], dim=1)
        cand_idx = torch.cat([best_idx, rows + start], dim=1)
        best_infl, pos = torch.topk(cand_infl, k, dim=1)
        best_idx = torch.gather(cand_idx, 1, pos)

        rows_ok = np.flatnonzero(keep_rows[start:stop] & ok.numpy())
        if len(rows_ok):
            every = len(rows_ok) == stop - start  # no copy when every row of the block is a candidate
            sub = (infl if every else infl[:, torch.from_numpy(rows_ok)]).numpy()  # (n_test, n_rows_ok)
            # float32 rounding (~1e-7) must not decide a pair sitting exactly on the threshold:
            # take candidates with a margin, then redo them exactly from the integer counts
            tt, r = np.nonzero(sub >= infl_threshold - 1e-4)
            tr = rows_ok[r] + start
            if y_tr is not None:
                same = y_tr[tr] == y_te[tt]
                tt, r, tr = tt[same], r[same], tr[same]
            n_in_p = n_in.numpy()[rows_ok[r]].astype(np.float64)
            n_out_p = n_models - n_in_p
            all_p = hits_all.numpy()[tt].astype(np.float64)
            hits_in_p = np.rint((sub[tt, r] + all_p / n_out_p) / (1 / n_in_p + 1 / n_out_p))
            exact, _, _ = difference_of_proportions(hits_in=hits_in_p, n_in=n_in_p, hits_out=all_p - hits_in_p,
                                                    n_out=n_out_p)
            sel = exact >= infl_threshold
            pairs_train.append(tr[sel]), pairs_test.append(tt[sel]), pairs_infl.append(exact[sel])

    missing = torch.isinf(best_infl)  # fewer than k estimable train examples
    best_idx[missing] = -1
    best_infl[missing] = 0.0
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return Influence(top_idx=best_idx.numpy().astype(np.int64), top_infl=best_infl.numpy().astype(np.float32),
                     train_idx=cat(pairs_train, np.int64), test_idx=cat(pairs_test, np.int64), infl=cat(pairs_infl, np.float64))


def high_influence_pairs(*, train_idx: np.ndarray, test_idx: np.ndarray, infl: np.ndarray, scores: Scores,
                         train_labels: np.ndarray, test_labels: np.ndarray, mem_threshold: float,
                         infl_threshold: float) -> dict[str, np.ndarray]:
    """FZ's high-influence pairs: mem >= mem_threshold (estimable), infl >= infl_threshold, same class.

    Returns FZ's format, strongest influence first: train_idx, test_idx (int64), infl, mem (float64).
    """
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    infl = np.asarray(infl, np.float64)
    keep = ((infl >= infl_threshold) & scores.estimable[train_idx] & (scores.mem[train_idx] >= mem_threshold)
            & (np.asarray(train_labels)[train_idx] == np.asarray(test_labels)[test_idx]))
    order = np.lexsort((test_idx[keep], train_idx[keep], -infl[keep]))  # by infl descending, ties by index
    tr, tt, val = train_idx[keep][order], test_idx[keep][order], infl[keep][order]
    return dict(train_idx=tr, test_idx=tt, infl=val, mem=scores.mem[tr].astype(np.float64))
