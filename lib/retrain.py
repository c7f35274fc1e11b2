"""The marginal-utility retraining conditions (paper sections 3.3 and 5.1).

Each condition trains `n_retrain_models` models on the full training set minus a
set of points, with or without weight decay, and is compared with a baseline
trained on the full set with the same weight decay:

    full_nowd, minus_memorized_nowd         FZ's setup ("Original", weight decay 0)
    full_wd, minus_memorized_wd             the convergence fix ("Model Convergence")
    minus_leakage_shift_wd                  the Leakage+Shift bucket removed
    minus_memorized_bucket_wd               the Memorized bucket removed
    random_for_<removal condition>          as many points removed as that condition removes,
                                            chosen at random, with its weight decay

A random control draws a fresh random set for every model (uniform over the whole
training set, seeded by (seed, condition, i)): its drop estimates the average cost
of having that many fewer examples, not the cost of one particular random set.
Masks and training seeds are pure functions of (seed, condition name, model id), so
any model can be retrained from its id alone. Results go to one store per condition
under runs/<name>/utility/<condition>/ (lib/store.py: resumable, refuses a store
made with different parameters or a different removal set).
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from . import params as params_mod
from . import workers as workers_mod

# removal name -> key of its index array in runs/<name>/buckets.npz (notebook 04)
REMOVAL_KEYS = {
    "memorized": "memorized_idx",
    "leakage_shift": "leakage_shift_idx",
    "memorized_bucket": "memorized_bucket_idx",
}

# The keys of Params that change what a retraining model learns; a store records them.
# Weight decay and epochs are recorded as the values used (signature), not as these keys.
TRAIN_KEYS = ("seed", "dataset", "classes", "n_train_per_class", "n_test_per_class", "model", "width", "batch_size",
              "lr_peak", "lr_peak_epoch", "momentum", "nesterov", "label_smoothing", "loader")


@dataclass(frozen=True)
class Condition:
    name: str
    removal: str | None    # key of REMOVAL_KEYS, None: the full training set
    weight_decay: bool     # False: 0 (FZ's setup); True: P.weight_decay (the convergence fix)
    baseline: str | None   # the full-set condition it is compared with; None for the baselines
    random: bool = False   # True: removes as many random points as `removal` names
    label: str = ""


def _removal(name: str, removal: str, wd: bool, label: str) -> list[Condition]:
    base = "full_wd" if wd else "full_nowd"
    return [Condition(name, removal, wd, base, False, label),
            Condition(f"random_for_{name}", removal, wd, base, True, f"random control for: {label}")]


CONDITIONS: tuple[Condition, ...] = (
    Condition("full_nowd", None, False, None, False, "full training set, no weight decay"),
    Condition("full_wd", None, True, None, False, "full training set, weight decay"),
    *_removal("minus_memorized_nowd", "memorized", False, "minus all memorized points, no weight decay"),
    *_removal("minus_memorized_wd", "memorized", True, "minus all memorized points, weight decay"),
    *_removal("minus_leakage_shift_wd", "leakage_shift", True, "minus the Leakage+Shift bucket, weight decay"),
    *_removal("minus_memorized_bucket_wd", "memorized_bucket", True, "minus the Memorized bucket, weight decay"),
)
BY_NAME = {c.name: c for c in CONDITIONS}


def load_buckets(run_dir: Path) -> dict[str, np.ndarray]:
    """runs/<name>/buckets.npz (notebook 04) as a dict of arrays."""
    path = Path(run_dir) / "buckets.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 04 (sub-populations and buckets) first")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def removal_sets(buckets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """removal name -> sorted unique int64 run indices of the training points it removes."""
    return {name: np.unique(np.asarray(buckets[key], np.int64)) for name, key in REMOVAL_KEYS.items()}


def _stream(*, seed: int, condition: str, i: int, purpose: int) -> np.random.SeedSequence:
    # crc32 of the name: stable across Python runs (hash() is salted)
    return np.random.SeedSequence([seed, zlib.crc32(condition.encode()), i, purpose])


def model_seed(*, seed: int, condition: str, i: int) -> int:
    """The training seed of model i of a condition (initialisation, batch order, augmentation)."""
    return int(_stream(seed=seed, condition=condition, i=i, purpose=0).generate_state(1, np.uint32)[0])


def mask(*, condition: Condition, removed: np.ndarray, n_train: int, seed: int, i: int) -> np.ndarray:
    """(n_train,) bool: the training points model i of `condition` trains on.

    `removed` is the condition's removal set; a random control removes as many
    points, drawn uniformly from the whole training set for each model.
    """
    keep = np.ones(n_train, bool)
    if condition.removal is None:
        return keep
    removed = np.asarray(removed, np.int64)
    if condition.random:
        rng = np.random.default_rng(_stream(seed=seed, condition=condition.name, i=i, purpose=1))
        removed = rng.choice(n_train, size=len(removed), replace=False)
    keep[removed] = False
    return keep


@dataclass(frozen=True)
class Planned:
    condition: Condition
    removed: np.ndarray    # (n_remove,) int64 run indices of the removal set (a control: the set it matches)
    weight_decay: float    # the value used
    path: Path             # the store folder

    @property
    def n_remove(self) -> int:
        return len(self.removed)


def plan(*, P: params_mod.Params, buckets: Mapping[str, np.ndarray]) -> list[Planned]:
    """The conditions to train, in CONDITIONS order.

    A removal whose set is empty is left out together with its control: it would
    train the baseline again.
    """
    if P.lr_peak_epoch > n_epochs(P):
        raise params_mod.ParamsError(f"params/{P.name}.yaml: key 'retrain_epochs' ({n_epochs(P)}) is before "
                                     f"lr_peak_epoch ({P.lr_peak_epoch})")
    sets = removal_sets(buckets)
    out = []
    for c in CONDITIONS:
        removed = np.zeros(0, np.int64) if c.removal is None else sets[c.removal]
        if c.removal is not None and len(removed) == 0:
            continue
        out.append(Planned(c, removed, float(P.weight_decay) if c.weight_decay else 0.0,
                           P.run_dir / "utility" / c.name))
    return out


def n_epochs(P: params_mod.Params) -> int:
    return P.retrain_epochs or P.epochs


def signature(*, P: params_mod.Params, planned: Planned) -> dict:
    """What a condition's store must agree with to be resumed or read."""
    digest = hashlib.sha1(np.ascontiguousarray(planned.removed, np.int64).tobytes()).hexdigest()
    return {"condition": planned.condition.name, "weight_decay_used": planned.weight_decay,
            "n_remove": planned.n_remove, "removed_sha1": digest, "epochs_used": n_epochs(P),
            "params": P.digest(TRAIN_KEYS)}


def open_condition(*, P: params_mod.Params, planned: Planned, n_train: int, n_test: int):
    """The condition's Store (created empty if missing); refuses one made differently."""
    from . import store

    return store.open_store(planned.path, n_models=P.n_retrain_models, n_train=n_train, n_test=n_test,
                            n_epochs=n_epochs(P), signature=signature(P=P, planned=planned))


def run_condition(*, P: params_mod.Params, ds, planned: Planned, device: str, ids=None, progress: bool = True):
    """Train (or resume) models `ids` (default: all) of one condition into its store; returns the Store.

    On CPU each model trains on one thread, so its bits do not depend on the machine's core count
    or on how many workers share the work.
    """
    from . import store, train

    st = open_condition(P=P, planned=planned, n_train=len(ds.y_train), n_test=len(ds.y_test))
    hp = train.HParams.from_params(P, weight_decay=planned.weight_decay, epochs=n_epochs(P))
    name = planned.condition.name
    ids = range(P.n_retrain_models) if ids is None else ids

    def mask_fn(i: int) -> np.ndarray:
        return mask(condition=planned.condition, removed=planned.removed, n_train=len(ds.y_train), seed=P.seed, i=i)

    def train_fn(i: int, m: np.ndarray) -> dict:
        return train.train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                                 idx_train=np.flatnonzero(m), n_classes=ds.n_classes,
                                 seed=model_seed(seed=P.seed, condition=name, i=i), hp=hp, device=device,
                                 threads=1 if device == "cpu" else None)

    if progress:
        store.fill(st, ids=ids, mask_fn=mask_fn, train_fn=train_fn, desc=name)
    else:
        for i in st.todo(ids):
            m = mask_fn(i)
            st.write(i, mask=m, result=train_fn(i, m))
    return st


def run_all(*, P: params_mod.Params, ds, planned: list[Planned], device: str, workers: int | None = None,
            progress: bool = True) -> None:
    """Train (or resume) every model of every planned condition.

    workers: processes training side by side (default: one per core on CPU, 1 on GPU); the
    (condition, model) pairs still to do are dealt round-robin. Each writes its own store rows.
    In reference mode the removal sets are FZ's released (official) indices: on any other copy
    of CIFAR-100 they would name unrelated images, so that is refused.
    """
    from . import data
    from .train import default_threads

    if P.mode == "reference":
        data.require_official(ds, "retraining without FZ's released memorized points")
    stores = {p.condition.name: open_condition(P=P, planned=p, n_train=len(ds.y_train), n_test=len(ds.y_test))
              for p in planned}
    todo = [(p.condition.name, i) for p in planned for i in stores[p.condition.name].todo(range(P.n_retrain_models))]
    workers = max(1, min(default_threads() if (workers is None and device == "cpu") else (workers or 1), len(todo)))
    if workers == 1:
        for p in planned:
            run_condition(P=P, ds=ds, planned=p, device=device, progress=progress)
        return
    total = len(stores) * P.n_retrain_models
    workers_mod.run(module="lib.retrain", payloads=[(P, planned, todo[w::workers]) for w in range(workers)],
                    total=total, n_left=lambda: sum(len(st.todo(range(P.n_retrain_models))) for st in stores.values()),
                    desc=f"retraining models ({P.name})", progress=progress)


def _worker_main() -> None:
    """One child: (P, planned, [(condition, model id)]) pickled on stdin; trains them in turn."""
    from . import data

    P, planned, jobs = workers_mod.read_payload()
    ds = data.load(P)
    device = params_mod.resolve_device(P)
    by_name = {p.condition.name: p for p in planned}
    for name, i in jobs:
        run_condition(P=P, ds=ds, planned=by_name[name], device=device, ids=[i], progress=False)


def eval_subsets(*, buckets: Mapping[str, np.ndarray], removal: str, n_test: int) -> dict[str, np.ndarray]:
    """Disjoint test subsets for a removal: where its accuracy could be lost.

    duplicate:  test points that duplicate a removed training point (the Memorized
                bucket has none by construction: duplicated points go to Leakage+Shift)
    influenced: test points strongly influenced by a removed point, not already in `duplicate`
    other:      every remaining test point
    The three partition range(n_test), so the overall drop is their size-weighted sum.
    """
    dup = np.unique(np.asarray(buckets["duplicate_test_idx"], np.int64))
    infl_leak = np.asarray(buckets["influenced_test_idx_leakage"], np.int64)
    infl_mem = np.asarray(buckets["influenced_test_idx_memorized"], np.int64)
    if removal == "memorized":
        infl = np.union1d(infl_leak, infl_mem)
    elif removal == "leakage_shift":
        infl = np.unique(infl_leak)
    elif removal == "memorized_bucket":
        dup, infl = np.zeros(0, np.int64), np.unique(infl_mem)
    else:
        raise ValueError(f"unknown removal {removal!r}; known: {sorted(REMOVAL_KEYS)}")
    infl = np.setdiff1d(infl, dup)
    other = np.setdiff1d(np.arange(n_test), np.union1d(dup, infl))
    return {"duplicate": dup, "influenced": infl, "other": other}


@dataclass(frozen=True)
class Results:
    """The completed models of one condition, read from its store."""
    ids: np.ndarray           # (k,) int64 model ids of the completed rows
    test_acc: np.ndarray      # (k,) float64
    train_acc: np.ndarray     # (k,) float64, on the points each model trained on
    test_correct: np.ndarray  # (k, n_test) bool
    curve: np.ndarray         # (k, n_epochs) float32 test accuracy after each epoch
    seconds: np.ndarray       # (k,) float64 training time per model


def load_results(*, P: params_mod.Params, planned: list[Planned], n_train: int, n_test: int) -> dict[str, Results]:
    """condition name -> Results, for every planned condition whose store exists and has completed models.

    Opening a store checks its signature, so results made with other parameters or
    another removal set are refused rather than tabled.
    """
    out = {}
    for p in planned:
        if not p.path.exists():
            continue
        st = open_condition(P=P, planned=p, n_train=n_train, n_test=n_test)
        done = np.flatnonzero(np.asarray(st.completed, bool))
        if len(done) == 0:
            continue
        out[p.condition.name] = Results(
            ids=done, test_acc=np.asarray(st.test_acc[done], np.float64),
            train_acc=np.asarray(st.train_acc[done], np.float64),
            test_correct=np.asarray(st.test_correct[done], bool), curve=np.asarray(st.curve[done], np.float32),
            seconds=np.asarray(st.seconds[done], np.float64))
    return out


def plan_table(*, planned: list[Planned]):
    """One row per planned condition: what it removes, with which weight decay, against which baseline."""
    import pandas as pd

    return pd.DataFrame([{"condition": p.condition.name, "removes": p.condition.removal or "-",
                          "random": p.condition.random, "n_removed": p.n_remove, "weight_decay": p.weight_decay,
                          "baseline": p.condition.baseline or "-", "store": str(p.path)} for p in planned],
                        columns=["condition", "removes", "random", "n_removed", "weight_decay", "baseline", "store"])


def results_table(*, results: dict[str, Results], planned: list[Planned]):
    """One row per condition: models done, mean and std of test and train accuracy, seconds per model."""
    import pandas as pd

    rows = []
    for p in planned:
        r = results.get(p.condition.name)
        rows.append({"condition": p.condition.name, "n_removed": p.n_remove, "models": 0 if r is None else len(r.ids),
                     "test_acc_mean": np.nan if r is None else r.test_acc.mean(),
                     "test_acc_std": np.nan if r is None or len(r.ids) < 2 else r.test_acc.std(ddof=1),
                     "train_acc_mean": np.nan if r is None else r.train_acc.mean(),
                     "seconds_per_model": np.nan if r is None else r.seconds.mean()})
    return pd.DataFrame(rows).set_index("condition")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--worker"]:
        _worker_main()
    else:
        sys.exit("usage: python -m lib.retrain --worker (internal; notebook 05 calls retrain.run_all)")
