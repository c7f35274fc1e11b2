"""FZ subset runs: masks from (seed, id) alone; a kill -9 and resume equals an uninterrupted run bit for bit."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from lib import data, params, store as store_mod, subsets


def test_masks_are_pure_functions_of_seed_and_id_with_exact_size():
    for n, ratio in [(1000, 0.7), (7, 0.5), (5000, 0.3)]:
        m = subsets.subset_mask(seed=0, model_id=3, n_train=n, ratio=ratio)
        assert m.dtype == bool and m.shape == (n,) and m.sum() == round(ratio * n)
        assert np.array_equal(m, subsets.subset_mask(seed=0, model_id=3, n_train=n, ratio=ratio))
    a = subsets.subset_mask(seed=0, model_id=0, n_train=1000, ratio=0.7)
    assert not np.array_equal(a, subsets.subset_mask(seed=0, model_id=1, n_train=1000, ratio=0.7))
    assert not np.array_equal(a, subsets.subset_mask(seed=1, model_id=0, n_train=1000, ratio=0.7))
    # over many models every example is in about ratio of the subsets (binomial sd 0.046 at 100 models)
    freq = np.mean([subsets.subset_mask(seed=0, model_id=i, n_train=200, ratio=0.7) for i in range(100)], axis=0)
    assert abs(freq.mean() - 0.7) < 1e-9 and freq.min() > 0.5 and freq.max() < 0.9
    assert subsets.model_seed(seed=0, model_id=5) == subsets.model_seed(seed=0, model_id=5)
    assert subsets.model_seed(seed=0, model_id=5) != subsets.model_seed(seed=0, model_id=6)


def test_parse_range():
    assert subsets.parse_range("100:200", n=300) == range(100, 200)
    assert subsets.parse_range(":5", n=10) == range(0, 5) and subsets.parse_range("5:", n=10) == range(5, 10)
    with pytest.raises(ValueError):
        subsets.parse_range("5:20", n=10)


def _tiny_params(tmp_path, **over):
    raw = yaml.safe_load((params.PARAMS_DIR / "smoke.yaml").read_text())
    raw.update(dict(width=4, epochs=2, batch_size=100, n_subset_models=5, lr_peak_epoch=1), **over)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


ARRAYS = ["masks", "train_correct", "test_correct", "train_margin", "test_margin", "test_acc", "train_acc",
          "curve", "completed"]


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    yaml_path = _tiny_params(tmp_path)
    P = params.load(yaml_path)
    whole = subsets.run_subsets(P, path=tmp_path / "whole", progress=False, workers=1)
    assert whole.completed.all() and (whole.test_acc > 0).all()

    cmd = [sys.executable, "-m", "lib.subsets", "--params", str(yaml_path), "--store", str(tmp_path / "killed"),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=params.ROOT, env=os.environ.copy())
    done = np.zeros(0)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "killed" / "signature.json").is_file():
            done = np.load(tmp_path / "killed" / "completed.npy")
            if 1 <= done.sum() < 4:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the workers die with their parent
    ds = data.load(P)
    partial = subsets.open_subset_store(P, ds=ds, path=tmp_path / "killed")
    kept = np.flatnonzero(partial.completed)
    assert 1 <= len(kept) < 5
    seconds_before = partial.seconds[kept].copy()
    time.sleep(1.0)
    assert partial.completed.sum() == len(kept), "a worker outlived its killed parent"

    subprocess.run(cmd[:-2] + ["1", "--no-progress"], cwd=params.ROOT, env=os.environ.copy(), check=True)
    resumed = subsets.open_subset_store(P, ds=ds, path=tmp_path / "killed")
    assert np.array_equal(resumed.seconds[kept], seconds_before)  # finished models were not trained again
    for name in ARRAYS:
        a, b = getattr(whole, name), getattr(resumed, name)
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


def test_a_store_refuses_other_parameters(tmp_path):
    P = params.load(_tiny_params(tmp_path))
    ds = data.load(P)
    subsets.open_subset_store(P, ds=ds, path=tmp_path / "s")
    Q = params.load(_tiny_params(tmp_path, lr_peak=0.5))
    with pytest.raises(store_mod.StoreMismatch, match="lr_peak") as e:
        subsets.open_subset_store(Q, ds=ds, path=tmp_path / "s")
    assert str(tmp_path / "s") in str(e.value)


def test_hparams_come_from_params_and_subset_weight_decay_overrides(tmp_path):
    P = params.load(_tiny_params(tmp_path, weight_decay=0.001, subset_weight_decay=None))
    hp = subsets.hparams(P)
    assert (hp.model, hp.width, hp.epochs, hp.weight_decay, hp.loader) == (P.model, 4, 2, 0.001, "tensor")
    Q = params.load(_tiny_params(tmp_path, weight_decay=0.001, subset_weight_decay=0.0))
    assert subsets.hparams(Q).weight_decay == 0.0
    assert "weight_decay" in subsets.signature(Q, subsets.hparams(Q), data_digest="x")
