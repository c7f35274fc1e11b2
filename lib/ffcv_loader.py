"""The FFCV loader backend (the paper's loader): .beton files written once per dataset, read with the
same augmentations as the tensor loader (4-pixel zero-padded random translation = crop, horizontal flip).

A .beton is named by a hash of the arrays it holds, so a dataset is written once and
reused by every model and every process; it lives in runs/ffcv_cache/ (ignored by git).
Subsets are FFCV `indices`, never copies. FFCV's own augmentations draw from numba's
RNG, so unlike the tensor loader this backend is not bit-reproducible.
Note: importing FFCV and creating or iterating a Loader sets torch's thread count to
the loader's `num_workers`; pass the thread count you want to train with.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .params import ROOT

CACHE_DIR = ROOT / "runs" / "ffcv_cache"


def beton_name(x: np.ndarray, y: np.ndarray) -> str:
    """Content-addressed file name for images x (n, 32, 32, 3) uint8 and labels y (n,)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return f"{len(x)}_{h.hexdigest()[:16]}.beton"


def write_beton(x: np.ndarray, y: np.ndarray, *, path: Path) -> Path:
    """Write (image, label) pairs as raw RGB + int unless `path` exists; atomic (temp file + rename)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.beton")
    pairs = [(x[i], int(y[i])) for i in range(len(x))]  # FFCV reads an indexable of (HWC uint8, int)
    writer = DatasetWriter(str(tmp), {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                           num_workers=1)
    writer.from_indexed_dataset(pairs)
    os.replace(tmp, path)
    return path


def write_betons(*, x_train, y_train, x_test, y_test, cache_dir: Path | None = None) -> dict[str, Path]:
    """{"train": path, "test": path}, written on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    return {part: write_beton(x, y, path=cache_dir / beton_name(x, y))
            for part, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items()}


def _pipelines(*, augment: bool, pad: int, device: str) -> dict:
    import torch
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice, ToTensor, ToTorchImage

    image = [SimpleRGBImageDecoder()]
    if augment:
        image += [RandomHorizontalFlip(), RandomTranslate(padding=pad)]  # zero fill, like the tensor loader
    image += [ToTensor(), ToTorchImage(channels_last=True)]  # (B, 3, 32, 32) uint8, channels_last strides
    label = [IntDecoder(), ToTensor(), Squeeze()]
    if device != "cpu":
        image.append(ToDevice(torch.device(device), non_blocking=True))
        label.append(ToDevice(torch.device(device), non_blocking=True))
    return {"image": image, "label": label}


def train_loader(path: Path, *, idx: np.ndarray, batch_size: int, seed: int, device: str, threads: int,
                 pad: int = 4):
    """Random order over rows `idx` of the .beton, reshuffled each epoch, augmented; keeps the last batch."""
    from ffcv.loader import Loader, OrderOption

    return Loader(str(path), batch_size=batch_size, num_workers=threads, order=OrderOption.RANDOM, seed=seed,
                  indices=np.asarray(idx, dtype=np.int64), drop_last=False, os_cache=True,
                  pipelines=_pipelines(augment=True, pad=pad, device=device))


def eval_loader(path: Path, *, batch_size: int, device: str, threads: int):
    """Every row of the .beton in order, unaugmented."""
    from ffcv.loader import Loader, OrderOption

    return Loader(str(path), batch_size=batch_size, num_workers=threads, order=OrderOption.SEQUENTIAL,
                  drop_last=False, os_cache=True, pipelines=_pipelines(augment=False, pad=0, device=device))
