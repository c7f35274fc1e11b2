"""Planted ground truth on real images: training images given wrong labels must rank among the most memorized.

A mislabeled image is the textbook memorized point: a model that trained on it can fit
its (wrong) label, a model that held it out predicts the image's real class instead.
Real CIFAR images from the smoke set, real training (lib.train.train_model) on FZ-style
random halves (lib.subsets.subset_mask), then lib.memorization's estimate; the planted
images must separate from the rest with AUC >= 0.9.
"""
import numpy as np
import pytest
from scipy.stats import rankdata

from lib import memorization, subsets, train

N_CLASSES = 4     # first classes of the smoke set
N_PER_CLASS = 50  # training images per class
N_PLANTED = 10    # of them get a wrong label
N_MODELS = 16
RATIO = 0.5       # each model trains on half: ~8 models in, ~8 out per image


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive outranks a negative (Mann-Whitney U / (n_pos n_neg); ties count half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auc_helper_known_answers():
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([False, False, True, True])) == 1.0
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([False, False, True, True])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5


@pytest.mark.slow
def test_mislabeled_images_rank_as_memorized(smoke, smoke_data):
    ds = smoke_data
    rows = np.concatenate([np.flatnonzero(ds.y_train == c)[:N_PER_CLASS] for c in range(N_CLASSES)])
    x, y_true = ds.x_train[rows], ds.y_train[rows]
    rng = np.random.default_rng([smoke.seed, 0x91A7])
    planted = rng.choice(len(y_true), N_PLANTED, replace=False)
    y = y_true.copy()
    y[planted] = (y[planted] + rng.integers(1, N_CLASSES, N_PLANTED)) % N_CLASSES  # always a different class
    assert (y[planted] != y_true[planted]).all()

    # small and long enough to fit the training half, wrong labels included (measured: ~3-4 s a model)
    hp = train.HParams.from_params(smoke, width=8, epochs=30, batch_size=32, lr_peak=0.05, lr_peak_epoch=7)
    masks = np.stack([subsets.subset_mask(seed=smoke.seed, model_id=i, n_train=len(y), ratio=RATIO)
                      for i in range(N_MODELS)])  # (n_models, n_train) bool
    train_correct = np.stack([
        train.train_model(x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], idx_train=np.flatnonzero(m),
                          n_classes=N_CLASSES, seed=subsets.model_seed(seed=smoke.seed, model_id=i), hp=hp,
                          device="cpu", threads=1)["train_correct"]
        for i, m in enumerate(masks)])  # (n_models, n_train) bool, judged against the given (wrong) labels

    s = memorization.memorization(masks=masks, train_correct=train_correct)
    assert s.estimable.all()
    is_planted = np.zeros(len(y), bool)
    is_planted[planted] = True
    got = auc(s.mem, is_planted)
    assert got >= 0.9, (f"AUC {got:.2f}; planted mem {np.round(s.mem[planted], 2)}, "
                        f"others median {np.median(s.mem[~is_planted]):.2f}")
