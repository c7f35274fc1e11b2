"""Retraining conditions: removal sets, masks, controls, seeds, test subsets, resume."""
import numpy as np
import pytest

from lib import params, retrain, tables
from lib.buckets import Buckets

N_TRAIN, N_TEST = 60, 30


def _buckets(**changes) -> Buckets:
    # memorized = 10 points; Leakage+Shift = 4 of them, Memorized bucket = the other 6
    mem = np.array([1, 3, 5, 8, 13, 21, 34, 40, 50, 55])
    ls = np.array([3, 13, 40, 55])
    fields = dict(memorized_idx=mem, leakage_shift_idx=ls, memorized_bucket_idx=np.setdiff1d(mem, ls),
                  cause=np.array(["exact", "near", "subpop", "subpop"]), duplicate_test_idx=np.array([2, 7]),
                  influenced_test_idx_leakage=np.array([2, 7, 11, 12]),
                  influenced_test_idx_memorized=np.array([12, 20]))
    return Buckets(**{**fields, **changes})


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
    b = _buckets(leakage_shift_idx=np.zeros(0, np.int64), cause=np.zeros(0, str))
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


# Computed in this process and in fresh interpreters with other PYTHONHASHSEED values: a seed or
# mask that depended on Python's salted str hash, the process id, the clock or global RNG state
# would differ between them. `values` is JSON (lists of ints), so the processes compare exactly.
_SEED_SNIPPET = """
import numpy as np
from lib import retrain, subsets

CONDS = ["full_wd", "full_nowd", "random_for_minus_memorized_wd", "random_for_minus_memorized_nowd"]
REMOVED = np.array([1, 3, 5, 8, 13, 21, 34, 40, 50, 55])
values = {
    "retrain.model_seed": [[retrain.model_seed(seed=s, condition=c, i=i) for c in CONDS for i in range(3)]
                           for s in (0, 1)],
    "subsets.model_seed": [[subsets.model_seed(seed=s, model_id=i) for i in range(4)] for s in (0, 1)],
    "subsets.subset_mask": [np.flatnonzero(subsets.subset_mask(seed=s, model_id=i, n_train=60, ratio=0.5)).tolist()
                            for s in (0, 1) for i in range(3)],
    "retrain.mask": [np.flatnonzero(~retrain.mask(condition=retrain.BY_NAME[c], removed=REMOVED, n_train=60,
                                                  seed=0, i=i)).tolist()
                     for c in CONDS[2:] for i in range(3)],
}
"""


def _seed_values() -> dict:
    ns: dict = {}
    exec(_SEED_SNIPPET, ns)
    return ns["values"]


def test_seeds_and_masks_are_the_same_in_every_process():
    """Any model can be retrained from its id alone, in another process, on another day."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # a child whose str hashes differ from this process's (one child: importing torch takes seconds)
    salt = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    code = (_SEED_SNIPPET + "\nimport json, sys\n"
            "json.dump({'values': values, 'hash': hash('random_for_minus_memorized_wd')}, sys.stdout)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": str(root)}, check=True).stdout
    child = json.loads(out)
    assert child["hash"] != hash("random_for_minus_memorized_wd")  # the two processes salt str hashes differently
    here = json.loads(json.dumps(_seed_values()))  # tuples as lists, as JSON gives them back
    for key, value in here.items():
        assert child["values"][key] == value, f"{key} differs between processes with different hash salts"


def test_model_seeds_and_masks_differ_by_model_condition_and_seed():
    v = _seed_values()
    for s in v["retrain.model_seed"]:  # 4 conditions x 3 models, one base seed: all different
        assert len(set(s)) == 12
    assert set(v["retrain.model_seed"][0]).isdisjoint(v["retrain.model_seed"][1])  # and another base seed
    assert len({x for s in v["subsets.model_seed"] for x in s}) == 8
    masks = [tuple(m) for m in v["subsets.subset_mask"]]
    assert len(set(masks)) == 6 and all(len(m) == 30 for m in masks)  # round(0.5 * 60) points in each
    removed = [tuple(m) for m in v["retrain.mask"]]  # 2 random controls x 3 models
    assert len(set(removed)) == 6 and all(len(m) == 10 for m in removed)


def test_eval_subsets_partition_and_known_members():
    b = _buckets()
    s = tables.eval_subsets(buckets=b, removal="memorized", n_test=N_TEST)
    np.testing.assert_array_equal(s["duplicate"], [2, 7])
    np.testing.assert_array_equal(s["influenced"], [11, 12, 20])
    s = tables.eval_subsets(buckets=b, removal="leakage_shift", n_test=N_TEST)
    np.testing.assert_array_equal(s["duplicate"], [2, 7])
    np.testing.assert_array_equal(s["influenced"], [11, 12])
    s = tables.eval_subsets(buckets=b, removal="memorized_bucket", n_test=N_TEST)
    assert len(s["duplicate"]) == 0
    np.testing.assert_array_equal(s["influenced"], [12, 20])
    for removal in retrain.REMOVAL_KEYS:
        s = tables.eval_subsets(buckets=b, removal=removal, n_test=N_TEST)
        allidx = np.concatenate(list(s.values()))
        np.testing.assert_array_equal(np.sort(allidx), np.arange(N_TEST))  # disjoint and complete


def test_signature_tracks_the_removal_set(P):
    b = _buckets()
    p1 = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["minus_memorized_bucket_wd"]
    b = _buckets(memorized_bucket_idx=b.memorized_bucket_idx[1:])
    p2 = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["minus_memorized_bucket_wd"]
    assert retrain.signature(P=P, planned=p1, data_digest="d") != retrain.signature(P=P, planned=p2, data_digest="d")
    full = {q.condition.name: q for q in retrain.plan(P=P, buckets=b)}["full_wd"]
    assert retrain.signature(P=P, planned=full, data_digest="d")["weight_decay"] == 5e-4


def _tiny() -> tuple[params.Params, Buckets]:
    """Two one-epoch models per condition on 60 images of 3 classes, and buckets that fit them."""
    P = params.load("smoke", retrain_epochs=1, lr_peak_epoch=0.5, n_retrain_models=2, width=8, batch_size=32,
                    classes=[0, 1, 2], n_train_per_class=20, n_test_per_class=10)
    return P, _buckets(memorized_idx=np.array([0, 5, 9, 30]), leakage_shift_idx=np.array([5]),
                       cause=np.array(["exact"]), memorized_bucket_idx=np.array([0, 9, 30]))


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(tmp_path):
    """Two models of a random control: one then the other (a resume) equals both at once, bit for bit,
    and so do two worker processes sharing the condition."""
    import dataclasses

    from lib import data

    P, b = _tiny()
    ds = data.load(P)
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
    wst = retrain.open_condition(P=P, planned=w, ds=ds)
    assert wst.completed.all()
    np.testing.assert_array_equal(wst.test_correct, s.test_correct)
    np.testing.assert_array_equal(wst.curve, s.curve)
    # the store refuses to be resumed with another removal set
    other = dataclasses.replace(p, removed=np.array([1, 2, 3, 4]), path=tmp_path / "resumed" / p.condition.name)
    with pytest.raises(Exception, match="different parameters"):
        retrain.open_condition(P=P, planned=other, ds=ds)


@pytest.mark.slow
def test_a_worker_opens_each_condition_once_per_run_of_its_models(tmp_path, monkeypatch):
    """train_jobs (a worker process or a SLURM task) trains its (condition, model) pairs in order, opening a
    condition's store once for each run of consecutive models of it, and fills every row it was given."""
    import dataclasses

    from lib import data

    P, b = _tiny()
    planned = [dataclasses.replace(q, path=tmp_path / q.condition.name) for q in retrain.plan(P=P, buckets=b)
               if q.condition.name in ("full_wd", "minus_memorized_wd")]
    opened, real = [], retrain.open_condition
    monkeypatch.setattr(retrain, "open_condition",
                        lambda **kw: opened.append(kw["planned"].condition.name) or real(**kw))
    retrain.train_jobs(P, planned, [("full_wd", 0), ("full_wd", 1), ("minus_memorized_wd", 1), ("full_wd", 1)])
    assert opened == ["full_wd", "minus_memorized_wd", "full_wd"]
    stores = {q.condition.name: real(P=P, planned=q, ds=data.load(P), mode="r") for q in planned}
    assert stores["full_wd"].completed.tolist() == [True, True]
    assert stores["minus_memorized_wd"].completed.tolist() == [False, True]


def _write_cifar100(folder, *, x_train, y_train, coarse_train, copy_from) -> None:
    """A cifar-100-python/ folder in the official pickle layout (lib/data.py read_raw): `train` written
    from the arrays, `test` and `meta` copied from the folder `copy_from`."""
    import pickle
    import shutil

    folder.mkdir(parents=True)
    flat = np.ascontiguousarray(x_train.transpose(0, 3, 1, 2).reshape(len(x_train), 3072))  # R, G, B planes
    train = {"batch_label": "training batch 1 of 1", "data": flat, "fine_labels": y_train.tolist(),
             "coarse_labels": coarse_train.tolist(),
             "filenames": [f"placeholder_train_{i:05d}.png" for i in range(len(x_train))]}
    with open(folder / "train", "wb") as f:
        pickle.dump(train, f, protocol=4)
    for name in ("test", "meta"):
        shutil.copyfile(copy_from / name, folder / name)


def test_reference_mode_refuses_a_non_official_copy(tmp_path):
    """FZ's released indices name official CIFAR-100 rows; retraining on another copy must stop first.

    The other copy is the project's own with two training images (of different classes, each
    with its label) trading places: every image is real and correctly labelled, only the order
    is not the official one, which is exactly what joining by official indices must notice.
    """
    import dataclasses

    from lib import data

    P = params.load("reference", retrain=True)
    full = data.load_cifar(dataset="cifar100")
    a = 0
    b = int(np.flatnonzero(full.y_train != full.y_train[a])[0])
    order = np.arange(len(full.y_train))
    order[[a, b]] = [b, a]
    _write_cifar100(tmp_path / "cifar-100-python", x_train=full.x_train[order], y_train=full.y_train[order],
                    coarse_train=full.coarse_train[order], copy_from=full.folder)
    swapped = data.load_cifar(dataset="cifar100", data_dir=str(tmp_path), download_missing=False)
    # the copy reads back as written: the two images and their labels swapped, everything else equal
    np.testing.assert_array_equal(swapped.x_train, full.x_train[order])
    np.testing.assert_array_equal(swapped.y_train, full.y_train[order])
    np.testing.assert_array_equal(swapped.x_test, full.x_test)
    assert not swapped.is_subset and not swapped.official

    with pytest.raises(data.DataError, match="not the official copy"):
        retrain.run_all(P=P, ds=swapped, planned=[], device="cpu")
    # the refusal is about the order alone: the same images in the official order pass the check
    # (with nothing planned, nothing is trained)
    official = full if full.official else dataclasses.replace(
        swapped, x_train=full.x_train, y_train=full.y_train, official=True,
        verdict=data.OFFICIAL_CONTENT, verdict_reason="stands in for the official copy (test)")
    retrain.run_all(P=P, ds=official, planned=[], device="cpu")
