"""The per-model store: rows persist, completion is the last write, a different signature is refused."""
import json

import numpy as np
import pytest

from lib import store as store_mod

SHAPE = dict(n_models=5, n_train=7, n_test=3, n_epochs=2)


def _result(i: int) -> dict:
    """A model's result with values that identify the model (the store must not mix rows)."""
    rng = np.random.default_rng(i)
    return dict(train_correct=rng.random(7) < 0.5, train_margin=rng.normal(size=7).astype(np.float16),
                test_correct=rng.random(3) < 0.5, test_margin=rng.normal(size=3).astype(np.float16),
                test_acc=0.1 * i, train_acc=0.2 * i, seconds=1.5 * i, curve=np.array([0.01 * i, 0.02 * i]))


def test_rows_persist_and_completed_ones_are_skipped(tmp_path):
    sig = {"lr_peak": 0.2, "classes": [0, 1]}
    st = store_mod.open_store(tmp_path / "s", signature=sig, **SHAPE)
    assert st.todo(range(5)) == [0, 1, 2, 3, 4]
    assert st.masks.shape == (5, 7) and st.masks.dtype == bool
    assert st.train_margin.dtype == np.float16 and st.curve.shape == (5, 2) and st.test_acc.dtype == np.float32
    for i in (1, 3):
        st.write(i, mask=np.arange(7) % (i + 1) == 0, result=_result(i))
    del st
    again = store_mod.open_store(tmp_path / "s", signature=dict(sig), **SHAPE)
    assert again.todo(range(5)) == [0, 2, 4] and again.todo([3, 4]) == [4]
    for i in (1, 3):
        r = _result(i)
        assert np.array_equal(again.masks[i], np.arange(7) % (i + 1) == 0)
        assert np.array_equal(again.train_margin[i], r["train_margin"])
        assert np.array_equal(again.test_correct[i], r["test_correct"])
        assert again.test_acc[i] == np.float32(0.1 * i) and again.curve[i, 1] == np.float32(0.02 * i)
    assert not again.masks[0].any() and again.test_acc[2] == 0  # untouched rows stay empty
    assert json.loads((tmp_path / "s" / "signature.json").read_text())["lr_peak"] == 0.2


def test_fill_trains_only_missing_rows_in_order(tmp_path):
    st = store_mod.open_store(tmp_path / "s", signature={}, **SHAPE)
    st.write(2, mask=np.ones(7, bool), result=_result(2))
    calls = []

    def train_fn(i, mask):
        calls.append(i)
        assert mask.sum() == i + 1
        return _result(i)

    store_mod.fill(st, ids=range(1, 5), mask_fn=lambda i: np.arange(7) <= i, train_fn=train_fn)
    assert calls == [1, 3, 4]  # 2 was complete, 0 is outside the range
    assert st.todo(range(5)) == [0]
    assert st.masks[4].sum() == 5 and st.test_acc[3] == np.float32(0.3)


def test_a_different_signature_or_shape_is_refused_with_the_keys_and_path(tmp_path):
    path = tmp_path / "s"
    store_mod.open_store(path, signature={"lr_peak": 0.2, "epochs": 2, "seed": 0}, **SHAPE)
    with pytest.raises(store_mod.StoreMismatch) as e:
        store_mod.open_store(path, signature={"lr_peak": 0.4, "epochs": 2, "seed": 0}, **SHAPE)
    msg = str(e.value)
    assert "lr_peak" in msg and "0.2" in msg and "0.4" in msg and str(path) in msg
    assert "epochs" not in msg and "seed" not in msg
    with pytest.raises(store_mod.StoreMismatch, match="n_models"):
        store_mod.open_store(path, signature={"lr_peak": 0.2, "epochs": 2, "seed": 0}, **{**SHAPE, "n_models": 6})
    with pytest.raises(store_mod.StoreMismatch, match="weight_decay"):
        store_mod.open_store(path, signature={"lr_peak": 0.2, "epochs": 2, "seed": 0, "weight_decay": 0.0}, **SHAPE)
