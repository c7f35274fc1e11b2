"""Train one model on a subset of the training set, then score every train and test example.

The whole loop, top to bottom:
  1. data: the training set is one uint8 tensor on the device, padded once by 4 pixels;
     a subset is an index into it (`train_idx`), never a copy;
  2. an epoch is a seeded `randperm` of the subset sliced into batches; augmentation
     (random 32x32 crop of the padded image + horizontal flip) is one gather per batch;
  3. SGD with momentum (optionally Nesterov), weight decay, label smoothing and a
     triangular learning rate per step (linear warm-up to `lr_peak` at `lr_peak_epoch`,
     linear decay to 0 at the last epoch);
  4. bf16 autocast + channels_last on GPU (cudnn.benchmark on; optional torch.compile, `hp.compile`);
     float32 (channels_last too) on CPU;
  5. every `hp.curve_every` epochs and after the last, the test accuracy (the curve, NaN where not
     evaluated); after training, for every train and test example whether the prediction is right
     and its margin. Evaluation runs in float32 (autocast off): correctness and margins decide
     memorization, so they are never computed from bf16-quantised logits. A non-finite loss, logit
     or margin raises NonFiniteLoss; margins are saturated to the float16 range before storing.
  6. optionally (`record_dynamics`), each example's training loss and margin as seen in its own
     (augmented) training step, per epoch: the inputs of the training-dynamics estimators
     (lib/estimators.py). The steps keep their logits (detached); losses and margins are computed
     once per epoch. The step itself is the same either way, so recording never changes the model.
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
    curve_every: int = 1     # test accuracy every this many epochs and after the last; 0: last epoch only
    compile: bool = False    # torch.compile the training forward (CUDA only; off until measured)

    @classmethod
    def from_params(cls, P, **overrides) -> "HParams":
        """P's values for every field; a field P lacks (curve_every) takes its default here unless overridden."""
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        unknown = set(overrides) - set(names)
        if unknown:
            raise TypeError(f"HParams has no field(s) {sorted(unknown)}")
        return cls(**{f.name: overrides[f.name] if f.name in overrides else getattr(P, f.name, f.default)
                      for f in fields})


class NonFiniteLoss(FloatingPointError):
    """Training diverged (a loss, logit or margin is NaN/inf): the model is not stored (its row stays incomplete)."""


F16_MAX = float(np.finfo(np.float16).max)  # 65504: margins are saturated to +-this before the float16 cast


def curve_epochs(epochs: int, every: int) -> np.ndarray:
    """(epochs,) bool: after which epochs the test accuracy is evaluated (every `every`-th and the last)."""
    at = np.zeros(epochs, dtype=bool)
    if every > 0:
        at[every - 1::every] = True
    at[-1] = True
    return at


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


def epoch_draws(idx: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """The epoch's random choices, drawn on the CPU in the loader's historical order, as one (4, n_sub) int64.

    Rows: the permuted subset rows, the crop's row offset dy, column offset dx, the flip (0/1).
    The draws are randperm, then per batch randint (dy), randint (dx), rand (flip) -- exactly the
    sequence the per-batch loader drew, so batches are bit-identical to it for the same generator.
    """
    perm = idx[torch.randperm(len(idx), generator=generator)]
    out = torch.empty(4, len(perm), dtype=torch.int64)
    out[0] = perm
    for start in range(0, len(perm), batch_size):
        n_b = len(perm[start:start + batch_size])
        out[1, start:start + n_b] = torch.randint(0, 2 * PAD + 1, (n_b,), generator=generator)
        out[2, start:start + n_b] = torch.randint(0, 2 * PAD + 1, (n_b,), generator=generator)
        out[3, start:start + n_b] = (torch.rand(n_b, generator=generator) < 0.5).long()
    return out


def augmented_batches(x_pad: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *, batch_size: int,
                      generator: torch.Generator, with_rows: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch over rows `idx` of x_pad in random order, randomly cropped and flipped.

    x_pad  # (n, 40, 40, 3) uint8 on the device;  idx  # (n_sub,) int64 on the CPU
    Yields (x (B, 3, 32, 32) uint8 with channels_last strides, y (B,) int64). All random
    numbers come from `generator` (a CPU generator), so the device does not change them.
    The epoch's indices go to the device in one copy (pinned, non-blocking on CUDA) and are
    sliced there: no host synchronisation per batch.
    with_rows: yield (x, y, rows) instead, rows (B,) int64 the batch's rows of x_pad (same draws).
    """
    device = x_pad.device
    size = x_pad.shape[1] - 2 * PAD
    draws = epoch_draws(idx, batch_size=batch_size, generator=generator)  # (4, n_sub) on the CPU
    if device.type == "cuda":
        draws = draws.pin_memory().to(device, non_blocking=True)
    else:
        draws = draws.to(device)
    ar = torch.arange(size, device=device)
    perm, dy, dx, flip = draws[0], draws[1, :, None], draws[2, :, None], draws[3, :, None].bool()
    r_all = dy + ar  # (n_sub, 32) source rows of the crop
    c_all = torch.where(flip, dx + (size - 1) - ar, dx + ar)  # (n_sub, 32) source columns, reversed if flipped
    for start in range(0, len(perm), batch_size):
        rows = perm[start:start + batch_size]  # (B,)
        r, c = r_all[start:start + batch_size], c_all[start:start + batch_size]
        xb = x_pad[rows[:, None, None], r[:, :, None], c[:, None, :]]  # (B, 32, 32, 3): one gather
        yield (xb.permute(0, 3, 1, 2), y[rows], rows) if with_rows else (xb.permute(0, 3, 1, 2), y[rows])


def augmented_batches_per_batch(x_pad: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *, batch_size: int,
                                generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The previous loader, kept as the reference: the same batches as `augmented_batches`, but it draws
    per batch and copies three index tensors to the device per batch (a blocking copy: a host sync per
    step). Tests check the two agree bit for bit; bench/bench_gpu.py measures the difference."""
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
        r = dy + ar
        c = torch.where(flip, dx + (size - 1) - ar, dx + ar)
        rows, r, c = rows.to(device), r.to(device), c.to(device)
        xb = x_pad[rows[:, None, None], r[:, :, None], c[:, None, :]]
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
def eval_logits(model: torch.nn.Module, xb: torch.Tensor, *, mean, std) -> torch.Tensor:
    """float32 logits of uint8 images xb, autocast off (whatever the caller's context): the evaluation forward."""
    with torch.autocast(device_type=xb.device.type, enabled=False):
        return model(normalize(xb, mean=mean, std=std)).float()


def _raise_non_finite(what: str, context: str) -> None:
    raise NonFiniteLoss(f"{what} became NaN or infinite{context}; the model is not stored")


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, *, n: int, device: str, mean, std, context: str = ""
             ) -> tuple[np.ndarray, np.ndarray]:
    """correct (n,) bool and margin (n,) float16: true-class logit minus the largest other logit.

    Logits are float32 (autocast off). A non-finite logit raises NonFiniteLoss; finite margins
    beyond the float16 range are saturated to +-65504 (they would overflow to +-inf).
    """
    model.eval()
    correct = torch.zeros(n, dtype=torch.bool, device=device)
    margin = torch.zeros(n, dtype=torch.float32, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    at = 0
    for xb, yb in batches:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        logits = eval_logits(model, xb, mean=mean, std=std)
        finite &= torch.isfinite(logits).all()
        true = logits.gather(1, yb[:, None])[:, 0]
        other = logits.scatter(1, yb[:, None], float("-inf")).amax(1)
        m = len(yb)
        correct[at:at + m] = logits.argmax(1) == yb
        margin[at:at + m] = true - other
        at += m
    assert at == n, f"evaluated {at} examples, expected {n}"
    if not bool(finite):  # one host sync per evaluation
        _raise_non_finite("a logit at evaluation", context)
    margin = margin.clamp(-F16_MAX, F16_MAX)
    return correct.cpu().numpy(), margin.cpu().numpy().astype(np.float16)


# ---------------------------------------------------------------- 3-4. training
def train_model(*, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                train_idx: np.ndarray, n_classes: int, seed: int, hp: HParams, device: str,
                progress: bool = False, ffcv_paths: dict | None = None, threads: int | None = None,
                record_dynamics: bool = False) -> dict:
    """Train hp.model on rows train_idx of x_train; score every row of x_train and x_test.

    x_train  # (n_train, 32, 32, 3) uint8;  train_idx  # (n_sub,) int64 rows to train on
    ffcv_paths: {"train": .beton of (x_train, y_train), "test": .beton of (x_test, y_test)} for
    hp.loader == "ffcv"; None writes them to the default cache (lib/ffcv_loader.py).
    threads: torch CPU threads (default: all cores of this process); fixed so reruns agree.
    Returns train_correct / train_margin (n_train,), test_correct / test_margin (n_test,),
    test_acc, train_acc (on train_idx), curve (epochs,) float32 test accuracy after each evaluated epoch (NaN elsewhere, hp.curve_every), seconds.
    record_dynamics (tensor loader only): also dyn_loss and dyn_margin (epochs, n_train) float16, each
    example's loss and margin in its training step of each epoch (NaN for rows outside train_idx).
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
    forward = model
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        if hp.compile:  # full batches only; the ragged last batch runs eagerly (same parameters)
            forward = torch.compile(model, dynamic=False)
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
    if record_dynamics:
        if hp.loader != "tensor":
            raise ValueError("record_dynamics needs the tensor loader (the FFCV batches do not say their rows)")
        train_batches = lambda: augmented_batches(x_pad, yt_train, train_idx, batch_size=hp.batch_size,  # noqa: E731
                                                  generator=generator, with_rows=True)
        dyn_loss = torch.full((hp.epochs, n_train), float("nan"), device=device)  # (epochs, n_train) float32
        dyn_margin = torch.full((hp.epochs, n_train), float("nan"), device=device)
    if not on_gpu:
        torch.set_num_threads(threads)  # after FFCV, which sets its own

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=hp.momentum, nesterov=hp.nesterov,
                                weight_decay=hp.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / hp.batch_size)
    curve = np.full(hp.epochs, np.nan, dtype=np.float32)  # NaN where not evaluated
    curve_at = curve_epochs(hp.epochs, hp.curve_every)
    context = f" (seed {seed}, lr_peak {hp.lr_peak}, weight_decay {hp.weight_decay})"
    epochs = range(hp.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc="epochs", leave=False, position=1)
    step = 0
    finite = torch.ones((), dtype=torch.bool, device=device)  # stays on the device: checked once per epoch
    for epoch in epochs:
        model.train()
        seen = []  # record_dynamics: (rows, logits, labels) of each step of this epoch
        for xb, yb, *rows in train_batches():
            lr = triangular_lr((step + 0.5) / steps_per_epoch, lr_peak=hp.lr_peak, peak_epoch=hp.lr_peak_epoch,
                               epochs=hp.epochs)  # at the middle of the step
            for group in optimizer.param_groups:
                group["lr"] = lr
            fwd = forward if len(yb) == hp.batch_size else model
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_gpu):
                logits = fwd(normalize(xb.to(device, non_blocking=True), mean=mean, std=std))
                loss = F.cross_entropy(logits.float(), yb.to(device, non_blocking=True),
                                       label_smoothing=hp.label_smoothing)
            if record_dynamics:  # the step's logits, kept; losses and margins are computed once per epoch
                seen.append((rows[0], logits.detach().float(), yb))
            finite &= torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not bool(finite):
            _raise_non_finite(f"the training loss in epoch {epoch + 1}", context)
        if record_dynamics:
            _record_epoch(dyn_loss[epoch], dyn_margin[epoch], *(torch.cat(t) for t in zip(*seen)),
                          label_smoothing=hp.label_smoothing)
        if curve_at[epoch]:
            test_correct, test_margin = evaluate(model, eval_batches("test"), n=n_test, device=device,
                                                 mean=mean, std=std, context=context)
            curve[epoch] = test_correct.mean()
            if progress:
                epochs.set_postfix(test_acc=f"{curve[epoch]:.3f}")

    train_correct, train_margin = evaluate(model, eval_batches("train"), n=n_train, device=device,
                                           mean=mean, std=std, context=context)
    dynamics = {}
    if record_dynamics:
        dynamics = dict(dyn_loss=dyn_loss.clamp(-F16_MAX, F16_MAX).cpu().numpy().astype(np.float16),
                        dyn_margin=dyn_margin.clamp(-F16_MAX, F16_MAX).cpu().numpy().astype(np.float16))
    return dict(
        train_correct=train_correct,  # (n_train,) bool, every row of x_train
        train_margin=train_margin,    # (n_train,) float16
        test_correct=test_correct,    # (n_test,) bool, after the last epoch
        test_margin=test_margin,      # (n_test,) float16
        test_acc=float(test_correct.mean()),
        train_acc=float(train_correct[train_idx.numpy()].mean()),
        curve=curve,                  # (epochs,) float32, NaN where not evaluated
        seconds=time.perf_counter() - t_start,
        **dynamics,                   # record_dynamics: dyn_loss, dyn_margin (epochs, n_train) float16
    )


@torch.no_grad()
def _record_epoch(loss_row: torch.Tensor, margin_row: torch.Tensor, rows: torch.Tensor, logits: torch.Tensor,
                  y: torch.Tensor, *, label_smoothing: float) -> None:
    """One epoch's per-example training losses and margins (true-class logit minus the largest other), written
    at `rows`, from the logits each training step computed (rows (n_sub,), logits (n_sub, n_classes) float32)."""
    y = y.to(logits.device)
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    loss_row[rows] = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
    margin_row[rows] = true - other
