"""Feldman & Zhang's released estimate files, and the memorization folder of a run.

FZ publish (pluskid.github.io/influence-memorization) for CIFAR-100, on official indices:
  cifar100_high_infl_pairs_infl0.15_mem0.25.npz   tr_idx, tt_idx (int64), infl, mem (float64): one
                                                  row per high-influence pair (1,015 pairs)
  cifar100_infl_matrix.npz                        tr_mem (50000,), tr_labels (50000,), tt_labels (10000,)
                                                  and per class c: tr_classidx_{c}, tt_classidx_{c} (official
                                                  indices of the class) and infl_matrix_class{c}
                                                  (n_train_c, n_test_c) influence within the class
Our notebook 02 writes its pairs in the same format, so either source feeds the rest. In
memory (`Pairs`) the index fields are train_idx / test_idx; FZ's names tr_idx / tt_idx exist
only in the files.
Their indices only mean something on the official dataset: the loaders that join them
with images take the dataset and refuse a copy that is not the official one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data, reference
from .memorization import Scores

PAIR_DTYPES = {"train_idx": np.int64, "test_idx": np.int64, "infl": np.float64, "mem": np.float64}
# FZ's key in the npz file -> our field name (FZ's names live only at this file-format boundary)
FZ_KEYS = {"tr_idx": "train_idx", "tt_idx": "test_idx", "infl": "infl", "mem": "mem"}
CIFAR100_SIZES = (50000, 10000)  # official train / test examples: the range of FZ's indices


class FormatError(ValueError):
    """A file does not have the layout of FZ's released files."""


# ---------------------------------------------------------------- high-influence pairs
@dataclass(frozen=True)
class Pairs:
    train_idx: np.ndarray  # (n_pairs,) int64 train index (FZ's file: tr_idx)
    test_idx: np.ndarray   # (n_pairs,) int64 test index (FZ's file: tt_idx)
    infl: np.ndarray    # (n_pairs,) float64 influence of the train on the test example
    mem: np.ndarray     # (n_pairs,) float64 memorization score of the train example

    def __post_init__(self) -> None:
        n = len(np.asarray(self.train_idx))
        for key, dtype in PAIR_DTYPES.items():
            a = np.asarray(getattr(self, key))
            if a.ndim != 1 or len(a) != n:
                raise FormatError(f"pairs: '{key}' must be 1-D of length {n}, got shape {a.shape}")
            if np.issubdtype(dtype, np.integer) and len(a) and not np.issubdtype(a.dtype, np.integer):
                raise FormatError(f"pairs: '{key}' must hold integers, got {a.dtype}")
            object.__setattr__(self, key, a.astype(dtype, copy=False))
        if n and (self.train_idx.min() < 0 or self.test_idx.min() < 0):
            raise FormatError("pairs: negative indices")

    def __len__(self) -> int:
        return len(self.train_idx)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in PAIR_DTYPES}

    @property
    def memorized_idx(self) -> np.ndarray:
        """Sorted unique train indices: the memorized points of the pairs (FZ's '1,015' are pairs, not points)."""
        return np.unique(self.train_idx)

    def summary(self) -> dict[str, int]:
        """Pairs vs unique points: FZ's '1,015' counts pairs, not training images."""
        return {"pairs": len(self), "unique train points": len(np.unique(self.train_idx)),
                "unique test points": len(np.unique(self.test_idx))}


def read_pairs(path: Path | str) -> Pairs:
    """FZ's high-influence pairs file (or ours): keys tr_idx, tt_idx, infl, mem."""
    with np.load(path, allow_pickle=False) as f:
        missing = sorted(set(FZ_KEYS) - set(f.files))
        if missing:
            raise FormatError(f"{path}: not an FZ pairs file, lacks {missing} (has {sorted(f.files)})")
        return Pairs(**{ours: f[theirs] for theirs, ours in FZ_KEYS.items()})


def write_pairs(path: Path | str, pairs: Pairs) -> Path:
    """Write in FZ's layout (uncompressed npz, their key names and dtypes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append .npz to odd names
        np.savez(f, **{theirs: getattr(pairs, ours) for theirs, ours in FZ_KEYS.items()})
    return path


def check_pairs_on(ds: data.Cifar, pairs: Pairs, *, what: str) -> None:
    """Refuse to join official-index pairs with `ds` unless it is the official full dataset."""
    data.require_official(ds, what)
    if len(pairs) and (pairs.train_idx.max() >= len(ds.y_train) or pairs.test_idx.max() >= len(ds.y_test)):
        raise FormatError(f"{what}: indices beyond the {len(ds.y_train)} train / {len(ds.y_test)} test images")
    differ = ds.y_train[pairs.train_idx] != ds.y_test[pairs.test_idx]
    if differ.any():  # FZ's pairs are same-class by construction
        raise data.DataError(f"{what}: {int(differ.sum())} pairs join images of different classes; "
                             "the dataset order is not the one the indices refer to")


def load_released_pairs(*, ds: data.Cifar | None = None, reference_dir: str = "", download: bool = True) -> Pairs:
    """FZ's released CIFAR-100 high-influence pairs (fetched and checksum-verified).

    Give `ds` whenever the pairs will be joined with images: it must be the official
    full CIFAR-100, else DataError. Counting pairs needs no dataset.
    """
    pairs = read_pairs(reference.fetch("fz_pairs_cifar100", reference_dir=reference_dir, download=download))
    if len(pairs) and (pairs.train_idx.max() >= CIFAR100_SIZES[0] or pairs.test_idx.max() >= CIFAR100_SIZES[1]):
        raise FormatError("FZ's released pairs: indices beyond CIFAR-100's 50,000 train / 10,000 test images")
    if ds is not None:
        check_pairs_on(ds, pairs, what="FZ's released high-influence pairs")
    return pairs


def scores_from_pairs(pairs: Pairs, *, n_train: int) -> Scores:
    """Reference mode's scores.npz: mem from the pairs file, estimable only at its train points.

    FZ release no model counts or standard errors: n_in, n_out and se are 0 everywhere.
    """
    mem = np.zeros(n_train, np.float32)
    estimable = np.zeros(n_train, bool)
    mem[pairs.train_idx] = pairs.mem  # one score per train point, repeated on each of its pairs
    estimable[pairs.train_idx] = True
    zeros = np.zeros(n_train, np.int32)
    return Scores(mem=mem, se=np.zeros(n_train, np.float32), n_in=zeros, n_out=zeros.copy(), estimable=estimable)


# ---------------------------------------------------------------- per-class influence matrices
@dataclass(frozen=True)
class InflMatrix:
    tr_mem: np.ndarray     # (n_train,) float memorization score of every train example
    tr_labels: np.ndarray  # (n_train,) int label
    tt_labels: np.ndarray  # (n_test,) int label
    tr_classidx: dict[int, np.ndarray]  # class -> (n_train_c,) int64 train indices
    tt_classidx: dict[int, np.ndarray]  # class -> (n_test_c,) int64 test indices
    infl: dict[int, np.ndarray]         # class -> (n_train_c, n_test_c) influence within the class

    def pairs(self, *, mem_threshold: float, infl_threshold: float) -> Pairs:
        """FZ's high-influence pairs rebuilt from the matrices (same class by construction)."""
        out = {k: [] for k in PAIR_DTYPES}
        for c in sorted(self.infl):
            tr_c, tt_c = self.tr_classidx[c], self.tt_classidx[c]
            r, t = np.nonzero((self.infl[c] >= infl_threshold) & (self.tr_mem[tr_c] >= mem_threshold)[:, None])
            out["train_idx"].append(tr_c[r]), out["test_idx"].append(tt_c[t])
            out["infl"].append(self.infl[c][r, t]), out["mem"].append(self.tr_mem[tr_c[r]])
        return Pairs(**{k: np.concatenate(v) if v else np.zeros(0, PAIR_DTYPES[k]) for k, v in out.items()})


def read_infl_matrix(path: Path | str) -> InflMatrix:
    """FZ's cifar100_infl_matrix.npz (or a file in its layout)."""
    with np.load(path, allow_pickle=False) as f:
        missing = sorted({"tr_mem", "tr_labels", "tt_labels"} - set(f.files))
        if missing:
            raise FormatError(f"{path}: not an FZ influence-matrix file, lacks {missing}")
        classes = sorted(int(k[len("infl_matrix_class"):]) for k in f.files if k.startswith("infl_matrix_class"))
        tr_idx, tt_idx, infl = {}, {}, {}
        for c in classes:
            keys = (f"tr_classidx_{c}", f"tt_classidx_{c}", f"infl_matrix_class{c}")
            if any(k not in f.files for k in keys):
                raise FormatError(f"{path}: class {c} lacks one of {keys}")
            tr_idx[c], tt_idx[c], infl[c] = (np.asarray(f[keys[0]], np.int64), np.asarray(f[keys[1]], np.int64),
                                             f[keys[2]])
            if infl[c].shape != (len(tr_idx[c]), len(tt_idx[c])):
                raise FormatError(f"{path}: {keys[2]} has shape {infl[c].shape}, expected "
                                  f"({len(tr_idx[c])}, {len(tt_idx[c])}) from {keys[0]}, {keys[1]}")
        return InflMatrix(tr_mem=f["tr_mem"], tr_labels=f["tr_labels"], tt_labels=f["tt_labels"],
                          tr_classidx=tr_idx, tt_classidx=tt_idx, infl=infl)


def write_infl_matrix(path: Path | str, m: InflMatrix) -> Path:
    """Write in FZ's influence-matrix layout (e.g. our own estimates, for their tools)."""
    arrays = dict(tr_mem=m.tr_mem, tr_labels=m.tr_labels, tt_labels=m.tt_labels)
    for c in m.infl:
        arrays[f"infl_matrix_class{c}"] = m.infl[c]
        arrays[f"tr_classidx_{c}"] = m.tr_classidx[c]
        arrays[f"tt_classidx_{c}"] = m.tt_classidx[c]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_released_infl_matrix(*, ds: data.Cifar | None = None, reference_dir: str = "",
                              download: bool = True) -> InflMatrix:
    """FZ's released CIFAR-100 influence matrices; `ds` (when joining with images) must be official."""
    m = read_infl_matrix(reference.fetch("fz_infl_matrix_cifar100", reference_dir=reference_dir, download=download))
    if ds is not None:
        data.require_official(ds, "FZ's released influence matrices")
        if not np.array_equal(np.asarray(m.tr_labels), ds.y_train) or not np.array_equal(np.asarray(m.tt_labels),
                                                                                        ds.y_test):
            raise data.DataError("FZ's released influence matrices: labels differ from the dataset's")
    return m
