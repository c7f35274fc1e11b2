"""The duplicate finder against planted duplicates of real CIFAR images (known answers)."""
import numpy as np
import pytest

from lib import data, duplicates


@pytest.fixture(scope="module")
def planted():
    # reference: 800 real test images; queries: 20 per kind planted from held-out images, 20 per kind
    # with no original in the reference (images repeated in CIFAR itself are set aside first)
    x_pool = data.load_cifar(dataset="cifar100").x_test
    return duplicates.planted_set(x_pool=x_pool, n_ref=800, n_positive_per_kind=20, n_negative_per_kind=20,
                                  seed=0, clean_threshold=0.8)


@pytest.mark.slow
def test_planted_precision_recall(planted, smoke):
    found = duplicates.find(x_query=planted.x_query, x_ref=planted.x_ref, near_threshold=smoke.dup_near_threshold,
                            review_threshold=smoke.dup_review_threshold, top_k=smoke.dup_top_k, progress=False)
    q = duplicates.planted_quality(planted=planted, pairs=found.pairs).set_index("kind")
    assert q.loc["exact", "recall"] == 1.0 and q.loc["exact", "precision"] == 1.0
    assert q.loc["all", "recall"] >= 0.9, q
    assert q.loc["all", "precision"] >= 0.9, q
    # every planted positive is at least listed (near or for review) with its own original
    q_all = duplicates.planted_quality(planted=planted, pairs=found.pairs, kinds=("exact", "near", "review"))
    assert q_all.set_index("kind").loc["all", "recall"] >= 0.95, q_all


def test_exact_duplicates_always_found(smoke_data):
    x_ref = smoke_data.x_train[:400]
    rng = np.random.default_rng(1)
    idx_copy = rng.choice(len(x_ref), size=25, replace=False)
    x_query = np.concatenate([smoke_data.x_test[:75], x_ref[idx_copy]])
    pairs = duplicates.exact_pairs(x_query=x_query, x_ref=x_ref)
    got = set(map(tuple, pairs.tolist()))
    # each planted copy is found, plus any byte-identical images the sets already shared
    assert {(75 + i, int(j)) for i, j in enumerate(idx_copy)} <= got
    # one changed pixel value is no longer an exact copy
    x_query[-1, 0, 0, 0] ^= 1
    assert (99, int(idx_copy[-1])) not in set(map(tuple, duplicates.exact_pairs(x_query=x_query, x_ref=x_ref).tolist()))
    # exact pairs come first in find(), with score 1 and verdict confirm, even with exact hashing only
    found = duplicates.find(x_query=x_query, x_ref=x_ref, near_threshold=0.9, review_threshold=0.8, top_k=4,
                            exact_only=True, progress=False)
    ex = found.pairs[found.pairs["kind"] == "exact"]
    assert {(75 + i, int(j)) for i, j in enumerate(idx_copy[:-1])} <= set(zip(ex["query_idx"], ex["ref_idx"]))
    assert (ex["score"] == 1.0).all() and (ex["verdict"] == "confirm").all()


def test_same_set_lists_each_pair_once_without_self_pairs(smoke_data):
    x = np.concatenate([smoke_data.x_test[:200], smoke_data.x_test[[3, 7]]])  # rows 200, 201 copy rows 3, 7
    found = duplicates.find(x_query=x, x_ref=x, near_threshold=0.9, review_threshold=0.8, top_k=4,
                            same_set=True, progress=False)
    p = found.pairs
    assert (p["query_idx"] < p["ref_idx"]).all()
    assert not p.duplicated(["query_idx", "ref_idx"]).any()
    ex = set(zip(p.loc[p["kind"] == "exact", "query_idx"], p.loc[p["kind"] == "exact", "ref_idx"]))
    assert {(3, 200), (7, 201)} <= ex


def test_scores_identity_and_transform_order(smoke_data):
    x = smoke_data.x_test[:64]
    same = duplicates.score_pairs(x_query=x, x_ref=x, pairs=np.stack([np.arange(64)] * 2, 1))[0]
    assert np.all(same > 0.999)
    shifted = duplicates.plant(x=x, kinds=["shift"] * 64, seed=3)
    s_shift = duplicates.score_pairs(x_query=shifted, x_ref=x, pairs=np.stack([np.arange(64)] * 2, 1))[0]
    other = duplicates.score_pairs(x_query=shifted, x_ref=x, pairs=np.stack([np.arange(64), (np.arange(64) + 1) % 64], 1))[0]
    assert np.median(s_shift) > 0.95 and np.median(other) < 0.6
    assert ((0 <= other) & (other <= 1)).all()
