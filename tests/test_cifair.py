"""ciFAIR's lists: parsing the published CRLF files and refusing non-official copies."""
import pandas as pd
import pytest

from lib import cifair, data


def test_read_published_list():
    lst = cifair.load(dataset="cifar100")
    assert len(lst) == 891
    assert lst["judgment"].value_counts().to_dict() == {1: 582, 2: 270, 0: 39}
    assert lst.loc[0, ["test_idx", "train_idx", "judgment"]].tolist() == [1100, 24083, 0]
    assert lst["test_idx"].between(0, 9999).all() and lst["train_idx"].between(0, 49999).all()


def test_crlf_and_bad_judgment(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"TestID,TrainID,Distance,Judgment\r\n3,4,0.5,1\r\n5,6,0.0,0\r\n")
    got = cifair.read_list(path)
    assert got["judgment_name"].tolist() == ["near-duplicate", "exact"]
    path.write_bytes(b"TestID,TrainID,Distance,Judgment\r\n3,4,0.5,7\r\n")
    with pytest.raises(cifair.CifairError, match="line 2: judgment 7"):
        cifair.read_list(path)


def test_non_official_copy_refuses_comparison(non_official_data, smoke_data):
    lst = cifair.load(dataset="cifar100")
    ours = pd.DataFrame({"train_idx": lst["train_idx"], "test_idx": lst["test_idx"]})
    assert not non_official_data.official  # all images, two train rows out of the official order
    with pytest.raises(data.DataError, match="not the official copy"):
        cifair.compare(ds=non_official_data, cifair=lst, found=ours)
    with pytest.raises(data.DataError, match="needs the full cifar100"):
        cifair.compare(ds=smoke_data, cifair=lst, found=ours)  # official, but a class subset


def test_compare_counts_by_judgment_on_the_official_copy(cifar_full):
    assert cifar_full.verdict == data.OFFICIAL_CONTENT  # the real copy, no faked verdict
    lst = cifair.load(dataset="cifar100")
    ours = lst[lst["judgment"] != 2][["train_idx", "test_idx"]]
    ours = pd.concat([ours.iloc[1:], pd.DataFrame({"train_idx": [7], "test_idx": [7]})])  # one missed, one extra
    res = cifair.compare(ds=cifar_full, cifair=lst, found=ours).set_index("judgment")
    miss0 = int(lst.iloc[0]["judgment"])
    assert res.loc["very similar", "found"] == 0 and res.loc["very similar", "missed"] == 270
    assert res.loc[cifair.JUDGMENTS[miss0], "missed"] == 1
    assert res.loc["extra (ours only)", "found"] == 1
    assert res.loc["all", "listed"] == 891 and res.loc["all", "found"] == 891 - 270 - 1


def test_cifair_exact_pairs_on_the_official_copy(cifar_full):
    """ciFAIR's judgment-0 pairs on our copy: 10 of 39 byte-identical, 8 with different fine labels
    (../shared/data/cifar100/README.md, check 3): the indices name the images ciFAIR judged."""
    lst = cifair.load(dataset="cifar100")
    exact = lst[lst["judgment"] == 0]
    tr, te = exact["train_idx"].to_numpy(), exact["test_idx"].to_numpy()
    identical = (cifar_full.x_train[tr] == cifar_full.x_test[te]).all(axis=(1, 2, 3))
    assert len(exact) == 39 and int(identical.sum()) == 10
    assert int((cifar_full.y_train[tr] != cifar_full.y_test[te]).sum()) == 8
    # the byte-identical ones with different labels are label conflicts of the copy itself
    conflicts = data.label_conflicts(cifar_full).query("kind == 'train-test'")
    pairs = set(zip(conflicts["row_a"], conflicts["row_b"]))
    differ = cifar_full.y_train[tr] != cifar_full.y_test[te]
    assert {(a, b) for a, b, i, d in zip(tr, te, identical, differ) if i and d} <= pairs


def test_duplicates_table_without_finder_keeps_cifairs_judgments():
    lst = cifair.load(dataset="cifar100")
    dup = cifair.duplicates_table(cifair=lst, finder=None)
    assert len(dup) == 891 and set(dup["kind"]) == {"exact", "near"} and dup["verdict"].eq("confirm").all()
    assert dup.loc[0, ["train_idx", "test_idx"]].tolist() == [24083, 1100] and dup["score"].isna().all()
