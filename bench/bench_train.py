"""Training throughput on this CPU, measured side by side in one run (quick params' model and batch size).

  1. loader alone: our device-tensor loader vs a torchvision DataLoader + transforms (same augmentation)
  2. training end to end: our loop vs the standard DataLoader loop, same model, batch size, optimiser
  3. the FFCV backend's loader vs ours
  4. achieved training FLOP/s as a fraction of this CPU's measured float32 matmul peak
  5. one whole subset model (train_model: training + per-epoch test + final scoring), seconds

Goals (issue 3): >= 1.3x end to end for the default CPU model, >= 5x for the loader alone.
Run: `make bench` or `python bench/bench_train.py [params]`. Numbers vary with machine load.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from lib import data, params, train
from lib.models import build_model

WARMUP_STEPS = 3


class PILDataset(torch.utils.data.Dataset):
    """The textbook CIFAR dataset: a PIL image per item, torchvision transforms."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def dataloader(x, y, *, batch_size, workers):
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([m / 255 for m in train.MEAN], [s / 255 for s in train.STD])])
    return torch.utils.data.DataLoader(PILDataset(x, y, tf), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(0))


def ours(x_pad, y, *, batch_size, seed=0):
    mean = torch.tensor(train.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(train.STD).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(seed)
    for xb, yb in train.augmented_batches(x_pad, y, torch.arange(len(y)), batch_size=batch_size, generator=g):
        yield train.normalize(xb, mean=mean, std=std), yb


def rate(batches, *, epochs: int, step=None) -> float:
    """images per second over `epochs` passes of the iterable factory `batches`, after a short warm-up."""
    it = batches()
    for _ in range(WARMUP_STEPS):
        xb, yb = next(it)
        if step:
            step(xb, yb)
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches():
            if step:
                step(xb, yb)
            n += len(yb)
    return n / (time.perf_counter() - t)


def sgd_step_fn(model, *, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def matmul_peak(threads: int, n: int = 1024, reps: int = 20) -> float:
    """float32 GFLOP/s of a square matmul: this CPU's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def main(params_name: str = "quick") -> None:
    P = params.load(params_name)
    ds = data.load(P)
    # One torch thread, as notebook 01 trains (one model per core, one process each); the DataLoader
    # baseline also gets a worker process of its own.
    threads = 1
    torch.set_num_threads(threads)
    bs, n = P.batch_size, len(ds.x_train)
    print(f"params {P.name}: {P.model} width {P.width}, batch {bs}, {n} train images, {threads} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    x = torch.as_tensor(ds.x_train)
    y = torch.as_tensor(ds.y_train)
    x_pad = train.pad_images(x)

    # 1. loader alone
    r_ours = rate(lambda: ours(x_pad, y, batch_size=bs), epochs=5)
    r_dl0 = rate(lambda: iter(dataloader(ds.x_train, ds.y_train, batch_size=bs, workers=0)), epochs=1)
    loader2 = dataloader(ds.x_train, ds.y_train, batch_size=bs, workers=1)
    r_dl2 = rate(lambda: iter(loader2), epochs=2)
    del loader2
    r_dl = max(r_dl0, r_dl2)
    print("\n1. loader alone (images/s, augmented and normalised float batches)")
    print(f"   ours (uint8 tensor, batched gather) {r_ours:9.0f}")
    print(f"   DataLoader, 0 workers               {r_dl0:9.0f}")
    print(f"   DataLoader, 1 worker                {r_dl2:9.0f}")
    print(f"   ratio ours / best DataLoader        {r_ours / r_dl:9.1f}x   (goal >= 5x)")

    # 2. training end to end, the same model, init, batch size and optimiser
    torch.manual_seed(0)
    m_ours = build_model(P.model, n_classes=ds.n_classes, width=P.width).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    m_std = build_model(P.model, n_classes=ds.n_classes, width=P.width)
    t_ours = rate(lambda: ours(x_pad, y, batch_size=bs), epochs=1, step=sgd_step_fn(m_ours, lr=0.05))
    t_dl0 = rate(lambda: iter(dataloader(ds.x_train, ds.y_train, batch_size=bs, workers=0)), epochs=1,
                 step=sgd_step_fn(m_std, lr=0.05))
    loader2 = dataloader(ds.x_train, ds.y_train, batch_size=bs, workers=1)
    t_dl2 = rate(lambda: iter(loader2), epochs=1, step=sgd_step_fn(m_std, lr=0.05))
    del loader2
    t_dl = max(t_dl0, t_dl2)
    print("\n2. training end to end (images/s)")
    print(f"   ours (tensor loader, channels_last)  {t_ours:8.0f}")
    print(f"   DataLoader loop, 0 workers           {t_dl0:8.0f}")
    print(f"   DataLoader loop, 1 worker            {t_dl2:8.0f}")
    print(f"   ratio ours / best DataLoader loop    {t_ours / t_dl:8.2f}x   (goal >= 1.3x)")

    # 3. FFCV
    try:
        from lib import ffcv_loader
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            paths = ffcv_loader.write_betons(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                                             y_test=ds.y_test, cache_dir=tmp)
            t_write = time.perf_counter() - t0
            t0 = time.perf_counter()
            loader = ffcv_loader.train_loader(paths["train"], idx=np.arange(n), batch_size=bs, seed=0, device="cpu",
                                              threads=threads)  # FFCV's num_workers = its numba threads
            for _ in loader:  # the first epoch compiles FFCV's pipeline (numba)
                pass
            t_compile = time.perf_counter() - t0
            mean = torch.tensor(train.MEAN).view(1, 3, 1, 1)
            std = torch.tensor(train.STD).view(1, 3, 1, 1)
            r_ffcv = rate(lambda: ((train.normalize(xb, mean=mean, std=std), yb) for xb, yb in loader), epochs=5)
        torch.set_num_threads(threads)  # FFCV changed it
        print("\n3. FFCV backend (images/s)")
        print(f"   FFCV loader (after compile)          {r_ffcv:8.0f}   (write .beton {t_write:.1f} s, "
              f"first epoch incl. compile {t_compile:.1f} s)")
        print(f"   ours                                 {r_ours:8.0f}")
        print(f"   ratio ours / FFCV                    {r_ours / r_ffcv:8.2f}x")
    except ImportError as e:
        print(f"\n3. FFCV backend: not installed ({e})")

    # 4. FLOP/s
    xb = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, ds.n_classes, (bs,))
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(m_ours(xb), yb).backward()
    flop_per_img = fc.get_total_flops() / bs
    peak = matmul_peak(threads)
    achieved = t_ours * flop_per_img / 1e9
    print("\n4. FLOP/s")
    print(f"   training FLOP per image (fwd+bwd)    {flop_per_img / 1e6:8.1f} M")
    print(f"   achieved in our loop                 {achieved:8.1f} GFLOP/s")
    print(f"   float32 matmul peak ({threads} thread)      {peak:8.1f} GFLOP/s")
    print(f"   fraction of peak                     {achieved / peak:8.1%}")

    # 5. one whole subset model as notebook 01 trains it (one thread; notebook 01 runs one per core)
    hp = train.HParams.from_params(P)
    idx = np.flatnonzero(np.random.default_rng(0).random(n) < P.subset_ratio)
    r = train.train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                          train_idx=idx, n_classes=ds.n_classes, seed=0, hp=hp, device="cpu", threads=1)
    per_model = r["seconds"]
    cores = train.default_threads()
    est = P.n_subset_models * per_model / cores
    print(f"\n5. one {P.name} subset model (1 thread, {hp.epochs} epochs, incl. evaluation): {per_model:.1f} s, "
          f"test acc {r['test_acc']:.3f}; {P.n_subset_models} models on {cores} workers ~ {est / 60:.1f} min "
          "if the cores scale")


if __name__ == "__main__":
    main(*sys.argv[1:])
