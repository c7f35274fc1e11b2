"""ciFAIR's lists: parsing the published CRLF files and refusing non-official copies."""
import numpy as np
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


def test_non_official_copy_refuses_comparison(smoke_data):
    full = data.load_cifar(dataset="cifar100")  # the re-split copy: all images, not the official order
    assert not full.official
    lst = cifair.load(dataset="cifar100")
    ours = pd.DataFrame({"train_idx": lst["train_idx"], "test_idx": lst["test_idx"]})
    with pytest.raises(data.DataError, match="not the official copy"):
        cifair.compare(ds=full, cifair=lst, found=ours)
    with pytest.raises(data.DataError):
        cifair.compare(ds=smoke_data, cifair=lst, found=ours)


def test_compare_counts_by_judgment_on_an_official_copy(smoke_data):
    # an official, full copy is simulated by flipping the checksum verdict of the loaded copy
    full = data.load_cifar(dataset="cifar100")
    official = type(full)(**{**full.__dict__, "official": True})
    lst = cifair.load(dataset="cifar100")
    ours = lst[lst["judgment"] != 2][["train_idx", "test_idx"]]
    ours = pd.concat([ours.iloc[1:], pd.DataFrame({"train_idx": [7], "test_idx": [7]})])  # one missed, one extra
    res = cifair.compare(ds=official, cifair=lst, found=ours).set_index("judgment")
    miss0 = int(lst.iloc[0]["judgment"])
    assert res.loc["very similar", "found"] == 0 and res.loc["very similar", "missed"] == 270
    assert res.loc[cifair.JUDGMENTS[miss0], "missed"] == 1
    assert res.loc["extra (ours only)", "found"] == 1
    dup = cifair.as_duplicates(lst, y_train=None, y_test=None, memorized_idx=np.array([24083]))
    assert set(dup["kind"]) == {"exact", "near"} and dup["verdict"].eq("confirm").all()
    assert dup.loc[0, "memorized"] and (dup["train_label"] == -1).all()
