"""The duplicate finder's learned pair verifier (lib/verifier.py, trained by bench/train_verifier.py)."""
import importlib.util

import numpy as np
import pytest
import torch

from lib import duplicates, planted, verifier
from lib.params import ROOT

_spec = importlib.util.spec_from_file_location("train_verifier", ROOT / "bench" / "train_verifier.py")
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)


def _cut(t: torch.Tensor) -> torch.Tensor:
    return t[..., duplicates._IN, duplicates._IN]


def test_committed_weights_tell_copies_from_other_images(smoke_data):
    """The committed weights: what trained them is recorded, and on images it never saw (the smoke set's test
    split) a planted copy (shifted, cropped, recoloured, re-compressed) gets a positive logit and another image
    of the same set a negative one, after the finder's alignment."""
    net, settings = verifier.read()
    assert settings["script"] == "bench/train_verifier.py" and settings["lookalikes"] > 10_000
    assert sum(p.numel() for p in net.parameters()) < 40_000
    x = smoke_data.x_test[:300]
    kinds = ["shift", "crop", "colour", "jpeg"] * 75
    copies = torch.as_tensor(planted.plant(x=x, kinds=kinds, seed=5))
    xt = torch.as_tensor(x)
    same = net.logits(*(_cut(t) for t in duplicates.align_pairs(copies, xt))).numpy()
    other = net.logits(*(_cut(t) for t in duplicates.align_pairs(copies, xt.roll(1, 0)))).numpy()
    assert (same > 0).mean() > 0.9 and (other < 0).mean() > 0.95
    assert np.median(same) - np.median(other) > 5


def test_fit_learns_copies_from_lookalikes(cifar_full):
    """train_verifier's pairs and verifier.fit on a small set: look-alikes mined from the images' own neighbours
    against random copies; a verifier trained on 3,000 training images separates the pairs of 1,000 others."""
    x = cifar_full.x_train
    q, w, y = T.training_pairs(x[:3000], seed=0, progress=False)
    assert y.sum() == (y == 0).sum() > 1000 and q.shape[1:] == (3, 26, 26) and q.dtype == torch.float16
    net = verifier.fit(q, w, y, seed=0, epochs=3, progress=False)
    qh, wh, yh = T.training_pairs(x[3000:4000], seed=1, progress=False)
    v = net.logits(qh, wh).numpy()
    pos, neg = v[yh.numpy() == 1], v[yh.numpy() == 0]
    auc = (pos[:, None] > neg[None, :]).mean()
    assert auc > 0.85, auc


def test_weights_round_trip_and_a_bad_file_names_itself(tmp_path):
    net = verifier.Verifier()
    verifier.save(net, tmp_path / "v.npz", seed=3)
    back, settings = verifier.read(tmp_path / "v.npz")
    q, w = torch.rand(8, 3, 26, 26), torch.rand(8, 3, 26, 26)
    assert settings == {"seed": 3} and torch.equal(net.eval().logits(q, w), back.logits(q, w))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="bad.npz"):
        verifier.read(tmp_path / "bad.npz")
    np.savez(tmp_path / "pickled.npz", __settings__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RuntimeError, match="pickled.npz"):        # an object array is never unpickled
        verifier.read(tmp_path / "pickled.npz")


def test_find_lists_the_verifier_of_each_pair(smoke_data):
    x = smoke_data.x_test[:200]
    ref = np.concatenate([x[:40], smoke_data.x_train[:400]])
    found = duplicates.find(x_query=planted.plant(x=x[:40], kinds=["exact", "shift"] * 20, seed=1), x_ref=ref,
                            near_threshold=0.9, review_threshold=0.5, top_k=4, progress=False)
    p = found.pairs
    assert list(p.columns) == duplicates.PAIR_COLUMNS
    assert p.loc[p["kind"] == "exact", "verifier"].isna().all()
    near = p[p["kind"] == "near"]
    assert len(near) >= 15 and np.isfinite(near["verifier"]).all() and (near["verifier"] > 0).mean() > 0.8
