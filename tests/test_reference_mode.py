"""Reference mode on the real released files: FZ's pairs + ciFAIR's list, no training, CPU, seconds.

The counts are checked against independent computations on the raw files
(np.unique, a plain union-find, pandas joins), not against stored numbers, except the
documented counts of FZ's file, which are also checked on the official CIFAR-100 copy.
"""
import numpy as np
import pandas as pd
import pytest

from lib import buckets, cifair as C, fz_format as F, reference, render, subpop


@pytest.fixture(scope="module")
def released():
    pairs = F.read_pairs(reference.fetch("fz_pairs_cifar100"))
    cifair = C.read_list(reference.fetch("cifair_cifar100"))
    labels = np.load(reference.fetch("cscores_cifar100"))["labels"].astype(np.int64)  # official train labels
    return pairs, cifair, labels


@pytest.fixture(scope="module")
def built(released):
    pairs, cifair, labels = released
    groups = buckets.reference_groups(pairs=pairs, train_labels=labels, min_train=2)
    b = buckets.from_reference(pairs=pairs, cifair=cifair, groups=groups)
    return groups, b


def union_find_groups(tr, tt, min_train):
    """Train-point groups by a plain union-find over shared test points (independent of scipy)."""
    parent = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for a, t in zip(tr.tolist(), tt.tolist()):
        parent[find(("tr", a))] = find(("tt", t))
    comps = {}
    for a in set(tr.tolist()):
        comps.setdefault(find(("tr", a)), []).append(a)
    return sorted(sorted(c) for c in comps.values() if len(c) >= min_train)


def test_released_files_have_the_documented_shape(released):
    pairs, cifair, labels = released
    assert len(pairs) == 1015 and len(cifair) == 891 and len(labels) == 50000
    assert set(cifair["judgment"]) == {0, 1, 2}


def test_fz_pairs_on_the_official_copy(released, cifar_full):
    """FZ's file: 1,015 pairs over 964 unique train and 888 unique test points, all same-label on our copy."""
    pairs, _, labels = released
    assert len(pairs) == 1015
    assert len(np.unique(pairs.train_idx)) == 964 and len(np.unique(pairs.test_idx)) == 888
    ds = cifar_full
    assert ds.official and not ds.is_subset
    same = ds.y_train[pairs.train_idx] == ds.y_test[pairs.test_idx]
    assert int(same.sum()) == 1015
    assert np.array_equal(ds.y_train, labels)  # the C-score release's official train labels, all 50,000
    F.load_released_pairs(ds=ds, download=False)  # joining with these images is allowed


def test_counts_match_the_raw_files(released, built):
    pairs, cifair, _ = released
    groups, b = built
    counts = buckets.count_table(pairs=pairs, groups=groups, b=b)
    assert counts["high-influence pairs"] == len(pairs.train_idx)
    assert counts["unique train points in pairs"] == counts["memorized points"] == len(np.unique(pairs.train_idx))
    assert counts["unique test points in pairs"] == len(np.unique(pairs.test_idx))
    assert b.memorized_idx.tolist() == np.unique(pairs.train_idx).tolist()
    expected = union_find_groups(pairs.train_idx, pairs.test_idx, min_train=2)
    assert sorted(subpop.parse_idx(s).tolist() for s in groups["train_idx"]) == expected
    assert counts["groups (graph rule)"] == len(expected)
    assert counts["train points in confirmed groups"] == sum(map(len, expected))  # no mixed-label group here
    # ciFAIR's duplicates of memorized points, by a plain pandas join, precedence exact > near
    on_mem = cifair[cifair["train_idx"].isin(pairs.train_idx)]
    exact = set(on_mem.loc[on_mem["judgment"] == 0, "train_idx"])
    near = set(on_mem.loc[on_mem["judgment"].isin([1, 2]), "train_idx"]) - exact
    assert set(b.of_cause("exact").tolist()) == exact and set(b.of_cause("near").tolist()) == near
    in_groups = {i for g in expected for i in g}
    assert set(b.of_cause("subpop").tolist()) == in_groups - exact - near
    assert b.duplicate_test_idx.tolist() == sorted(set(on_mem["test_idx"]))


def test_buckets_partition_the_memorized_set(released, built):
    pairs, _, _ = released
    groups, b = built
    assert np.intersect1d(b.leakage_shift_idx, b.memorized_bucket_idx).size == 0
    np.testing.assert_array_equal(np.union1d(b.leakage_shift_idx, b.memorized_bucket_idx), b.memorized_idx)
    assert len(b.cause) == len(b.leakage_shift_idx) and set(b.cause) <= set(buckets.CAUSES)
    counts = buckets.count_table(pairs=pairs, groups=groups, b=b)
    assert sum(counts[f"bucket pairs: {c}"] for c in buckets.CAUSES) == counts["Leakage+Shift pairs"]
    assert counts["Leakage+Shift pairs"] + counts["Memorized bucket pairs"] == counts["high-influence pairs"]


def test_judgment_2_and_a_rejected_group_change_the_buckets(released, built):
    pairs, cifair, _ = released
    groups, b = built
    b01 = buckets.from_reference(pairs=pairs, cifair=cifair, groups=groups, kinds={0: "exact", 1: "near"})
    very_similar = set(cifair.loc[cifair["judgment"] == 2, "train_idx"]) & set(b.memorized_idx.tolist())
    assert len(b01.of_cause("near")) < len(b.of_cause("near"))
    assert set(b.of_cause("near").tolist()) - set(b01.of_cause("near").tolist()) <= very_similar

    rejected = groups.assign(final=np.arange(len(groups)) != 0)  # a reviewer rejects group 0
    rej = buckets.from_reference(pairs=pairs, cifair=cifair, groups=rejected)
    first = subpop.parse_idx(groups.loc[0, "train_idx"])
    moved = np.setdiff1d(first, np.concatenate([b.of_cause("exact"), b.of_cause("near")]))
    assert moved.size and np.isin(moved, rej.memorized_bucket_idx).all()
    assert len(rej.memorized_bucket_idx) == len(b.memorized_bucket_idx) + moved.size


def test_paper_table_puts_our_counts_beside_the_papers(released, built):
    pairs, _, _ = released
    groups, b = built
    counts = buckets.count_table(pairs=pairs, groups=groups, b=b)
    summ = buckets.summary(b, mem=F.scores_from_pairs(pairs, n_train=50000).mem,
                           pair_train_idx=pairs.train_idx, pair_test_idx=pairs.test_idx)
    table = buckets.paper_comparison({"ours": (counts, summ)})
    row = table.set_index("quantity").loc["Memorized bucket"]
    assert row["paper"] == "499" and row["ours: points"] == str(len(b.memorized_bucket_idx))
    assert table.set_index("quantity").loc["released set ('1,015 memorized points')", f"ours: {buckets.PAIRS_OF_POINTS}"] == "1015"
    # the markdown table reads back to the DataFrame: header, then every cell of every row
    lines = render.markdown(table, index=False).splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0] == list(table.columns) and set(lines[1]) <= set("|-: ")
    assert cells[2:] == table.astype(str).values.tolist()
    # memorization means from the file: FZ's mem is one value per train point
    assert summ.loc["all memorized", "mean_mem"] == pytest.approx(
        pd.Series(pairs.mem).groupby(pairs.train_idx).first().mean())
