"""What a parameter set costs, stated before it is spent; and why CUDA is unavailable, in words.

`plan(P)` counts the work of a parameter set: models per store, training images x epochs,
evaluation forwards and FLOPs, from a real count of the model's forward FLOPs on one image
(torch.utils.flop_counter.FlopCounterMode: convolutions and matmuls, 2 FLOPs per
multiply-add; batch norm, ReLU and pooling are not counted). Training is 3x the forward
(forward + backward), evaluation 1x. GPU-hours are *estimates* at assumed achieved TFLOP/s
(`ASSUMED_TFLOPS`), never measurements: `bench/bench_gpu.py` measures the real rate on a GPU.

`print_plan(P)` prints it; `cuda_diagnosis()` says why `torch.cuda.is_available()` is False
(CPU-only build, no driver, driver too old for the build's CUDA), with the fix.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass

N_IMAGES = {"cifar100": (50_000, 10_000), "cifar10": (50_000, 10_000)}  # (train, test) of the full dataset
PER_CLASS = {"cifar100": (500, 100), "cifar10": (5_000, 1_000)}
# Assumed *achieved* training throughputs in TFLOP/s (not peaks, not measured): GPU-hours are shown at each,
# so no single guess reads as a figure. Replace with bench/bench_gpu.py's measured rate once it has run.
ASSUMED_TFLOPS = (50.0, 100.0, 200.0)
N_RETRAIN_CONDITIONS = 10  # lib/retrain.py CONDITIONS; a removal with an empty set is skipped (upper bound)


def dataset_size(P) -> tuple[int, int]:
    """(n_train, n_test) rows a parameter set loads (class subset and per-class caps applied)."""
    if P.full_dataset:
        return N_IMAGES[P.dataset]
    n_cls = len(P.classes) if P.classes is not None else P.n_classes_dataset
    tr, te = PER_CLASS[P.dataset]
    return n_cls * min(P.n_train_per_class or tr, tr), n_cls * min(P.n_test_per_class or te, te)


@functools.lru_cache(maxsize=None)
def forward_flops(model: str, width: int, n_classes: int, size: int = 32) -> int:
    """Forward FLOPs of one size x size image, counted by FlopCounterMode (2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model
    net = build_model(model, n_classes=n_classes, width=width).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def n_curve_points(epochs: int, every: int) -> int:
    """Test-set evaluations of one model (lib/train.py curve_epochs: every `every`-th epoch and the last)."""
    if every <= 0:
        return 1
    return epochs // every + (epochs % every != 0)


@dataclass(frozen=True)
class StorePlan:
    what: str
    n_models: int
    images_per_model: int   # training images per epoch
    epochs: int
    eval_images_per_model: int  # forward-only images: test set at each curve point + the whole train set once
    flops_per_model: float

    @property
    def pflop(self) -> float:
        return self.n_models * self.flops_per_model / 1e15


def plan(P) -> list[StorePlan]:
    """The stores a parameter set trains, with their FLOPs (see the module docstring for what is counted)."""
    n_train, n_test = dataset_size(P)
    f = forward_flops(P.model, P.width, P.n_classes_dataset if P.classes is None else len(P.classes))
    out = []
    if P.mode == "train":
        n_img = int(round(P.subset_ratio * n_train))
        every = getattr(P, "subset_curve_every", 1)
        ev = n_test * n_curve_points(P.epochs, every) + n_train
        out.append(StorePlan("subset models (01)", P.n_subset_models, n_img, P.epochs, ev,
                             f * (3 * n_img * P.epochs + ev)))
    if P.retrain:
        ep = P.retrain_epochs or P.epochs
        ev = n_test * ep + n_train  # retraining keeps the curve at every epoch
        out.append(StorePlan(f"retraining (05): {N_RETRAIN_CONDITIONS} conditions x {P.n_retrain_models}",
                             N_RETRAIN_CONDITIONS * P.n_retrain_models, n_train, ep, ev,
                             f * (3 * n_train * ep + ev)))
    return out


def plan_text(P, tflops: tuple[float, ...] = ASSUMED_TFLOPS) -> str:
    """The plan as a table: per store, models, images x epochs, PFLOP, GPU-hours at each assumed TFLOP/s."""
    n_train, n_test = dataset_size(P)
    n_cls = P.n_classes_dataset if P.classes is None else len(P.classes)
    f = forward_flops(P.model, P.width, n_cls)
    lines = [f"cost plan for '{P.name}': {P.model} (width {P.width}), {n_train:,} train / {n_test:,} test images, "
             f"{f / 1e9:.3f} GFLOP forward per image (FlopCounterMode), training = 3x forward",
             f"GPU-hours are ESTIMATES at assumed achieved {', '.join(f'{t:g}' for t in tflops)} TFLOP/s "
             "(not measured; bench/bench_gpu.py measures it)"]
    hdr = f"{'store':<40} {'models':>7} {'images x epochs':>18} {'PFLOP/model':>12} {'PFLOP':>10}" + "".join(
        f" {'h@' + format(t, 'g'):>10}" for t in tflops)
    lines.append(hdr)
    total = 0.0
    for s in plan(P):
        total += s.pflop
        hours = "".join(f" {_num(s.pflop * 1e15 / (t * 1e12) / 3600):>10}" for t in tflops)
        lines.append(f"{s.what:<40} {s.n_models:>7,} {f'{s.images_per_model:,} x {s.epochs}':>18} "
                     f"{_num(s.flops_per_model / 1e15):>12} {_num(s.pflop):>10}{hours}")
    hours = "".join(f" {_num(total * 1e15 / (t * 1e12) / 3600):>10}" for t in tflops)
    lines.append(f"{'total':<40} {'':>7} {'':>18} {'':>12} {_num(total):>10}{hours}")
    return "\n".join(lines)


def _num(v: float) -> str:
    """1,234.5 for large values, 3 significant digits for small ones (a tiny CNN's plan is not all zeros)."""
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"


def print_plan(P, tflops: tuple[float, ...] = ASSUMED_TFLOPS) -> None:
    print(plan_text(P, tflops))


# ---------------------------------------------------------------- why CUDA is unavailable
# Minimum Linux driver per CUDA toolkit release (NVIDIA, CUDA Toolkit release notes, table
# "CUDA Toolkit and Corresponding Driver Versions"; GA releases). CUDA 12.x builds often run on
# drivers >= 525.60.13 through minor-version compatibility.
MIN_DRIVER = {"11.8": "520.61.05", "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03",
              "12.3": "545.23.06", "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03",
              "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06"}


def _driver_info() -> tuple[str | None, str | None]:
    """(driver version, highest CUDA version the driver supports) from /proc or nvidia-smi, else None."""
    driver = cuda = None
    try:
        text = open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace").read()
        m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
        driver = m.group(1) if m else None
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
            m = re.search(r"Driver Version:\s*(\d+\.\d+(?:\.\d+)?)", out)
            driver = driver or (m.group(1) if m else None)
            m = re.search(r"CUDA Version:\s*(\d+\.\d+)", out)
            cuda = m.group(1) if m else None
        except (OSError, subprocess.SubprocessError):
            pass
    return driver, cuda


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def cuda_diagnosis() -> str:
    """Why torch.cuda.is_available() is False here, in one paragraph with the fix ('' when CUDA works)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return ""
    torch_warn = " ".join(str(w.message).strip() for w in caught)
    build = torch.version.cuda
    if build is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build, e.g. "
                "`pip install torch --index-url https://download.pytorch.org/whl/cu124` (pick the cuXYZ at or below "
                "the 'CUDA Version' nvidia-smi prints).")
    driver, driver_cuda = _driver_info()
    parts = [f"torch {torch.__version__} is built for CUDA {build}"]
    if driver is None:
        parts.append("no NVIDIA driver was found (no /proc/driver/nvidia/version, no nvidia-smi): "
                     "this machine has no usable NVIDIA GPU, or its driver is not installed")
    else:
        parts.append(f"the NVIDIA driver is {driver}" + (f" (supports CUDA up to {driver_cuda})" if driver_cuda else ""))
        need = MIN_DRIVER.get(".".join(build.split(".")[:2]))
        too_old = (driver_cuda is not None and _version_tuple(driver_cuda) < _version_tuple(build)[:2]) or (
            need is not None and _version_tuple(driver) < _version_tuple(need))
        if too_old:
            tag = f"cu{driver_cuda.replace('.', '')}" if driver_cuda else "cuXYZ"
            parts.append("the driver is too old for this build" + (f" (CUDA {build} needs >= {need})" if need else "")
                         + f": upgrade the driver, or install a torch build for the driver's CUDA, e.g. "
                         f"`pip install torch=={torch.__version__.split('+')[0]} --index-url "
                         f"https://download.pytorch.org/whl/{tag}` (if that wheel exists; else the newest cuXYZ "
                         "at or below it)")
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        parts.append(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}")
    if torch_warn:
        parts.append(f"torch says: {torch_warn}")
    return "; ".join(parts) + "."
