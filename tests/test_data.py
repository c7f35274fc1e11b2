"""Data layer: the three official-copy verdicts, class subsets, caps, duplicates, label conflicts."""
import dataclasses
import hashlib
import pickle

import numpy as np
import pytest

from lib import data


def _flat_md5(x):
    """md5 of NHWC images put back in the on-disk (N, 3072) plane layout."""
    return hashlib.md5(np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1).tobytes()).hexdigest()


def test_built_copy_is_official_content(cifar_full):
    assert cifar_full.verdict == data.OFFICIAL_CONTENT and cifar_full.official
    assert "content digests" in cifar_full.verdict_reason and cifar_full.verdict_reason.endswith(".") and "\n" not in cifar_full.verdict_reason
    data.require_official(cifar_full, "FZ's pairs")  # either official verdict is accepted
    # the published digests, recomputed independently from the loaded arrays
    content = data.SOURCES["cifar100"]["content"]
    for split, x, y in (("train", cifar_full.x_train, cifar_full.y_train), ("test", cifar_full.x_test, cifar_full.y_test)):
        assert _flat_md5(x) == content[split]["data"]
        assert hashlib.md5(y.astype(np.int64).tobytes()).hexdigest() == content[split]["labels"]
    assert (len(cifar_full.y_train), len(cifar_full.y_test)) == (50000, 10000) and not cifar_full.is_subset


def test_rows_swapped_copy_is_not_official_and_refused(cifar_full, non_official_data, non_official_dir):
    ds = non_official_data
    moved = np.flatnonzero((ds.x_train != cifar_full.x_train).any(axis=(1, 2, 3)))
    assert len(moved) == 2  # two train images (with their labels) trade places; nothing else differs
    a, b = moved
    assert np.array_equal(ds.x_train[[a, b]], cifar_full.x_train[[b, a]])
    assert ds.y_train[[a, b]].tolist() == cifar_full.y_train[[b, a]].tolist() and ds.y_train[a] != ds.y_train[b]
    assert np.array_equal(ds.x_test, cifar_full.x_test) and np.array_equal(ds.y_test, cifar_full.y_test)
    assert ds.verdict == data.NOT_OFFICIAL and not ds.official
    assert "train data md5" in ds.verdict_reason and "train labels md5" in ds.verdict_reason
    assert "test data" not in ds.verdict_reason  # the test split is untouched
    with pytest.raises(data.DataError, match="not the official copy") as e:
        data.require_official(ds, "ciFAIR's list")
    msg = str(e.value)
    assert "\n" not in msg and str(non_official_dir / "cifar-100-python") in msg and "'not official'" in msg


def test_subset_of_an_official_copy_is_refused_as_a_subset(smoke_data):
    assert smoke_data.official and smoke_data.is_subset
    with pytest.raises(data.DataError, match="needs the full cifar100"):
        data.require_official(smoke_data, "ciFAIR's list")


def test_official_flag_cannot_contradict_the_verdict(smoke_data):
    with pytest.raises(data.DataError, match="contradicts"):
        dataclasses.replace(smoke_data, official=False)
    with pytest.raises(data.DataError, match="contradicts"):
        dataclasses.replace(smoke_data, verdict=data.NOT_OFFICIAL)


def make_tiny_cifar100(folder, n_train=20, n_test=10, seed=0, protocol=pickle.DEFAULT_PROTOCOL):
    """A tiny dataset in the official cifar-100-python on-disk format."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"class{i}" for i in range(100)]
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(), "filenames": [f"{i}.png" for i in range(n)], "batch_label": split}
        with open(folder / split, "wb") as f:
            pickle.dump(blob, f, protocol=protocol)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    return folder


def _publish(monkeypatch, **entries):
    """Make `entries` (files=..., content=...) the "official" cifar100 checksums for this test."""
    monkeypatch.setitem(data.SOURCES, "cifar100", {**data.SOURCES["cifar100"], **entries})


def test_tiny_copy_with_published_file_md5s_is_official_file(tmp_path, monkeypatch):
    folder = make_tiny_cifar100(tmp_path / "cifar-100-python")
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.verdict == data.NOT_OFFICIAL and "content differs too" in ds.verdict_reason
    assert not data.is_official(folder, "cifar100")  # real official checksums: a made-up file cannot match
    # Publish this tiny copy's file md5s as "official": the verdict flips to official file...
    _publish(monkeypatch, files={n: data.md5(folder / n) for n in ("train", "test", "meta")})
    assert data.is_official(folder, "cifar100")
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.verdict == data.OFFICIAL_FILE and ds.official and "Every file's md5" in ds.verdict_reason
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    # ... and a single changed pixel flips it back, naming the file
    blob = pickle.load(open(folder / "test", "rb"))
    blob["data"][0, 0] ^= 1
    pickle.dump(blob, open(folder / "test", "wb"))
    report = data.checksum_report(folder, "cifar100")
    assert report["train"][1] and not report["test"][1]
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.verdict == data.NOT_OFFICIAL and "md5 of test differs" in ds.verdict_reason
    # the md5s taken while loading are the files' own, so notebook 00's report need not read the files again
    assert ds.file_md5 == {n: data.md5(folder / n) for n in ("train", "test", "meta")}
    assert data.checksum_report(folder, "cifar100", ds.file_md5) == report


def test_tiny_copy_with_published_content_is_official_content(tmp_path, monkeypatch):
    folder = make_tiny_cifar100(tmp_path / "cifar-100-python", protocol=2)
    blobs = {n: pickle.load(open(folder / n, "rb"), encoding="latin1") for n in ("train", "test")}
    _publish(monkeypatch, content=data.content_digests(blobs))
    # the same arrays written again with another pickle protocol: other file bytes, same content
    make_tiny_cifar100(tmp_path / "cifar-100-python", protocol=4)
    _publish(monkeypatch, files={n: data.md5(folder / n) for n in ("train", "test", "meta")},
             content=data.SOURCES["cifar100"]["content"])
    assert data.load_cifar(data_dir=str(tmp_path), download_missing=False).verdict == data.OFFICIAL_FILE
    make_tiny_cifar100(tmp_path / "cifar-100-python", protocol=2)
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.verdict == data.OFFICIAL_CONTENT and ds.official
    assert "md5 of train, test differ from" in ds.verdict_reason  # meta is byte-identical


def test_cifar10_has_a_file_verdict_only():
    verdict, reason = data.verdict_of(dataset="cifar10", file_md5={}, blobs={})
    assert verdict == data.NOT_OFFICIAL and "no content digests" in reason
    sums = data.SOURCES["cifar10"]["files"]
    assert data.verdict_of(dataset="cifar10", file_md5=dict(sums), blobs={})[0] == data.OFFICIAL_FILE


def test_unreadable_pickle_names_the_file(tmp_path):
    folder = make_tiny_cifar100(tmp_path / "cifar-100-python")
    (folder / "train").write_bytes(b"not a pickle")
    with pytest.raises(data.DataError, match=r"cifar-100-python/train: not a CIFAR pickle"):
        data.load_cifar(data_dir=str(tmp_path), download_missing=False)


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


def test_class_subset_keeps_labels_consistent(smoke, smoke_data, cifar_full):
    full = cifar_full
    ds = data.subset(full, classes=[7, 3, 42], n_train_per_class=30, n_test_per_class=10, seed=5)
    assert ds.class_names == [full.class_names[c] for c in (7, 3, 42)]
    assert np.bincount(ds.y_train).tolist() == [30, 30, 30] and np.bincount(ds.y_test).tolist() == [10, 10, 10]
    # each image and label maps back to the on-disk row it came from
    assert np.array_equal(ds.x_train, full.x_train[ds.idx_train])
    assert np.array_equal(ds.classes[ds.y_train], full.y_train[ds.idx_train])
    assert np.array_equal(ds.classes[ds.y_test], full.y_test[ds.idx_test])
    assert np.array_equal(ds.coarse_train, full.coarse_train[ds.idx_train])
    # load_cifar (here through the smoke parameters) subsets exactly as subset() does
    same = data.subset(full, classes=smoke.classes, n_train_per_class=smoke.n_train_per_class,
                       n_test_per_class=smoke.n_test_per_class, seed=smoke.seed)
    assert np.array_equal(same.idx_train, smoke_data.idx_train) and np.array_equal(same.x_test, smoke_data.x_test)
    with pytest.raises(data.DataError, match="whole dataset"):
        data.subset(smoke_data, classes=[0])


def test_caps_are_deterministic_from_seed(cifar_full):
    a, b, c = (data.subset(cifar_full, classes=[0, 1], n_train_per_class=20, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.idx_train, b.idx_train) and not np.array_equal(a.idx_train, c.idx_train)
    assert data.subset(cifar_full) is cifar_full  # nothing asked: the whole dataset, no copy


def test_exact_duplicate_counts_find_planted_copies(smoke_data):
    x_tr, x_te = smoke_data.x_train.copy(), smoke_data.x_test.copy()
    base = data.exact_duplicate_counts(smoke_data)
    x_tr[1] = x_tr[0]          # one more copy within train
    x_te[0] = x_tr[5]          # one more test image with a train copy
    x_te[1] = x_tr[6]
    planted = data.exact_duplicate_counts(dataclasses.replace(smoke_data, x_train=x_tr, x_test=x_te))
    assert planted["within_train"] >= base["within_train"] + 1
    assert planted["test_with_train_copy"] >= base["test_with_train_copy"] + 2


def test_label_conflicts_find_planted_pairs(smoke_data):
    ds = smoke_data
    x_tr, x_te, y_tr, y_te = ds.x_train.copy(), ds.x_test.copy(), ds.y_train, ds.y_test
    first = lambda mask: int(np.flatnonzero(mask)[0])  # noqa: E731
    rows_tr, rows_te = np.arange(len(y_tr)), np.arange(len(y_te))
    a = 0
    b = first(y_tr != y_tr[a])                           # other class than a
    c = first((y_tr == y_tr[a]) & (rows_tr != a))       # same class as a
    t = 0
    u = first(y_te != y_te[t])                           # other class than t
    d = first(y_tr == y_te[t])                           # train row of t's class
    x_tr[[a, b, c]] = 1                                  # group 1: three train copies of a blank image
    x_te[[t, u]] = 2                                     # group 2: two test copies and one train copy
    x_tr[d] = 2
    base = data.label_conflicts(ds)
    got = data.label_conflicts(dataclasses.replace(ds, x_train=x_tr, x_test=x_te))
    key = lambda df: set(zip(df["kind"].astype(str), df["row_a"], df["row_b"]))  # noqa: E731
    assert key(got) - key(base) == {("train-train", a, b), ("train-train", min(b, c), max(b, c)),
                                    ("train-test", d, u), ("test-test", t, u)}
    assert (got["label_a"] != got["label_b"]).all()
    assert [ds.class_names[i] for i in got["label_b"]] == got["class_b"].tolist()
    # idx_*: on-disk indices of the same images (smoke is a class subset, so they differ from the rows)
    tt = got[got["kind"] == "train-test"]
    assert tt["idx_a"].tolist() == ds.idx_train[tt["row_a"]].tolist()
    assert tt["idx_b"].tolist() == ds.idx_test[tt["row_b"]].tolist()


def test_label_conflicts_on_the_official_copy(cifar_full):
    got = data.label_conflicts(cifar_full)
    # independently: groups of equal sha1 (not data.image_hashes' blake2b), checked pixel for pixel
    x = np.concatenate([cifar_full.x_train, cifar_full.x_test]).reshape(60000, -1)
    y = np.concatenate([cifar_full.y_train, cifar_full.y_test])
    groups = {}
    for i, row in enumerate(x):
        groups.setdefault(hashlib.sha1(row.tobytes()).digest(), []).append(i)
    n_conflicts = 0
    for g in (g for g in groups.values() if len(g) > 1):
        assert all(np.array_equal(x[g[0]], x[i]) for i in g)
        n_conflicts += sum(y[a] != y[b] for n, a in enumerate(g) for b in g[n + 1:])
    assert len(got) == n_conflicts == 17  # ../shared/data/cifar100/README.md, check 5
    assert got["idx_a"].tolist() == got["row_a"].tolist() and got["idx_b"].tolist() == got["row_b"].tolist()
    assert got["kind"].value_counts().to_dict() == {"train-train": 9, "test-test": 2, "train-test": 6}
    assert list(got["kind"].astype(str)) == sorted(got["kind"].astype(str), key=data.CONFLICT_KINDS.index)
    # ciFAIR's first listed exact pair (test 1100, train 24083) is one of them: otter vs seal
    row = got[(got["row_a"] == 24083) & (got["row_b"] == 1100)]
    assert row[["class_a", "class_b"]].values.tolist() == [["otter", "seal"]]
