"""Results of many training runs in pre-allocated arrays on disk: row i belongs to model i.

A store is a folder of .npy files opened as memory maps (datamodels-style) plus
signature.json, the resolved parameters that determine its results:

    masks         # (n_models, n_train) bool     the subset model i trained on
    train_correct # (n_models, n_train) bool     prediction right, every train row
    test_correct  # (n_models, n_test) bool
    train_margin  # (n_models, n_train) float16  true-class logit minus the largest other
    test_margin   # (n_models, n_test) float16
    test_acc, train_acc, seconds  # (n_models,) float32
    curve         # (n_models, n_epochs) float32 test accuracy after each epoch
    completed     # (n_models,) bool

Crash safety: `write` stores and flushes a row, and only then sets and flushes
`completed[i]`; a row without the flag is retrained on resume, so a kill (even -9)
loses at most the model in flight and never counts a half-written one. Processes that
fill disjoint model ranges can share one store (rows are separate, maps are shared).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

SIGNATURE = "signature.json"


class StoreMismatch(RuntimeError):
    """An existing store was made with different parameters than the ones now asked for."""


def _layout(*, n_models: int, n_train: int, n_test: int, n_epochs: int) -> dict[str, tuple[tuple, str]]:
    """array name -> (shape, dtype)"""
    return {
        "masks": ((n_models, n_train), "bool"),
        "train_correct": ((n_models, n_train), "bool"),
        "test_correct": ((n_models, n_test), "bool"),
        "train_margin": ((n_models, n_train), "float16"),
        "test_margin": ((n_models, n_test), "float16"),
        "test_acc": ((n_models,), "float32"),
        "train_acc": ((n_models,), "float32"),
        "seconds": ((n_models,), "float32"),
        "curve": ((n_models, n_epochs), "float32"),
        "completed": ((n_models,), "bool"),
    }


class Store:
    """Memory-mapped arrays of one store (see the module docstring); open with `open_store`."""

    def __init__(self, path: Path, layout: dict, signature: dict):
        self.path = Path(path)
        self.signature = signature
        self.names = list(layout)
        for name in self.names:
            setattr(self, name, np.load(self.path / f"{name}.npy", mmap_mode="r+", allow_pickle=False))

    @property
    def n_models(self) -> int:
        return len(self.completed)

    def write(self, i: int, *, mask: np.ndarray, result: dict) -> None:
        """Store model i's row and flush it, then mark it completed (and flush that)."""
        self.masks[i] = mask
        for name in self.names:
            if name not in ("masks", "completed"):
                getattr(self, name)[i] = result[name]
        for name in self.names:
            if name != "completed":
                getattr(self, name).flush()
        self.completed[i] = True
        self.completed.flush()

    def todo(self, ids) -> list[int]:
        """Those of ids whose row is not completed, in order."""
        return [int(i) for i in ids if not self.completed[i]]

    def __repr__(self) -> str:
        return f"Store({self.path}, {int(self.completed.sum())}/{self.n_models} completed)"


def open_store(path, *, n_models: int, n_train: int, n_test: int, n_epochs: int, signature: dict) -> Store:
    """Create the store at `path`, or reopen it if its signature (and shape) agree.

    signature: JSON-able dict of the resolved parameters that determine the results.
    Raises StoreMismatch naming the keys that differ and the store's path.
    """
    path = Path(path)
    shape = dict(n_models=n_models, n_train=n_train, n_test=n_test, n_epochs=n_epochs)
    want = json.loads(json.dumps({**signature, **shape}, sort_keys=True))  # as it reads back from disk
    layout = _layout(**shape)
    if not (path / SIGNATURE).is_file():
        _create(path, layout, want)
    have = json.loads((path / SIGNATURE).read_text())
    if have != want:
        keys = sorted(k for k in set(have) | set(want) if have.get(k, "<absent>") != want.get(k, "<absent>"))
        diffs = "; ".join(f"{k}: store has {have.get(k, '<absent>')!r}, now {want.get(k, '<absent>')!r}"
                          for k in keys)
        raise StoreMismatch(
            f"the store {path} was made with different parameters ({diffs}). Resuming would mix results; "
            f"use the parameters it was made with, or delete {path} to start over."
        )
    return Store(path, layout, have)


def _create(path: Path, layout: dict, signature: dict) -> None:
    """Build the arrays in a private folder and move it into place in one rename.

    Either the whole store exists (signature last) or none of it; when several
    processes race to create it, one rename wins and the others reopen that one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, (shape, dtype) in layout.items():
        arr = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        arr.flush()
        del arr
    (tmp / SIGNATURE).write_text(json.dumps(signature, indent=1, sort_keys=True))
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process created it first (or a leftover exists)
        if not (path / SIGNATURE).is_file():
            raise


def fill(store: Store, *, ids, mask_fn, train_fn, desc: str = "models", progress: bool = True) -> None:
    """Train and write every model in ids that is not completed yet: the one training loop of every store.

    mask_fn(i) -> (n_train,) bool;  train_fn(i, mask) -> result dict (lib.train.train_model's keys).
    """
    from tqdm.auto import tqdm

    ids = list(ids)
    todo = store.todo(ids)
    bar = tqdm(todo, desc=desc, initial=len(ids) - len(todo), total=len(ids), disable=not progress)
    for i in bar:
        mask = mask_fn(i)
        result = train_fn(i, mask)
        store.write(i, mask=mask, result=result)
        bar.set_postfix(test_acc=f"{result['test_acc']:.3f}", sec=f"{result['seconds']:.1f}")
