"""Fault injection: every way found to get a wrong result with exit code 0, and every unclear failure.

Each test injects one fault, then checks the exact behaviour: refused with one line naming the
file or key, or the damaged part redone; never used silently.
"""
import fcntl
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from lib import data, params, pipeline, review, store
from lib.params import ROOT, ParamsError


# ---------------------------------------------------------------- 1. stores: truncated, corrupted, read-only
def _store(path, n_models=4, **kw):
    return store.open_store(path, n_models=n_models, n_train=6, n_test=3, n_epochs=2, signature={"k": 1}, **kw)


def _result(seed):
    rng = np.random.default_rng(seed)
    return dict(train_correct=rng.random(6) < .5, test_correct=rng.random(3) < .5,
                train_margin=rng.random(6).astype(np.float16), test_margin=rng.random(3).astype(np.float16),
                test_acc=.5, train_acc=.6, seconds=1.0, curve=np.array([.1, .2], np.float32))


def _filled(path):
    st = _store(path)
    for i in range(3):
        st.write(i, mask=np.arange(6) % 2 == i % 2, result=_result(i))
    return st


def test_a_truncated_store_file_is_refused_naming_it(tmp_path):
    _filled(tmp_path / "s")
    f = tmp_path / "s" / "test_correct.npy"
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(store.StoreCorrupt, match=r"test_correct\.npy: .* bytes, the layout needs"):
        _store(tmp_path / "s", mode="r")
    with pytest.raises(store.StoreCorrupt, match="test_correct.npy"):
        _store(tmp_path / "s")  # a writer does not zero-pad it back either


@pytest.mark.parametrize("damage, match", [
    (lambda f: f.write_bytes(b""), "completed.npy: not a readable .npy file"),
    (lambda f: f.write_bytes(b"XXXXXX" + f.read_bytes()[6:]), "completed.npy: not a readable .npy file"),
])
def test_an_empty_or_unmagic_file_is_refused_naming_it(tmp_path, damage, match):
    _filled(tmp_path / "s")
    damage(tmp_path / "s" / "completed.npy")
    with pytest.raises(store.StoreCorrupt, match=match):
        _store(tmp_path / "s", mode="r")


def test_a_bad_signature_is_refused_naming_it(tmp_path):
    _filled(tmp_path / "s")
    (tmp_path / "s" / "signature.json").write_text("{not json")
    with pytest.raises(store.StoreCorrupt, match=r"signature\.json: not readable JSON"):
        _store(tmp_path / "s")


def test_flipped_bytes_in_a_completed_row_are_skipped_by_readers_and_redone_by_writers(tmp_path):
    _filled(tmp_path / "s")
    arr = np.load(tmp_path / "s" / "train_correct.npy", mmap_mode="r+")
    arr[1] = ~arr[1]  # a flipped row, its completed flag still set
    arr.flush()
    del arr
    with pytest.warns(UserWarning, match=r"s: 1 completed row\(s\) fail their checksum \(models \[1\]\)"):
        reader = _store(tmp_path / "s", mode="r")
    assert reader.done().tolist() == [0, 2]
    with pytest.raises(PermissionError):
        reader.write(3, mask=np.ones(6, bool), result=_result(3))
    with pytest.raises(ValueError):
        reader.completed[0] = False  # read-only maps
    with pytest.warns(UserWarning, match="retrained"):
        writer = _store(tmp_path / "s")
    assert writer.todo(range(4)) == [1, 3]


# ---------------------------------------------------------------- 2. a store knows which data it was trained on
def test_a_store_refuses_a_differently_ordered_copy_of_the_data(tmp_path, smoke_data):
    from lib import subsets
    P = params.load("smoke")
    order = np.arange(len(smoke_data.y_train))
    order[[0, 5]] = [5, 0]  # the same images, two rows in another order
    other = type(smoke_data)(**{**smoke_data.__dict__, "x_train": smoke_data.x_train[order],
                                "y_train": smoke_data.y_train[order]})
    subsets.open_subset_store(P, ds=smoke_data, path=tmp_path / "s")
    with pytest.raises(store.StoreMismatch, match="data_digest"):
        subsets.open_subset_store(P, ds=other, path=tmp_path / "s")


def test_the_data_digest_sees_one_swapped_pair_of_rows(cifar_full):
    ds = cifar_full
    swapped = type(ds)(**{**ds.__dict__, "x_train": ds.x_train[[1, 0, *range(2, len(ds.x_train))]],
                          "y_train": ds.y_train[[1, 0, *range(2, len(ds.y_train))]]})
    assert data.content_digest(swapped) != data.content_digest(ds)


# ---------------------------------------------------------------- 3. non-finite values
@pytest.mark.parametrize("text, key", [("lr_peak: .nan", "lr_peak"), ("lr_peak_epoch: .nan", "lr_peak_epoch"),
                                       ("weight_decay: .inf", "weight_decay"), ("momentum: -.inf", "momentum")])
def test_non_finite_parameters_are_refused(tmp_path, text, key):
    f = tmp_path / "x.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ParamsError, match=f"x.yaml: key '{key}' must be a finite number"):
        params.load(f)


def test_a_diverging_model_is_not_stored(tmp_path, smoke_data):
    from lib import train
    hp = train.HParams(model="tiny_cnn", width=4, epochs=2, batch_size=50, lr_peak=1e12, lr_peak_epoch=1,
                       momentum=0.9, nesterov=False, weight_decay=0.0, label_smoothing=0.0, loader="tensor",
                       eval_batch_size=500)
    st = _store(tmp_path / "s")
    with pytest.raises(train.NonFiniteLoss, match="NaN or infinite"):
        store.fill(st, ids=[0], mask_fn=lambda i: np.ones(len(smoke_data.y_train), bool), progress=False,
                   train_fn=lambda i, m: train.train_model(
                       x_train=smoke_data.x_train, y_train=smoke_data.y_train, x_test=smoke_data.x_test,
                       y_test=smoke_data.y_test, train_idx=np.flatnonzero(m), n_classes=smoke_data.n_classes,
                       seed=0, hp=hp, device="cpu", threads=1))
    assert st.todo([0]) == [0]  # not marked complete


# ---------------------------------------------------------------- 4. malformed images
def _write_copy(folder, *, data_array=None, fine=None):
    """A cifar-100-python/ with a 4-image train file (the given arrays) and a valid test/meta."""
    folder.mkdir(parents=True)
    good = np.zeros((4, 3072), np.uint8)
    blob = {"data": good if data_array is None else data_array, "fine_labels": [0, 1, 2, 3] if fine is None else fine,
            "coarse_labels": [0, 0, 1, 1], "filenames": ["a"] * 4, "batch_label": "x"}
    (folder / "train").write_bytes(pickle.dumps(blob, protocol=2))
    test = dict(blob, data=good, fine_labels=[0, 1, 2, 3])
    (folder / "test").write_bytes(pickle.dumps(test, protocol=2))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"k{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.mark.parametrize("kw, match", [
    (dict(data_array=np.zeros((4, 32, 32, 3), np.uint8)), r"'data' has shape \(4, 32, 32, 3\), expected \(N, 3072\)"),
    (dict(data_array=np.zeros((4, 3072), np.float32)), "'data' has dtype float32, expected uint8"),
    (dict(data_array=np.full((4, 3072), 300, np.int64)), "'data' has dtype int64, expected uint8"),
    (dict(fine=[0, 1, 2, 100]), "'fine_labels' holds values outside 0..99"),
    (dict(fine=[0, 1, 2]), "3 'fine_labels' for 4 images"),
])
def test_malformed_images_are_refused_naming_the_file(tmp_path, kw, match):
    _write_copy(tmp_path / "cifar-100-python", **kw)
    with pytest.raises(data.DataError, match=r"cifar-100-python/train: " + match):
        data.load_cifar(data_dir=str(tmp_path), download_missing=False)


def test_nothing_is_created_in_runs_before_the_data_passes(tmp_path):
    _write_copy(tmp_path / "cifar-100-python", fine=[0, 1, 2, 100])
    f = params.PARAMS_DIR / "faulttest_baddata.yaml"
    f.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "download": False, "model": "tiny_cnn"}))
    try:
        with pytest.raises(data.DataError, match="fine_labels"):
            pipeline.execute("faulttest_baddata", ROOT / "notebooks" / "00_prepare_data.ipynb")
        assert not (ROOT / "runs" / "faulttest_baddata").exists()
    finally:
        f.unlink()


def test_a_truncated_pickle_names_the_file(tmp_path):
    _write_copy(tmp_path / "cifar-100-python")
    f = tmp_path / "cifar-100-python" / "train"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(data.DataError, match=r"cifar-100-python/train: not a CIFAR pickle"):
        data.load_cifar(data_dir=str(tmp_path), download_missing=False)


# ---------------------------------------------------------------- 5. stale or mixed reports
def test_a_new_review_file_reruns_the_step_that_reads_it():
    text = (ROOT / "Makefile").read_text()
    assert "REVIEW_03_leakage_detection.ipynb := $(wildcard params/review/$(PARAMS)/duplicates.csv)" in text
    assert "REVIEW_04_subpopulations.ipynb := $(wildcard params/review/$(PARAMS)/groups.csv)" in text
    out = subprocess.run(["make", "-p", "-n", "-C", str(ROOT), "PARAMS=smoke", "ENV_STAMP=", f"PY={sys.executable}",
                          "runs/smoke/03_leakage_detection.ipynb"], capture_output=True, text=True)
    rule = [line for line in out.stdout.splitlines() if line.startswith("runs/smoke/03_leakage_detection.ipynb:")]
    assert rule, out.stderr[-500:]


def test_a_failed_step_marks_the_report_and_success_clears_it(tmp_path):
    pipeline.mark_failed(tmp_path, "03_leakage_detection.ipynb")
    assert pipeline.read_status(tmp_path) == {"failed": "03_leakage_detection.ipynb", "stale_from": "03"}
    pipeline.mark_succeeded(tmp_path, "02_memorization_scores.ipynb")  # an earlier step: 03 is still failed
    assert pipeline.read_status(tmp_path)["failed"] == "03_leakage_detection.ipynb"
    pipeline.mark_succeeded(tmp_path, "03_leakage_detection.ipynb")
    assert pipeline.read_status(tmp_path) is None


def test_changed_or_vanished_artifacts_rerun_their_step(tmp_path, monkeypatch):
    from lib.run_folder import RunFolder
    P = params.load("smoke")
    run = RunFolder(tmp_path / "smoke")
    monkeypatch.setattr(RunFolder, "of", classmethod(lambda cls, p: run))
    (run.root).mkdir()
    run.path("duplicates").write_text("train_idx,test_idx\n1,2\n")
    run.notebook("03_leakage_detection.ipynb").write_text("{}")
    pipeline.record_outputs(run, "03_leakage_detection.ipynb")
    assert pipeline.check_outputs(P.name) == [] and run.notebook("03_leakage_detection.ipynb").is_file()
    run.path("duplicates").write_text("train_idx,test_idx\n1,3\n")  # changed behind make's back
    lines = pipeline.check_outputs(P.name)
    assert lines and "duplicates.csv" in lines[0] and not run.notebook("03_leakage_detection.ipynb").exists()
    run.notebook("03_leakage_detection.ipynb").write_text("{}")
    pipeline.record_outputs(run, "03_leakage_detection.ipynb")
    run.path("duplicates").unlink()  # vanished
    assert pipeline.check_outputs(P.name) and not run.notebook("03_leakage_detection.ipynb").exists()


# ---------------------------------------------------------------- 6. review decisions that match nothing
def test_decisions_with_swapped_keys_are_an_error(tmp_path):
    auto = pd.DataFrame({"train_idx": [10, 20], "test_idx": [1, 2], "verdict": ["confirm", "reject"]})
    f = tmp_path / "duplicates.csv"
    pd.DataFrame({"train_idx": [1, 2], "test_idx": [10, 20], "decision": ["reject", "confirm"]}).to_csv(f, index=False)
    with pytest.raises(review.ReviewError, match=r"duplicates\.csv: 2 decided row\(s\) match no flagged item"):
        review.merge(auto, keys=["train_idx", "test_idx"], review_file=f)


def test_edits_to_verdict_or_final_instead_of_decision_are_an_error(tmp_path):
    auto = pd.DataFrame({"group_id": [3, 5], "verdict": ["confirm", "confirm"]})
    merged = review.merge(auto, keys=["group_id"], review_file=None)
    f = tmp_path / "groups.csv"
    merged.assign(final=[True, False]).to_csv(f, index=False)  # final edited on line 3
    with pytest.raises(review.ReviewError, match=r"groups\.csv: line\(s\) 3: `verdict`/`final` were edited"):
        review.merge(auto, keys=["group_id"], review_file=f)
    merged.assign(verdict=["confirm", "reject"]).to_csv(f, index=False)  # verdict edited
    with pytest.raises(review.ReviewError, match="line\\(s\\) 3"):
        review.merge(auto, keys=["group_id"], review_file=f)


# ---------------------------------------------------------------- clear failures
def test_a_user_error_inside_a_notebook_is_one_line(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_name = "x"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from lib import data\nraise data.DataError('/some/file: bad bytes')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "98_userror.ipynb"
    nbformat.write(nb, src)
    env = {k: v for k, v in os.environ.items() if k != "MEMAUDIT_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "lib.pipeline", "smoke", str(src)], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "error: /some/file: bad bytes (DataError; MEMAUDIT_DEBUG=1 shows the " \
                                                "traceback)"
    assert "Traceback" not in r.stderr
    (ROOT / "runs" / "smoke" / "98_userror.failed.ipynb").unlink(missing_ok=True)
    pipeline.mark_succeeded(params.load("smoke").fig_dir, "98_userror.ipynb")


@pytest.mark.parametrize("text, match", [
    ("seed: 1\nseed: 2\n", "key 'seed' is given twice"),
    ("epochs: 10\nlr_peak_epoch: 5\nretrain_epochs: 4\n", "retrain_epochs"),
    ("n_subset_models: 1\n", "n_subset_models' must be >= 2"),
])
def test_parameter_mistakes_fail_at_load(tmp_path, text, match):
    f = tmp_path / "x.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError, match=match):
        params.load(f)


def test_a_non_utf8_params_file_names_itself(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_bytes(b"seed: \xff\n")
    with pytest.raises(ParamsError, match="x.yaml: not UTF-8 text"):
        params.load(f)


def test_exponent_floats_are_floats(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("lr_peak: 1e-1\nweight_decay: 5E-4\n")
    P = params.load(f)
    assert P.lr_peak == 0.1 and P.weight_decay == 5e-4


def test_an_empty_parameter_file_is_paper_cost_and_refuses_a_cpu(tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("MEMAUDIT_ALLOW_CPU", raising=False)
    f = tmp_path / "anything.yaml"
    f.write_text("")
    P = params.load(f)
    assert P.gpu_cost and not P.requires_gpu
    with pytest.raises(params.MachineError, match="anything.*resnet50 on the full cifar100"):
        params.resolve_device(P)
    monkeypatch.setenv("MEMAUDIT_ALLOW_CPU", "1")
    assert params.resolve_device(P) == "cpu"


def test_all_stale_retraining_stores_are_listed_at_once(tmp_path, smoke_data):
    import dataclasses
    from lib import buckets, retrain
    P = params.load("smoke")
    b = buckets.assign(memorized_idx=[1, 2, 3], dup_train_idx=[1], dup_test_idx=[0], dup_kind=["exact"],
                       subpop_train_idx=[], pair_train_idx=[1, 2, 3], pair_test_idx=[0, 1, 2])
    planned = [dataclasses.replace(p, path=tmp_path / p.condition.name) for p in retrain.plan(P=P, buckets=b)]
    for p in planned[:3]:
        retrain.open_condition(P=P, planned=p, ds=smoke_data)
    Q = dataclasses.replace(P, lr_peak=P.lr_peak * 2)
    stale = retrain.stale_stores(P=Q, planned=planned, ds=smoke_data)
    assert sorted(stale) == sorted(p.path for p in planned[:3])
    with pytest.raises(store.StoreMismatch, match=r"3 retraining store\(s\).*python -m lib.retrain --remove-stale"):
        retrain.refuse_stale(P=Q, planned=planned, ds=smoke_data)


def test_a_full_disk_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(store.DiskFull, match="no space left on the disk to create the store .*s"):
        _store(tmp_path / "s")
    assert list(tmp_path.iterdir()) == []  # no .s.creating-* folder


def test_a_worker_killed_by_sigbus_points_at_the_disk(tmp_path, monkeypatch):
    from lib import workers
    (tmp_path / "sigbus_worker.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGBUS)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(OSError, match="SIGBUS.*disk is most likely full"):
        workers.run(module="sigbus_worker", payloads=[None], total=1, n_left=lambda: 1, desc="x", progress=False)


def test_a_second_make_all_on_the_same_set_refuses():
    lock = ROOT / "runs" / ".faulttest.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = subprocess.run(["make", "-C", str(ROOT), "all", "PARAMS=faulttest", "ENV_STAMP=",
                            f"PY={sys.executable}"], capture_output=True, text=True)
    lock.unlink()
    assert r.returncode != 0 and "another 'make all PARAMS=faulttest' is running" in r.stdout
    assert not (ROOT / "runs" / "faulttest").exists()  # nothing ran


def test_the_subsets_cli_says_how_to_get_the_data(tmp_path):
    with pytest.raises(data.DataError, match="lacks .*set CIFAR_DATA_DIR") as e:
        data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    if (ROOT.parent / "shared" / "data" / "cifar100" / "build.py").is_file():
        assert "make data/cifar-100-python/train" in str(e.value)
    assert data.data_root("") == ROOT / "data" or os.environ.get("CIFAR_DATA_DIR")  # where make builds it

