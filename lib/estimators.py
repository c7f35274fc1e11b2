"""Cheap memorization estimators and the many-model ground truth they are scored against (issue 20).

Estimators, each a pure function of arrays a store holds (higher score = more memorized):

    fz_01(masks, train_correct)     FZ's estimate from k subset models: mean_in(correct) - mean_out(correct)
    fz_margin(masks, train_margin)  the same difference of masked means on margins (logit units), or with
                                    `scale` on sigmoid(margin / scale), a soft correctness
    cumulative_loss(dyn_loss)       training dynamics of a few full-set models: the example's training
                                    loss summed over epochs, averaged over models
    slow_learning(dyn_margin)       1 - learning speed: the fraction of (model, epoch) training steps in
                                    which the example was already classified right, subtracted from 1
    late_learning(dyn_margin)       right at the last epoch minus right on average over the epochs: an
                                    example learned only late (fitted, not generalized) scores high; one
                                    never learned and one learned at once both score 0
and one that combines the two designs:
    shrunk(fz, se, features)        empirical Bayes: FZ's estimate from a few subset models pulled toward what
                                    the dynamics features predict of it, each point as far as its SE says
Influence of train example i on test example j, as a dense (n_train, n_test) matrix (small sets only;
lib/memorization.influence blocks the large ones): influence_matrix(masks, test_values) on 0/1
correctness (FZ) or on margins.

Ground truth (`make truth`, params/truth.yaml): P's subset models fill runs/<P>/subsets/ and
P.n_dynamics_models full-set models that record per-epoch per-example loss and margin fill
runs/<P>/dynamics/. Circularity: an estimate from k models scored against a truth computed from
the same models agrees with it by construction, so the subset models are split by model-id parity
into two disjoint pools: the truth of one pool scores estimators drawn from the other (and the
other way round); the dynamics models are separate trainings on the full set. `reference` keeps
what is small (per-pool and all-model mem, the mem >= threshold sets, the high-influence pairs),
written by `write_reference` to bench/data/truth_reference.npz:

    python -m lib.estimators --params truth --out bench/data/truth_reference.npz
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from . import data as data_mod
from . import memorization as mem_mod
from . import params as params_mod
from . import store as store_mod
from .train import HParams, train_model

_DYN_STREAM = 2  # seed stream of the dynamics models (lib/subsets.py uses 0 for masks, 1 for training)
POOLS = ("even", "odd")  # the two disjoint halves of the subset models, by model-id parity


# ---------------------------------------------------------------- estimators
def masked_difference(*, masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(diff, estimable): mean of values over the models that trained on each example minus the mean over
    those that held it out, per column. masks, values  # (n_models, n) bool, numeric; diff  # (n,) float64,
    0 where no model trained on it or none held it out."""
    m = np.asarray(masks, bool)
    v = np.asarray(values, np.float64)
    if m.shape != v.shape:
        raise ValueError(f"masks {m.shape} and values {v.shape} differ in shape")
    n_in = m.sum(0)
    n_out = len(m) - n_in
    estimable = (n_in > 0) & (n_out > 0)
    sum_in, sum_all = (v * m).sum(0), v.sum(0)
    diff = (np.divide(sum_in, n_in, out=np.zeros(v.shape[1]), where=estimable)
            - np.divide(sum_all - sum_in, n_out, out=np.zeros(v.shape[1]), where=estimable))
    return diff, estimable


def fz_01(*, masks: np.ndarray, train_correct: np.ndarray) -> np.ndarray:
    """FZ's memorization estimate (n_train,) float64 from k subset models' 0/1 correctness."""
    return mem_mod.memorization(masks=np.asarray(masks, bool),
                                train_correct=np.asarray(train_correct, bool)).mem.astype(np.float64)


def fz_margin(*, masks: np.ndarray, train_margin: np.ndarray, scale: float | None = None) -> np.ndarray:
    """The same difference on margins (n_train,) float64: mean_in(margin) - mean_out(margin), in logit units.

    scale (logits): on sigmoid(margin / scale) instead, a soft 0/1 correctness (-> FZ's estimate as
    scale -> 0). Raw margins weigh a confidently wrong held-out example as heavily as the mean of many
    others; the squashed ones bound each model's vote.
    """
    v = np.asarray(train_margin, np.float64)
    if scale is not None:
        v = 0.5 * (1 + np.tanh(v / (2 * scale)))  # sigmoid(v / scale), without overflow
    return masked_difference(masks=masks, values=v)[0]


def cumulative_loss(dyn_loss: np.ndarray) -> np.ndarray:
    """(n_train,) float64: each example's training loss summed over epochs, averaged over the models.

    dyn_loss  # (n_models, n_epochs, n_train) float; NaN where a model did not train on the example
    (full-set models train on every one). An example no model trained on gets NaN.
    """
    d = np.asarray(dyn_loss, np.float64)
    seen = ~np.isnan(d)
    per_epoch = np.divide(np.where(seen, d, 0).sum((0, 1)), seen.sum((0, 1)), out=np.full(d.shape[2], np.nan),
                          where=seen.sum((0, 1)) > 0)
    return per_epoch * d.shape[1]  # mean loss per training step times the epochs: the cumulative loss


def slow_learning(dyn_margin: np.ndarray) -> np.ndarray:
    """(n_train,) float64: 1 - learning speed, the fraction of training steps (models x epochs) in which
    the example was misclassified (margin <= 0). dyn_margin  # (n_models, n_epochs, n_train); NaN: not trained."""
    d = np.asarray(dyn_margin, np.float64)
    seen = ~np.isnan(d)
    wrong = (np.where(seen, d, 1.0) <= 0).sum((0, 1))
    return np.divide(wrong, seen.sum((0, 1)), out=np.full(d.shape[2], np.nan), where=seen.sum((0, 1)) > 0)


def late_learning(dyn_margin: np.ndarray) -> np.ndarray:
    """(n_train,) float64 in [0, 1]: mean over models of 1[right at the last epoch] - (fraction of epochs right).

    Memorization is "right when trained on, wrong when held out"; a full-set model's last epoch stands in
    for the first term, and how early in training the example was already right for the second (what the
    model gets right before it has fitted the example is what it would get right without it).
    dyn_margin  # (n_models, n_epochs, n_train); a model that did not train on an example is left out for it.
    """
    d = np.asarray(dyn_margin, np.float64)
    seen = ~np.isnan(d).any(1)  # (n_models, n_train): trained on it in every epoch
    per_model = (d[:, -1] > 0) - (np.where(np.isnan(d), 0, d) > 0).mean(1)  # (n_models, n_train)
    n = seen.sum(0)
    return np.divide(np.where(seen, per_model, 0).sum(0), n, out=np.full(d.shape[2], np.nan), where=n > 0)


def dynamics_features(dyn_loss: np.ndarray, dyn_margin: np.ndarray) -> np.ndarray:
    """(n_train, 4) float64: cumulative loss, slow learning, late learning and right-at-the-end, per example."""
    end = np.nanmean(np.asarray(dyn_margin, np.float64)[:, -1] > 0, axis=0)
    return np.stack([cumulative_loss(dyn_loss), slow_learning(dyn_margin), late_learning(dyn_margin), end], axis=1)


def shrunk(*, fz: np.ndarray, se: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(n_train,) float64: FZ's noisy estimate shrunk toward its prediction from cheap per-example features.

    fz, se  # (n_train,) FZ's estimate from k models and its standard error;  features  # (n_train, f)
    The prior mean g is the least-squares fit of fz on the features (and a constant): fz's noise is
    independent of the features, so the fit estimates E[mem | features] without any truth. The prior
    variance tau2 = var(fz - g) - mean(se^2) is what is left of the true spread around g; each point
    moves from fz toward g by se^2 / (se^2 + tau2). SE 0: fz unchanged; features that explain mem: g.
    """
    fz, se = np.asarray(fz, np.float64), np.asarray(se, np.float64)
    x = np.column_stack([np.ones(len(fz)), np.asarray(features, np.float64)])
    x = np.where(np.isfinite(x), x, 0.0)
    coef = np.linalg.lstsq(x, fz, rcond=None)[0]
    g = x @ coef
    tau2 = max(float(np.var(fz - g) - np.mean(se ** 2)), 1e-6)
    return g + tau2 / (tau2 + se ** 2) * (fz - g)


def influence_matrix(*, masks: np.ndarray, test_values: np.ndarray) -> np.ndarray:
    """(n_train, n_test) float32: mean_in(test_values[:, j]) - mean_out(test_values[:, j]) for train example i.

    masks  # (n_models, n_train) bool;  test_values  # (n_models, n_test) 0/1 correctness or margins.
    Dense: for the truth's 1,000 x 500 (2 MB); 0 rows where i is not estimable.
    """
    m = np.asarray(masks, np.float32)
    v = np.asarray(test_values, np.float32)
    n_in = m.sum(0)
    n_out = len(m) - n_in
    ok = (n_in > 0) & (n_out > 0)
    sum_in = m.T @ v  # (n_train, n_test)
    sum_all = v.sum(0)[None, :]
    out = sum_in / np.maximum(n_in, 1)[:, None] - (sum_all - sum_in) / np.maximum(n_out, 1)[:, None]
    out[~ok] = 0.0
    return out


# ---------------------------------------------------------------- agreement with a truth
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) over the entries finite in both."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def top_n(score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest finite scores (ties broken by index), sorted."""
    s = np.where(np.isfinite(score), score, -np.inf)
    order = np.lexsort((np.arange(len(s)), -s))
    return np.sort(order[:n])


def precision_recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of index set `found` against index set `truth`; 1.0 for an empty denominator."""
    found, truth = set(np.asarray(found).tolist()), set(np.asarray(truth).tolist())
    hit = len(found & truth)
    return (hit / len(found) if found else 1.0), (hit / len(truth) if truth else 1.0)


def same_class_pairs(infl: np.ndarray, *, y_train: np.ndarray, y_test: np.ndarray, n: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of the n same-class pairs with the highest influence, strongest first."""
    masked = np.where(np.asarray(y_train)[:, None] == np.asarray(y_test)[None, :], infl, -np.inf)
    flat = np.argsort(-masked, axis=None, kind="stable")[:n]
    return np.unravel_index(flat, masked.shape)


def pair_recall(infl: np.ndarray, *, truth_train: np.ndarray, truth_test: np.ndarray, y_train: np.ndarray,
                y_test: np.ndarray) -> float:
    """Fraction of the truth's pairs among the estimate's top same-class pairs (as many as the truth has)."""
    n = len(truth_train)
    if n == 0:
        return 1.0
    tr, te = same_class_pairs(infl, y_train=y_train, y_test=y_test, n=n)
    return len(set(zip(tr.tolist(), te.tolist())) & set(zip(np.asarray(truth_train).tolist(),
                                                               np.asarray(truth_test).tolist()))) / n


# ---------------------------------------------------------------- how many models are enough
def models_for_target_se(*, se: np.ndarray, estimable: np.ndarray, n_models: int, target_se: float,
                         ratio: float, quantiles: tuple[float, ...] = (0.5, 0.9, 1.0)) -> dict:
    """The SE a run reached and the models a target SE would need, at quantiles of the points' SEs.

    An SE over k models shrinks like 1/sqrt(k) (the proportions stay), so a point whose SE is se
    from n_models needs n_models (se / target_se)^2. Also the worst case before any model is trained
    (both proportions 0.5): 0.25 (1/r + 1/(1 - r)) / target_se^2 models.
    Returns {"se": {q: se_q}, "needed": {q: models}, "worst_case": models}.
    """
    s = np.asarray(se, np.float64)[np.asarray(estimable, bool)]
    se_q = {q: float(np.quantile(s, q)) if len(s) else float("nan") for q in quantiles}
    needed = {q: int(np.ceil(n_models * (v / target_se) ** 2)) if np.isfinite(v) else -1 for q, v in se_q.items()}
    worst = int(np.ceil(0.25 * (1 / ratio + 1 / (1 - ratio)) / target_se ** 2))
    return dict(se=se_q, needed=needed, worst_case=worst)


# ---------------------------------------------------------------- the ground truth
def truth_pairs(*, infl: np.ndarray, scores: mem_mod.Scores, y_train: np.ndarray, y_test: np.ndarray,
                mem_threshold: float, infl_threshold: float, min_pairs: int = 20, max_pairs: int = 50
                ) -> tuple[np.ndarray, np.ndarray]:
    """The top high-influence pairs the estimators are asked to recover, strongest first.

    FZ's rule (memorization.high_influence_pairs on the dense infl), its max_pairs strongest (at a few
    hundred models per pool the weakest pairs passing 0.15 are largely chance), when it yields at least
    min_pairs; otherwise the min_pairs strongest same-class pairs (a small truth would make recall a coin toss).
    """
    tr, te = np.nonzero(infl >= infl_threshold)
    fz = mem_mod.high_influence_pairs(train_idx=tr, test_idx=te, infl=infl[tr, te], scores=scores,
                                      train_labels=y_train, test_labels=y_test, mem_threshold=mem_threshold,
                                      infl_threshold=infl_threshold)
    if len(fz["train_idx"]) >= min_pairs:
        return fz["train_idx"][:max_pairs], fz["test_idx"][:max_pairs]
    tr, te = same_class_pairs(infl, y_train=y_train, y_test=y_test, n=min_pairs)
    return tr.astype(np.int64), te.astype(np.int64)


def pool_ids(model_ids: np.ndarray, pool: str) -> np.ndarray:
    """The model ids of pool "even" or "odd" (model-id parity): two disjoint halves of the subset models."""
    return np.asarray(model_ids)[np.asarray(model_ids) % 2 == POOLS.index(pool)]


def balanced_ids(done: np.ndarray) -> np.ndarray:
    """The completed model ids, trimmed so both parity pools hold as many (the lowest ids of each), sorted."""
    done = np.sort(np.asarray(done, np.int64))
    even, odd = done[done % 2 == 0], done[done % 2 == 1]
    n = min(len(even), len(odd))
    return np.sort(np.concatenate([even[:n], odd[:n]]))


def reference(*, masks: np.ndarray, train_correct: np.ndarray, test_correct: np.ndarray, model_ids: np.ndarray,
              y_train: np.ndarray, y_test: np.ndarray, mem_threshold: float, infl_threshold: float) -> dict:
    """The small derived reference: per pool and over all models, mem, its SE, the memorized set, the pairs.

    masks, train_correct  # (n_models, n_train) bool, rows = model_ids;  test_correct  # (n_models, n_test) bool
    Keys: mem, se, memorized_idx, pair_train, pair_test (all models: the best estimate, NOT for scoring
    estimators drawn from these models), and per pool p in POOLS: mem_p, se_p, memorized_idx_p,
    pair_train_p, pair_test_p, model_ids_p (for scoring estimators drawn from the other pool).
    """
    model_ids = np.asarray(model_ids)
    out = dict(model_ids=model_ids.astype(np.int64), y_train=np.asarray(y_train, np.int64),
               y_test=np.asarray(y_test, np.int64), mem_threshold=np.float64(mem_threshold),
               infl_threshold=np.float64(infl_threshold))
    rows_of = {"": np.arange(len(model_ids)), **{f"_{p}": np.flatnonzero(model_ids % 2 == i)
                                                 for i, p in enumerate(POOLS)}}
    for suffix, rows in rows_of.items():
        m = np.asarray(masks[rows], bool)
        s = mem_mod.memorization(masks=m, train_correct=np.asarray(train_correct[rows], bool))
        infl = influence_matrix(masks=m, test_values=np.asarray(test_correct[rows], bool))
        tr, te = truth_pairs(infl=infl, scores=s, y_train=y_train, y_test=y_test, mem_threshold=mem_threshold,
                             infl_threshold=infl_threshold)
        out.update({f"mem{suffix}": s.mem.astype(np.float64), f"se{suffix}": s.se.astype(np.float64),
                    f"memorized_idx{suffix}": mem_mod.memorized_idx(s, mem_threshold=mem_threshold),
                    f"pair_train{suffix}": tr, f"pair_test{suffix}": te,
                    f"pair_infl{suffix}": infl[tr, te].astype(np.float64)})
        if suffix:
            out[f"model_ids{suffix}"] = model_ids[rows].astype(np.int64)
    return out


def write_reference(path: Path | str, ref: dict, *, meta: dict) -> Path:
    """ref's arrays plus meta (strings and numbers: command, params, wall time, load) as one .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **ref, **{f"meta_{k}": np.asarray(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path


def read_reference(path: Path | str) -> dict:
    """The reference written by write_reference, as a dict of arrays (meta_* as 0-d arrays)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- training the dynamics models
def dynamics_hparams(P) -> HParams:
    """The dynamics models train like the subset models (same schedule), on the full training set."""
    wd = P.weight_decay if P.subset_weight_decay is None else P.subset_weight_decay
    return HParams.from_params(P, weight_decay=wd, curve_every=P.subset_curve_every)


def dynamics_seed(*, seed: int, model_id: int) -> int:
    """Training seed of dynamics model model_id: a pure function of (seed, model_id), independent of the subsets'."""
    return int(np.random.SeedSequence([seed, _DYN_STREAM, model_id]).generate_state(1, dtype=np.uint64)[0] % 2**63)


def open_dynamics_store(P, *, ds, path=None, mode: str = "r+") -> store_mod.Store:
    """P's dynamics store (runs/<P>/dynamics/): full-set models with per-epoch per-example loss and margin."""
    hp = dynamics_hparams(P)
    path = P.run_dir / "dynamics" if path is None else path
    sig = {**P.data_identity(), "data_digest": data_mod.content_digest(ds), "full_set": True, **dataclasses.asdict(hp)}
    return store_mod.open_store(path, n_models=max(P.n_dynamics_models, 1), n_train=len(ds.y_train),
                                n_test=len(ds.y_test), n_epochs=hp.epochs, signature=sig, mode=mode, dynamics=True)


def run_dynamics(P, *, path=None, progress: bool = True) -> store_mod.Store:
    """Train (or resume) P.n_dynamics_models full-set models recording training dynamics, one after another."""
    device = params_mod.resolve_device(P)
    ds = data_mod.load(P)
    hp = dynamics_hparams(P)
    store = open_dynamics_store(P, ds=ds, path=path)
    n_train = len(ds.y_train)

    def train_fn(i: int, mask: np.ndarray) -> dict:
        return train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                           train_idx=np.flatnonzero(mask), n_classes=ds.n_classes,
                           seed=dynamics_seed(seed=P.seed, model_id=i), hp=hp, device=device,
                           threads=1 if device == "cpu" else None, record_dynamics=True)

    store_mod.fill(store, ids=range(P.n_dynamics_models), mask_fn=lambda i: np.ones(n_train, bool),
                   train_fn=train_fn, desc=f"dynamics models ({P.name})", progress=progress)
    return store


def make_truth(P, *, out: Path | str, subsets_path=None, dynamics_path=None, workers: int | None = None,
               progress: bool = True, command: str = "", train: bool = True) -> dict:
    """Train P's subset and dynamics models (resuming), derive the reference from the completed subset
    models and write it to `out`. Returns the reference (with its meta_* entries).
    train=False: derive it from the models completed so far (a run stopped early), training nothing."""
    from .subsets import open_subset_store, run_subsets

    t0 = time.perf_counter()
    if train and P.n_dynamics_models:
        run_dynamics(P, path=dynamics_path, progress=progress)
    if train:
        run_subsets(P, progress=progress, workers=workers, path=subsets_path, executor="local")
    seconds = time.perf_counter() - t0
    ds = data_mod.load(P)
    store = open_subset_store(P, ds=ds, path=subsets_path, mode="r")
    ids = balanced_ids(store.done())
    ref = reference(masks=store.masks[ids], train_correct=store.train_correct[ids], test_correct=store.test_correct[ids],
                    model_ids=ids, y_train=ds.y_train, y_test=ds.y_test, mem_threshold=P.mem_threshold,
                    infl_threshold=P.infl_threshold)
    meta = dict(params=P.name, command=command, data_digest=data_mod.content_digest(ds),
                train_seconds_this_call=seconds, model_seconds_sum=float(store.seconds[ids].sum()),
                trained_log_span_s=_log_span(store.path / store_mod.TRAINED_LOG),
                load_avg_1_5_15=np.asarray(os.getloadavg()), n_subset_models=len(ids),
                n_dynamics_models=P.n_dynamics_models)
    write_reference(out, ref, meta=meta)
    return read_reference(out)


def _log_span(path: Path) -> float:
    """Seconds from the first to the last model written to a store's trained.log (the run's wall time,
    less the first model's training); NaN without a log."""
    try:
        t = [float(line.split("\t")[3]) for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return float("nan")
    return max(t) - min(t) if t else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the ground truth's models (resuming) and write its reference.")
    ap.add_argument("--params", default="truth", help="parameter set name or path (default: truth)")
    ap.add_argument("--out", default="bench/data/truth_reference.npz", help="the reference .npz to write")
    ap.add_argument("--workers", type=int, default=None, help="processes for the subset models")
    ap.add_argument("--no-train", action="store_true", help="derive the reference from the completed models only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    P = params_mod.load(args.params)
    command = f"python -m lib.estimators --params {args.params} --out {args.out}"
    ref = make_truth(P, out=args.out, workers=args.workers, progress=not args.no_progress, command=command,
                     train=not args.no_train)
    est = ref["se"][np.isfinite(ref["se"])]
    print(f"{args.out}: {int(ref['meta_n_subset_models'])} subset models, median SE {np.median(est):.4f} "
          f"(max {est.max():.4f}), {len(ref['memorized_idx'])} with mem >= {P.mem_threshold}, "
          f"{len(ref['pair_train'])} pairs")


if __name__ == "__main__":
    main()
