"""The training loop: augmentation and schedule by hand-checkable cases, then real training on smoke data."""
import numpy as np
import pytest
import torch

from lib import train
from lib.train import HParams, train_model


def test_triangular_lr_known_values():
    kw = dict(lr_peak=0.4, peak_epoch=2.0, epochs=10)
    assert train.triangular_lr(0.0, **kw) == 0.0
    assert train.triangular_lr(1.0, **kw) == pytest.approx(0.2)
    assert train.triangular_lr(2.0, **kw) == pytest.approx(0.4)
    assert train.triangular_lr(6.0, **kw) == pytest.approx(0.2)
    assert train.triangular_lr(10.0, **kw) == 0.0


def test_augmented_batches_are_crops_or_flipped_crops_of_each_subset_row_once():
    n, size = 30, 32
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8)
    y = torch.arange(n) * 10  # label identifies the row
    idx = torch.tensor([1, 4, 5, 9, 20, 29])
    x_pad = train.pad_images(x)
    seen, shifts, flips = [], set(), 0
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # five epochs
        epoch_rows = []
        for xb, yb in train.augmented_batches(x_pad, y, idx, batch_size=4, generator=g):
            assert xb.shape[1:] == (3, size, size) and xb.dtype == torch.uint8
            assert xb.is_contiguous(memory_format=torch.channels_last)
            for img, label in zip(xb.permute(0, 2, 3, 1), yb):
                row = int(label) // 10
                epoch_rows.append(row)
                crops = {(dy, dx, f): x_pad[row, dy:dy + size, dx:dx + size] for dy in range(9) for dx in range(9)
                         for f in (False, True)}
                matches = [k for k, c in crops.items() if torch.equal(img, c.flip(1) if k[2] else c)]
                assert matches, "an augmented image is not a (flipped) 32x32 crop of its padded source"
                shifts.add(matches[0][:2])
                flips += matches[0][2]
        assert sorted(epoch_rows) == idx.tolist()  # every subset row exactly once per epoch, nothing else
        seen.append(epoch_rows)
    assert len({tuple(r) for r in seen}) > 1  # the order changes between epochs
    assert len(shifts) > 10 and 0 < flips < 30  # crops vary and about half are flipped


def test_evaluate_margin_and_correctness_by_hand():
    class FixedLogits(torch.nn.Module):  # logits = the first pixel's three standardised channels
        def forward(self, x):
            return x[:, :, 0, 0]
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    x = torch.zeros(3, 2, 2, 3, dtype=torch.uint8)
    x[0, 0, 0] = torch.tensor([5, 1, 2])  # class 0: margin 5 - 2 = 3, correct
    x[1, 0, 0] = torch.tensor([5, 1, 2])  # class 2: margin 2 - 5 = -3, wrong
    x[2, 0, 0] = torch.tensor([0, 7, 7])  # class 1: tie with class 2 -> margin 0
    y = torch.tensor([0, 2, 1])
    correct, margin = train.evaluate(FixedLogits(), train.ordered_batches(x, y, batch_size=2), n=3, device="cpu",
                                     mean=mean, std=std)
    assert margin.dtype == np.float16 and correct.dtype == bool
    assert margin.tolist() == [3.0, -3.0, 0.0]
    assert correct[:2].tolist() == [True, False]


def _smoke_hp(smoke, **kw):
    return HParams.from_params(smoke, **{"model": "tiny_cnn", "width": 8, "epochs": 8, "batch_size": 64,
                                         "lr_peak": 0.2, "lr_peak_epoch": 2, **kw})


@pytest.mark.slow
def test_small_model_beats_chance_on_smoke_and_is_deterministic(smoke, smoke_data):
    ds = smoke_data
    idx = np.arange(0, len(ds.x_train), 2)[:400]  # a subset: every other row
    kw = dict(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test, train_idx=idx,
              n_classes=ds.n_classes, hp=_smoke_hp(smoke), device="cpu", threads=1)
    r = train_model(seed=3, **kw)
    chance = 1 / ds.n_classes
    assert r["test_acc"] > 2 * chance, r["test_acc"]
    assert r["train_correct"].shape == (len(ds.x_train),) and r["train_correct"].dtype == bool
    assert r["train_margin"].shape == (len(ds.x_train),) and r["train_margin"].dtype == np.float16
    assert r["test_correct"].shape == (len(ds.x_test),) and r["test_margin"].dtype == np.float16
    assert r["test_acc"] == pytest.approx(r["test_correct"].mean())
    assert r["train_acc"] == pytest.approx(r["train_correct"][idx].mean())
    assert r["curve"].shape == (8,) and r["curve"][-1] == pytest.approx(r["test_acc"])
    # a positive margin means a correct prediction
    assert np.array_equal(r["test_margin"] > 0, r["test_correct"] & (r["test_margin"] != 0))
    # the subset is fitted better than the rows left out
    out = np.setdiff1d(np.arange(len(ds.x_train)), idx)
    assert r["train_correct"][idx].mean() > r["train_correct"][out].mean()
    # CPU determinism: the same seed gives the same bits; another seed does not
    r2 = train_model(seed=3, **{**kw, "hp": _smoke_hp(smoke, epochs=2)})
    r3 = train_model(seed=3, **{**kw, "hp": _smoke_hp(smoke, epochs=2)})
    r4 = train_model(seed=4, **{**kw, "hp": _smoke_hp(smoke, epochs=2)})
    assert np.array_equal(r2["test_margin"].view(np.uint16), r3["test_margin"].view(np.uint16))
    assert np.array_equal(r2["train_margin"].view(np.uint16), r3["train_margin"].view(np.uint16))
    assert not np.array_equal(r2["test_margin"], r4["test_margin"])


@pytest.mark.slow
def test_ffcv_backend_trains_to_comparable_accuracy(smoke, smoke_data, tmp_path):
    pytest.importorskip("ffcv")
    from lib import ffcv_loader
    ds = smoke_data
    paths = ffcv_loader.write_betons(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                                     cache_dir=tmp_path)
    assert ffcv_loader.write_betons(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                                    cache_dir=tmp_path) == paths  # written once, found again by content
    idx = np.arange(len(ds.x_train))
    accs = {}
    for loader in ("tensor", "ffcv"):
        r = train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test, train_idx=idx,
                        n_classes=ds.n_classes, seed=0, hp=_smoke_hp(smoke, loader=loader, epochs=6), device="cpu",
                        threads=1, ffcv_paths=paths)
        accs[loader] = r["test_acc"]
        assert r["train_correct"].shape == (len(ds.x_train),)
    assert accs["ffcv"] > 2 / ds.n_classes, accs
    assert abs(accs["ffcv"] - accs["tensor"]) < 0.12, accs
