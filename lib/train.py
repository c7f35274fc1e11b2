"""Train one model on a subset of the training set, then score every train and test example.

The whole loop, top to bottom:
  1. data: the training set is one uint8 tensor on the device, padded once by 4 pixels;
     a subset is an index into it (`train_idx`), never a copy;
  2. an epoch is a seeded `randperm` of the subset sliced into batches; augmentation
     (random 32x32 crop of the padded image + horizontal flip) is one gather per batch;
  3. SGD with momentum (optionally Nesterov), weight decay, label smoothing and a
     triangular learning rate per step (linear warm-up to `lr_peak` at `lr_peak_epoch`,
     linear decay to 0 at the last epoch);
  4. bf16 autocast + channels_last on GPU; float32 (channels_last too) on CPU;
  5. after each epoch the test accuracy (the curve); after training, for every train
     and test example whether the prediction is right and its margin.
The FFCV backend (`hp.loader == "ffcv"`, lib/ffcv_loader.py) replaces step 1-2's batches only.

On CPU a model is deterministic: its own torch generator (from `seed`) draws the init,
the permutations and the augmentations, the thread count is fixed, and deterministic
algorithms are requested, so a rerun gives bit-identical results.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .models import build_model

PAD = 4  # pixels of zero padding for the random crop
# CIFAR-100 training-set channel means and standard deviations, in pixel units (0..255)
MEAN = (129.3, 124.1, 112.4)
STD = (68.2, 65.4, 70.4)


@dataclass(frozen=True)
class HParams:
    """What determines one training run besides the data and the seed (defaults live in lib/params.py)."""
    model: str               # tiny_cnn | resnet18 | resnet50
    width: int               # base channels
    epochs: int
    batch_size: int
    lr_peak: float           # per batch of batch_size, at the top of the triangle
    lr_peak_epoch: float
    momentum: float
    nesterov: bool
    weight_decay: float
    label_smoothing: float
    loader: str              # tensor | ffcv
    eval_batch_size: int

    @classmethod
    def from_params(cls, P, **overrides) -> "HParams":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(overrides) - set(names)
        if unknown:
            raise TypeError(f"HParams has no field(s) {sorted(unknown)}")
        return cls(**{n: overrides.get(n, getattr(P, n)) for n in names})


class NonFiniteLoss(FloatingPointError):
    """Training diverged: the model is not stored (its row stays incomplete)."""


def default_threads() -> int:
    """Torch CPU threads: the cores this process may use (fixed per machine, so reruns agree)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def triangular_lr(t: float, *, lr_peak: float, peak_epoch: float, epochs: int) -> float:
    """Learning rate at time t (in epochs): 0 -> lr_peak at peak_epoch -> 0 at epochs."""
    return float(np.interp(t, [0.0, peak_epoch, epochs], [0.0, lr_peak, 0.0]))


# ---------------------------------------------------------------- 1-2. the device-tensor loader
def pad_images(x: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 32 + 2 PAD, 32 + 2 PAD, 3) uint8, zero border (done once per model)."""
    return F.pad(x, (0, 0, PAD, PAD, PAD, PAD))


def augmented_batches(x_pad: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *, batch_size: int,
                      generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch over rows `idx` of x_pad in random order, randomly cropped and flipped.

    x_pad  # (n, 40, 40, 3) uint8 on the device;  idx  # (n_sub,) int64 on the CPU
    Yields (x (B, 3, 32, 32) uint8 with channels_last strides, y (B,) int64). All random
    numbers come from `generator` (a CPU generator), so the device does not change them.
    """
    device = x_pad.device
    size = x_pad.shape[1] - 2 * PAD
    ar = torch.arange(size)
    perm = idx[torch.randperm(len(idx), generator=generator)]
    for start in range(0, len(perm), batch_size):
        rows = perm[start:start + batch_size]  # (B,)
        n_b = len(rows)
        dy = torch.randint(0, 2 * PAD + 1, (n_b, 1), generator=generator)
        dx = torch.randint(0, 2 * PAD + 1, (n_b, 1), generator=generator)
        flip = torch.rand(n_b, 1, generator=generator) < 0.5
        r = dy + ar  # (B, 32) source rows of the crop
        c = torch.where(flip, dx + (size - 1) - ar, dx + ar)  # (B, 32) source columns, reversed if flipped
        rows, r, c = rows.to(device), r.to(device), c.to(device)
        xb = x_pad[rows[:, None, None], r[:, :, None], c[:, None, :]]  # (B, 32, 32, 3): one gather
        yield xb.permute(0, 3, 1, 2), y[rows]


def ordered_batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All rows of x (n, H, W, 3) uint8 in order, unaugmented, as (B, 3, H, W) channels_last views."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size].permute(0, 3, 1, 2), y[start:start + batch_size]


def normalize(xb: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 standardised, keeping the channels_last layout."""
    return (xb.float() - mean) / std


# ---------------------------------------------------------------- 5. evaluation
@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, *, n: int, device: str, mean, std
             ) -> tuple[np.ndarray, np.ndarray]:
    """correct (n,) bool and margin (n,) float16: true-class logit minus the largest other logit."""
    model.eval()
    correct = np.zeros(n, dtype=bool)
    margin = np.zeros(n, dtype=np.float16)
    at = 0
    for xb, yb in batches:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(normalize(xb, mean=mean, std=std))
        logits = logits.float()
        true = logits.gather(1, yb[:, None])[:, 0]
        other = logits.scatter(1, yb[:, None], float("-inf")).amax(1)
        m = len(yb)
        correct[at:at + m] = (logits.argmax(1) == yb).cpu().numpy()
        margin[at:at + m] = (true - other).cpu().numpy().astype(np.float16)
        at += m
    assert at == n, f"evaluated {at} examples, expected {n}"
    return correct, margin


# ---------------------------------------------------------------- 3-4. training
def train_model(*, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                train_idx: np.ndarray, n_classes: int, seed: int, hp: HParams, device: str,
                progress: bool = False, ffcv_paths: dict | None = None, threads: int | None = None) -> dict:
    """Train hp.model on rows train_idx of x_train; score every row of x_train and x_test.

    x_train  # (n_train, 32, 32, 3) uint8;  train_idx  # (n_sub,) int64 rows to train on
    ffcv_paths: {"train": .beton of (x_train, y_train), "test": .beton of (x_test, y_test)} for
    hp.loader == "ffcv"; None writes them to the default cache (lib/ffcv_loader.py).
    threads: torch CPU threads (default: all cores of this process); fixed so reruns agree.
    Returns train_correct / train_margin (n_train,), test_correct / test_margin (n_test,),
    test_acc, train_acc (on train_idx), curve (epochs,) float32 test accuracy after each epoch, seconds.
    """
    t_start = time.perf_counter()
    threads = threads or default_threads()
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        torch.use_deterministic_algorithms(True, warn_only=True)
    train_idx = torch.as_tensor(np.asarray(train_idx, dtype=np.int64))
    n_train, n_test = len(x_train), len(x_test)
    generator = torch.Generator().manual_seed(int(seed))  # every random choice of this model

    with torch.random.fork_rng(devices=[]):  # the init draws from the seed, not from global state
        torch.manual_seed(int(seed))
        model = build_model(hp.model, n_classes=n_classes, width=hp.width)
    model = model.to(device, memory_format=torch.channels_last)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    # the data, once, on the device
    xt_train = torch.as_tensor(x_train).to(device)
    yt_train = torch.as_tensor(np.asarray(y_train, dtype=np.int64)).to(device)
    xt_test = torch.as_tensor(x_test).to(device)
    yt_test = torch.as_tensor(np.asarray(y_test, dtype=np.int64)).to(device)
    if hp.loader == "ffcv":
        from . import ffcv_loader
        if ffcv_paths is None:
            ffcv_paths = ffcv_loader.write_betons(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        train_loader = ffcv_loader.train_loader(ffcv_paths["train"], idx=train_idx.numpy(),
                                                batch_size=hp.batch_size, seed=int(seed) % 2**31,
                                                device=device, threads=threads, pad=PAD)
        eval_loaders = {part: ffcv_loader.eval_loader(ffcv_paths[part], batch_size=hp.eval_batch_size,
                                                      device=device, threads=threads)
                        for part in ("train", "test")}
        train_batches = lambda: iter(train_loader)  # noqa: E731  (FFCV reshuffles per epoch)
        eval_batches = lambda part: iter(eval_loaders[part])  # noqa: E731
    elif hp.loader == "tensor":
        x_pad = pad_images(xt_train)
        train_batches = lambda: augmented_batches(x_pad, yt_train, train_idx,  # noqa: E731
                                                  batch_size=hp.batch_size, generator=generator)
        data = {"train": (xt_train, yt_train), "test": (xt_test, yt_test)}
        eval_batches = lambda part: ordered_batches(*data[part], batch_size=hp.eval_batch_size)  # noqa: E731
    else:
        raise ValueError(f"unknown loader '{hp.loader}' (tensor | ffcv)")
    if not on_gpu:
        torch.set_num_threads(threads)  # after FFCV, which sets its own

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=hp.momentum, nesterov=hp.nesterov,
                                weight_decay=hp.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / hp.batch_size)
    curve = np.zeros(hp.epochs, dtype=np.float32)
    epochs = range(hp.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc="epochs", leave=False, position=1)
    step = 0
    finite = torch.ones((), dtype=torch.bool, device=device)  # stays on the device: checked once per epoch
    for epoch in epochs:
        model.train()
        for xb, yb in train_batches():
            lr = triangular_lr((step + 0.5) / steps_per_epoch, lr_peak=hp.lr_peak, peak_epoch=hp.lr_peak_epoch,
                               epochs=hp.epochs)  # at the middle of the step
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_gpu):
                logits = model(normalize(xb.to(device, non_blocking=True), mean=mean, std=std))
                loss = F.cross_entropy(logits.float(), yb.to(device, non_blocking=True),
                                       label_smoothing=hp.label_smoothing)
            finite &= torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not bool(finite):
            raise NonFiniteLoss(f"the training loss became NaN or infinite in epoch {epoch + 1} (seed {seed}, "
                                f"lr_peak {hp.lr_peak}, weight_decay {hp.weight_decay}); the model is not stored")
        test_correct, test_margin = evaluate(model, eval_batches("test"), n=n_test, device=device,
                                             mean=mean, std=std)
        curve[epoch] = test_correct.mean()
        if progress:
            epochs.set_postfix(test_acc=f"{curve[epoch]:.3f}")

    train_correct, train_margin = evaluate(model, eval_batches("train"), n=n_train, device=device,
                                           mean=mean, std=std)
    return dict(
        train_correct=train_correct,  # (n_train,) bool, every row of x_train
        train_margin=train_margin,    # (n_train,) float16
        test_correct=test_correct,    # (n_test,) bool, after the last epoch
        test_margin=test_margin,      # (n_test,) float16
        test_acc=float(test_correct.mean()),
        train_acc=float(train_correct[train_idx.numpy()].mean()),
        curve=curve,                  # (epochs,) float32
        seconds=time.perf_counter() - t_start,
    )
