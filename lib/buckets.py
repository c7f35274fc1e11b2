"""The two buckets of paper section 5.1: Leakage+Shift and Memorized.

Leakage+Shift holds the memorized train points with a confirmed exact or near
duplicate in the test set (section 4.2) plus the memorized points in confirmed
sub-population groups (section 4.3); Memorized holds the rest. The buckets
partition the memorized set: each point is counted once, under the first cause
of CAUSES that applies (exact > near > subpop), so a duplicated point that is
also in a group counts as a duplicate: a copy in the test set explains its
influence without any sub-population, and exact copies are the surest evidence.

`from_reference` builds the same buckets from the released files alone: FZ's
high-influence pairs (the memorized points) and ciFAIR's duplicate list.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import subpop
from .cifair import KIND_OF_JUDGMENT

CAUSES = ("exact", "near", "subpop")  # precedence: a point with several causes gets the first


@dataclass(frozen=True)
class Buckets:
    memorized_idx: np.ndarray                   # (n_mem,) int64 sorted run indices
    leakage_shift_idx: np.ndarray               # (n_ls,) int64 sorted
    cause: np.ndarray                           # (n_ls,) str, CAUSES entry of each leakage_shift_idx
    memorized_bucket_idx: np.ndarray            # (n_mem - n_ls,) int64 sorted
    influenced_test_idx_leakage: np.ndarray     # int64 sorted test indices a Leakage+Shift point influences
    influenced_test_idx_memorized: np.ndarray   # int64 sorted test indices a Memorized-bucket point influences
    duplicate_test_idx: np.ndarray              # int64 sorted test points duplicating a memorized train point

    def of_cause(self, cause: str) -> np.ndarray:
        return self.leakage_shift_idx[self.cause == cause]


def _sorted_unique(a) -> np.ndarray:
    return np.unique(np.asarray(a, np.int64))


def confirmed_duplicates(dups: pd.DataFrame) -> pd.DataFrame:
    """Rows of a duplicates table that count downstream (final == True), kind folded to exact|near.

    Any confirmed kind other than "exact" (near, review, very_similar) is a near duplicate; label
    conflicts (kind label_conflict) are left out, even when a reviewer confirmed the copy.
    """
    if not pd.api.types.is_bool_dtype(dups["final"]):
        raise TypeError("duplicates: column 'final' must be bool (read the table with RunFolder.read_duplicates)")
    # a copy whose two labels differ is a labelling problem, not leakage (lib/leakage.py): never counted
    out = dups.loc[dups["final"] & dups["kind"].ne("label_conflict"), ["train_idx", "test_idx", "kind"]].copy()
    out["kind"] = np.where(out["kind"].eq("exact"), "exact", "near")
    return out.astype({"train_idx": np.int64, "test_idx": np.int64}).reset_index(drop=True)


def assign(*, memorized_idx, dup_train_idx, dup_test_idx, dup_kind, subpop_train_idx, pair_train_idx,
           pair_test_idx) -> Buckets:
    """Split the memorized points into the two buckets.

    dup_train_idx, dup_test_idx, dup_kind: confirmed duplicate pairs (kind "exact" or "near");
    pairs whose train point is not memorized are ignored. subpop_train_idx: train points of the
    confirmed groups (all must be memorized). pair_train_idx, pair_test_idx: the high-influence pairs,
    for the test points each bucket influences.
    """
    mem = _sorted_unique(memorized_idx)
    dup_tr, dup_tt = np.asarray(dup_train_idx, np.int64), np.asarray(dup_test_idx, np.int64)
    dup_kind = np.asarray(dup_kind, str)
    if set(np.unique(dup_kind)) - {"exact", "near"}:
        raise ValueError(f"duplicate kinds must be exact|near, got {sorted(set(np.unique(dup_kind)))}")
    sub = _sorted_unique(subpop_train_idx)
    if not np.isin(sub, mem).all():
        raise ValueError(f"{(~np.isin(sub, mem)).sum()} sub-population train points are not memorized")
    on_mem = np.isin(dup_tr, mem)
    members = {"exact": _sorted_unique(dup_tr[on_mem & (dup_kind == "exact")]),
               "near": _sorted_unique(dup_tr[on_mem & (dup_kind == "near")]),
               "subpop": sub}
    taken = np.zeros(0, np.int64)
    ls_idx, ls_cause = [], []
    for cause in CAUSES:  # precedence order
        new = np.setdiff1d(members[cause], taken)
        ls_idx.append(new)
        ls_cause.append(np.full(len(new), cause))
        taken = np.union1d(taken, new)
    ls_idx, ls_cause = np.concatenate(ls_idx), np.concatenate(ls_cause)
    order = np.argsort(ls_idx)
    pair_tr, pair_tt = np.asarray(pair_train_idx, np.int64), np.asarray(pair_test_idx, np.int64)
    rest = np.setdiff1d(mem, ls_idx)
    return Buckets(
        memorized_idx=mem, leakage_shift_idx=ls_idx[order], cause=ls_cause[order].astype(str),
        memorized_bucket_idx=rest,
        influenced_test_idx_leakage=_sorted_unique(pair_tt[np.isin(pair_tr, ls_idx)]),
        influenced_test_idx_memorized=_sorted_unique(pair_tt[np.isin(pair_tr, rest)]),
        duplicate_test_idx=_sorted_unique(dup_tt[on_mem]),
    )


def summary(b: Buckets, *, mem: np.ndarray, pair_train_idx, pair_test_idx) -> pd.DataFrame:
    """Per bucket and cause: points, mean memorization score, high-influence pairs, test points influenced.

    mem: (n_train,) memorization score by train index.
    """
    mem = np.asarray(mem, np.float64)
    pair_tr, pair_tt = np.asarray(pair_train_idx, np.int64), np.asarray(pair_test_idx, np.int64)
    parts = [(f"Leakage+Shift: {c}", b.of_cause(c)) for c in CAUSES]
    parts += [("Leakage+Shift", b.leakage_shift_idx), ("Memorized", b.memorized_bucket_idx),
              ("all memorized", b.memorized_idx)]
    rows = []
    for name, idx in parts:
        on = np.isin(pair_tr, idx)
        rows.append(dict(bucket=name, points=len(idx), mean_mem=float(mem[idx].mean()) if len(idx) else np.nan,
                         pairs=int(on.sum()), test_influenced=len(np.unique(pair_tt[on]))))
    return pd.DataFrame(rows).set_index("bucket")


# ---------------------------------------------------------------- reference mode: released files only

def cifair_duplicates(cifair: pd.DataFrame, *, kinds: dict[int, str] = KIND_OF_JUDGMENT) -> pd.DataFrame:
    """ciFAIR's list (cifair.read_list) as confirmed pairs train_idx, test_idx, kind; judgments not in kinds dropped."""
    keep = cifair["judgment"].isin(list(kinds))
    return pd.DataFrame({"train_idx": cifair.loc[keep, "train_idx"].to_numpy(np.int64),
                         "test_idx": cifair.loc[keep, "test_idx"].to_numpy(np.int64),
                         "kind": cifair.loc[keep, "judgment"].map(kinds).to_numpy(str)})


def reference_groups(*, pairs, train_labels: np.ndarray, min_train: int) -> pd.DataFrame:
    """Sub-population groups of FZ's released pairs (fz_format.Pairs); their memorized set is the pairs' train side.

    train_labels: (50000,) official CIFAR-100 train labels (for the groups' classes).
    """
    return subpop.find_groups(train_idx=pairs.train_idx, test_idx=pairs.test_idx, infl=pairs.infl,
                              memorized_idx=np.unique(pairs.train_idx), y_train=train_labels, min_train=min_train)


def from_reference(*, pairs, cifair: pd.DataFrame, groups: pd.DataFrame,
                   kinds: dict[int, str] = KIND_OF_JUDGMENT) -> Buckets:
    """Buckets from FZ's released pairs (fz_format.Pairs) and ciFAIR's list (cifair.read_list) alone.

    groups: reference_groups(...), after any reviewer merge (a `final` column overrides the
    automatic verdicts).
    """
    dups = cifair_duplicates(cifair, kinds=kinds)
    return assign(memorized_idx=np.unique(pairs.train_idx), dup_train_idx=dups["train_idx"],
                  dup_test_idx=dups["test_idx"], dup_kind=dups["kind"],
                  subpop_train_idx=subpop.confirmed_train_idx(groups),
                  pair_train_idx=pairs.train_idx, pair_test_idx=pairs.test_idx)


def count_table(*, pairs, groups: pd.DataFrame, b: Buckets) -> dict[str, int]:
    """Counts in stated units: unique points, or high-influence pairs (FZ's file lists pairs)."""
    tr, tt = np.asarray(pairs.train_idx, np.int64), np.asarray(pairs.test_idx, np.int64)
    out = {"high-influence pairs": len(tr), "unique train points in pairs": len(np.unique(tr)),
           "unique test points in pairs": len(np.unique(tt)), "memorized points": len(b.memorized_idx),
           "groups (graph rule)": len(groups), "groups confirmed": int(subpop.confirmed_mask(groups).sum()),
           "train points in confirmed groups": len(subpop.confirmed_train_idx(groups)),
           "test points duplicating a memorized point": len(b.duplicate_test_idx)}
    for c in CAUSES:
        out[f"bucket points: {c}"] = int((b.cause == c).sum())
    out["Leakage+Shift points"] = len(b.leakage_shift_idx)
    out["Memorized bucket points"] = len(b.memorized_bucket_idx)
    for c in CAUSES:
        out[f"bucket pairs: {c}"] = int(np.isin(tr, b.of_cause(c)).sum())
    out["Leakage+Shift pairs"] = int(np.isin(tr, b.leakage_shift_idx).sum())
    out["Memorized bucket pairs"] = int(np.isin(tr, b.memorized_bucket_idx).sum())
    return out


# paper quantity -> (its value, our count_table key in points, in pairs)
_PAPER_ROWS = [
    ("released set ('1,015 memorized points')", 1015, "memorized points", "high-influence pairs"),
    ("exact duplicates", 119, "bucket points: exact", "bucket pairs: exact"),
    ("near duplicates", 158, "bucket points: near", "bucket pairs: near"),
    ("sub-population points", 239, "bucket points: subpop", "bucket pairs: subpop"),
    ("Leakage+Shift bucket", 516, "Leakage+Shift points", "Leakage+Shift pairs"),
    ("Memorized bucket", 499, "Memorized bucket points", "Memorized bucket pairs"),
]
# section 5.2: mean memorization score, Memorized 83% vs Leakage+Shift 74% (the text says the
# Memorized bucket scores higher; its "lower ... (83% and 74% respectively)" reads the other way)
_PAPER_MEAN_MEM = {"Leakage+Shift": 0.74, "Memorized": 0.83}


PAIRS_OF_POINTS = "high-influence pairs of those points"


def paper_comparison(variants: dict[str, tuple[dict[str, int], pd.DataFrame]]) -> pd.DataFrame:
    """The paper's section 5.1-5.2 numbers beside ours.

    variants: name -> (count_table, summary) of one way of building the buckets; each gives a
    column in unique points and one with the high-influence pairs of those points.
    """
    rows = []
    for label, paper, k_points, k_pairs in _PAPER_ROWS:
        row = {"quantity": label, "paper": str(paper)}
        for name, (counts, _) in variants.items():
            row[f"{name}: points"], row[f"{name}: {PAIRS_OF_POINTS}"] = str(counts[k_points]), str(counts[k_pairs])
        rows.append(row)
    for bucket, paper in _PAPER_MEAN_MEM.items():
        row = {"quantity": f"mean memorization, {bucket}", "paper": f"{paper:.2f}"}
        for name, (_, summ) in variants.items():
            row[f"{name}: points"], row[f"{name}: {PAIRS_OF_POINTS}"] = f"{summ.loc[bucket, 'mean_mem']:.3f}", ""
        rows.append(row)
    return pd.DataFrame(rows)


def reference_variants(*, pairs, cifair: pd.DataFrame, train_labels: np.ndarray, min_train: int,
                       review_file=None) -> dict[str, tuple[dict[str, int], pd.DataFrame, Buckets]]:
    """The buckets rebuilt straight from the released files, with and without ciFAIR's judgment 2.

    pairs: FZ's released pairs (fz_format.Pairs); cifair: cifair.read_list(...); review_file:
    the run's groups review file (its decisions apply here too). Returns
    name -> (count_table, summary, Buckets) for "ciFAIR 0+1" and "ciFAIR 0+1+2".
    """
    from . import fz_format, review

    mem = fz_format.scores_from_pairs(pairs, n_train=len(train_labels)).mem
    groups = reference_groups(pairs=pairs, train_labels=train_labels, min_train=min_train)
    groups = review.merge(groups, keys=["group_id"], review_file=review_file)
    out = {}
    for name, kinds in [("ciFAIR 0+1", {0: "exact", 1: "near"}), ("ciFAIR 0+1+2", KIND_OF_JUDGMENT)]:
        b = from_reference(pairs=pairs, cifair=cifair, groups=groups, kinds=kinds)
        out[name] = (count_table(pairs=pairs, groups=groups, b=b),
                     summary(b, mem=mem, pair_train_idx=pairs.train_idx, pair_test_idx=pairs.test_idx), b)
    return out


def same_buckets(a: Buckets, b: Buckets) -> bool:
    """Same Leakage+Shift points with the same causes."""
    return np.array_equal(a.leakage_shift_idx, b.leakage_shift_idx) and np.array_equal(a.cause, b.cause)


def reference_notes(*, with_2: dict[str, int], without_2: dict[str, int]) -> list[str]:
    """What the reference comparison shows, in sentences built from the counts (ciFAIR 0+1+2 and 0+1)."""
    c, c01 = with_2, without_2
    return [
        f"- FZ's released file holds {c['high-influence pairs']} high-influence pairs over "
        f"{c['unique train points in pairs']} unique train points and {c['unique test points in pairs']} unique "
        "test points. The paper's '1,015 memorized points' is the number of pairs, not of points; since 119 + 158 "
        "+ 239 + 499 = 1,015, its split is presumably of pairs, or mixes units. Both units are given above.",
        f"- Duplicates: ciFAIR lists at least {c01['bucket points: exact']} exact and {c01['bucket points: near']} "
        "near-duplicate memorized points (judgments 0, 1; ciFAIR lists one train partner per test image, so these "
        f"are lower bounds); judgment 2 ('very similar') adds {c['bucket points: near'] - c01['bucket points: near']} "
        "more near points. Against the paper's 119 + 158 = 277, ciFAIR's manually judged list confirms far fewer; "
        "the paper's own duplicate search (its Figure 1) presumably used a looser notion of near duplicate.",
        f"- Sub-populations: the graph rule (two or more memorized points sharing an influenced test point) gives "
        f"{c['groups (graph rule)']} groups holding {c['train points in confirmed groups']} train points "
        f"({c['bucket points: subpop']} once duplicates take precedence). The paper reports 239; its visual check "
        "can only remove points, so FZ's released pairs and the stated rule do not reproduce that number exactly.",
        "- Mean memorization: the paper reports 83% (Memorized) vs 74% (Leakage+Shift); see the two last rows.",
    ]
