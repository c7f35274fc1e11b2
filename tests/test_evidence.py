"""The paper's evidence tables: duplicate evidence, ciFAIR vs finder, pair places; exact counts on the official copy."""
import numpy as np
import pandas as pd
import pytest

from lib import evidence, fz_format


def _dups():
    return pd.DataFrame({
        "train_idx": [1, 2, 3, 4, 9], "test_idx": [10, 20, 30, 40, 90], "train_label": [0, 1, 2, 3, 0],
        "test_label": [0, 5, 2, 3, 0], "kind": ["exact", "exact", "near", "review", "near"],
        "score": [1.0, 0.97, 0.93, 0.85, 0.95], "memorized": [True, True, True, True, False],
        "verdict": ["confirm", "confirm", "confirm", "reject", "confirm"],
        "source": ["cifair", "cifair", "cifair", "finder", "finder"], "judgment": [0, 0, 1, -1, -1],
        "finder_kind": ["exact", "none", "near", "review", "near"], "final": [True, True, True, False, True]})


def _pairs():
    return fz_format.Pairs(train_idx=np.array([1, 3, 3, 5, 6]), test_idx=np.array([10, 31, 30, 50, 50]),
                           infl=np.array([.9, .2, .4, .3, .35]), mem=np.array([.8, .5, .5, .6, .7]))


def test_duplicate_evidence_flags_copies_and_label_conflicts():
    x_tr = np.zeros((12, 32, 32, 3), np.uint8)
    x_te = np.zeros((100, 32, 32, 3), np.uint8)
    x_te[20, 0, 0, 0] = 57  # pair (2, 20) differs by re-encoding noise, not byte-identical
    mem = np.linspace(0, 1, 12)
    ev = evidence.duplicate_evidence(_dups(), kinds=("exact",), memorized_idx=[1, 2, 3, 4], pairs=_pairs(), mem=mem,
                                     x_train=x_tr, x_test=x_te)
    assert ev["train_idx"].tolist() == [2, 1]  # label conflict first
    assert ev["label_agree"].tolist() == [False, True] and ev["byte_identical"].tolist() == [False, True]
    assert ev["max_pixel_difference"].tolist() == [57, 0]
    assert ev["fz_pair"].tolist() == [False, True] and ev["infl"].iloc[1] == pytest.approx(0.9)
    near = evidence.duplicate_evidence(_dups(), kinds=("near", "review"), memorized_idx=[1, 2, 3, 4], pairs=_pairs(),
                                       mem=mem, x_train=None, x_test=None)
    assert sorted(near["train_idx"]) == [3, 4] and near["max_pixel_difference"].eq(-1).all()  # 9 is not memorized
    caption = evidence.pair_caption(ev.iloc[0], class_names=[f"c{i}" for i in range(6)])
    assert "c1 ≠ c5" in caption and "ciFAIR exact" in caption and "max |Δ| 57" in caption


def test_finder_vs_cifair_counts_points_both_ways():
    table, points = evidence.finder_vs_cifair(_dups(), memorized_idx=[1, 2, 3, 4, 7])
    got = points.set_index("train_idx")
    assert got.loc[2, "cifair"] == "exact" and got.loc[2, "finder"] == "none" and not got.loc[2, "agree"]
    assert got.loc[4, "cifair"] == "not listed" and got.loc[4, "finder"] == "review" and got.loc[4, "agree"]
    assert got.loc[7, "finder"] == "none" and got.loc[7, "agree"]
    assert table.loc["exact", "exact"] == 1 and table.loc["exact", "none"] == 1 and table.to_numpy().sum() == 5


def test_pair_places_partition_the_pairs():
    groups = pd.DataFrame({"group_id": [5], "train_idx": ["5 6"]})
    places = evidence.pair_places(_pairs(), groups)
    assert places["place"].tolist() == ["pair", "pair", "pair", "group", "group"]
    assert places["group_id"].tolist() == [-1, -1, -1, 5, 5]


@pytest.fixture(scope="module")
def released():
    from lib import cifair
    return fz_format.load_released_pairs(), cifair.load(dataset="cifar100")


def test_released_pairs_counted_as_the_paper_evidence_needs(released):
    pairs, cf = released
    assert pairs.summary() == {"pairs": 1015, "unique train points": 964, "unique test points": 888}
    assert evidence.cifair_pair_counts(pairs, cf) == {"all": 97, "exact": 3, "near-duplicate": 75, "very similar": 19}


def test_disagreement_pairs_both_ways():
    dups = _dups()
    _, points = evidence.finder_vs_cifair(dups, memorized_idx=[1, 2, 3, 4, 9])
    d = evidence.disagreements(dups, points)
    assert d["ciFAIR only"][["train_idx", "test_idx"]].values.tolist() == [[2, 20]]  # finder said none
    assert d["finder only"][["train_idx", "test_idx"]].values.tolist() == [[9, 90]]  # ciFAIR does not list it


def test_fz_pairs_each_reviewable_in_exactly_one_place_and_the_papers_counts(released, cifar_full, tmp_path):
    """On the official copy: 108 groups over 233 points (228 once duplicates take precedence), and every one of
    the 1,015 pairs listed on exactly one group or pair page of the manifest."""
    from lib import buckets, pages
    pairs, cf = released
    ds = cifar_full
    groups = buckets.reference_groups(pairs=pairs, train_labels=ds.y_train, min_train=2)
    b = buckets.from_reference(pairs=pairs, cifair=cf, groups=groups)
    counts = buckets.count_table(pairs=pairs, groups=groups, b=b)
    assert (len(groups), counts["train points in confirmed groups"], counts["bucket points: subpop"]) == (108, 233, 228)
    assert (counts["bucket points: exact"], counts["bucket points: near"]) == (4, 74 + 19)
    mem = fz_format.scores_from_pairs(pairs, n_train=len(ds.y_train)).mem
    places = evidence.pair_places(pairs, groups)
    g = pages.group_pages(groups, pairs=pairs, mem=mem, x_train=ds.x_train, x_test=ds.x_test, y_train=ds.y_train,
                          y_test=ds.y_test, class_names=ds.class_names, title="groups", stem=tmp_path / "04_groups")
    p = pages.pair_pages(places, pairs=pairs, mem=mem, x_train=ds.x_train, x_test=ds.x_test, y_train=ds.y_train,
                         class_names=ds.class_names, title="pairs", stem=tmp_path / "04_pairs")
    reach = pages.reachable_pairs(pages.manifest(groups=g, pairs=p), places=places)
    assert len(reach) == 1015 and reach.eq(1).all()
