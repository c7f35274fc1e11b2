"""Planted ground truth for FZ's memorization estimate, mem = in-accuracy - out-accuracy.

1. Known answers (fast): masks and correctness built so that every point's in- and out-accuracy
   is known exactly, including planted points that are not learned by every model that trained
   on them (in-accuracy below 1). Both halves of the estimate are checked, not just 1 - out.
2. Real training (slow): a mislabeled image is the textbook memorized point. A model that trained
   on it fits its (wrong) label; a model that held it out predicts the image's real class instead.
   Real CIFAR images from the smoke set, FZ-style random halves (lib.subsets.subset_mask), real
   training (lib.train.train_model), then lib.memorization: over several seeds, each drawing other
   images, other planted points and labels, other halves and other initialisations, the planted
   images must separate from the rest by a margin that holds for every seed.
"""
import numpy as np
import pytest
from scipy.stats import rankdata

from lib import memorization, subsets, train


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive outranks a negative (Mann-Whitney U / (n_pos n_neg); ties count half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auc_helper_known_answers():
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([False, False, True, True])) == 1.0
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([False, False, True, True])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auc(np.array([0.1, 0.3, 0.2, 0.4]), np.array([False, True, False, False])) == pytest.approx(2 / 3)


# --- 1. known answers -------------------------------------------------------------------------------

# kind -> (models right among the 8 that trained on the point, among the 8 that held it out), of 16
KINDS = {
    "planted, learned": (8, 0),          # mem 1
    "planted, partly learned": (5, 1),   # in 5/8, out 1/8: mem 1/2; 1 - out would say 7/8
    "planted, never learned": (0, 0),    # fitted by no model, in or out: mem 0; 1 - out would say 1
    "clean, easy": (8, 8),               # mem 0
    "clean, generalizes partly": (7, 5),  # mem 1/4
    "clean, hard": (2, 2),               # in 2/8 < 1: mem 0; 1 - out would say 3/4, in alone 1/4
}
EXPECTED_MEM = {k: (i - o) / 8 for k, (i, o) in KINDS.items()}  # exact in float32


def planted_matrices(*, seed: int, n_per_kind: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks, correct, kind per point): 16 models, each point in a random 8 of them, and right in a
    random choice of exactly the number of in- and out-models its kind says."""
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.array(list(KINDS)), n_per_kind)
    masks = np.zeros((16, len(kinds)), bool)
    correct = np.zeros((16, len(kinds)), bool)
    for j, kind in enumerate(kinds):
        models = rng.permutation(16)
        ins, outs = models[:8], models[8:]
        masks[ins, j] = True
        hits_in, hits_out = KINDS[kind]
        correct[rng.choice(ins, hits_in, replace=False), j] = True
        correct[rng.choice(outs, hits_out, replace=False), j] = True
    return masks, correct, kinds


@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_equals_planted_in_minus_out_accuracy(seed):
    masks, correct, kinds = planted_matrices(seed=seed, n_per_kind=7)
    s = memorization.memorization(masks=masks, train_correct=correct, block=5)  # several column blocks
    assert (s.n_in == 8).all() and (s.n_out == 8).all() and s.estimable.all()
    np.testing.assert_array_equal(s.mem, np.array([EXPECTED_MEM[k] for k in kinds], np.float32))
    # Agresti-Caffo for in 5/8, out 1/8: (6/10)(4/10)/10 + (2/10)(8/10)/10 = 0.04
    partly = kinds == "planted, partly learned"
    np.testing.assert_allclose(s.se[partly], 0.2, rtol=1e-6)
    # the planted points some model learned are exactly those above a threshold between 1/4 and 1/2
    learned = np.isin(kinds, ["planted, learned", "planted, partly learned"])
    np.testing.assert_array_equal(memorization.memorized_idx(s, mem_threshold=0.3), np.flatnonzero(learned))
    assert auc(s.mem, learned) == 1.0


# --- 2. real training ---------------------------------------------------------------------------------

CLASSES = [0, 8]  # smoke-set classes used (apple, bicycle), relabelled 0, 1: a wrong label is the other class
N_PER_CLASS = 40  # training images per class, drawn per seed: few, so that tiny models fit even wrong labels
N_PLANTED = 8     # of the 80 get the wrong label
N_MODELS = 12
RATIO = 0.5       # each model trains on half: ~6 models in, ~6 out per image
SEEDS = (0, 1, 2)
# Measured (CPU, torch 2.14.1, this file's settings), AUC of the planted images per seed:
#   seed 0: 0.970, 1: 0.951, 2: 0.918 (pooled 0.950); further seeds 3: 0.951, 4: 0.859, 5: 0.962
#   (all six pooled 0.937). In seeds 1 and 2 some planted images are not fitted by every model that
#   trained on them (in-accuracy 0.86), so the per-image check below covers both halves there.
# Not 1: a clean image that every held-out model gets wrong is memorized too (FZ's atypical example),
# and a mislabeled image that held-out models happen to put in its wrong class is not. Settings were
# compared on other draws (images, planted points, halves) before these seeds were measured; the
# earlier 3 classes x 25, 10 planted, gave 0.72-0.99 over five draws. The bars sit well below every
# measured value and far above chance (an estimate unrelated to the planted labels scores ~0.5;
# its spread over 8 planted of 80 is ~0.11 per seed, ~0.06 pooled).
AUC_MIN = 0.75         # every seed (lowest measured: 0.859)
AUC_MIN_POOLED = 0.85  # the seeds' points together (measured: 0.950)
# Runtime: ~1.9 s per model on one core, 36 models: ~70 s (each seed is trained once per session).

_RUNS: dict[int, dict] = {}


def trained(seed: int, smoke, ds) -> dict:
    """Planted points, masks and train correctness of N_MODELS models for one seed (trained once)."""
    if seed in _RUNS:
        return _RUNS[seed]
    rng = np.random.default_rng([smoke.seed, seed])
    rows = [np.sort(rng.choice(np.flatnonzero(ds.y_train == c), N_PER_CLASS, replace=False)) for c in CLASSES]
    x = ds.x_train[np.concatenate(rows)]
    y_true = np.repeat(np.arange(len(CLASSES)), N_PER_CLASS)
    planted = rng.choice(len(y_true), N_PLANTED, replace=False)
    y = y_true.copy()
    y[planted] = (y[planted] + rng.integers(1, len(CLASSES), N_PLANTED)) % len(CLASSES)  # always another class
    assert (y[planted] != y_true[planted]).all()
    # small and long enough to fit the training half, wrong labels included (in-accuracy ~1)
    hp = train.HParams.from_params(smoke, width=8, epochs=80, batch_size=8, lr_peak=0.05, lr_peak_epoch=20,
                                   weight_decay=0.0)
    masks = np.stack([subsets.subset_mask(seed=seed, model_id=i, n_train=len(y), ratio=RATIO)
                      for i in range(N_MODELS)])  # (n_models, n_train) bool
    train_correct = np.stack([
        train.train_model(x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], train_idx=np.flatnonzero(m),
                          n_classes=len(CLASSES), seed=subsets.model_seed(seed=seed, model_id=i), hp=hp,
                          device="cpu", threads=1)["train_correct"]  # 1 thread: faster on a loaded 2-core box
        for i, m in enumerate(masks)])  # (n_models, n_train) bool, judged against the given (wrong) labels
    is_planted = np.zeros(len(y), bool)
    is_planted[planted] = True
    _RUNS[seed] = dict(masks=masks, train_correct=train_correct, is_planted=is_planted,
                       scores=memorization.memorization(masks=masks, train_correct=train_correct))
    return _RUNS[seed]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_mislabeled_images_rank_as_memorized(seed, smoke, smoke_data):
    r = trained(seed, smoke, smoke_data)
    s, masks, correct, is_planted = r["scores"], r["masks"], r["train_correct"], r["is_planted"]
    assert s.estimable.all()
    # the estimate is the in-accuracy minus the out-accuracy of each image, counted here model by model
    for j in range(masks.shape[1]):
        in_acc, out_acc = correct[masks[:, j], j].mean(), correct[~masks[:, j], j].mean()
        assert s.mem[j] == pytest.approx(in_acc - out_acc, abs=1e-6), j
    got = auc(s.mem, is_planted)
    assert got >= AUC_MIN, (f"seed {seed}: AUC {got:.3f}; planted mem {np.round(s.mem[is_planted], 2)}, "
                            f"others median {np.median(s.mem[~is_planted]):.2f}")


@pytest.mark.slow
def test_mislabeled_images_rank_as_memorized_pooled(smoke, smoke_data):
    runs = [trained(seed, smoke, smoke_data) for seed in SEEDS]
    mem = np.concatenate([r["scores"].mem for r in runs])
    is_planted = np.concatenate([r["is_planted"] for r in runs])
    got = auc(mem, is_planted)
    assert got >= AUC_MIN_POOLED, f"pooled AUC {got:.3f} over seeds {SEEDS}"
