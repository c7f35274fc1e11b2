"""Planted ground truth on real images: training images given wrong labels must rank among the most memorized.

A mislabeled image is the textbook memorized point: a model that trained on it can fit
its (wrong) label, a model that held it out predicts the image's real class instead.
Real CIFAR images from the smoke set, real training (lib.train.train_model) on FZ-style
random halves (lib.subsets.subset_mask), then lib.memorization's estimate; the planted
images must separate from the rest (AUC >= AUC_MIN; see below).
"""
import numpy as np
import pytest
from scipy.stats import rankdata

from lib import memorization, subsets, train

CLASSES = [0, 8, 9]  # smoke-set classes used (apple, bicycle, bottle), relabelled 0..2
N_PER_CLASS = 25  # training images per class: few, so that tiny models fit even the wrong labels
N_PLANTED = 10    # of the 75 get a wrong label
N_MODELS = 16
RATIO = 0.5       # each model trains on half: ~8 models in, ~8 out per image
# Measured: AUC 0.93 (planted mem 0.62-1.0, others median 0.33); 4 classes x 20 gave 0.85, 2 classes
# x 30 gave 0.82: with more classes a held-out model rarely lands on the wrong label, with fewer images
# per class the clean ones generalize worse. CPU training here is deterministic, so this is stable.
# Runtime: ~75 s on 2 idle cores (16 models x ~4.6 s).
AUC_MIN = 0.9


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
    x = np.concatenate([ds.x_train[ds.y_train == c][:N_PER_CLASS] for c in CLASSES])
    y_true = np.repeat(np.arange(len(CLASSES)), N_PER_CLASS)
    rng = np.random.default_rng(smoke.seed)
    planted = rng.choice(len(y_true), N_PLANTED, replace=False)
    y = y_true.copy()
    y[planted] = (y[planted] + rng.integers(1, len(CLASSES), N_PLANTED)) % len(CLASSES)  # always another class
    assert (y[planted] != y_true[planted]).all()

    # small and long enough to fit the training half, wrong labels included (train accuracy 1.0)
    hp = train.HParams.from_params(smoke, width=8, epochs=100, batch_size=8, lr_peak=0.05, lr_peak_epoch=25,
                                   weight_decay=0.0)
    masks = np.stack([subsets.subset_mask(seed=smoke.seed, model_id=i, n_train=len(y), ratio=RATIO)
                      for i in range(N_MODELS)])  # (n_models, n_train) bool
    train_correct = np.stack([
        train.train_model(x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], idx_train=np.flatnonzero(m),
                          n_classes=len(CLASSES), seed=smoke.seed + i, hp=hp, device="cpu",
                          threads=1)["train_correct"]  # 1 thread: far faster than 2 on a loaded 2-core box
        for i, m in enumerate(masks)])  # (n_models, n_train) bool, judged against the given (wrong) labels

    s = memorization.memorization(masks=masks, train_correct=train_correct)
    assert s.estimable.all()
    is_planted = np.zeros(len(y), bool)
    is_planted[planted] = True
    got = auc(s.mem, is_planted)
    assert got >= AUC_MIN, (f"AUC {got:.2f}; planted mem {np.round(s.mem[planted], 2)}, "
                        f"others median {np.median(s.mem[~is_planted]):.2f}")
