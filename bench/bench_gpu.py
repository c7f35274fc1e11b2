"""The GPU path in one run: environment, correctness, throughput per option, and what the paper's plan costs.

  == environment   torch, CUDA, cuDNN, driver, device, memory, bf16 support (or why CUDA is unavailable)
  == correctness   the epoch loader on the device equals the CPU loader and the per-batch reference bit for bit;
                   bf16 vs float32 logits: argmax agreement and largest difference; on GPU only, two epochs at
                   the paper's settings on a 70 % subset of CIFAR-100: above-chance accuracy, all margins finite
  == throughput    images/s for the previous loop (per-batch index copies) and each option (epoch loader,
                   cudnn.benchmark, torch.compile), achieved TFLOP/s against the device's peak where known,
                   peak memory, host syncs per step (torch.cuda.set_sync_debug_mode warnings), 2 processes vs 1
  == cost          minutes per subset / retraining model, models per GPU-hour, GPU-hours for the plans,
                   from the measured images/s of the best option

Run on the first GPU:  `python bench/bench_gpu.py`  (about 5 minutes on one GPU; `--no-compile` skips
torch.compile's warm-up). Without CUDA, or with `--dry`, it runs a DRY RUN on the CPU with the tiny CNN in
under a minute: every code path but CUDA's, and no figure it prints is a GPU figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from lib import cost, params, train
from lib.models import build_model

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; matched on the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "A100": 312.0}


def peak_tflops(name: str) -> float | None:
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v
    return None


_T0 = time.perf_counter()


def section(title: str) -> None:
    print(f"\n== {title}  (at {time.perf_counter() - _T0:.0f} s)", flush=True)


# ---------------------------------------------------------------- setup
def setting(dry: bool, model: str | None = None):
    """(model, width, batch_size, n_classes, n_images) of the benchmark."""
    if dry:
        return dict(model="tiny_cnn", width=8, batch_size=128, n_classes=10, n_images=1024)
    P = params.load(model or "paper")
    return dict(model=P.model, width=P.width, batch_size=P.batch_size, n_classes=100, n_images=50_000)


def synthetic(n: int, n_classes: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return train.pad_images(x.to(device)), y.to(device)


def make_model(s: dict, device: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(s["model"], n_classes=s["n_classes"], width=s["width"]).to(
        device, memory_format=torch.channels_last)


def run_steps(model, forward, batches, *, device: str, steps: int, batch_size: int, lr: float = 0.05):
    """The training step of lib/train.py (autocast bf16 on CUDA, float32 loss, SGD), for `steps` full batches."""
    on_gpu = device.startswith("cuda")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    mean = torch.tensor(train.MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(train.STD, device=device).view(1, 3, 1, 1)
    finite = torch.ones((), dtype=torch.bool, device=device)
    model.train()
    done = 0
    for xb, yb in batches:
        if done == steps:
            break
        fwd = forward if len(yb) == batch_size else model
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_gpu):
            logits = fwd(train.normalize(xb.to(device, non_blocking=True), mean=mean, std=std))
            loss = F.cross_entropy(logits.float(), yb.to(device, non_blocking=True))
        finite &= torch.isfinite(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return done, finite


def endless(loader, x_pad, y, idx, batch_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield from loader(x_pad, y, idx, batch_size=batch_size, generator=g)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(s: dict, device: str, *, loader, benchmark: bool, compile_: bool, warmup: int, steps: int) -> dict:
    """images/s, achieved TFLOP/s, peak memory, host syncs per step of one option."""
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.backends.cudnn.benchmark = benchmark
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    x_pad, y = synthetic(s["n_images"], s["n_classes"], device)
    idx = torch.arange(int(0.7 * s["n_images"]))
    model = make_model(s, device)
    forward = torch.compile(model, dynamic=False) if compile_ else model
    batches = endless(loader, x_pad, y, idx, s["batch_size"])
    t0 = time.perf_counter()
    run_steps(model, forward, batches, device=device, steps=warmup, batch_size=s["batch_size"])
    sync(device)
    warm_s = time.perf_counter() - t0
    n_sync = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if on_gpu:
            torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        done, finite = run_steps(model, forward, batches, device=device, steps=steps, batch_size=s["batch_size"])
        if on_gpu:
            torch.cuda.set_sync_debug_mode("default")
        sync(device)
        dt = time.perf_counter() - t0
    if on_gpu:
        n_sync = sum("synchroniz" in str(w.message).lower() for w in caught) / done
    ips = done * s["batch_size"] / dt
    f = cost.forward_flops(s["model"], s["width"], s["n_classes"])
    return dict(ips=ips, tflops=ips * 3 * f / 1e12, warmup_s=warm_s, finite=bool(finite),
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None, syncs=n_sync, model=model)


# ---------------------------------------------------------------- sections
def environment(device: str) -> None:
    section("environment")
    print(f"torch {torch.__version__}; built for CUDA {torch.version.cuda}; "
          f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
    driver, driver_cuda = cost._driver_info()
    print(f"NVIDIA driver {driver} (CUDA up to {driver_cuda})")
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
              f"{p.multi_processor_count} SMs; bf16 supported: {torch.cuda.is_bf16_supported()}; "
              f"peak bf16 (datasheet, dense): {peak_tflops(p.name) or 'unknown'} TFLOP/s")
    else:
        print(f"device: cpu ({train.default_threads()} threads). CUDA unavailable: {cost.cuda_diagnosis() or '-'}")


def correctness(device: str, s: dict, dry: bool) -> None:
    section("correctness")
    x_pad, y = synthetic(s["n_images"], s["n_classes"], device, seed=1)
    idx = torch.tensor(np.sort(np.random.default_rng(0).choice(s["n_images"], int(0.7 * s["n_images"]),
                                                                replace=False)))
    bs = s["batch_size"]
    dev = list(train.augmented_batches(x_pad, y, idx, batch_size=bs, generator=torch.Generator().manual_seed(3)))
    cpu = list(train.augmented_batches(x_pad.cpu(), y.cpu(), idx, batch_size=bs,
                                       generator=torch.Generator().manual_seed(3)))
    ref = list(train.augmented_batches_per_batch(x_pad.cpu(), y.cpu(), idx, batch_size=bs,
                                                 generator=torch.Generator().manual_seed(3)))
    same = len(dev) == len(cpu) == len(ref) and all(
        torch.equal(a.cpu(), b) and torch.equal(ya.cpu(), yb) and torch.equal(b, c) and torch.equal(yb, yc)
        for (a, ya), (b, yb), (c, yc) in zip(dev, cpu, ref))
    print(f"loader: device == cpu == per-batch reference for one epoch ({len(dev)} batches, device {device}), "
          f"bit-identical: {same}")

    # bf16 vs float32 logits, on a model trained a few steps (random labels: near-ties are common, a hard case)
    model = make_model(s, device)
    run_steps(model, model, endless(train.augmented_batches, x_pad, y, idx, bs), device=device, steps=10,
              batch_size=bs)
    model.eval()
    mean = torch.tensor(train.MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(train.STD, device=device).view(1, 3, 1, 1)
    xb = x_pad[:1024, train.PAD:-train.PAD, train.PAD:-train.PAD].permute(0, 3, 1, 2)
    with torch.no_grad():
        f32 = train.eval_logits(model, xb, mean=mean, std=std)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            b16 = model(train.normalize(xb, mean=mean, std=std)).float()
    agree = (f32.argmax(1) == b16.argmax(1)).float().mean().item()
    print(f"bf16 vs float32 logits ({len(xb)} images): argmax agreement {agree:.4f}, "
          f"max |diff| {(f32 - b16).abs().max().item():.4g}, evaluation dtype {f32.dtype}")

    if dry:
        print("paper-setting epochs: skipped (GPU only)")
        return
    try:
        from lib import data
        P = params.load("paper")
        ds = data.load(P)
        hp = train.HParams.from_params(P, epochs=2, lr_peak_epoch=1.0, curve_every=1)
        n = len(ds.y_train)
        sub = np.sort(np.random.default_rng(0).choice(n, int(0.7 * n), replace=False))
        t0 = time.perf_counter()
        r = train.train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                              train_idx=sub, n_classes=100, seed=0, hp=hp, device=device)
        finite = bool(np.isfinite(r["train_margin"]).all() and np.isfinite(r["test_margin"]).all())
        print(f"paper settings, 2 epochs on 70 %: test acc {r['test_acc']:.3f} (chance 0.010), curve "
              f"{np.round(r['curve'], 3).tolist()}, margins finite: {finite}, {time.perf_counter() - t0:.0f} s; "
              f"PASS: {r['test_acc'] > 0.02 and finite}")
    except Exception as e:  # noqa: BLE001  (a missing dataset must not hide the rest of the bench)
        print(f"paper-setting epochs: NOT RUN ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")


def throughput(device: str, s: dict, dry: bool, use_compile: bool) -> dict:
    section("throughput")
    on_gpu = device.startswith("cuda")
    warmup, steps = (1, 4) if dry else (15, 60)
    peak = peak_tflops(torch.cuda.get_device_properties(0).name) if on_gpu else None
    options = [("previous loop: per-batch index copies", train.augmented_batches_per_batch, False, False),
               ("epoch loader", train.augmented_batches, False, False),
               ("epoch loader + cudnn.benchmark (the default now)", train.augmented_batches, True, False)]
    if on_gpu and use_compile:
        options.append(("epoch loader + cudnn.benchmark + torch.compile", train.augmented_batches, True, True))
    else:
        print("torch.compile: not measured here (" + ("dry run" if not on_gpu else "--no-compile") + ")")
    print(f"{s['model']} width {s['width']}, batch {s['batch_size']}, {warmup} warm-up + {steps} timed steps")
    results = {}
    for name, loader, bench, comp in options:
        r = measure(s, device, loader=loader, benchmark=bench, compile_=comp, warmup=warmup, steps=steps)
        results[name] = r
        frac = f" = {r['tflops'] / peak:.1%} of peak {peak:g}" if peak else ""
        mem = f", peak memory {r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else ""
        syncs = f", host syncs/step {r['syncs']:.2f}" if r["syncs"] is not None else ""
        print(f"  {name:<50} {r['ips']:>10,.0f} images/s, {r['tflops']:.3g} TFLOP/s{frac}{mem}{syncs}, "
              f"warm-up {r['warmup_s']:.1f} s, loss finite {r['finite']}", flush=True)
    base = results[options[0][0]]["ips"]
    for name in list(results)[1:]:
        print(f"  {name}: {results[name]['ips'] / base:.2f}x the previous loop")
    # two processes on one device vs one
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)] + (
        ["--dry"] if dry else [])
    # 1 process: the same worker alone (in a dry run the in-process figure stands in: one torch import less)
    one = ({"ips": results[options[2][0]]["ips"]} if dry else
           json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    two = [json.loads(p.communicate()[0].splitlines()[-1]) for p in procs]
    total = sum(t["ips"] for t in two)
    print(f"  1 process: {one['ips']:,.0f} images/s; 2 processes on one device: {total:,.0f} images/s in all "
          f"({total / one['ips']:.2f}x)")
    best = max(results.values(), key=lambda r: r["ips"])
    return dict(ips=best["ips"], two_procs=total, one_proc=one["ips"])


def cost_table(device: str, sets: dict[str, float], dry: bool) -> None:
    section("cost")
    tag = ("DRY RUN: tiny CNN on the CPU standing in for each set's model; these are NOT GPU figures"
           if dry else f"measured on {torch.cuda.get_device_name(0)} with the best option above")
    print(tag)
    print(f"{'set':<8} {'store':<42} {'images/s':>10} {'min/model':>10} {'models/GPU-h':>13} {'GPU-hours':>11}")
    for name, ips in sets.items():
        P = params.load(name)
        s = setting(dry, name)
        f_bench = cost.forward_flops(s["model"], s["width"], s["n_classes"])
        total = 0.0
        for st in cost.plan(P):
            # seconds = training images / measured rate + evaluation forwards at a third of a training step's cost
            f_model = st.flops_per_model / (3 * st.images_per_model * st.epochs + st.eval_images_per_model)
            scale = f_model / f_bench if dry else 1.0  # dry: the tiny CNN's rate stands in, scaled by FLOPs
            sec = (st.images_per_model * st.epochs + st.eval_images_per_model / 3) / (ips / scale)
            hours = st.n_models * sec / 3600
            total += hours
            print(f"{name:<8} {st.what:<42} {ips / scale:>10,.0f} {sec / 60:>10.2f} {3600 / sec:>13,.1f} "
                  f"{hours:>11,.1f}")
        print(f"{name:<8} {'total':<42} {'':>10} {'':>10} {'':>13} {total:>11,.1f}")


def worker(args) -> None:
    device = "cuda" if torch.cuda.is_available() and not args.dry else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    s = setting(args.dry)
    r = measure(s, device, loader=train.augmented_batches, benchmark=True, compile_=False, warmup=args.warmup,
                steps=args.steps)
    print(json.dumps({"ips": r["ips"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU dry run with the tiny CNN (automatic without CUDA)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its warm-up takes minutes)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=6, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    dry = args.dry or not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    t0 = time.perf_counter()
    if dry:
        torch.set_num_threads(min(2, train.default_threads()))
        print("DRY RUN on the CPU (tiny CNN): checks every code path but CUDA's; no figure below is a GPU figure")
    environment(device)
    s = setting(dry)
    correctness(device, s, dry)
    t = throughput(device, s, dry, use_compile=not args.no_compile)
    rates = {"paper": t["ips"]}
    if dry:
        rates["fast"] = t["ips"]
    else:
        s_fast = setting(False, "fast")
        r = measure(s_fast, device, loader=train.augmented_batches, benchmark=True, compile_=False, warmup=15,
                    steps=60)
        print(f"  fast preset ({s_fast['model']} width {s_fast['width']}): {r['ips']:,.0f} images/s, "
              f"{r['tflops']:.3g} TFLOP/s")
        rates["fast"] = r["ips"]
    cost_table(device, rates, dry)
    print(f"\nbench_gpu: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
