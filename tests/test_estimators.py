"""lib/estimators.py: hand-computed toy cases, a planted case (mislabelled points) and the reference's reproducibility."""
from __future__ import annotations

import numpy as np
import pytest

from lib import estimators as E

NAN = np.nan


# ---------------------------------------------------------------- hand-computed
def test_fz_01_and_fz_margin_are_differences_of_masked_means():
    masks = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 1]], bool)  # (4 models, 3 examples)
    correct = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1], [0, 1, 0]], bool)
    margin = np.array([[2.0, 1.0, -1.0], [4.0, -2.0, 3.0], [-1.0, 0.5, 1.0], [-3.0, 2.0, -4.0]])
    # example 0: in = models 0, 1 -> 1, 1; out = 2, 3 -> 0, 0: 1 - 0 = 1
    # example 1: in = 0, 2 -> 1, 0; out = 1, 3 -> 0, 1: 0.5 - 0.5 = 0
    # example 2: in = 1, 2, 3 -> 1, 1, 0; out = 0 -> 0: 2/3 - 0
    assert E.fz_01(masks=masks, train_correct=correct) == pytest.approx([1.0, 0.0, 2 / 3])
    # margins: (2 + 4) / 2 - (-1 - 3) / 2 = 5;  (1 + 0.5) / 2 - (-2 + 2) / 2 = 0.75;  (3 + 1 - 4) / 3 - (-1) = 1
    assert E.fz_margin(masks=masks, train_margin=margin) == pytest.approx([5.0, 0.75, 1.0])
    soft = 1 / (1 + np.exp(-margin / 0.5))  # sigmoid(margin / scale) at scale 0.5
    assert E.fz_margin(masks=masks, train_margin=margin, scale=0.5) == pytest.approx(
        E.masked_difference(masks=masks, values=soft)[0])
    assert E.fz_margin(masks=masks, train_margin=margin, scale=1e-4) == pytest.approx(
        E.fz_01(masks=masks, train_correct=margin > 0))  # scale -> 0: FZ's 0/1 on the margins' signs


def test_an_example_every_model_trained_on_is_not_estimable_and_scores_zero():
    masks = np.array([[1, 1], [1, 0]], bool)
    diff, ok = E.masked_difference(masks=masks, values=np.array([[1.0, 2.0], [3.0, 5.0]]))
    assert ok.tolist() == [False, True] and diff.tolist() == [0.0, -3.0]


def test_training_dynamics_scores_by_hand():
    # 2 models x 3 epochs x 2 examples; model 1 did not train on example 1 (NaN)
    loss = np.array([[[2.0, 1.0], [1.0, 0.5], [0.0, 0.3]],
                     [[3.0, NAN], [1.0, NAN], [1.0, NAN]]])
    # example 0: mean step loss 8 / 6, times 3 epochs = 4;  example 1: (1 + 0.5 + 0.3) / 3 * 3 = 1.8
    assert E.cumulative_loss(loss) == pytest.approx([4.0, 1.8])
    margin = np.array([[[-1.0, 2.0], [0.5, -0.1], [1.0, 0.0]],
                       [[-2.0, NAN], [-0.5, NAN], [3.0, NAN]]])
    # example 0: wrong in 3 of 6 steps;  example 1: wrong (margin <= 0) in 2 of 3
    assert E.slow_learning(margin) == pytest.approx([0.5, 2 / 3])
    # late learning: model 0 right at the end on example 0 (1 - 2/3), model 1 too (1 - 1/3); example 1:
    # model 0 wrong at the end (margin 0), right in 1 of 3 epochs: 0 - 1/3; model 1 did not train on it
    assert E.late_learning(margin) == pytest.approx([(1 / 3 + 2 / 3) / 2, -1 / 3])
    assert np.isnan(E.cumulative_loss(np.full((1, 2, 1), NAN)))[0]


def test_shrunk_by_hand():
    fz = np.array([0.0, 1.0, 0.0, 1.0])
    flat = np.zeros((4, 1))  # features that say nothing: the prior mean is fz's mean, 0.5
    assert E.shrunk(fz=fz, se=np.zeros(4), features=flat) == pytest.approx(fz)  # no noise: unchanged
    # var(fz - g) = 0.25; se^2 = 0.0625 everywhere -> tau2 = 0.1875, weight 0.1875 / 0.25 = 0.75 on fz
    assert E.shrunk(fz=fz, se=np.full(4, 0.25), features=flat) == pytest.approx(0.5 + 0.75 * (fz - 0.5))
    assert E.shrunk(fz=fz, se=np.full(4, 10.0), features=flat) == pytest.approx(np.full(4, 0.5), abs=1e-3)
    exact = np.array([[0.0], [2.0], [0.0], [2.0]])  # features that predict fz exactly: g = fz
    assert E.shrunk(fz=fz, se=np.full(4, 10.0), features=exact) == pytest.approx(fz)


def test_influence_matrix_by_hand():
    masks = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)  # 4 models, 2 train examples
    test = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 1]], float)  # 3 test examples
    # train 0: in {0, 1}, out {2, 3}: test means (1, .5, .5) - (0, .5, 1) = (1, 0, -.5)
    # train 1: in {1, 2}, out {0, 3}: (.5, 1, .5) - (.5, 0, 1) = (0, 1, -.5)
    assert E.influence_matrix(masks=masks, test_values=test) == pytest.approx(np.array([[1, 0, -.5], [0, 1, -.5]]))


def test_agreement_measures_by_hand():
    assert E.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert E.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert E.spearman([1, 2, NAN, 4], [1, 2, 9, 3]) == pytest.approx(1.0)  # NaN rows dropped
    assert E.top_n(np.array([0.1, 0.9, NAN, 0.5]), 2).tolist() == [1, 3]
    assert E.precision_recall(np.array([1, 2, 3, 4]), np.array([3, 4, 5])) == (0.5, pytest.approx(2 / 3))
    infl = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.95]])
    y_tr, y_te = np.array([0, 0, 1]), np.array([0, 1])
    tr, te = E.same_class_pairs(infl, y_train=y_tr, y_test=y_te, n=2)  # (0, 1) and (1, 1) cross classes
    assert list(zip(tr.tolist(), te.tolist())) == [(2, 1), (0, 0)]
    assert E.pair_recall(infl, truth_train=np.array([1, 2]), truth_test=np.array([0, 1]), y_train=y_tr,
                         y_test=y_te) == 0.5


# ---------------------------------------------------------------- planted: mislabelled points
def _toy_runs(seed: int, *, n_subset: int = 40, n_full: int = 2, steps: int = 60, ratio: float = 0.7):
    """A learner that can memorize: softmax regression on more dimensions than points (full-batch GD).

    3 Gaussian classes of 30 points in 128 dimensions; 6 planted points carry a wrong label.
    Returns (planted idx, dict of every estimator's score).
    """
    rng = np.random.default_rng(seed)
    n_cls, n_per, dim, n_planted = 3, 30, 128, 6
    centers = rng.normal(size=(n_cls, dim)) * 0.35
    y_true = np.repeat(np.arange(n_cls), n_per)
    x = centers[y_true] + rng.normal(size=(len(y_true), dim)) * 0.35
    planted = rng.choice(len(y_true), n_planted, replace=False)
    y = y_true.copy()
    y[planted] = (y_true[planted] + rng.integers(1, n_cls, n_planted)) % n_cls

    def fit(idx):
        w = np.zeros((dim, n_cls))
        loss_t, margin_t = np.full((steps, len(y)), NAN), np.full((steps, len(y)), NAN)
        for t in range(steps):
            logits = x @ w
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            true = logits[np.arange(len(y)), y]
            other = np.where(np.eye(n_cls, dtype=bool)[y], -np.inf, logits).max(1)
            loss_t[t, idx] = -np.log(p[idx, y[idx]])
            margin_t[t, idx] = (true - other)[idx]
            grad = x[idx].T @ (p[idx] - np.eye(n_cls)[y[idx]]) / len(idx)
            w -= 2.0 * grad
        logits = x @ w
        true = logits[np.arange(len(y)), y]
        other = np.where(np.eye(n_cls, dtype=bool)[y], -np.inf, logits).max(1)
        return true - other, loss_t, margin_t

    masks = np.zeros((n_subset, len(y)), bool)
    margins = np.zeros((n_subset, len(y)))
    for m in range(n_subset):
        masks[m, rng.permutation(len(y))[:round(ratio * len(y))]] = True
        margins[m] = fit(np.flatnonzero(masks[m]))[0]
    full = [fit(np.arange(len(y))) for _ in range(n_full)]  # deterministic GD: dynamics models agree
    dyn_loss, dyn_margin = np.stack([f[1] for f in full]), np.stack([f[2] for f in full])
    scores = dict(fz_01=E.fz_01(masks=masks, train_correct=margins > 0),
                  fz_margin=E.fz_margin(masks=masks, train_margin=margins),
                  fz_soft=E.fz_margin(masks=masks, train_margin=margins, scale=0.25),
                  cumulative_loss=E.cumulative_loss(dyn_loss), slow_learning=E.slow_learning(dyn_margin),
                  late_learning=E.late_learning(dyn_margin))
    few = slice(0, 12)  # the combined design: FZ from 12 subset models, shrunk toward the dynamics' prediction
    fz_few = E.mem_mod.memorization(masks=masks[few], train_correct=margins[few] > 0)
    scores["shrunk"] = E.shrunk(fz=fz_few.mem, se=fz_few.se,
                                features=E.dynamics_features(dyn_loss, dyn_margin))
    return planted, scores


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_estimator_ranks_planted_mislabelled_points_above_the_rest(seed):
    planted, scores = _toy_runs(seed)
    for name, s in scores.items():
        rest = np.delete(s, planted)
        gap = s[planted].min() - rest.max()
        spread = s.max() - s.min()
        assert gap > 0.05 * spread, f"{name} (seed {seed}): planted min {s[planted].min():.3f}, rest max {rest.max():.3f}"


# ---------------------------------------------------------------- the reference is reproducible
TINY = """\
classes: [0, 1, 2, 3]
n_train_per_class: 15
n_test_per_class: 5
model: tiny_cnn
width: 4
epochs: 2
batch_size: 16
lr_peak: 0.2
lr_peak_epoch: 1
eval_batch_size: 100
n_subset_models: 6
n_dynamics_models: 1
subset_weight_decay: 0.0
"""


def test_the_reference_is_reproducible_from_its_command(tmp_path, monkeypatch):
    """A small version of `make truth` run twice from scratch: the same reference (CPU training is bit-exact,
    so the stated tolerance, 1e-9 on mem and exact index sets, is met with room)."""
    from lib import data, params

    read = data.load
    cache = {}
    monkeypatch.setattr(data, "load", lambda P: cache.get(P.name) or cache.setdefault(P.name, read(P)))  # read once

    path = tmp_path / "tiny_truth.yaml"
    path.write_text(TINY)
    P = params.load(path)
    refs = [E.make_truth(P, out=tmp_path / f"ref{r}.npz", subsets_path=tmp_path / f"s{r}",
                         dynamics_path=tmp_path / f"d{r}", workers=1, progress=False) for r in range(2)]
    a, b = refs
    for key in ("mem", "mem_even", "mem_odd", "se"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-9, err_msg=key)
    for key in ("memorized_idx", "memorized_idx_even", "pair_train", "pair_test", "model_ids_odd"):
        assert np.array_equal(a[key], b[key]), key
    assert int(a["meta_n_subset_models"]) == 6 and set(a["model_ids_even"]) == {0, 2, 4}
    assert a["mem"].shape == (60,) and a["meta_data_digest"] == b["meta_data_digest"]


def test_models_for_target_se_scales_like_one_over_sqrt_models():
    se = np.array([0.1, 0.05, 0.2, 9.0])
    est = np.array([True, True, True, False])  # the last point is not estimable: ignored
    out = E.models_for_target_se(se=se, estimable=est, n_models=100, target_se=0.05, ratio=0.5, quantiles=(0.5, 1.0))
    # median SE 0.1 -> 100 (0.1 / 0.05)^2 = 400 models; the largest, 0.2 -> 1,600
    assert out["se"] == {0.5: pytest.approx(0.1), 1.0: pytest.approx(0.2)}
    assert out["needed"] == {0.5: 400, 1.0: 1600}
    assert out["worst_case"] == 400  # 0.25 (2 + 2) / 0.0025


# ---------------------------------------------------------------- recording training dynamics
def test_recording_dynamics_leaves_the_model_unchanged_and_fills_only_trained_rows():
    from lib.train import HParams, train_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    hp = HParams(model="tiny_cnn", width=4, epochs=2, batch_size=8, lr_peak=0.1, lr_peak_epoch=1, momentum=0.9,
                 nesterov=False, weight_decay=0.0, label_smoothing=0.0, loader="tensor", eval_batch_size=64)
    idx = np.arange(0, 40, 2)  # trains on the even rows
    kw = dict(x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], train_idx=idx, n_classes=4, seed=3, hp=hp,
              device="cpu", threads=1)
    off, on = train_model(**kw), train_model(**kw, record_dynamics=True)
    assert "dyn_loss" not in off
    np.testing.assert_array_equal(off["train_margin"], on["train_margin"])  # the same model, bit for bit
    for key in ("dyn_loss", "dyn_margin"):
        assert on[key].shape == (2, 40) and on[key].dtype == np.float16
        assert np.isfinite(on[key][:, idx]).all() and np.isnan(np.delete(on[key], idx, axis=1)).all()
    assert (on["dyn_loss"][:, idx] >= 0).all()


def test_dynamics_arrays_appear_only_in_a_store_opened_for_them(tmp_path):
    from lib import store

    kw = dict(n_models=2, n_train=5, n_test=3, n_epochs=2, signature={"a": 1})
    plain = store.open_store(tmp_path / "plain", **kw)
    assert plain.names == ["masks", "train_correct", "test_correct", "train_margin", "test_margin", "test_acc",
                           "train_acc", "seconds", "curve", "row_crc", "completed"]  # the layout before issue 20
    assert plain.signature == {"a": 1, "n_models": 2, "n_train": 5, "n_test": 3, "n_epochs": 2}
    dyn = store.open_store(tmp_path / "dyn", **kw, dynamics=True)
    assert dyn.dyn_loss.shape == (2, 2, 5) and dyn.signature["dynamics"] is True
    with pytest.raises(store.StoreMismatch):
        store.open_store(tmp_path / "plain", **kw, dynamics=True)


def test_the_committed_reference_is_a_disjoint_split_with_the_stated_precision():
    """bench/data/truth_reference.npz (`make truth`): pools disjoint and equal, SE and split-half agreement as
    bench/data/README.md states them."""
    from lib.params import ROOT

    ref = E.read_reference(ROOT / "bench" / "data" / "truth_reference.npz")
    even, odd = ref["model_ids_even"], ref["model_ids_odd"]
    assert len(even) == len(odd) and not set(even) & set(odd) and set(even) | set(odd) == set(ref["model_ids"])
    assert int(ref["meta_n_subset_models"]) == len(ref["model_ids"]) >= 900
    assert np.median(ref["se"]) < 0.03 and ref["se"].max() < 0.04
    assert E.spearman(ref["mem_even"], ref["mem_odd"]) > 0.9
    assert np.array_equal(ref["memorized_idx"], np.flatnonzero(ref["mem"] >= 0.25))
