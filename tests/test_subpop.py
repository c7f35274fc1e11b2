"""Sub-population groups on hand-made influence graphs with known components."""
import numpy as np
import pytest
import pandas as pd

from lib import subpop

# (train, test) edges of a hand-made graph; train 18 is not memorized.
PAIRS = np.array([
    (10, 100), (11, 100),                        # A: two train points share test 100
    (12, 101), (13, 101), (13, 102), (14, 102),  # B: a chain 12-101-13-102-14
    (15, 103),                                   # a lone memorized point
    (16, 104), (16, 105),                        # one train point, two tests: still alone
    (17, 106), (18, 106),                        # 18 not memorized -> 17 alone
    (5, 107), (19, 107),                         # C: shares a test, but two different labels
])
INFL = np.linspace(0.2, 0.8, len(PAIRS))
MEMORIZED = np.array([5, 10, 11, 12, 13, 14, 15, 16, 17, 19])
Y = np.zeros(20, np.int64)                       # class 0 has 20 - 9 = 11 points
Y[[0, 1, 10, 11]] = 1                            # class 1: 4 points
Y[[2, 12, 13, 14]] = 2                           # class 2: 4 points
Y[5], Y[19] = 3, 4


def groups(pairs=PAIRS, infl=INFL, min_train=2):
    return subpop.find_groups(train_idx=pairs[:, 0], test_idx=pairs[:, 1], infl=infl, memorized_idx=MEMORIZED,
                              y_train=Y, min_train=min_train)


def test_components_of_a_hand_made_graph():
    tr_nodes, tr_comp, tt_nodes, tt_comp = subpop.components(train_idx=PAIRS[:, 0], test_idx=PAIRS[:, 1])
    comp = dict(zip(tr_nodes.tolist(), tr_comp.tolist()))
    # numbered by smallest train index: {5,19}=0, {10,11}=1, {12,13,14}=2, 15=3, 16=4, 17..18=5
    assert comp == {5: 0, 19: 0, 10: 1, 11: 1, 12: 2, 13: 2, 14: 2, 15: 3, 16: 4, 17: 5, 18: 5}
    assert dict(zip(tt_nodes.tolist(), tt_comp.tolist())) == {100: 1, 101: 2, 102: 2, 103: 3, 104: 4, 105: 4,
                                                              106: 5, 107: 0}


def test_groups_are_components_with_enough_memorized_train_points():
    g = groups()
    assert g["train_idx"].tolist() == ["5 19", "10 11", "12 13 14"]
    assert g["test_idx"].tolist() == ["107", "100", "101 102"]
    assert g["n_train"].tolist() == [2, 2, 3] and g["n_test"].tolist() == [1, 1, 2]
    assert g["n_pairs"].tolist() == [2, 2, 4]
    assert g["group_id"].tolist() == [5, 10, 12]  # smallest train index: stable key for review files
    # class and size relative to the class's train count
    assert g["class"].tolist()[1:] == [1, 2]
    np.testing.assert_allclose(g["size_rel_class"].tolist()[1:], [2 / 4, 3 / 4])
    # a group mixing labels is listed but not confirmed automatically
    assert g["verdict"].tolist() == ["reject", "confirm", "confirm"]
    np.testing.assert_allclose(g.loc[2, ["infl_min", "infl_max"]].to_numpy(float), INFL[[2, 5]])
    assert subpop.confirmed_train_idx(g).tolist() == [10, 11, 12, 13, 14]


def test_min_train_and_order_of_pairs():
    assert groups(min_train=3)["train_idx"].tolist() == ["12 13 14"]
    perm = np.random.default_rng(0).permutation(len(PAIRS))
    pd.testing.assert_frame_equal(groups(pairs=PAIRS[perm], infl=INFL[perm]), groups())


def test_final_column_overrides_verdicts():
    g = groups()
    g["final"] = [True, False, True]
    assert subpop.confirmed_train_idx(g).tolist() == [5, 12, 13, 14, 19]
    g["final"] = ["True", "False", "True"]  # text from a bare read_csv is refused, not guessed at
    with pytest.raises(TypeError, match="final"):
        subpop.confirmed_train_idx(g)


def test_groups_round_trip_through_the_run_folder(tmp_path):
    from lib.run_folder import RunFolder
    run = RunFolder(tmp_path)
    g = groups()
    g["final"] = [True, False, True]
    run.write_groups(g.assign(decision="", decided_by="auto"))
    back = run.read_groups()
    assert back["final"].dtype == bool and back["group_id"].tolist() == g["group_id"].tolist()
    assert subpop.confirmed_train_idx(back).tolist() == [5, 12, 13, 14, 19]


def test_index_cells_round_trip():
    assert subpop.format_idx([3, 1, 2]) == "1 2 3"
    assert subpop.parse_idx("1 2 3").tolist() == [1, 2, 3]
    assert subpop.parse_idx(float("nan")).size == 0 and subpop.parse_idx("").size == 0


def test_group_rows_put_train_images_then_test_images():
    x_train = np.arange(20)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # image i is filled with i
    x_test = (np.arange(110)[:, None, None, None] * np.ones((1, 2, 2, 3))).astype(np.uint8)
    mem = np.linspace(0, 1, 20)
    g = groups()
    rows = subpop.group_rows(g.iloc[1:], x_train=x_train, x_test=x_test, y_train=Y, y_test=np.full(110, 2),
                             class_names=["a", "b", "c", "d", "e"], train_idx=PAIRS[:, 0], test_idx=PAIRS[:, 1],
                             infl=INFL, mem=mem)
    assert [[int(img[0, 0, 0]) for img, _ in r] for r in rows] == [[10, 11, 100], [12, 13, 14, 101, 102]]
    assert rows[0][0][1] == f"train 10\nb\nmem {mem[10]:.2f}"
    assert rows[1][4][1] == f"TEST 102\nc\ninfl {INFL[5]:.2f}"  # the larger of pairs (13,102), (14,102)
