"""Feldman & Zhang's subset runs (section 3.2): k models, each on a random r-fraction of the training set.

Model i's subset and its training seed are pure functions of (P.seed, i), so any
model can be retrained from its id alone and disjoint model ranges can be filled by
separate processes (or GPUs) into one store, the run folder's subsets/:

    python -m lib.subsets --params quick --models 100:200
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from . import data as data_mod
from . import params as params_mod
from . import store as store_mod
from . import workers as workers_mod
from .run_folder import RunFolder
from .train import HParams, train_model

# Stream tags that keep a model's subset and its training seed independent draws.
_MASK_STREAM, _TRAIN_STREAM = 0, 1


def subset_mask(*, seed: int, model_id: int, n_train: int, ratio: float) -> np.ndarray:
    """(n_train,) bool with exactly round(ratio * n_train) True, a pure function of (seed, model_id)."""
    rng = np.random.default_rng([seed, _MASK_STREAM, model_id])
    mask = np.zeros(n_train, dtype=bool)
    mask[rng.permutation(n_train)[:round(ratio * n_train)]] = True
    return mask


def model_seed(*, seed: int, model_id: int) -> int:
    """Training seed (init, order, augmentation) of model model_id: a pure function of (seed, model_id)."""
    return int(np.random.SeedSequence([seed, _TRAIN_STREAM, model_id]).generate_state(1, dtype=np.uint64)[0]
               % 2**63)


def hparams(P) -> HParams:
    """The subset models' training hyper-parameters (subset_weight_decay overrides weight_decay)."""
    wd = P.weight_decay if P.subset_weight_decay is None else P.subset_weight_decay
    return HParams.from_params(P, weight_decay=wd, curve_every=P.subset_curve_every)


def signature(P, hp: HParams, *, data_digest: str) -> dict:
    """What the subset store's contents depend on: the data (keys and content), the subset ratio, the training."""
    return {**P.data_identity(), "data_digest": data_digest, "subset_ratio": P.subset_ratio,
            **dataclasses.asdict(hp)}


def open_subset_store(P, *, ds, path=None, mode: str = "r+") -> store_mod.Store:
    """The subset store of P on dataset ds (created if absent, mode "r+"; read-only with mode "r").

    Raises StoreMismatch if P or the data differ from its signature.
    """
    hp = hparams(P)
    path = RunFolder.of(P).subset_store() if path is None else path
    return store_mod.open_store(path, n_models=P.n_subset_models, n_train=len(ds.y_train), n_test=len(ds.y_test),
                                n_epochs=hp.epochs, signature=signature(P, hp, data_digest=data_mod.content_digest(ds)),
                                mode=mode)


def run_subsets(P, *, models: range | list[int] | None = None, progress: bool = True, workers: int | None = None,
                path=None, executor: str | None = None, gpus: list[str] | None = None) -> store_mod.Store:
    """Train (or resume) subset models `models` (default: all P.n_subset_models) into P's store.

    workers: processes training models side by side (default: workers.plan).
    Each CPU model trains on one thread, so a model's bits do not depend on the worker count.
    gpus: CUDA_VISIBLE_DEVICES entries, one worker each (default: workers.plan's, every GPU this process
    sees on cuda, none on CPU).
    path: the store folder (default: the run folder's subsets/).
    executor: local | slurm (default: P.executor). slurm submits the missing models as one SLURM job
    array (lib/cluster.py) and watches it; rerunning re-attaches instead of submitting twice.
    """
    if (executor or P.executor) == "slurm":
        return _run_on_slurm(P, models=models, progress=progress, path=path)
    device = params_mod.resolve_device(P)
    ds = data_mod.load(P)
    hp = hparams(P)
    n_train = len(ds.x_train)
    store = open_subset_store(P, ds=ds, path=path)
    models = range(P.n_subset_models) if models is None else models
    if len(models) and (min(models) < 0 or max(models) >= P.n_subset_models):
        raise ValueError(f"models {models} outside 0:{P.n_subset_models} (n_subset_models)")
    todo = store.todo(models)
    ffcv_paths = None  # written once here, before any worker starts
    if hp.loader == "ffcv" and todo:
        from . import ffcv_loader
        ffcv_paths = ffcv_loader.write_betons(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                                              y_test=ds.y_test)
    workers, gpus = workers_mod.plan(device, n_jobs=len(todo), workers=workers, gpus=gpus)
    if workers > 1:
        ids = list(models)
        workers_mod.run(module="lib.subsets", payloads=[(P, todo[w::workers], None if path is None else str(path))
                                                        for w in range(workers)],
                        total=len(ids), n_left=lambda: len(store.todo(ids)), desc=f"subset models ({P.name})",
                        progress=progress, gpus=gpus)
        return store

    def mask_fn(i: int) -> np.ndarray:
        return subset_mask(seed=P.seed, model_id=i, n_train=n_train, ratio=P.subset_ratio)

    def train_fn(i: int, mask: np.ndarray) -> dict:
        return train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                           train_idx=np.flatnonzero(mask), n_classes=ds.n_classes,
                           seed=model_seed(seed=P.seed, model_id=i), hp=hp, device=device,
                           progress=progress and hp.epochs * n_train > 200_000, ffcv_paths=ffcv_paths,
                           threads=1 if device == "cpu" else None)

    store_mod.fill(store, ids=models, mask_fn=mask_fn, train_fn=train_fn, desc=f"subset models ({P.name})",
                   progress=progress)
    return store


def _run_on_slurm(P, *, models, progress: bool, path) -> store_mod.Store:
    """Submit (or re-attach to) the SLURM array that fills `models` of P's store; return the store when done."""
    from . import cluster

    ds = data_mod.load(P)  # the login node checks the data and creates the store once, before any task starts
    store = open_subset_store(P, ds=ds, path=path)
    ids = list(range(P.n_subset_models) if models is None else models)
    if ids and (min(ids) < 0 or max(ids) >= P.n_subset_models):
        raise ValueError(f"models {models} outside 0:{P.n_subset_models} (n_subset_models)")
    cluster.run(P=P, folder=store.path, items=ids, n_left=lambda: store.todo(ids), task_fn=slurm_task,
                task_args=(P, str(store.path)), desc=f"subset models ({P.name})", progress=progress)
    return store


def slurm_task(P, path: str, ids: list[int]) -> int:
    """One SLURM array task: train models `ids` into the store at `path`, one after another."""
    gpus = workers_mod.cuda_gpus() if params_mod.resolve_device(P) == "cuda" else []  # a task given several GPUs
    store = run_subsets(P, models=ids, progress=False, workers=max(1, len(gpus)), path=path, executor="local",
                        gpus=gpus)
    return len(store.todo(ids))


def _worker_main() -> None:
    """Entry of one child: (P, ids, path) pickled on stdin; trains ids one after another on one thread."""
    P, ids, path = workers_mod.read_payload()
    run_subsets(P, models=ids, progress=False, workers=1, path=path, executor="local")


def parse_range(text: str, *, n: int) -> range:
    """'100:200' -> range(100, 200); ':50', '50:' and '7' also work; bounds within 0..n."""
    if ":" in text:
        a, b = text.split(":", 1)
        r = range(int(a) if a else 0, int(b) if b else n)
    else:
        r = range(int(text), int(text) + 1)
    if not 0 <= r.start <= r.stop <= n:
        raise ValueError(f"--models {text}: must lie within 0:{n}")
    return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train (or resume) Feldman-Zhang subset models into one store.")
    ap.add_argument("--params", help="parameter set name (params/<name>.yaml) or path")
    ap.add_argument("--models", default=":", help="model range start:stop (default: all)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: one per core on CPU)")
    ap.add_argument("--store", default=None, help="store folder (default: runs/<params>/subsets)")
    ap.add_argument("--executor", choices=["local", "slurm"], default=None,
                    help="override the parameter set's executor (slurm: submit one job array, then watch it)")
    ap.add_argument("--status", action="store_true", help="list the SLURM tasks recorded for the store, then exit")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: see lib/workers.py
    args = ap.parse_args(argv)
    if args.worker:
        return _worker_main()
    if not args.params:
        ap.error("--params is required")
    P = params_mod.load(args.params)
    if args.status:
        from . import cluster

        return print(cluster.status(args.store or RunFolder.of(P).subset_store()))
    try:
        store = run_subsets(P, models=parse_range(args.models, n=P.n_subset_models), progress=not args.no_progress,
                            workers=args.workers, path=args.store, executor=args.executor)
    except _user_errors() as e:
        raise SystemExit(f"error: {e}") from None
    print(store)


def _user_errors() -> tuple:
    from .cluster import ClusterError

    return (ClusterError, params_mod.ParamsError, params_mod.MachineError, store_mod.StoreMismatch)


if __name__ == "__main__":
    main()
