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
in the run folder's utility/<condition>/ (lib/store.py: resumable, refuses a store
made with different parameters or a different removal set). Reading the stores back
into tables is lib/tables.py's job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import params as params_mod
from . import workers as workers_mod
from .buckets import Buckets
from .run_folder import RunFolder

# removal name -> the Buckets field (lib/buckets.py, notebook 04) holding the points it removes
REMOVAL_KEYS = {
    "memorized": "memorized_idx",
    "leakage_shift": "leakage_shift_idx",
    "memorized_bucket": "memorized_bucket_idx",
}

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


def removal_sets(b: Buckets) -> dict[str, np.ndarray]:
    """removal name -> sorted unique int64 run indices of the training points it removes."""
    return {name: np.unique(np.asarray(getattr(b, key), np.int64)) for name, key in REMOVAL_KEYS.items()}


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


def plan(*, P: params_mod.Params, buckets: Buckets) -> list[Planned]:
    """The conditions to train, in CONDITIONS order.

    A removal whose set is empty is left out together with its control: it would
    train the baseline again.
    """
    sets = removal_sets(buckets)
    run = RunFolder.of(P)
    out = []
    for c in CONDITIONS:
        removed = np.zeros(0, np.int64) if c.removal is None else sets[c.removal]
        if c.removal is not None and len(removed) == 0:
            continue
        out.append(Planned(c, removed, float(P.weight_decay) if c.weight_decay else 0.0,
                           run.utility_store(c.name)))
    return out


def n_epochs(P: params_mod.Params) -> int:
    return P.retrain_epochs or P.epochs


def hparams(*, P: params_mod.Params, planned: Planned):
    """The training settings (train.HParams) of a condition's models: P's, with its weight decay and epochs."""
    from .train import HParams  # torch: only where models are trained

    return HParams.from_params(P, weight_decay=planned.weight_decay, epochs=n_epochs(P),
                               curve_every=1)  # every epoch: the conditions' curves are the convergence evidence


def signature(*, P: params_mod.Params, planned: Planned, data_digest: str) -> dict:
    """What a condition's store must agree with to be resumed or read: data rows, training settings, removal set."""
    digest = hashlib.sha1(np.ascontiguousarray(planned.removed, np.int64).tobytes()).hexdigest()
    return {**P.data_identity(), "data_digest": data_digest, **dataclasses.asdict(hparams(P=P, planned=planned)),
            "condition": planned.condition.name, "n_remove": planned.n_remove, "removed_sha1": digest}


def open_condition(*, P: params_mod.Params, planned: Planned, ds, mode: str = "r+"):
    """The condition's Store on dataset ds (created empty if missing, mode "r+"); refuses one made differently."""
    from . import data, store

    return store.open_store(planned.path, n_models=P.n_retrain_models, n_train=len(ds.y_train),
                            n_test=len(ds.y_test), n_epochs=n_epochs(P), mode=mode,
                            signature=signature(P=P, planned=planned, data_digest=data.content_digest(ds)))


def stale_stores(*, P: params_mod.Params, planned: list[Planned], ds) -> dict[Path, str]:
    """Every condition store that exists but was made with other parameters, data or removal set: path -> why."""
    from .store import StoreMismatch

    out = {}
    for p in planned:
        if (p.path / "signature.json").is_file():
            try:
                open_condition(P=P, planned=p, ds=ds, mode="r")
            except StoreMismatch as e:
                out[p.path] = str(e)
    return out


def refuse_stale(*, P: params_mod.Params, planned: list[Planned], ds) -> None:
    """Raise one StoreMismatch listing every stale store at once, with the one command that removes exactly those."""
    from .store import StoreMismatch

    stale = stale_stores(P=P, planned=planned, ds=ds)
    if stale:
        names = ", ".join(p.name for p in stale)
        raise StoreMismatch(f"{len(stale)} retraining store(s) of '{P.name}' were made with other parameters, data or "
                            f"removal sets ({names}); resuming would mix results. Remove exactly those with: "
                            f"python -m lib.retrain --remove-stale {P.name}")


def run_condition(*, P: params_mod.Params, ds, planned: Planned, device: str, ids=None, progress: bool = True):
    """Train (or resume) models `ids` (default: all) of one condition into its store; returns the Store.

    On CPU each model trains on one thread, so its bits do not depend on the machine's core count
    or on how many workers share the work.
    """
    from . import store, train

    st = open_condition(P=P, planned=planned, ds=ds)
    hp = hparams(P=P, planned=planned)
    name = planned.condition.name
    ids = range(P.n_retrain_models) if ids is None else ids

    def mask_fn(i: int) -> np.ndarray:
        return mask(condition=planned.condition, removed=planned.removed, n_train=len(ds.y_train), seed=P.seed, i=i)

    def train_fn(i: int, m: np.ndarray) -> dict:
        return train.train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                                 train_idx=np.flatnonzero(m), n_classes=ds.n_classes,
                                 seed=model_seed(seed=P.seed, condition=name, i=i), hp=hp, device=device,
                                 threads=1 if device == "cpu" else None)

    store.fill(st, ids=ids, mask_fn=mask_fn, train_fn=train_fn, desc=name, progress=progress)
    return st


def run_all(*, P: params_mod.Params, ds, planned: list[Planned], device: str | None = None, workers: int | None = None,
            progress: bool = True, models: range | None = None, executor: str | None = None,
            gpus: list[str] | None = None) -> None:
    """Train (or resume) every model (or `models`) of every planned condition.

    executor: local | slurm (default: P.executor). slurm submits the missing (condition, model) pairs as
    one SLURM job array (lib/cluster.py, records in utility/slurm.json) and watches it; device is then
    resolved on the nodes (None here). Rerunning re-attaches instead of submitting twice.

    workers: processes training side by side (default: one per core on CPU, one per GPU on cuda); the
    (condition, model) pairs still to do are dealt round-robin. Each writes its own store rows.
    gpus: CUDA_VISIBLE_DEVICES entries, worker w sees only gpus[w % len(gpus)] (default: workers.plan's,
    every GPU this process sees on cuda, none on CPU).
    In reference mode the removal sets are FZ's released (official) indices: on any other copy
    of CIFAR-100 they would name unrelated images, so that is refused.
    """
    from . import data

    if P.mode == "reference":
        data.require_official(ds, "retraining without FZ's released memorized points")
    refuse_stale(P=P, planned=planned, ds=ds)
    stores = {p.condition.name: open_condition(P=P, planned=p, ds=ds) for p in planned}
    ids = range(P.n_retrain_models) if models is None else models
    if len(ids) and (min(ids) < 0 or max(ids) >= P.n_retrain_models):
        raise ValueError(f"models {ids} outside 0:{P.n_retrain_models} (n_retrain_models)")

    def left() -> list[tuple[str, int]]:
        return [(name, i) for name, st in stores.items() for i in st.todo(ids)]

    if (executor or P.executor) == "slurm":
        from . import cluster

        if planned:
            cluster.run(P=P, folder=planned[0].path.parent, items=[(p.condition.name, i) for p in planned for i in ids], n_left=left,
                        task_fn=slurm_task, task_args=(P, planned), desc=f"retraining models ({P.name})",
                        progress=progress)
        return
    device = device or params_mod.resolve_device(P)
    todo = left()
    workers, gpus = workers_mod.plan(device, n_jobs=len(todo), workers=workers, gpus=gpus)
    if workers == 1:
        for p in planned:
            run_condition(P=P, ds=ds, planned=p, device=device, ids=ids, progress=progress)
        return
    total = len(stores) * len(ids)
    workers_mod.run(module="lib.retrain", payloads=[(P, planned, todo[w::workers]) for w in range(workers)],
                    total=total, n_left=lambda: len(left()), desc=f"retraining models ({P.name})", progress=progress,
                    gpus=gpus)


def train_jobs(P: params_mod.Params, planned: list[Planned], jobs: list[tuple[str, int]]) -> None:
    """Train (condition, model id) pairs one after another (a worker process, or a SLURM array task)."""
    from . import data

    ds = data.load(P)
    device = params_mod.resolve_device(P)
    by_name = {p.condition.name: p for p in planned}
    for name, run in itertools.groupby(jobs, key=lambda job: job[0]):   # one store opening per run of a condition
        run_condition(P=P, ds=ds, planned=by_name[name], device=device, ids=[i for _, i in run], progress=False)


def slurm_task(P: params_mod.Params, planned: list[Planned], jobs: list) -> int:
    """One SLURM array task (lib/cluster.py): train its (condition, model id) pairs."""
    train_jobs(P, planned, [(str(name), int(i)) for name, i in jobs])
    return len(jobs)


def _worker_main() -> None:
    """One child: (P, planned, [(condition, model id)]) pickled on stdin; trains them in turn."""
    P, planned, jobs = workers_mod.read_payload()
    train_jobs(P, planned, jobs)


def remove_stale(params_name: str) -> list[Path]:
    """Delete exactly the stale condition stores of a parameter set (those refuse_stale lists); returns them."""
    import shutil

    from . import data
    from .run_folder import RunFolder

    P = params_mod.load(params_name)
    ds = data.load(P)
    planned = plan(P=P, buckets=RunFolder.of(P).read_buckets())
    gone = sorted(stale_stores(P=P, planned=planned, ds=ds))
    for path in gone:
        shutil.rmtree(path)
    return gone


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Train (or resume) the retraining conditions (notebook 05 does the same "
                                 "through run_all), or remove stale stores.")
    ap.add_argument("--params", help="parameter set name (params/<name>.yaml) or path; needs notebook 04's buckets")
    ap.add_argument("--condition", action="append", default=None,
                    help=f"a condition to train (repeatable; default: every planned one): {', '.join(BY_NAME)}")
    ap.add_argument("--models", default=":", help="model range start:stop (default: all n_retrain_models)")
    ap.add_argument("--workers", type=int, default=None, help="local processes (default: one per core on CPU)")
    ap.add_argument("--executor", choices=["local", "slurm"], default=None,
                    help="override the parameter set's executor (slurm: submit one job array, then watch it)")
    ap.add_argument("--status", action="store_true", help="list the SLURM tasks recorded for retraining, then exit")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--remove-stale", metavar="PARAMS", help="delete the stores made with other parameters or data")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: see lib/workers.py
    args = ap.parse_args(argv)
    if args.worker:
        return _worker_main()
    if args.remove_stale:
        gone = remove_stale(args.remove_stale)
        return print(f"removed {len(gone)} stale store(s)" + "".join(f"\n  {p}" for p in gone))
    if not args.params:
        ap.error("give --params PARAMS (train) or --remove-stale PARAMS")
    from . import cluster, data, store
    from .subsets import parse_range

    try:
        P = params_mod.load(args.params)
        if args.status:
            return print(cluster.status(RunFolder.of(P).path("utility")))
        if not P.retrain:
            raise params_mod.ParamsError(f"parameter set '{P.name}' has retrain: false")
        planned = plan(P=P, buckets=RunFolder.of(P).read_buckets())
        if args.condition:
            unknown = sorted(set(args.condition) - {p.condition.name for p in planned})
            if unknown:
                raise params_mod.ParamsError(f"--condition {', '.join(unknown)}: not planned for '{P.name}' (planned: "
                                             f"{', '.join(p.condition.name for p in planned)})")
            planned = [p for p in planned if p.condition.name in args.condition]
        ds = data.load(P)
        run_all(P=P, ds=ds, planned=planned, workers=args.workers, progress=not args.no_progress,
                models=parse_range(args.models, n=P.n_retrain_models), executor=args.executor)
    except (cluster.ClusterError, params_mod.ParamsError, params_mod.MachineError, store.StoreMismatch,
            FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"done: {', '.join(p.condition.name for p in planned)} (models {args.models})")


if __name__ == "__main__":
    main()
