"""Notebook 03's table: finder and ciFAIR joined, labels, memorized flags, label conflicts as their own kind."""
import numpy as np
import pandas as pd

from lib import buckets, duplicates, leakage, review
from lib.reference import IndexJoin


class _DS:  # what flagged_table reads from the dataset: labels, and images to score ciFAIR's pairs on
    y_train = np.array([0, 1, 2, 3, 4, 5])
    y_test = np.array([0, 1, 2, 9])
    x_train = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    x_test = x_train[[0, 1, 5, 3]].copy()


def _found():
    pairs = pd.DataFrame({"query_idx": [0, 1, 3], "ref_idx": [0, 1, 3], "kind": ["exact", "near", "exact"],
                          "score": [1.0, 0.95, 1.0], "pixel": 1.0, "gradient": 1.0,
                          "verdict": ["confirm", "confirm", "confirm"]})
    return duplicates.Found(pairs=pairs, best_score=np.zeros(4, np.float32), best_ref=np.zeros(4, np.int64),
                            seconds=0.0)


def test_copies_with_different_labels_are_their_own_kind_and_never_leakage():
    join = IndexJoin(True, _DS.y_train, _DS.y_test, "test")
    table = leakage.flagged_table(mode="train", ds=_DS, join=join, found=_found(), cifair_list=None,
                                  memorized_idx=[0, 1, 3])
    by = table.set_index("train_idx")
    assert by.loc[3, "kind"] == "label_conflict" and by.loc[3, "copy_kind"] == "exact"  # label 3 vs 9
    assert by.loc[3, "verdict"] == "reject" and by.loc[0, "kind"] == "exact" and by.loc[1, "kind"] == "near"
    assert by["memorized"].all() and by.loc[1, "source"] == "finder"
    dups = review.merge(table, keys=["train_idx", "test_idx"], review_file=None)
    dups.loc[dups["train_idx"].eq(3), "final"] = True  # even when confirmed, a label conflict is not leakage
    assert buckets.confirmed_duplicates(dups)["train_idx"].tolist() == [0, 1]
    counts = leakage.counts(dups)
    assert counts.loc["label_conflict", "pairs"] == 1 and counts.loc["exact", "pairs"] == 1


def test_reference_mode_joins_cifair_and_keeps_the_finders_view():
    join = IndexJoin(True, _DS.y_train, _DS.y_test, "test")
    cf = pd.DataFrame({"test_idx": [0, 2], "train_idx": [0, 2], "distance": [0.0, 0.1], "judgment": [0, 1]})
    table = leakage.flagged_table(mode="reference", ds=_DS, join=join, found=_found(), cifair_list=cf,
                                  memorized_idx=[2])
    by = table.set_index(["train_idx", "test_idx"])
    assert by.loc[(0, 0), "source"] == "cifair" and by.loc[(0, 0), "finder_kind"] == "exact"
    assert by.loc[(2, 2), "finder_kind"] == "none" and by.loc[(2, 2), "judgment"] == 1
    assert by.loc[(0, 0), "score"] == 1.0 and by.loc[(2, 2), "score"] < 0.5  # scored on the images
    assert by.loc[(1, 1), "source"] == "finder" and by.loc[(1, 1), "judgment"] == -1
    assert by["memorized"].tolist() == [False, True, False, False]
