"""Bucket assignment with known answers: duplicates that are also in groups, precedence, round trip."""
import numpy as np
import pandas as pd
import pytest

from lib import buckets

MEMORIZED = np.arange(1, 11)  # train points 1..10
# confirmed duplicate pairs: point 1 is both exact and near, 3 is near and in a group,
# 20 is not memorized (ignored), 9 has an exact copy and is also in a group
DUP = pd.DataFrame({"train_idx": [1, 1, 2, 3, 20, 9], "test_idx": [50, 51, 52, 53, 54, 55],
                    "kind": ["exact", "near", "near", "near", "exact", "exact"]})
GROUPS = [np.array([3, 4]), np.array([5, 6, 9])]
# high-influence pairs (train, test)
PAIRS = np.array([(1, 50), (3, 60), (4, 60), (5, 61), (6, 61), (9, 61), (7, 70), (8, 70), (8, 60), (10, 71)])


def make(dups=DUP, groups=GROUPS):
    return buckets.assign(memorized_idx=MEMORIZED, dup_train_idx=dups["train_idx"], dup_test_idx=dups["test_idx"],
                          dup_kind=dups["kind"], subpop_train_idx=np.concatenate(groups),
                          pair_train_idx=PAIRS[:, 0], pair_test_idx=PAIRS[:, 1])


def test_each_point_once_with_precedence_exact_near_subpop():
    b = make()
    assert b.of_cause("exact").tolist() == [1, 9]     # 9 is in a group too: exact wins
    assert b.of_cause("near").tolist() == [2, 3]      # 3 is in a group too: near wins
    assert b.of_cause("subpop").tolist() == [4, 5, 6]
    assert b.leakage_shift_idx.tolist() == [1, 2, 3, 4, 5, 6, 9]
    assert b.cause.tolist() == ["exact", "near", "near", "subpop", "subpop", "subpop", "exact"]
    assert b.memorized_bucket_idx.tolist() == [7, 8, 10]
    # a partition of the memorized set
    assert np.intersect1d(b.leakage_shift_idx, b.memorized_bucket_idx).size == 0
    assert np.union1d(b.leakage_shift_idx, b.memorized_bucket_idx).tolist() == MEMORIZED.tolist()
    # test points: duplicates of memorized points only (54 belongs to non-memorized 20)
    assert b.duplicate_test_idx.tolist() == [50, 51, 52, 53, 55]
    assert b.influenced_test_idx_leakage.tolist() == [50, 60, 61]
    assert b.influenced_test_idx_memorized.tolist() == [60, 70, 71]


def test_summary_counts_means_and_influence():
    b = make()
    mem = np.zeros(30)
    mem[MEMORIZED] = np.arange(1, 11) / 10
    s = buckets.summary(b, mem=mem, pair_train_idx=PAIRS[:, 0], pair_test_idx=PAIRS[:, 1])
    assert s.loc["Leakage+Shift: exact", "points"] == 2
    assert s.loc["Leakage+Shift", "points"] + s.loc["Memorized", "points"] == s.loc["all memorized", "points"] == 10
    assert s.loc["Memorized", "mean_mem"] == pytest.approx((0.7 + 0.8 + 1.0) / 3)
    assert s.loc["Leakage+Shift: subpop", "mean_mem"] == pytest.approx((0.4 + 0.5 + 0.6) / 3)
    assert s.loc["Memorized", "pairs"] == 4 and s.loc["Memorized", "test_influenced"] == 3
    assert s.loc["Leakage+Shift: subpop", "test_influenced"] == 2  # 60 and 61


def test_a_rejected_group_moves_its_points_to_the_memorized_bucket():
    b = make(groups=[np.array([3, 4])])
    assert b.of_cause("subpop").tolist() == [4]
    assert b.memorized_bucket_idx.tolist() == [5, 6, 7, 8, 10]


def test_confirmed_duplicates_reads_final_and_folds_kinds():
    table = pd.DataFrame({"train_idx": [1, 2, 3, 4], "test_idx": [5, 6, 7, 8],
                          "kind": ["exact", "near", "review", "near"], "final": [True, True, True, False]})
    got = buckets.confirmed_duplicates(table)
    assert got["train_idx"].tolist() == [1, 2, 3] and got["kind"].tolist() == ["exact", "near", "near"]
    with pytest.raises(TypeError, match="final"):  # text read with a bare read_csv would be misread
        buckets.confirmed_duplicates(table.astype({"final": str}))


def test_groups_must_be_memorized_and_kinds_known():
    with pytest.raises(ValueError, match="not memorized"):
        make(groups=[np.array([3, 40])])
    with pytest.raises(ValueError, match="exact\\|near"):
        make(dups=DUP.assign(kind=["exact", "near", "near", "review", "exact", "exact"]))


def test_save_and_load_round_trip(tmp_path):
    from lib.run_folder import RunFolder
    run = RunFolder(tmp_path)
    b = make()
    run.write_buckets(b)
    c = run.read_buckets()
    for name in ("memorized_idx", "leakage_shift_idx", "cause", "memorized_bucket_idx", "duplicate_test_idx",
                 "influenced_test_idx_leakage", "influenced_test_idx_memorized"):
        np.testing.assert_array_equal(getattr(c, name), getattr(b, name))
    assert c.cause.dtype.kind == "U" and c.memorized_idx.dtype == np.int64


def test_reviewer_overrides_change_the_buckets(tmp_path):
    """A reviewer rejects one graph-rule group and confirms one the automatic check rejected."""
    from lib import review, subpop
    pairs = np.array([(3, 60), (4, 60), (5, 61), (6, 61), (7, 62), (8, 62)])
    y = np.zeros(30, np.int64)
    y[8] = 1  # group {7, 8} mixes labels: automatically rejected
    groups = subpop.find_groups(train_idx=pairs[:, 0], test_idx=pairs[:, 1], infl=np.full(6, 0.3), memorized_idx=MEMORIZED,
                                y_train=y, min_train=2)
    assert groups["group_id"].tolist() == [3, 5, 7] and groups["verdict"].tolist() == ["confirm", "confirm", "reject"]

    def bucketed(g):
        return buckets.assign(memorized_idx=MEMORIZED, dup_train_idx=[], dup_test_idx=[], dup_kind=[],
                              subpop_train_idx=subpop.confirmed_train_idx(g), pair_train_idx=pairs[:, 0],
                              pair_test_idx=pairs[:, 1])

    auto = review.merge(groups, keys=["group_id"], review_file=tmp_path / "missing.csv")
    assert auto["decided_by"].eq("auto").all()
    assert bucketed(auto).of_cause("subpop").tolist() == [3, 4, 5, 6]
    path = review.write_template(groups.assign(decision=["", "reject", "confirm"]), path=tmp_path / "groups.csv")
    reviewed = review.merge(groups, keys=["group_id"], review_file=path)
    assert reviewed["decided_by"].tolist() == ["auto", "reviewer", "reviewer"]
    b = bucketed(reviewed)
    assert b.of_cause("subpop").tolist() == [3, 4, 7, 8]
    assert b.memorized_bucket_idx.tolist() == [1, 2, 5, 6, 9, 10]
