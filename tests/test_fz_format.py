"""FZ's released file formats: round trips, the real released pairs file, and refusing non-official data.

(The run folder's memorization outputs are tested with lib/run_folder.py in tests/test_run_folder.py.)
"""
import numpy as np
import pytest

from lib import data, fz_format as F, memorization as M


def _pairs():
    return F.Pairs(train_idx=np.array([30592, 10958, 587, 587], np.int32), test_idx=np.array([655, 3697, 8019, 12]),
                   infl=np.array([0.15559501, 0.2083586, 0.5, 0.9]), mem=np.array([0.8, 0.7, 1.0, 1.0], np.float32))


def test_pairs_round_trip(tmp_path):
    p = _pairs()
    path = F.write_pairs(tmp_path / "cifar100_high_infl_pairs_infl0.15_mem0.25.npz", p)
    with np.load(path) as f:  # the raw file has exactly FZ's keys and dtypes
        assert sorted(f.files) == ["infl", "mem", "tr_idx", "tt_idx"]
        assert f["tr_idx"].dtype == np.int64 and f["tt_idx"].dtype == np.int64
        assert f["infl"].dtype == np.float64 and f["mem"].dtype == np.float64
    q = F.read_pairs(path)
    for k in ("train_idx", "test_idx", "infl", "mem"):
        np.testing.assert_array_equal(getattr(q, k), getattr(p, k))
    assert q.summary() == {"pairs": 4, "unique train points": 3, "unique test points": 4}
    odd = F.write_pairs(tmp_path / "pairs.bin", p)  # no ".npz" appended behind the caller's back
    assert odd.name == "pairs.bin" and odd.is_file() and len(F.read_pairs(odd)) == 4


def test_pairs_reject_bad_layout(tmp_path):
    np.savez(tmp_path / "x.npz", tr_idx=np.arange(3), tt_idx=np.arange(3), infl=np.ones(3))
    with pytest.raises(F.FormatError, match="mem"):
        F.read_pairs(tmp_path / "x.npz")
    with pytest.raises(F.FormatError, match="length"):
        F.Pairs(train_idx=np.arange(3), test_idx=np.arange(2), infl=np.ones(3), mem=np.ones(3))
    with pytest.raises(F.FormatError, match="integers"):
        F.Pairs(train_idx=np.array([1.5]), test_idx=np.array([1]), infl=np.ones(1), mem=np.ones(1))


def test_released_pairs_file():
    p = F.load_released_pairs(download=False)  # the copy in MEMAUDIT_REFERENCE_DIR, sha256-verified
    assert len(p) == 1015
    assert p.train_idx.dtype == np.int64 and p.test_idx.dtype == np.int64
    assert p.infl.dtype == np.float64 and p.mem.dtype == np.float64
    assert all(a.shape == (1015,) for a in (p.train_idx, p.test_idx, p.infl, p.mem))
    assert p.summary() == {"pairs": 1015, "unique train points": 964, "unique test points": 888}
    assert p.infl.min() >= 0.15 and p.mem.min() >= 0.25 and p.mem.max() <= 1.0
    assert p.train_idx.max() < 50000 and p.test_idx.max() < 10000
    # one memorization score per train point, repeated on each of its pairs
    for i in np.unique(p.train_idx):
        assert len(np.unique(p.mem[p.train_idx == i])) == 1
    s = F.scores_from_pairs(p, n_train=50000)
    assert s.estimable.sum() == 964 and s.mem[s.estimable].min() >= 0.25 and (s.mem[~s.estimable] == 0).all()
    np.testing.assert_array_equal(M.memorized_idx(s, mem_threshold=0.25), np.unique(p.train_idx))


def test_released_pairs_join_the_official_copy_only(cifar_full, non_official_data, smoke_data):
    p = F.load_released_pairs(ds=cifar_full, download=False)  # official content: allowed, all pairs same-label
    assert len(p) == 1015
    with pytest.raises(data.DataError, match="not the official copy.*'not official'"):
        F.load_released_pairs(ds=non_official_data, download=False)  # two train rows swapped
    with pytest.raises(data.DataError, match="needs the full cifar100"):
        F.load_released_pairs(ds=smoke_data, download=False)  # official, but a class subset


def _matrix():
    tr_labels = np.array([0, 1, 0, 1, 0])
    tt_labels = np.array([1, 0, 0])
    tr_mem = np.array([0.3, 0.9, 0.1, 0.25, 0.6])
    tr_c = {0: np.array([0, 2, 4]), 1: np.array([1, 3])}
    tt_c = {0: np.array([1, 2]), 1: np.array([0])}
    infl = {0: np.array([[0.20, 0.10],    # train 0 (mem 0.3): pair with test 1 only
                         [0.90, 0.90],    # train 2: mem 0.1, no pairs
                         [0.15, 0.149]]),  # train 4 (mem 0.6): pair with test 1 (on the threshold)
            1: np.array([[0.50],          # train 1 (mem 0.9): pair with test 0
                         [0.40]])}        # train 3 (mem 0.25, on the threshold): pair with test 0
    return F.InflMatrix(tr_mem=tr_mem, tr_labels=tr_labels, tt_labels=tt_labels, tr_classidx=tr_c,
                        tt_classidx=tt_c, infl=infl)


def test_infl_matrix_round_trip_and_pairs(tmp_path):
    m = _matrix()
    path = F.write_infl_matrix(tmp_path / "cifar100_infl_matrix.npz", m)
    with np.load(path) as f:
        assert {"tr_mem", "tr_labels", "tt_labels", "infl_matrix_class0", "tr_classidx_1", "tt_classidx_0"} <= set(f.files)
    r = F.read_infl_matrix(path)
    np.testing.assert_array_equal(r.tr_mem, m.tr_mem)
    np.testing.assert_array_equal(r.infl[0], m.infl[0])
    np.testing.assert_array_equal(r.tt_classidx[1], m.tt_classidx[1])
    p = r.pairs(mem_threshold=0.25, infl_threshold=0.15)
    assert sorted(zip(p.train_idx.tolist(), p.test_idx.tolist())) == [(0, 1), (1, 0), (3, 0), (4, 1)]
    got = dict(zip(zip(p.train_idx.tolist(), p.test_idx.tolist()), zip(p.infl, p.mem)))
    assert got[(4, 1)] == (0.15, 0.6) and got[(3, 0)] == (0.40, 0.25)


def test_infl_matrix_rejects_inconsistent_shapes(tmp_path):
    m = _matrix()
    np.savez(tmp_path / "bad.npz", tr_mem=m.tr_mem, tr_labels=m.tr_labels, tt_labels=m.tt_labels,
             infl_matrix_class0=np.zeros((2, 2)), tr_classidx_0=np.arange(3), tt_classidx_0=np.arange(2))
    with pytest.raises(F.FormatError, match="shape"):
        F.read_infl_matrix(tmp_path / "bad.npz")
