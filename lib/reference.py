"""Published reference files (FZ's estimates, ciFAIR's duplicate lists, C-scores).

All are keyed by official CIFAR indices. `fetch(key)` finds a local copy
($MEMAUDIT_REFERENCE_DIR or <root>/data/reference/) or downloads it from its
public location, and checks its sha256 when one is pinned.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .params import ROOT


@dataclass(frozen=True)
class RefFile:
    filename: str             # name on disk
    url: str                  # public location
    sha256: str | None        # pinned content hash; None: too large to pin here, not verified
    aliases: tuple[str, ...] = ()  # other names the same file is kept under


FZ_SITE = "https://pluskid.github.io/influence-memorization/data"
CIFAIR_META = "https://raw.githubusercontent.com/cvjena/cifair/master/meta"

FILES = {
    "fz_pairs_cifar100": RefFile(
        "cifar100_high_infl_pairs_infl0.15_mem0.25.npz", f"{FZ_SITE}/cifar100_high_infl_pairs_infl0.15_mem0.25.npz",
        "aea6b093184112f2cdb2056dc387b653ef31658389ccd3c7ac1904d58506b8f3"),
    "fz_infl_matrix_cifar100": RefFile("cifar100_infl_matrix.npz", f"{FZ_SITE}/cifar100_infl_matrix.npz", None),
    "cifair_cifar100": RefFile(
        "duplicates_cifar100.csv", f"{CIFAIR_META}/duplicates_cifar100.csv",
        "3891498a862f2d73df00cd5dc2ee9ae2b6dccf5238691d3c29d9abb12e1c63cb", ("ciFAIR_duplicates_cifar100.csv",)),
    "cifair_cifar100_test": RefFile(
        "duplicates_cifar100_test.csv", f"{CIFAIR_META}/duplicates_cifar100_test.csv",
        "78c9d8d17eda11b468a137119ed51f09332393d65a6329035e2250888edb2760", ("ciFAIR_duplicates_cifar100_test.csv",)),
    "cifair_cifar10": RefFile(
        "duplicates_cifar10.csv", f"{CIFAIR_META}/duplicates_cifar10.csv",
        "4cb7e99a7dfff346082c9d8fa4c2989a196e4a37d1e58f75936046696f1ba6a4", ("ciFAIR_duplicates_cifar10.csv",)),
    "cscores_cifar100": RefFile(
        "cifar100-cscores-orig-order.npz",
        "https://pluskid.github.io/structural-regularity/cscores/cifar100-cscores-orig-order.npz",
        "8e1f3cfc7075052ae2ff4d4b66441dfe399b0d0e125394675cb52b5cc3c18a3a"),
}


class ReferenceError(RuntimeError):
    """A reference file is missing and cannot be fetched, or its content is not the published one."""


def search_dirs(reference_dir: str = "") -> list[Path]:
    dirs = [Path(d) for d in (reference_dir, os.environ.get("MEMAUDIT_REFERENCE_DIR", "")) if d]
    return dirs + [ROOT / "data" / "reference"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _verify(ref: RefFile, path: Path) -> Path:
    if ref.sha256 is not None and (got := sha256(path)) != ref.sha256:
        raise ReferenceError(f"{path}: sha256 {got} is not the published {ref.filename} ({ref.sha256})")
    return path


def fetch(key: str, *, reference_dir: str = "", download: bool = True, timeout: float = 120) -> Path:
    """Path of a verified local copy of reference file `key`, downloading it if needed."""
    if key not in FILES:
        raise KeyError(f"unknown reference file '{key}' (known: {', '.join(FILES)})")
    ref = FILES[key]
    dirs = search_dirs(reference_dir)
    for d in dirs:
        for name in (ref.filename, *ref.aliases):
            if (d / name).is_file():
                return _verify(ref, d / name)
    cache = dirs[-1]
    if not download:
        raise ReferenceError(f"{ref.filename} not found in {', '.join(map(str, dirs))} (download is off)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / (ref.filename + ".part")
    try:
        with urllib.request.urlopen(ref.url, timeout=timeout) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ReferenceError(f"{ref.filename} not found locally and downloading {ref.url} failed ({e}); "
                             f"put it in {cache} or set MEMAUDIT_REFERENCE_DIR") from None
    try:
        _verify(ref, tmp)
    except ReferenceError:
        tmp.unlink(missing_ok=True)
        raise
    return Path(shutil.move(str(tmp), str(cache / ref.filename)))


@dataclass(frozen=True)
class IndexJoin:
    """May this run's images be put next to published (official-index) files, and which labels do they carry?

    The one answer every notebook uses. images: the run's row i is official index i and the
    copy is official, so FZ's and ciFAIR's indices name these very images (grids may be drawn).
    y_train / y_test: labels by official index (y_test None where they are not known).
    """
    images: bool
    y_train: np.ndarray             # (n_train,) int64
    y_test: np.ndarray | None       # (n_test,) int64, or None when unknown
    reason: str                     # one sentence for the notebook to print


def index_join(*, mode: str, ds) -> IndexJoin:
    """How a run of `mode` on dataset `ds` (lib.data.Cifar) joins with published indices.

    Train mode joins nothing published for its buckets: its rows are its own and its images
    always show. Reference mode needs the full official copy for images; without it the
    released files still give every count, with the official train labels from the C-score
    release (same official order) and no test labels.
    """
    if mode == "train":
        return IndexJoin(True, ds.y_train, ds.y_test, "train mode: every index is a row of this run's dataset")
    if ds.official and not ds.is_subset:
        return IndexJoin(True, ds.y_train, ds.y_test,
                         f"{ds.folder} is the full official {ds.dataset}: published indices name these images")
    labels = np.load(fetch("cscores_cifar100"), allow_pickle=False)["labels"].astype(np.int64)
    return IndexJoin(False, labels, None,
                     f"{ds.folder} is not the full official {ds.dataset} copy: published indices name other images "
                     "there, so no image is shown; counts come from the released files alone (train labels from "
                     "the C-score release, test labels unknown)")
