"""Retraining conditions: removal sets, masks, controls, seeds, test subsets, resume."""
import zlib

import numpy as np
import pytest

from lib import params, retrain

N_TRAIN, N_TEST = 60, 30


def _buckets():
    # memorized = 10 points; Leakage+Shift = 4 of them, Memorized bucket = the other 6
    mem = np.array([1, 3, 5, 8, 13, 21, 34, 40, 50, 55])
    ls = np.array([3, 13, 40, 55])
    return {"memorized_idx": mem, "leakage_shift_idx": ls, "memorized_bucket_idx": np.setdiff1d(mem, ls),
            "cause": np.array(["exact", "near", "subpop", "subpop"]), "duplicate_test_idx": np.array([2, 7]),
            "influenced_test_idx_leakage": np.array([2, 7, 11, 12]),
            "influenced_test_idx_memorized": np.array([12, 20])}


@pytest.fixture
def P():
    return params.load("smoke", weight_decay=5e-4)


def test_conditions_are_the_issue_list():
    names = [c.name for c in retrain.CONDITIONS]
    assert set(names) == {"full_nowd", "minus_memorized_nowd", "full_wd", "minus_memorized_wd",
                          "minus_leakage_shift_wd", "minus_memorized_bucket_wd",
                          "random_for_minus_memorized_nowd", "random_for_minus_memorized_wd",
                          "random_for_minus_leakage_shift_wd", "random_for_minus_memorized_bucket_wd"}
    for c in retrain.CONDITIONS:
        if c.baseline is not None:  # compared with the full set trained with the same weight decay
            assert retrain.BY_NAME[c.baseline].weight_decay == c.weight_decay
            assert retrain.BY_NAME[c.baseline].removal is None


def test_plan_sizes_and_weight_decay(P):
    planned = {p.condition.name: p for p in retrain.plan(P=P, buckets=_buckets())}
    assert len(planned) == 10
    assert planned["minus_memorized_nowd"].weight_decay == 0.0 and planned["full_nowd"].weight_decay == 0.0
    assert planned["minus_leakage_shift_wd"].weight_decay == 5e-4
    assert planned["minus_memorized_wd"].n_remove == 10
    assert planned["minus_leakage_shift_wd"].n_remove == 4
    assert planned["minus_memorized_bucket_wd"].n_remove == 6
    assert planned["full_wd"].n_remove == 0
    assert planned["full_wd"].path == P.run_dir / "utility" / "full_wd"
    for name, p in planned.items():
        if p.condition.random:  # a control matches its condition's size, set and weight decay
            twin = planned[name.removeprefix("random_for_")]
            assert p.n_remove == twin.n_remove and p.weight_decay == twin.weight_decay
            np.testing.assert_array_equal(p.removed, twin.removed)


def test_plan_skips_empty_removals_and_their_controls(P):
    b = _buckets()
    b["leakage_shift_idx"] = np.zeros(0, np.int64)
    names = {p.condition.name for p in retrain.plan(P=P, buckets=b)}
    assert "minus_leakage_shift_wd" not in names and "random_for_minus_leakage_shift_wd" not in names
    assert len(names) == 8


def test_masks_remove_exactly_the_set(P):
    planned = {p.condition.name: p for p in retrain.plan(P=P, buckets=_buckets())}
    for name in ("minus_memorized_wd", "minus_leakage_shift_wd", "minus_memorized_bucket_wd"):
        p = planned[name]
        for i in range(3):
            m = retrain.mask(condition=p.condition, removed=p.removed, n_train=N_TRAIN, seed=0, i=i)
            assert m.dtype == bool and m.shape == (N_TRAIN,)
            np.testing.assert_array_equal(np.flatnonzero(~m), p.removed)
    full = planned["full_wd"]
    assert retrain.mask(condition=full.condition, removed=full.removed, n_train=N_TRAIN, seed=0, i=0).all()


def test_random_control_masks_seeded_sized_and_varying(P):
    p = {q.condition.name: q for q in retrain.plan(P=P, buckets=_buckets())}["random_for_minus_memorized_wd"]
    kw = dict(condition=p.condition, removed=p.removed, n_train=N_TRAIN)
    m0 = retrain.mask(seed=0, i=0, **kw)
    assert (~m0).sum() == 10
    np.testing.assert_array_equal(m0, retrain.mask(seed=0, i=0, **kw))        # deterministic
    assert not np.array_equal(m0, retrain.mask(seed=0, i=1, **kw))            # a fresh set per model
    assert not np.array_equal(m0, retrain.mask(seed=1, i=0, **kw))            # follows the seed
    other = {q.condition.name: q for q in retrain.plan(P=P, buckets=_buckets())}["random_for_minus_memorized_nowd"]
    assert not np.array_equal(m0, retrain.mask(condition=other.condition, removed=other.removed, n_train=N_TRAIN,
                                               seed=0, i=0))                 # and the condition
    # over many models every training point is sometimes removed: uniform, not tied to the memorized set
    removed_any = np.zeros(N_TRAIN, bool)
    for i in range(200):
        removed_any |= ~retrain.mask(seed=0, i=i, **kw)
    assert removed_any.all()


def test_model_seeds_differ_by_condition_and_id_and_are_stable():
    s = retrain.model_seed(seed=0, condition="full_wd", i=0)
    assert s == retrain.model_seed(seed=0, condition="full_wd", i=0)
    assert len({s, retrain.model_seed(seed=0, condition="full_wd", i=1),
                retrain.model_seed(seed=0, condition="full_nowd", i=0),
                retrain.model_seed(seed=1, condition="full_wd", i=0)}) == 4
    # a pure function of (seed, condition, i): fixed across processes (crc32, not Python's salted hash)
    assert s == int(np.random.SeedSequence([0, zlib.crc32(b"full_wd"), 0, 0]).generate_state(1, np.uint32)[0])


def test_eval_subsets_partition_and_known_members():
    b = _buckets()
    s = retrain.eval_subsets(buckets=b, removal="memorized", n_test=N_TEST)
    np.testing.assert_array_equal(s["duplicate"], [2, 7])
    np.testing.assert_array_equal(s["influenced"], [11, 12, 20])
    s = retrain.eval_subsets(buckets=b, removal="leakage_shift", n_test=N_TEST)
    np.testing.assert_array_equal(s["duplicate"], [2, 7])
    np.testing.assert_array_equal(s["influenced"], [11, 12])
    s = retrain.eval_subsets(buckets=b, removal="memorized_bucket", n_test=N_TEST)
    assert len(s["duplicate"]) == 0
    np.testing.assert_array_equal(s["influenced"], [12, 20])
    for removal in retrain.REMOVAL_KEYS:
        s = retrain.eval_subsets(buckets=b, removal=removal, n_test=N_TEST)
        allidx = np.concatenate(list(s.values()))
        np.testing.assert_array_equal(np.sort(allidx), np.arange(N_TEST))  # disjoint and complete


def test_signature_tracks_the_removal_set(P):
    b = _buckets()
    p1 = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["minus_memorized_bucket_wd"]
    b["memorized_bucket_idx"] = b["memorized_bucket_idx"][1:]
    p2 = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["minus_memorized_bucket_wd"]
    assert retrain.signature(P=P, planned=p1) != retrain.signature(P=P, planned=p2)
    full = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["full_wd"]
    assert retrain.signature(P=P, planned=full)["weight_decay_used"] == 5e-4


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(tmp_path):
    """Two models of a random control: one then the other (a resume) equals both at once, bit for bit,
    and so do two worker processes sharing the condition."""
    import dataclasses

    from lib import data

    P = params.load("smoke", retrain_epochs=1, lr_peak_epoch=0.5, n_retrain_models=2, width=8, batch_size=32,
                    classes=[0, 1, 2], n_train_per_class=20, n_test_per_class=10)
    ds = data.load(P)
    b = {"memorized_idx": np.array([0, 5, 9, 30]), "leakage_shift_idx": np.array([5]),
         "memorized_bucket_idx": np.array([0, 9, 30])}
    p = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["random_for_minus_memorized_wd"]
    stores = {}
    for run, steps in (("resumed", [[0], None]), ("straight", [None])):
        planned = dataclasses.replace(p, path=tmp_path / run / p.condition.name)
        for ids in steps:
            st = retrain.run_condition(P=P, ds=ds, planned=planned, device="cpu", ids=ids)
            if ids == [0]:
                assert st.completed.tolist() == [True, False]  # stopped after model 0
        stores[run] = st
    a, s = stores["resumed"], stores["straight"]
    assert a.completed.all() and s.completed.all()
    for name in ("masks", "test_correct", "train_correct", "test_margin", "train_margin", "test_acc", "curve"):
        np.testing.assert_array_equal(getattr(a, name), getattr(s, name), err_msg=name)
    for i in range(2):  # each row's mask is the model's own seeded mask
        np.testing.assert_array_equal(a.masks[i], retrain.mask(condition=p.condition, removed=p.removed,
                                                               n_train=len(ds.y_train), seed=P.seed, i=i))
    assert (~a.masks).sum(axis=1).tolist() == [4, 4]
    # two worker processes filling the same condition give the same bits
    w = dataclasses.replace(p, path=tmp_path / "workers" / p.condition.name)
    retrain.run_all(P=P, ds=ds, planned=[w], device="cpu", workers=2, progress=False)
    wst = retrain.open_condition(P=P, planned=w, n_train=len(ds.y_train), n_test=len(ds.y_test))
    assert wst.completed.all()
    np.testing.assert_array_equal(wst.test_correct, s.test_correct)
    np.testing.assert_array_equal(wst.curve, s.curve)
    # the store refuses to be resumed with another removal set
    other = dataclasses.replace(p, removed=np.array([1, 2, 3, 4]), path=tmp_path / "resumed" / p.condition.name)
    with pytest.raises(Exception, match="different parameters"):
        retrain.open_condition(P=P, planned=other, n_train=len(ds.y_train), n_test=len(ds.y_test))


def test_reference_mode_refuses_a_non_official_copy(smoke_data):
    """FZ's released indices name official CIFAR-100 rows; retraining on another copy must stop first."""
    from lib import data

    P = params.load("reference", retrain=True)
    with pytest.raises(data.DataError, match="official"):
        retrain.run_all(P=P, ds=smoke_data, planned=[], device="cpu")
