"""Results of many training runs in pre-allocated arrays on disk: row i belongs to model i.

A store is a folder of .npy files opened as memory maps (datamodels-style) plus
signature.json, the resolved parameters (and the identity of the data) that determine its results:

    masks         # (n_models, n_train) bool     the subset model i trained on
    train_correct # (n_models, n_train) bool     prediction right, every train row
    test_correct  # (n_models, n_test) bool
    train_margin  # (n_models, n_train) float16  true-class logit minus the largest other
    test_margin   # (n_models, n_test) float16
    test_acc, train_acc, seconds  # (n_models,) float32
    curve         # (n_models, n_epochs) float32 test accuracy after each epoch
    row_crc       # (n_models,) uint32           crc32 of row i of every array above, written before the flag
    completed     # (n_models,) bool
Only in a store opened with dynamics=True (training-dynamics models, lib/estimators.py); every other
store's layout and signature are exactly the above:
    dyn_loss      # (n_models, n_epochs, n_train) float16  each example's loss in its training step, per epoch
    dyn_margin    # (n_models, n_epochs, n_train) float16  the same step's margin; NaN: not trained on

Crash safety: `write` stores and flushes a row and its checksum, and only then sets and
flushes `completed[i]`; a row without the flag is retrained on resume, so a kill (even -9)
loses at most the model in flight and never counts a half-written one. Processes that
fill disjoint model ranges can share one store (rows are separate, maps are shared).

Integrity: every open checks each file's header (shape, dtype) and size against the layout
and refuses a file that does not match (StoreCorrupt, one line naming it). A completed row
whose checksum no longer matches (flipped bytes, a zeroed tail) is not used: a reader skips
it with a warning naming the store; a writer clears its flag so the next run retrains it.
Readers open the maps read-only (mode "r"); only writers open them "r+".
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = "signature.json"


class StoreMismatch(RuntimeError):
    """An existing store was made with different parameters than the ones now asked for."""


class StoreCorrupt(RuntimeError):
    """A store file is damaged beyond a row (wrong size, header, dtype or signature); the message names it."""


class DiskFull(OSError):
    """No space left while creating or writing a store; the message names the store."""


def _layout(*, n_models: int, n_train: int, n_test: int, n_epochs: int, dynamics: bool = False
            ) -> dict[str, tuple[tuple, str]]:
    """array name -> (shape, dtype)"""
    extra = {"dyn_loss": ((n_models, n_epochs, n_train), "float16"),
             "dyn_margin": ((n_models, n_epochs, n_train), "float16")} if dynamics else {}
    return extra | {
        "masks": ((n_models, n_train), "bool"),
        "train_correct": ((n_models, n_train), "bool"),
        "test_correct": ((n_models, n_test), "bool"),
        "train_margin": ((n_models, n_train), "float16"),
        "test_margin": ((n_models, n_test), "float16"),
        "test_acc": ((n_models,), "float32"),
        "train_acc": ((n_models,), "float32"),
        "seconds": ((n_models,), "float32"),
        "curve": ((n_models, n_epochs), "float32"),
        "row_crc": ((n_models,), "uint32"),
        "completed": ((n_models,), "bool"),
    }


def _check_file(path: Path, shape: tuple, dtype: str) -> None:
    """The .npy header says `shape` and `dtype` and the file holds exactly that many bytes; else StoreCorrupt."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            have_shape, fortran, have_dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise StoreCorrupt(f"{path}: missing from the store; delete the store folder to start over") from None
    except (ValueError, OSError, SyntaxError) as e:
        raise StoreCorrupt(f"{path}: not a readable .npy file ({e}); delete the store folder to start over") from None
    if tuple(have_shape) != tuple(shape) or have_dtype != np.dtype(dtype) or fortran:
        raise StoreCorrupt(f"{path}: holds {have_dtype} {tuple(have_shape)}, the store's layout says {dtype} "
                           f"{tuple(shape)}; delete the store folder to start over")
    want = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if (size := path.stat().st_size) != want:
        raise StoreCorrupt(f"{path}: {size:,} bytes, the layout needs {want:,} (truncated or extended); "
                           "delete the store folder to start over")


class Store:
    """Memory-mapped arrays of one store (see the module docstring); open with `open_store`."""

    def __init__(self, path: Path, layout: dict, signature: dict, *, mode: str = "r+"):
        self.path = Path(path)
        self.signature = signature
        self.names = list(layout)
        self.mode = mode
        for name, (shape, dtype) in layout.items():
            _check_file(self.path / f"{name}.npy", shape, dtype)
            setattr(self, name, np.load(self.path / f"{name}.npy", mmap_mode=mode, allow_pickle=False))
        self.damaged = self._check_rows()
        if len(self.damaged):
            what = ("they are not used" if mode == "r" else "their flags are cleared and they will be retrained")
            warnings.warn(f"{self.path}: {len(self.damaged)} completed row(s) fail their checksum "
                          f"(models {self.damaged[:10].tolist()}{' ...' if len(self.damaged) > 10 else ''}); {what}",
                          stacklevel=3)
            if mode != "r":
                self.completed[self.damaged] = False
                self.completed.flush()

    @property
    def n_models(self) -> int:
        return len(self.completed)

    def _row_crc(self, i: int) -> int:
        crc = 0
        for name in self.names:
            if name not in ("row_crc", "completed"):
                crc = zlib.crc32(np.ascontiguousarray(getattr(self, name)[i]).tobytes(), crc)
        return crc

    def _check_rows(self) -> np.ndarray:
        """Completed rows whose checksum does not match their bytes (int64 model ids)."""
        done = np.flatnonzero(np.asarray(self.completed))
        return np.asarray([i for i in done if self._row_crc(int(i)) != int(self.row_crc[i])], np.int64)

    def done(self) -> np.ndarray:
        """(k,) int64 ids of the completed rows that passed their checksum: the models a reader may use."""
        ok = np.asarray(self.completed, bool).copy()
        ok[self.damaged] = False
        return np.flatnonzero(ok)

    def write(self, i: int, *, mask: np.ndarray, result: dict) -> None:
        """Store model i's row and its checksum and flush them, then mark it completed (and flush that)."""
        if self.mode == "r":
            raise PermissionError(f"{self.path} is open read-only")
        self.masks[i] = mask
        for name in self.names:
            if name not in ("masks", "row_crc", "completed"):
                getattr(self, name)[i] = result[name]
        self.row_crc[i] = self._row_crc(i)
        for name in self.names:
            if name != "completed":
                getattr(self, name).flush()
        self.completed[i] = True
        self.completed.flush()

    def todo(self, ids) -> list[int]:
        """Those of ids whose row is not completed, in order."""
        return [int(i) for i in ids if not self.completed[i]]

    def __repr__(self) -> str:
        return f"Store({self.path}, {len(self.done())}/{self.n_models} completed)"


def open_store(path, *, n_models: int, n_train: int, n_test: int, n_epochs: int, signature: dict,
               mode: str = "r+", dynamics: bool = False) -> Store:
    """Create the store at `path` (mode "r+" only), or reopen it if its signature (and shape) agree.

    signature: JSON-able dict of the resolved parameters that determine the results (and the
    data's identity). mode "r": read-only, never creates (FileNotFoundError when absent).
    Raises StoreMismatch naming the keys that differ and the store's path, StoreCorrupt for a
    damaged file, DiskFull when there is no room to create it.
    dynamics: also the per-epoch per-example arrays dyn_loss and dyn_margin (train_model's
    record_dynamics); the signature then says "dynamics": true. Off, nothing changes.
    """
    path = Path(path)
    shape = dict(n_models=n_models, n_train=n_train, n_test=n_test, n_epochs=n_epochs)
    want = json.loads(json.dumps({**signature, **shape, **({"dynamics": True} if dynamics else {})},
                                 sort_keys=True))  # as it reads back from disk
    layout = _layout(**shape, dynamics=dynamics)
    if not (path / SIGNATURE).is_file():
        if mode == "r":
            raise FileNotFoundError(f"{path}: no store here (its step has not run)")
        _create(path, layout, want)
    try:
        have = json.loads((path / SIGNATURE).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreCorrupt(f"{path / SIGNATURE}: not readable JSON ({e}); delete {path} to start over") from None
    if not isinstance(have, dict):
        raise StoreCorrupt(f"{path / SIGNATURE}: not a JSON object; delete {path} to start over")
    if have != want:
        keys = sorted(k for k in set(have) | set(want) if have.get(k, "<absent>") != want.get(k, "<absent>"))
        diffs = "; ".join(f"{k}: store has {have.get(k, '<absent>')!r}, now {want.get(k, '<absent>')!r}"
                          for k in keys)
        raise StoreMismatch(
            f"the store {path} was made with different parameters ({diffs}). Resuming would mix results; "
            f"use the parameters it was made with, or delete {path} to start over."
        )
    return Store(path, layout, have, mode=mode)


def _create(path: Path, layout: dict, signature: dict) -> None:
    """Build the arrays in a private folder and move it into place in one rename.

    Either the whole store exists (signature last) or none of it; when several
    processes race to create it, one rename wins and the others reopen that one.
    Every file's blocks are allocated up front (posix_fallocate), so a full disk fails here
    with DiskFull, not later as a SIGBUS in a worker writing into a hole of a sparse file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, (shape, dtype) in layout.items():
            arr = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            arr.flush()
            del arr
            with open(tmp / f"{name}.npy", "r+b") as f:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        (tmp / SIGNATURE).write_text(json.dumps(signature, indent=1, sort_keys=True))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(e.errno, f"no space left on the disk to create the store {path}") from None
        raise
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process created it first (or a leftover exists)
        if not (path / SIGNATURE).is_file():
            raise


LOCK_DIR = "locks"
TRAINED_LOG = "trained.log"


def _try_lock(store: Store, i: int, *, block: bool):
    """An exclusive lock on row i (fcntl, released by the kernel when its holder dies); None if held elsewhere."""
    import fcntl

    folder = store.path / LOCK_DIR
    folder.mkdir(exist_ok=True)
    fd = os.open(folder / f"{i}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def fill(store: Store, *, ids, mask_fn, train_fn, desc: str = "models", progress: bool = True) -> None:
    """Train and write every model in ids that is not completed yet: the one training loop of every store.

    mask_fn(i) -> (n_train,) bool;  train_fn(i, mask) -> result dict (lib.train.train_model's keys).

    Writers may overlap (a re-submitted SLURM task and a straggler, two runs on overlapping ranges):
    each row is trained under an exclusive per-row lock (locks/<i>.lock, fcntl: freed when its holder
    dies) and only if `completed` is still unset once the lock is held, so no row is trained twice and
    none is marked complete half-written. A row locked elsewhere is skipped, then waited for at the end
    (and trained here if its holder died without completing it). Every row written is appended to
    trained.log (model id, host, pid, time).
    """
    import socket

    from tqdm.auto import tqdm

    ids = list(ids)
    todo = store.todo(ids)
    bar = tqdm(total=len(ids), desc=desc, initial=len(ids) - len(todo), disable=not progress)
    deferred = []
    for block, queue in ((False, todo), (True, deferred)):
        for i in list(queue):
            if store.completed[i]:
                bar.update(1)
                continue
            fd = _try_lock(store, i, block=block)
            if fd is None:
                deferred.append(i)
                continue
            try:
                if store.completed[i]:  # another writer finished it between our check and the lock
                    bar.update(1)
                    continue
                mask = mask_fn(i)
                result = train_fn(i, mask)
                store.write(i, mask=mask, result=result)
                with open(store.path / TRAINED_LOG, "a") as log:
                    log.write(f"{i}\t{socket.gethostname()}\t{os.getpid()}\t{time.time():.3f}\n")
            finally:
                _unlock(fd)
            bar.update(1)
            bar.set_postfix(test_acc=f"{result['test_acc']:.3f}", sec=f"{result['seconds']:.1f}")
    bar.close()
