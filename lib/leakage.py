"""Notebook 03's table: every flagged train-test duplicate pair of a run, before review.

Train mode: the finder's pairs (lib/duplicates.py) on the run's own rows. Reference mode:
ciFAIR's judged list joined with the finder's pairs on the official copy (lib/cifair.py), or
ciFAIR's list alone where the images cannot be joined with official indices. Either way one
table in the duplicates.csv layout (lib/run_folder.py), which lib/review.py then merges with
a reviewer's decisions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import cifair, duplicates
from .reference import IndexJoin

COLUMNS = ["train_idx", "test_idx", "train_label", "test_label", "kind", "copy_kind", "score", "memorized", "verdict",
           "source", "judgment", "finder_kind"]
# A flagged pair whose two images carry different labels is a labelling problem, not leakage: its kind is
# LABEL_CONFLICT (verdict reject: it never enters the Leakage+Shift bucket) and copy_kind keeps what kind of
# copy it was (exact | near | review), so the figures still show it beside the other copies.
LABEL_CONFLICT = "label_conflict"


def search(*, ds, near_threshold: float, review_threshold: float, top_k: int, exact_only: bool,
           progress: bool = True) -> duplicates.Found:
    """The finder on the whole test set (queries) against the whole training set."""
    return duplicates.find(x_query=ds.x_test, x_ref=ds.x_train, near_threshold=near_threshold,
                           review_threshold=review_threshold, top_k=top_k, exact_only=exact_only, progress=progress)


def finder_pairs(found: duplicates.Found) -> pd.DataFrame:
    """The finder's flagged pairs with train/test names: train_idx, test_idx, kind, score, verdict."""
    return found.pairs.rename(columns={"query_idx": "test_idx", "ref_idx": "train_idx"})[
        ["train_idx", "test_idx", "kind", "score", "verdict"]]


def flagged_table(*, mode: str, ds, join: IndexJoin, found: duplicates.Found | None, cifair_list: pd.DataFrame | None,
                  memorized_idx: np.ndarray) -> pd.DataFrame:
    """The automatic duplicates table (COLUMNS), before any reviewer decision.

    found: the finder's result on ds (None when join.images is False). cifair_list: ciFAIR's
    list (cifair.read_list), reference mode only. Labels come from join (-1 where unknown).
    """
    ours = None if found is None else finder_pairs(found)
    if mode == "reference":
        score_fn = None if found is None else (
            lambda pairs: duplicates.score_pairs(x_query=ds.x_test, x_ref=ds.x_train, pairs=pairs)[0])
        table = cifair.duplicates_table(cifair=cifair_list, finder=ours, score_fn=score_fn)
    else:
        table = ours.assign(source="finder", judgment=-1, finder_kind=ours["kind"])
    tr, te = table["train_idx"].to_numpy(np.int64), table["test_idx"].to_numpy(np.int64)
    table["train_label"] = join.y_train[tr]
    table["test_label"] = join.y_test[te] if join.y_test is not None else np.full(len(te), -1, np.int64)
    table["memorized"] = np.isin(tr, np.asarray(memorized_idx, np.int64))
    table["copy_kind"] = table["kind"]
    conflict = (table["train_label"] >= 0) & (table["test_label"] >= 0) & table["train_label"].ne(table["test_label"])
    table.loc[conflict, ["kind", "verdict"]] = [LABEL_CONFLICT, "reject"]
    return table[COLUMNS].astype({"train_idx": np.int64, "test_idx": np.int64, "train_label": np.int64,
                                  "test_label": np.int64, "score": np.float64, "memorized": bool,
                                  "judgment": np.int64}).reset_index(drop=True)


def counts(dups: pd.DataFrame) -> pd.DataFrame:
    """Per kind: pairs, test and train images, how many count (final), on memorized points, decided by a person."""
    out = dups.groupby("kind").agg(pairs=("test_idx", "size"), test_images=("test_idx", "nunique"),
                                   train_images=("train_idx", "nunique"), final=("final", "sum"),
                                   memorized_pairs=("memorized", "sum"),
                                   decided_by_person=("decided_by", lambda s: int((s == "reviewer").sum())))
    return out.reindex(["exact", "near", "review", LABEL_CONFLICT]).fillna(0).astype(int)
