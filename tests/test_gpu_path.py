"""The GPU path, checked on CPU: float32 evaluation, saturated and finite margins, the per-epoch device loader
(bit-identical to the per-batch one), the curve cadence, the cost plan, CUDA diagnosis, and bench/bench_gpu.py's
dry mode (so it never rots)."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import cost, params, train
from lib.models import build_model
from lib.train import HParams, NonFiniteLoss

ROOT = Path(__file__).resolve().parents[1]
MEAN0, STD1 = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)


class FixedLogits(torch.nn.Module):
    """logits = the first pixel's three standardised channels, times `scale`."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x[:, :, 0, 0] * self.scale


def _images(n, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


def test_eval_logits_are_float32_and_equal_a_float32_forward_even_inside_autocast():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", n_classes=10, width=8).eval()
    xb = _images(16).permute(0, 3, 1, 2)
    mean, std = torch.tensor(train.MEAN).view(1, 3, 1, 1), torch.tensor(train.STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(train.normalize(xb, mean=mean, std=std))
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # a caller's autocast does not leak in
            bf16 = model(train.normalize(xb, mean=mean, std=std))
            got = train.eval_logits(model, xb, mean=mean, std=std)
    assert bf16.dtype == torch.bfloat16  # autocast is really on here
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_margins_beyond_float16_are_saturated_not_infinite():
    x = torch.zeros(2, 2, 2, 3, dtype=torch.uint8)
    x[0, 0, 0] = torch.tensor([200, 1, 2])  # margin 198 * 1000 = 198000 > 65504
    x[1, 0, 0] = torch.tensor([200, 1, 2])
    y = torch.tensor([0, 1])                 # -199000
    correct, margin = train.evaluate(FixedLogits(1000.0), train.ordered_batches(x, y, batch_size=2), n=2,
                                     device="cpu", mean=MEAN0, std=STD1)
    assert margin.dtype == np.float16 and np.isfinite(margin).all()
    assert margin.tolist() == [65504.0, -65504.0] and correct.tolist() == [True, False]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_at_evaluation_raise_nonfiniteloss(bad):
    class Bad(torch.nn.Module):
        def forward(self, x):
            out = x[:, :, 0, 0].clone()
            out[-1, 1] = bad
            return out
    x = torch.zeros(3, 2, 2, 3, dtype=torch.uint8)
    with pytest.raises(NonFiniteLoss, match="NaN or infinite.*not stored"):
        train.evaluate(Bad(), train.ordered_batches(x, torch.tensor([0, 1, 2]), batch_size=2), n=3, device="cpu",
                       mean=MEAN0, std=STD1)


@pytest.mark.parametrize("batch_size", [7, 16, 64])
def test_epoch_loader_is_bit_identical_to_the_per_batch_loader(batch_size):
    x_pad = train.pad_images(_images(50, seed=1))
    y = torch.arange(50) * 3
    idx = torch.tensor(sorted(np.random.default_rng(0).choice(50, 37, replace=False).tolist()))
    g_new, g_old = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):  # several epochs: the generators must stay in step too
        new = list(train.augmented_batches(x_pad, y, idx, batch_size=batch_size, generator=g_new))
        old = list(train.augmented_batches_per_batch(x_pad, y, idx, batch_size=batch_size, generator=g_old))
        assert len(new) == len(old) == -(-37 // batch_size)
        for (xn, yn), (xo, yo) in zip(new, old):
            assert torch.equal(xn, xo) and torch.equal(yn, yo)
            assert xn.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_curve_epochs_cadence():
    assert np.flatnonzero(train.curve_epochs(10, 1)).tolist() == list(range(10))
    assert np.flatnonzero(train.curve_epochs(25, 10)).tolist() == [9, 19, 24]
    assert np.flatnonzero(train.curve_epochs(20, 10)).tolist() == [9, 19]
    assert np.flatnonzero(train.curve_epochs(7, 0)).tolist() == [6]
    assert cost.n_curve_points(25, 10) == 3 and cost.n_curve_points(20, 10) == 2 and cost.n_curve_points(7, 0) == 1


def _hp(**kw):
    base = dict(model="tiny_cnn", width=4, epochs=3, batch_size=32, lr_peak=0.05, lr_peak_epoch=1, momentum=0.9,
                nesterov=False, weight_decay=5e-4, label_smoothing=0.0, loader="tensor", eval_batch_size=64)
    return HParams(**{**base, **kw})


def _train(hp):
    x, xt = _images(80, seed=2).numpy(), _images(40, seed=3).numpy()
    y, yt = np.arange(80) % 4, np.arange(40) % 4
    return train.train_model(x_train=x, y_train=y, x_test=xt, y_test=yt, train_idx=np.arange(0, 80, 2),
                             n_classes=4, seed=1, hp=hp, device="cpu", threads=1)


def test_curve_is_nan_where_not_evaluated_and_the_results_do_not_change():
    every = _train(_hp(curve_every=1))
    sparse = _train(_hp(curve_every=2))
    assert sparse["curve"].dtype == np.float32 and sparse["curve"].shape == (3,)
    assert np.isnan(sparse["curve"][0]) and np.isfinite(sparse["curve"][1:]).all()
    assert np.array_equal(sparse["curve"][1:], every["curve"][1:])  # evaluation does not touch training
    for k in ("train_margin", "test_margin", "train_correct", "test_correct"):
        assert np.array_equal(sparse[k], every[k]), k
    assert np.isfinite(sparse["train_margin"]).all() and sparse["train_margin"].dtype == np.float16


def test_diverged_training_raises_nonfiniteloss():
    with pytest.raises(NonFiniteLoss, match="NaN or infinite"):
        _train(_hp(lr_peak=1e30))


def test_hparams_from_params_new_fields():
    P = params.load("smoke")
    hp = HParams.from_params(P)
    assert hp.curve_every == 1 and hp.compile is False  # retraining: every epoch unless told otherwise
    assert HParams.from_params(P, curve_every=P.subset_curve_every).curve_every == 10
    with pytest.raises(params.ParamsError, match="subset_curve_every"):
        params.Params(subset_curve_every=-1)
    with pytest.raises(params.ParamsError, match="compile"):
        params.Params(compile="yes")


def test_paper_plan_counts_the_flops():
    P = params.load("paper")
    f = cost.forward_flops("resnet50", 64, 100)
    assert 2.4e9 < f < 2.8e9  # CIFAR ResNet50 (3x3 stem, no max-pool): ~2.6 GFLOP per 32x32 image
    sub, re = cost.plan(P)
    assert sub.n_models == 4000 and sub.images_per_model == 35_000 and sub.epochs == 160
    assert re.n_models == 1000 and re.images_per_model == 50_000
    # the "one paper subset model ~ 48 PFLOP": the real count gives ~44 (training 43.6 + evaluation)
    assert 43 < sub.flops_per_model / 1e15 < 45
    assert sub.eval_images_per_model == 10_000 * 16 + 50_000  # every 10th epoch (16 points) + train once
    text = cost.plan_text(P)
    assert "ESTIMATES" in text and "assumed" in text


def test_fast_preset_loads_and_prints_its_plan(capsys):
    P = params.load("fast")
    assert P.requires_gpu and not P.paper_scale and P.model == "resnet18"
    cost.print_plan(P)
    out = capsys.readouterr().out
    assert "cost plan for 'fast'" in out and "subset models" in out


def test_cuda_diagnosis_driver_too_old(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(cost, "_driver_info", lambda: ("470.82.01", "11.4"))
    msg = cost.cuda_diagnosis()
    assert "CUDA 12.4" in msg and "470.82.01" in msg and "too old" in msg and "550.54.14" in msg
    assert "whl/cu114" in msg


def test_cuda_diagnosis_no_driver_and_cpu_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(cost, "_driver_info", lambda: (None, None))
    assert "no NVIDIA driver was found" in cost.cuda_diagnosis()
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in cost.cuda_diagnosis()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cost.cuda_diagnosis() == ""


def test_driver_info_parses_proc_and_nvidia_smi(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 535.54.03   Driver Version: 535.54.03   CUDA Version: 12.2 |'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cost._driver_info()[1] == "12.2"


def test_bench_gpu_dry_mode_runs_on_cpu():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--dry"], capture_output=True,
                       text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for section in ("environment", "correctness", "throughput", "cost"):
        assert f"== {section}" in r.stdout, section
    assert "loader: device == cpu" in r.stdout and "bit-identical: True" in r.stdout
    assert "DRY RUN" in r.stdout
    assert time.perf_counter() - t0 < 120
