"""FZ's estimator on arrays small enough to check by hand, and the blocked influence against a direct loop."""
import math

import numpy as np
import pytest

from lib import memorization as M

# 6 models x 4 train examples. ex0: in models 0-3, out 4-5; ex1: in 0, 2, 4, out 1, 3, 5;
# ex2: every model trained on it; ex3: no model did.
MASKS = np.array([[1, 1, 1, 0],
                  [1, 0, 1, 0],
                  [1, 1, 1, 0],
                  [1, 0, 1, 0],
                  [0, 1, 1, 0],
                  [0, 0, 1, 0]], bool)
TRAIN_CORRECT = np.array([[1, 1, 1, 0],
                          [1, 0, 1, 1],
                          [1, 1, 1, 0],
                          [0, 0, 1, 1],
                          [1, 1, 1, 0],
                          [0, 0, 1, 1]], bool)
# 2 test examples
TEST_CORRECT = np.array([[1, 0],
                         [1, 1],
                         [1, 0],
                         [1, 1],
                         [0, 0],
                         [0, 1]], bool)


def test_memorization_by_hand():
    s = M.memorization(masks=MASKS, train_correct=TRAIN_CORRECT)
    # ex0: in 1,1,1,0 -> 3/4; out 1,0 -> 1/2. SE (Agresti-Caffo, +1 success +1 failure per group):
    #      in (3+1)/(4+2) = 2/3 -> (2/3)(1/3)/6 = 1/27; out (1+1)/(2+2) = 1/2 -> (1/2)(1/2)/4 = 1/16
    # ex1: in 1,1,1 -> 1 (models 0, 2, 4); out 0,0,0 -> 0. SE: in 4/5 -> (4/5)(1/5)/5 = 4/125; out 1/5 -> 4/125
    #      (plain Wald would say 0: three models each way are not certainty)
    np.testing.assert_allclose(s.mem, [0.25, 1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(s.se, [math.sqrt(1 / 27 + 1 / 16), math.sqrt(8 / 125), 0.0, 0.0], atol=1e-7)
    np.testing.assert_array_equal(s.n_in, [4, 3, 6, 0])
    np.testing.assert_array_equal(s.n_out, [2, 3, 0, 6])
    np.testing.assert_array_equal(s.estimable, [True, True, False, False])
    assert s.mem.dtype == np.float32 and s.se.dtype == np.float32 and s.n_in.dtype == np.int32
    assert np.isfinite(s.mem).all() and np.isfinite(s.se).all()  # not estimable is a flag, not NaN
    lo, hi = s.ci(z=2.0)  # centred on the adjusted difference: ex0 4/6 - 2/4 = 1/6, ex1 4/5 - 1/5 = 3/5
    np.testing.assert_allclose(s.center, [1 / 6, 3 / 5, 0.0, 0.0], atol=1e-7)
    assert lo[0] == pytest.approx(1 / 6 - 2 * math.sqrt(1 / 27 + 1 / 16), abs=1e-6)
    np.testing.assert_array_equal(M.memorized_idx(s, mem_threshold=0.25), [0, 1])  # >= includes 0.25
    np.testing.assert_array_equal(M.memorized_idx(s, mem_threshold=0.3), [1])


def test_memorization_se_interior_by_hand():
    # 5 models; in: models 0-2 correct 2/3 -> adjusted 3/5 over 5; out: models 3-4 correct 1/2 -> 2/4 over 4
    masks = np.array([[1], [1], [1], [0], [0]], bool)
    correct = np.array([[1], [1], [0], [1], [0]], bool)
    s = M.memorization(masks=masks, train_correct=correct)
    assert s.mem[0] == pytest.approx(2 / 3 - 1 / 2, abs=1e-7)
    assert s.se[0] == pytest.approx(math.sqrt((3 / 5) * (2 / 5) / 5 + 0.25 / 4), abs=1e-7)


def test_memorization_blocks_and_memmap(tmp_path):
    rng = np.random.default_rng(1)
    masks = rng.random((40, 1000)) < 0.7
    correct = rng.random((40, 1000)) < 0.5
    whole = M.memorization(masks=masks, train_correct=correct, block=10_000)
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=bool, shape=masks.shape)
    mm[:] = masks
    blocked = M.memorization(masks=mm, train_correct=correct, block=333)
    for k in ("mem", "se", "n_in", "n_out", "estimable"):
        np.testing.assert_array_equal(getattr(whole, k), getattr(blocked, k))


def test_influence_by_hand():
    inf = M.influence(masks=MASKS, test_correct=TEST_CORRECT, top_k=3, block=2, infl_threshold=0.5)
    # infl(ex0, t0) = 4/4 - 0/2 = 1; infl(ex0, t1) = 2/4 - 1/2 = 0
    # infl(ex1, t0) = 2/3 - 2/3 = 0;  infl(ex1, t1) = 0/3 - 3/3 = -1; ex2, ex3 not estimable
    np.testing.assert_array_equal(inf.top_idx[0, :1], [0])
    np.testing.assert_allclose(inf.top_infl[0, :2], [1.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(inf.top_idx[1], [0, 1, -1])  # only two estimable: third slot empty
    np.testing.assert_allclose(inf.top_infl[1], [0.0, -1.0, 0.0], atol=1e-6)
    assert list(zip(inf.train_idx, inf.test_idx)) == [(0, 0)] and inf.infl[0] == 1.0
    # same-class filter: ex0 (label 0) and t0 (label 1) differ -> no pair; with t0 labelled 0 it stays
    y_tr = np.array([0, 1, 0, 0])
    none = M.influence(masks=MASKS, test_correct=TEST_CORRECT, top_k=1, block=4, infl_threshold=0.5,
                       train_labels=y_tr, test_labels=np.array([1, 0]))
    assert len(none.train_idx) == 0
    same = M.influence(masks=MASKS, test_correct=TEST_CORRECT, top_k=1, block=4, infl_threshold=0.5,
                       train_labels=y_tr, test_labels=np.array([0, 1]))
    assert list(zip(same.train_idx, same.test_idx)) == [(0, 0)]
    # train_keep: leaving ex0 out removes its pair
    kept = M.influence(masks=MASKS, test_correct=TEST_CORRECT, top_k=1, block=4, infl_threshold=0.5,
                       train_keep=np.array([False, True, True, True]))
    assert len(kept.train_idx) == 0


def _direct_counts(masks, test_correct):
    """Per-pair integer counts, one train example at a time (the definition, no algebra)."""
    n_train, n_test = masks.shape[1], test_correct.shape[1]
    hits_in = np.zeros((n_train, n_test), np.int64)
    hits_out = np.zeros((n_train, n_test), np.int64)
    for i in range(n_train):
        hits_in[i] = test_correct[masks[:, i]].sum(0)
        hits_out[i] = test_correct[~masks[:, i]].sum(0)
    return hits_in, hits_out, masks.sum(0), (~masks).sum(0)


@pytest.mark.parametrize("block,top_k", [(7, 3), (64, 5), (1000, 12), (1, 2)])
def test_blocked_influence_equals_direct(block, top_k):
    rng = np.random.default_rng(block)
    n_models, n_train, n_test = 30, 90, 40
    masks = rng.random((n_models, n_train)) < 0.7
    masks[:, 5] = True   # never held out
    masks[:, 17] = False  # never trained on
    test_correct = rng.random((n_models, n_test)) < rng.random(n_test)  # varying difficulty
    hits_in, hits_out, n_in, n_out = _direct_counts(masks, test_correct)
    ok = (n_in > 0) & (n_out > 0)
    direct = np.full((n_train, n_test), -np.inf)
    direct[ok] = (hits_in * n_out[:, None] - hits_out * n_in[:, None])[ok] / (n_in * n_out)[ok, None]

    thr = 0.25  # exact in binary: the direct test below is exact integer arithmetic
    inf = M.influence(masks=masks, test_correct=test_correct, top_k=top_k, block=block, infl_threshold=thr)
    want_vals = -np.sort(-direct, axis=0)[:top_k].T  # (n_test, top_k)
    np.testing.assert_allclose(inf.top_infl, want_vals, atol=1e-6)
    got_at_idx = direct[inf.top_idx, np.arange(n_test)[:, None]]  # the returned indices carry those values
    np.testing.assert_allclose(got_at_idx, want_vals, atol=1e-6)
    assert not np.isin(inf.top_idx, [5, 17]).any()

    passes = ok[:, None] & (hits_in * n_out[:, None] - hits_out * n_in[:, None] >= thr * n_in[:, None] * n_out[:, None])
    want_pairs = set(zip(*np.nonzero(passes)))
    assert set(zip(inf.train_idx.tolist(), inf.test_idx.tolist())) == want_pairs
    np.testing.assert_allclose(inf.infl, direct[inf.train_idx, inf.test_idx], rtol=0, atol=1e-12)


def test_self_influence_is_memorization():
    # with the train set as the "test" set, infl(i, i) is mem_i
    rng = np.random.default_rng(3)
    masks = rng.random((25, 30)) < 0.6
    correct = rng.random((25, 30)) < 0.5
    s = M.memorization(masks=masks, train_correct=correct)
    inf = M.influence(masks=masks, test_correct=correct, top_k=1, block=8, infl_threshold=-1.0)
    diag = inf.train_idx == inf.test_idx
    np.testing.assert_allclose(inf.infl[diag], s.mem[inf.train_idx[diag]], atol=1e-6)
    assert diag.sum() == s.estimable.sum()


def test_high_influence_pairs_thresholds_and_class():
    scores = M.Scores(mem=np.array([0.25, 0.24, 0.9, 0.0, 0.5], np.float32), se=np.zeros(5, np.float32),
                      n_in=np.ones(5, np.int32), n_out=np.ones(5, np.int32),
                      estimable=np.array([True, True, True, False, True]))
    y_tr = np.array([0, 0, 1, 0, 2])
    y_te = np.array([0, 1, 2])
    # candidates: (train, test, infl) and why each is kept or dropped
    cand = [(0, 0, 0.15),   # mem == 0.25 and infl == 0.15 on both thresholds: kept
            (1, 0, 0.90),   # mem 0.24 below threshold
            (2, 1, 0.149),  # infl below threshold
            (2, 0, 0.50),   # classes differ (1 vs 0)
            (3, 0, 0.90),   # not estimable
            (2, 1, 0.60),   # kept
            (4, 2, 0.30)]   # kept
    tr, tt, infl = map(np.array, zip(*cand))
    out = M.high_influence_pairs(train_idx=tr, test_idx=tt, infl=infl, scores=scores, train_labels=y_tr,
                                 test_labels=y_te, mem_threshold=0.25, infl_threshold=0.15)
    assert list(zip(out["train_idx"], out["test_idx"])) == [(2, 1), (4, 2), (0, 0)]  # strongest first
    np.testing.assert_allclose(out["infl"], [0.6, 0.3, 0.15])
    np.testing.assert_allclose(out["mem"], [0.9, 0.5, 0.25], atol=1e-7)
    assert out["train_idx"].dtype == np.int64 and out["infl"].dtype == np.float64 and out["mem"].dtype == np.float64


def test_se_shrinks_with_models():
    # every example: p_in = 0.9, p_out = 0.4; SE ~ 1/sqrt(n_models)
    rng = np.random.default_rng(7)
    n_models, n_train = 800, 300
    masks = rng.random((n_models, n_train)) < 0.7
    correct = np.where(masks, rng.random(masks.shape) < 0.9, rng.random(masks.shape) < 0.4)
    curve = M.se_by_model_count(masks=masks, train_correct=correct, model_counts=[50, 200, 800, 5000])
    np.testing.assert_array_equal(curve.n_models, [50, 200, 800])  # counts above the store are dropped
    assert curve.median_se[1] / curve.median_se[0] == pytest.approx(0.5, abs=0.07)
    assert curve.median_se[2] / curve.median_se[1] == pytest.approx(0.5, abs=0.05)
    want = math.sqrt(0.9 * 0.1 / 560 + 0.4 * 0.6 / 240)  # ~ the adjusted SE at these counts
    assert curve.median_se[2] == pytest.approx(want, rel=0.05)
    assert curve.mean_abs_change[2] == 0.0 and curve.mean_abs_change[0] > curve.mean_abs_change[1]
    np.testing.assert_array_equal(curve.frac_estimable, [1.0, 1.0, 1.0])


def test_rejects_wrong_inputs():
    with pytest.raises(ValueError, match="bool"):
        M.memorization(masks=MASKS.astype(np.int8), train_correct=TRAIN_CORRECT)
    with pytest.raises(ValueError, match="n_models"):
        M.influence(masks=MASKS, test_correct=TEST_CORRECT[:5], top_k=1, block=2, infl_threshold=0.1)


def test_memorization_interval_covers_at_quick_like_model_counts():
    """Coverage of the 95 % interval, simulated: binomial in/out hits at quick-like and smaller counts."""
    rng = np.random.default_rng(12)
    cover = []
    for n_in, n_out in [(22, 10), (8, 4)]:
        for p_in, p_out in [(1.0, 0.5), (0.9, 0.3), (0.8, 0.2), (0.6, 0.5), (0.99, 0.05)]:
            reps = 20_000
            masks = np.zeros((n_in + n_out, 1), bool)
            masks[:n_in] = True
            h_in, h_out = rng.binomial(n_in, p_in, reps), rng.binomial(n_out, p_out, reps)
            s_in = (np.arange(n_in)[:, None] < h_in[None, :])     # (n_in, reps): hits first
            s_out = (np.arange(n_out)[:, None] < h_out[None, :])
            correct = np.concatenate([s_in, s_out])              # (n_models, reps) bool
            s = M.memorization(masks=np.repeat(masks, reps, axis=1), train_correct=correct)
            lo, hi = s.ci()
            cover.append(float(np.mean((lo <= p_in - p_out) & (p_in - p_out <= hi))))
    assert min(cover) >= 0.93, cover  # the raw-centred interval drops to ~0.84 here
