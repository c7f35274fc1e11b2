"""CIFAR-10/100 from the official on-disk layout, as uint8 NHWC arrays.

The official python pickles are read directly each time (a few seconds). While they
are read, each copy gets one of three verdicts (`Cifar.verdict`):

- "official file": every file's md5 equals the official archive's;
- "official content": the files differ (e.g. re-serialised pickles) but the images and
  fine labels, in order, equal the official content digests (CIFAR-100 only);
- "not official": neither.

Anything that joins this data with externally published indices (FZ's estimates,
ciFAIR's lists) must call `require_official` first; it accepts either official verdict.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .params import ROOT, Params

# Official archives and their member files (md5), as published by the dataset authors.
SOURCES = {
    "cifar100": dict(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        tar_md5="eb9058c3a382ffc7106e4002c42a8d85",
        files={"train": "16019d7e3df5f24257cddd939b257f8d",
               "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
               "meta": "7973b15100ade9c7d40fb424638fde48"},
        # Content digests (md5 of the uint8 C-contiguous (N, 3072) `data` bytes and of
        # np.asarray(fine_labels, np.int64).tobytes()), as published with the official-order
        # rebuild (../shared/data/cifar100/README.md); the official archive has the same content.
        content={"train": {"data": "e07b6859dfcb4ef6850fbc815e123615", "labels": "a6d83e1ba403abb4d4d51a4851d27312"},
                 "test": {"data": "155ad486d683899b65629b069dab09ba", "labels": "65ee271bce17e294470afef2117ae162"}},
    ),
    "cifar10": dict(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tar_md5="c58f30108f718f92721af3b95e74349a",
        files={"data_batch_1": "c99cafc152244af753f735de768cd75f",
               "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
               "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
               "test_batch": "40351d587109b95175f43aff81a1287e",
               "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
    ),
}


OFFICIAL_FILE = "official file"          # every file md5 equals the official archive's
OFFICIAL_CONTENT = "official content"    # files differ, images and labels equal the official content
NOT_OFFICIAL = "not official"
OFFICIAL_VERDICTS = (OFFICIAL_FILE, OFFICIAL_CONTENT)
CONFLICT_KINDS = ("train-train", "test-test", "train-test")  # label_conflicts' kinds, in table order


class DataError(RuntimeError):
    """Data missing, corrupt, or not the copy an analysis needs."""


@dataclass(frozen=True)
class Cifar:
    dataset: str                 # cifar100 | cifar10
    folder: Path                 # the on-disk folder read
    official: bool               # verdict is "official file" or "official content"
    verdict: str                 # OFFICIAL_FILE | OFFICIAL_CONTENT | NOT_OFFICIAL (see module doc)
    verdict_reason: str          # one sentence: why (which checksum or digest differed)
    x_train: np.ndarray          # (n_train, 32, 32, 3) uint8
    y_train: np.ndarray          # (n_train,) int64 in 0..n_classes-1
    x_test: np.ndarray           # (n_test, 32, 32, 3) uint8
    y_test: np.ndarray           # (n_test,) int64
    coarse_train: np.ndarray | None  # (n_train,) int64, CIFAR-100 only
    coarse_test: np.ndarray | None
    class_names: list[str]       # class_names[y] for y in 0..n_classes-1
    classes: np.ndarray          # (n_classes,) original label id of each class
    idx_train: np.ndarray        # (n_train,) int64 row in the on-disk train set
    idx_test: np.ndarray         # (n_test,) int64 row in the on-disk test set
    file_md5: dict[str, str] = dataclasses.field(default_factory=dict)  # md5 of each file as read (checksum_report)

    def __post_init__(self):
        if self.official != (self.verdict in OFFICIAL_VERDICTS):
            raise DataError(f"{self.folder}: official={self.official} contradicts the verdict {self.verdict!r}")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_subset(self) -> bool:
        full = {"cifar100": (50000, 10000), "cifar10": (50000, 10000)}[self.dataset]
        return (len(self.y_train), len(self.y_test)) != full


def data_root(data_dir: str = "") -> Path:
    """Folder holding cifar-100-python/ etc.: the param, else $CIFAR_DATA_DIR, else <root>/data."""
    if data_dir:
        p = Path(data_dir).expanduser()
        return p if p.is_absolute() else ROOT / p
    env = os.environ.get("CIFAR_DATA_DIR", "")
    return Path(env).expanduser() if env else ROOT / "data"


def md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def checksum_report(folder: Path, dataset: str, file_md5: dict[str, str] | None = None,
                    ) -> dict[str, tuple[str | None, bool]]:
    """file -> (md5 or None if missing, matches official). file_md5: md5s already measured (a loaded Cifar's
    `file_md5`, taken as its files were read); the files not in it are hashed here."""
    out = {}
    for name, want in SOURCES[dataset]["files"].items():
        path = Path(folder) / name
        got = (file_md5 or {}).get(name) or (md5(path) if path.is_file() else None)
        out[name] = (got, got == want)
    return out


def is_official(folder: Path, dataset: str) -> bool:
    """Every file's md5 equals the official archive's (the "official file" verdict only)."""
    return all(ok for _, ok in checksum_report(folder, dataset).values())


def content_digests(blobs: dict[str, dict]) -> dict[str, dict[str, str]]:
    """split -> {"data": md5, "labels": md5} of unpickled CIFAR-100 `train` / `test` blobs.

    data: the uint8 C-contiguous (N, 3072) array's bytes; labels: the fine labels as int64.
    """
    def digests(split: str) -> dict[str, str]:
        flat = np.ascontiguousarray(blobs[split]["data"], dtype=np.uint8)
        labels = np.asarray(blobs[split]["fine_labels"], np.int64)
        return {"data": hashlib.md5(flat.reshape(-1)).hexdigest(), "labels": hashlib.md5(labels.tobytes()).hexdigest()}
    with ThreadPoolExecutor(max_workers=2) as pool:     # md5 releases the GIL
        return dict(zip(("train", "test"), pool.map(digests, ("train", "test"))))


def verdict_of(*, dataset: str, file_md5: dict[str, str], blobs: dict[str, dict]) -> tuple[str, str]:
    """(verdict, one-sentence reason) from the files' md5s and, if needed, their content digests."""
    src = SOURCES[dataset]
    bad_files = [n for n, want in src["files"].items() if file_md5.get(n) != want]
    if not bad_files:
        return OFFICIAL_FILE, f"Every file's md5 ({', '.join(src['files'])}) equals the official archive's."
    files_differ = (f"The file md5 of {', '.join(bad_files)} {'differs' if len(bad_files) == 1 else 'differ'} "
                    "from the official archive's")
    if "content" not in src:
        return NOT_OFFICIAL, f"{files_differ}, and {dataset} has no content digests to check instead."
    got = content_digests(blobs)
    bad = [f"{split} {part} md5 {got[split][part]} (official {want})"
           for split, parts in src["content"].items() for part, want in parts.items() if got[split][part] != want]
    if bad:
        return NOT_OFFICIAL, f"{files_differ}, and the content differs too: {'; '.join(bad)}."
    return OFFICIAL_CONTENT, (f"{files_differ} (e.g. re-serialised pickles), but the images and fine labels of train "
                              "and test, in order, equal the official content digests.")


def require_official(ds: Cifar, what: str) -> None:
    """Refuse to join `ds` with data published on official indices (either official verdict passes)."""
    if not ds.official:
        raise DataError(
            f"{what} is keyed by official {ds.dataset} indices, but {ds.folder} is not the official copy "
            f"(verdict {ds.verdict!r}: {ds.verdict_reason.rstrip('.')}); joining them would pair unrelated images"
        )
    if ds.is_subset:
        raise DataError(f"{what} needs the full {ds.dataset} (no class subset or per-class cap)")


def download(dataset: str, root: Path, timeout: float = 60) -> Path:
    """Fetch and verify the official archive into root/; returns the dataset folder."""
    src = SOURCES[dataset]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tar_path = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(src["url"], timeout=timeout) as r, open(tar_path, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise DataError(
                f"{dataset} is not in {root / src['folder']} and downloading {src['url']} failed ({e}); "
                f"put the official {src['folder']}/ folder in {root} or set CIFAR_DATA_DIR{_shared_hint(dataset)}"
            ) from None
        got = md5(tar_path)
        if got != src["tar_md5"]:
            raise DataError(f"downloaded {src['url']} has md5 {got}, expected {src['tar_md5']}; not extracted")
        with tarfile.open(tar_path) as t:
            t.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / src["folder"]), str(root / src["folder"]))
    return root / src["folder"]


# The only globals a CIFAR pickle may name: numpy arrays and dtypes through their reconstruct
# functions (numpy >= 2 writes numpy._core, numpy 1 and the official Python 2 files numpy.core),
# and, for bytes written by Python 3 at protocol <= 2, codecs' latin-1 encode. Anything else (os.system,
# builtins.eval, subprocess, ...) is refused before it is called: an unpickled file can build data, never
# run code. Found with pickletools on the official archive's files, the official-order copy built by
# ../shared/data/cifar100/build.py (protocol 4) and pickles of the same dicts at protocols 0-5.
def _safe_globals() -> dict[tuple[str, str], object]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 | numpy 1 (avoids numpy 2's deprecated alias)
    reconstruct, frombuffer = core.multiarray._reconstruct, core.numeric._frombuffer

    def latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
        # how Python 3 writes bytes at protocol <= 2: _codecs.encode(bytes.decode("latin1"), "latin1")
        if encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
            raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): latin1_encode}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = reconstruct   # protocols 0-4
        out[(f"{mod}.numeric", "_frombuffer")] = frombuffer       # protocol 5
    return out


_SAFE_GLOBALS = _safe_globals()


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler (the C one) that resolves only `_SAFE_GLOBALS` and never imports anything."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"persistent id {pid!r}")


def _str_keys(obj):
    """Dict keys and lists of names that are bytes, as str.

    The official files are Python 2 pickles: read with encoding="latin1" (as here) their strings come back
    as str, but a copy re-pickled by Python 3 from an encoding="bytes" read has b'data', b'fine_labels', ...
    """
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(v, bytes) for v in obj):
        return [v.decode("latin1") for v in obj]  # fine_label_names, filenames
    return obj


def safe_unpickle(raw: bytes, path: Path | str) -> dict:
    """A CIFAR pickle's dict, read with `_CifarUnpickler`; anything else raises DataError naming `path`."""
    try:
        blob = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _RefusedGlobal as e:
        raise DataError(f"{path}: refused to unpickle {e.name} (a CIFAR file holds only dicts, lists, strings, "
                        "numbers and numpy arrays); the file may have been tampered with, nothing was run") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise DataError(f"{path}: not a CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict):
        raise DataError(f"{path}: not a CIFAR pickle (holds a {type(blob).__name__}, not a dict)")
    return _str_keys(blob)


def _read(path: Path) -> tuple[dict, str]:
    """One pickle file, unpickled safely (`safe_unpickle`), and the md5 of its bytes (the file is read once)."""
    raw = Path(path).read_bytes()
    return safe_unpickle(raw, path), hashlib.md5(raw).hexdigest()


def _to_nhwc(flat: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """On disk: (N, 3072) with the R, G, B planes of each image in turn -> (N, 32, 32, 3). Transposed in chunks
    that stay in cache (twice as fast as one whole-array transpose)."""
    flat = np.asarray(flat, dtype=np.uint8).reshape(-1, 3, 1024)
    out = np.empty((len(flat), 1024, 3), np.uint8)
    for s in range(0, len(flat), chunk):
        out[s:s + chunk] = flat[s:s + chunk].transpose(0, 2, 1)
    return out.reshape(-1, 32, 32, 3)


def read_raw(folder: Path, dataset: str) -> dict:
    """The whole on-disk dataset, no subsetting, with its verdict and verdict_reason."""
    folder = Path(folder)
    names = list(SOURCES[dataset]["files"])
    with ThreadPoolExecutor(max_workers=2) as pool:     # md5 releases the GIL: two files are hashed at once
        read = list(pool.map(lambda n: _read(folder / n), names))
    blobs, file_md5 = {n: b for n, (b, _) in zip(names, read)}, {n: h for n, (_, h) in zip(names, read)}
    for name in names:
        _check_blob(blobs[name], path=folder / name, dataset=dataset)
    verdict, reason = verdict_of(dataset=dataset, file_md5=file_md5, blobs=blobs)
    return dict(verdict=verdict, verdict_reason=reason, file_md5=file_md5, **_arrays(blobs, dataset))


# the label lists of each kind of file, and how many classes each may name
_LABELS = {"cifar100": {"fine_labels": 100, "coarse_labels": 20}, "cifar10": {"labels": 10}}


def _check_blob(blob: dict, *, path: Path, dataset: str) -> None:
    """A data file holds `data` uint8 (N, 3072) and N in-range labels per label list; else one line naming the file."""
    if "data" not in blob:
        if not any(k.endswith("label_names") for k in blob):
            raise DataError(f"{path}: neither images ('data') nor class names: not a {dataset} file")
        return  # meta / batches.meta
    x = blob["data"]
    if not isinstance(x, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(x).__name__}, expected a uint8 array of shape (N, 3072)")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has dtype {x.dtype}, expected uint8 (pixel values 0..255)")
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: 'data' has shape {x.shape}, expected (N, 3072): 3 colour planes of 32x32 per row")
    for key, n_classes in _LABELS[dataset].items():
        if key not in blob:
            raise DataError(f"{path}: no '{key}' list")
        y = np.asarray(blob[key])
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: {len(y)} '{key}' for {len(x)} images")
        if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
            raise DataError(f"{path}: '{key}' holds values outside 0..{n_classes - 1}")


def _arrays(blobs: dict[str, dict], dataset: str) -> dict:
    if dataset == "cifar100":
        tr, te, meta = blobs["train"], blobs["test"], blobs["meta"]
        return dict(
            x_train=_to_nhwc(tr["data"]), y_train=np.asarray(tr["fine_labels"], np.int64),
            coarse_train=np.asarray(tr["coarse_labels"], np.int64),
            x_test=_to_nhwc(te["data"]), y_test=np.asarray(te["fine_labels"], np.int64),
            coarse_test=np.asarray(te["coarse_labels"], np.int64),
            class_names=list(meta["fine_label_names"]),
        )
    batches = [blobs[f"data_batch_{i}"] for i in range(1, 6)]
    te, meta = blobs["test_batch"], blobs["batches.meta"]
    return dict(
        x_train=_to_nhwc(np.concatenate([b["data"] for b in batches])),
        y_train=np.concatenate([np.asarray(b["labels"], np.int64) for b in batches]),
        coarse_train=None,
        x_test=_to_nhwc(te["data"]), y_test=np.asarray(te["labels"], np.int64), coarse_test=None,
        class_names=list(meta["label_names"]),
    )


def _select(y: np.ndarray, classes: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of the chosen classes, at most `cap` per class (chosen by rng)."""
    keep = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        if cap is not None and len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def _shared_hint(dataset: str) -> str:
    """On the project's shared machines: how make builds the official-order copy (make finds data this way)."""
    build = ROOT.parent / "shared" / "data" / "cifar100" / "build.py"
    if dataset != "cifar100" or not build.is_file():
        return ""
    return f"; on this machine build it with `make data/cifar-100-python/train` (runs {build} data)"


def load_cifar(*, dataset: str = "cifar100", data_dir: str = "", download_missing: bool = True,
               classes: list[int] | None = None, n_train_per_class: int | None = None,
               n_test_per_class: int | None = None, seed: int = 0) -> Cifar:
    """Read (downloading if needed) and optionally subset a CIFAR dataset (see `subset`)."""
    root = data_root(data_dir)
    folder = root / SOURCES[dataset]["folder"]
    missing = [n for n in SOURCES[dataset]["files"] if not (folder / n).is_file()]
    if missing:
        if not download_missing:
            raise DataError(f"{folder} lacks {missing}; put the official {folder.name}/ folder in {root} "
                            f"or set CIFAR_DATA_DIR (download is off){_shared_hint(dataset)}")
        folder = download(dataset, root)
    raw = read_raw(folder, dataset)
    full = Cifar(
        dataset=dataset, folder=folder, official=raw["verdict"] in OFFICIAL_VERDICTS,
        verdict=raw["verdict"], verdict_reason=raw["verdict_reason"],
        x_train=raw["x_train"], y_train=raw["y_train"], x_test=raw["x_test"], y_test=raw["y_test"],
        coarse_train=raw["coarse_train"], coarse_test=raw["coarse_test"],
        class_names=raw["class_names"], classes=np.arange(len(raw["class_names"])),
        idx_train=np.arange(len(raw["y_train"])), idx_test=np.arange(len(raw["y_test"])), file_md5=raw["file_md5"],
    )
    return subset(full, classes=classes, n_train_per_class=n_train_per_class,
                  n_test_per_class=n_test_per_class, seed=seed)


def subset(ds: Cifar, *, classes: list[int] | None = None, n_train_per_class: int | None = None,
           n_test_per_class: int | None = None, seed: int = 0) -> Cifar:
    """The chosen classes of a whole on-disk dataset, at most n_*_per_class images each (chosen by seed).

    With `classes`, labels are renumbered 0..len(classes)-1 in the order given;
    `classes` and `idx_train`/`idx_test` map back to the on-disk dataset.
    """
    whole = all(np.array_equal(a, np.arange(len(a))) for a in (ds.classes, ds.idx_train, ds.idx_test))
    if not whole:
        raise DataError(f"{ds.folder}: subset() needs the whole dataset as read, not one already subset")
    if classes is None and n_train_per_class is None and n_test_per_class is None:
        return ds
    n_all = len(ds.class_names)
    cls = np.arange(n_all) if classes is None else np.asarray(classes, np.int64)
    rng_train = np.random.default_rng([seed, 0xDA7A, 0])
    rng_test = np.random.default_rng([seed, 0xDA7A, 1])
    idx_tr = _select(ds.y_train, cls, n_train_per_class, rng_train)
    idx_te = _select(ds.y_test, cls, n_test_per_class, rng_test)
    relabel = np.full(n_all, -1, np.int64)
    relabel[cls] = np.arange(len(cls))
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    return dataclasses.replace(
        ds, x_train=ds.x_train[idx_tr], y_train=relabel[ds.y_train[idx_tr]],
        x_test=ds.x_test[idx_te], y_test=relabel[ds.y_test[idx_te]],
        coarse_train=pick(ds.coarse_train, idx_tr), coarse_test=pick(ds.coarse_test, idx_te),
        class_names=[ds.class_names[c] for c in cls], classes=cls, idx_train=idx_tr, idx_test=idx_te,
    )


def load(p: Params) -> Cifar:
    """The dataset a parameter set asks for."""
    return load_cifar(dataset=p.dataset, data_dir=p.data_dir, download_missing=p.download, classes=p.classes,
                      n_train_per_class=p.n_train_per_class, n_test_per_class=p.n_test_per_class, seed=p.seed)


def image_hashes(x: np.ndarray) -> list[bytes]:
    """One 128-bit content hash per image: equal hashes mean byte-identical images."""
    return [hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest() for img in x]


def exact_duplicate_counts(ds: Cifar) -> dict[str, int]:
    """Byte-identical images: extra copies within train, and test images with a copy in train."""
    h_tr, h_te = image_hashes(ds.x_train), image_hashes(ds.x_test)
    train_set = set(h_tr)
    return dict(
        within_train=len(h_tr) - len(train_set),
        within_test=len(h_te) - len(set(h_te)),
        test_with_train_copy=sum(h in train_set for h in h_te),
    )


def label_conflicts(ds: Cifar) -> pd.DataFrame:
    """Pairs of byte-identical images whose labels differ, within train, within test and across.

    One row per pair: kind (train-train | test-test | train-test), row_a, row_b (rows of `ds`;
    for train-test row_a is the train row), idx_a, idx_b (the same images' on-disk indices: official
    indices on an official copy), label_a, label_b and their class names class_a, class_b.
    """
    n_train = len(ds.y_train)
    labels = np.concatenate([ds.y_train, ds.y_test])
    on_disk = {"train": ds.idx_train, "test": ds.idx_test}
    where = lambda i: ("train", i) if i < n_train else ("test", i - n_train)  # noqa: E731
    members: dict[bytes, list[int]] = {}
    for i, h in enumerate(image_hashes(ds.x_train) + image_hashes(ds.x_test)):
        members.setdefault(h, []).append(i)
    rows = []
    for group in members.values():
        for a, b in itertools.combinations(group, 2):  # a < b: a train row comes first
            if labels[a] != labels[b]:
                (split_a, row_a), (split_b, row_b) = where(a), where(b)
                rows.append((f"{split_a}-{split_b}", row_a, row_b, int(on_disk[split_a][row_a]),
                             int(on_disk[split_b][row_b]), int(labels[a]), int(labels[b])))
    out = pd.DataFrame(rows, columns=["kind", "row_a", "row_b", "idx_a", "idx_b", "label_a", "label_b"])
    out["kind"] = pd.Categorical(out["kind"], categories=CONFLICT_KINDS, ordered=True)
    out = out.sort_values(["kind", "row_a", "row_b"], ignore_index=True)
    out["class_a"] = [ds.class_names[c] for c in out["label_a"]]
    out["class_b"] = [ds.class_names[c] for c in out["label_b"]]
    return out


def content_digest(ds: Cifar) -> str:
    """md5 of exactly the rows a run uses (train and test images and labels, in order): a store's data identity.

    Two copies that differ in any image, label or row order give different digests, so a store
    made on one is never resumed or read with the other.
    """
    h = hashlib.md5()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
