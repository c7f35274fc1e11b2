"""Data layer: official-copy verdict, class subsets, caps, duplicates."""
import pickle

import numpy as np
import pytest

from lib import data


def test_shared_resplit_is_not_official(smoke_data):
    assert smoke_data.official is False
    with pytest.raises(data.DataError, match="not the official copy"):
        data.require_official(smoke_data, "ciFAIR's list")


def make_tiny_cifar100(folder, n_train=20, n_test=10, seed=0):
    """A tiny dataset in the official cifar-100-python on-disk format."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"class{i}" for i in range(100)]
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(), "filenames": [f"{i}.png" for i in range(n)], "batch_label": split}
        pickle.dump(blob, open(folder / split, "wb"))
    pickle.dump({"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]}, open(folder / "meta", "wb"))
    return folder


def test_checksum_verdict_on_tiny_official_format_copy(tmp_path, monkeypatch):
    folder = make_tiny_cifar100(tmp_path / "cifar-100-python")
    assert not data.is_official(folder, "cifar100")  # real official checksums: a made-up file cannot match
    # Publish this tiny copy's checksums as "official": the verdict must flip to official, and a single
    # changed byte must flip it back.
    sums = {n: data.md5(folder / n) for n in ("train", "test", "meta")}
    monkeypatch.setitem(data.SOURCES, "cifar100", {**data.SOURCES["cifar100"], "files": sums})
    assert data.is_official(folder, "cifar100")
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.official and ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    raw = bytearray((folder / "test").read_bytes())
    raw[-10] ^= 1
    (folder / "test").write_bytes(bytes(raw))
    report = data.checksum_report(folder, "cifar100")
    assert report["train"][1] and not report["test"][1]


def test_nhwc_layout_matches_on_disk_planes(tmp_path):
    folder = make_tiny_cifar100(tmp_path / "cifar-100-python")
    raw = pickle.load(open(folder / "train", "rb"))
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    i = 3
    flat = raw["data"][i]  # R plane (1024), G plane, B plane
    assert ds.x_train[i, 0, 1, 0] == flat[1] and ds.x_train[i, 0, 1, 1] == flat[1024 + 1]
    assert ds.x_train[i, 2, 0, 2] == flat[2048 + 2 * 32]
    assert ds.coarse_train[i] == raw["coarse_labels"][i]


def test_missing_and_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(data.DataError, match="cifar-100-python.*CIFAR_DATA_DIR"):
        data.load_cifar(data_dir=str(tmp_path), download_missing=False)


def test_class_subset_keeps_labels_consistent(smoke, smoke_data):
    full = data.load_cifar(seed=smoke.seed)
    ds = data.load_cifar(classes=[7, 3, 42], n_train_per_class=30, n_test_per_class=10, seed=5)
    assert ds.class_names == [full.class_names[c] for c in (7, 3, 42)]
    assert np.bincount(ds.y_train).tolist() == [30, 30, 30] and np.bincount(ds.y_test).tolist() == [10, 10, 10]
    # each image and label maps back to the on-disk row it came from
    assert np.array_equal(ds.x_train, full.x_train[ds.idx_train])
    assert np.array_equal(ds.classes[ds.y_train], full.y_train[ds.idx_train])
    assert np.array_equal(ds.classes[ds.y_test], full.y_test[ds.idx_test])
    assert np.array_equal(ds.coarse_train, full.coarse_train[ds.idx_train])


def test_caps_are_deterministic_from_seed():
    a = data.load_cifar(classes=[0, 1], n_train_per_class=20, seed=1)
    b = data.load_cifar(classes=[0, 1], n_train_per_class=20, seed=1)
    c = data.load_cifar(classes=[0, 1], n_train_per_class=20, seed=2)
    assert np.array_equal(a.idx_train, b.idx_train) and not np.array_equal(a.idx_train, c.idx_train)


def test_exact_duplicate_counts_find_planted_copies(smoke_data):
    import dataclasses
    x_tr, x_te = smoke_data.x_train.copy(), smoke_data.x_test.copy()
    base = data.exact_duplicate_counts(smoke_data)
    x_tr[1] = x_tr[0]          # one more copy within train
    x_te[0] = x_tr[5]          # one more test image with a train copy
    x_te[1] = x_tr[6]
    planted = data.exact_duplicate_counts(dataclasses.replace(smoke_data, x_train=x_tr, x_test=x_te))
    assert planted["within_train"] >= base["within_train"] + 1
    assert planted["test_with_train_copy"] >= base["test_with_train_copy"] + 2
