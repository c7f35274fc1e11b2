"""The duplicate finder's learned pair verifier: is an aligned pair of images the same shot?

A small CNN (about 33,000 weights) sees a query and a reference image as lib/duplicates.py has aligned them
(coarse search, then ECC), the comparison margin already cut: query | aligned reference | their difference,
9 channels; three 3x3 convolutions (24, 48, 48 channels, two max-pools), mean and max pooled, one logit
(positive: the same shot). The finder's hand-made signals cannot tell a heavily edited copy from a look-alike
(the same studio pose with another object); this one was trained to, on training images only:
bench/train_verifier.py mines the look-alikes (each training image's nearest other training images that the
finder scored below 0.85) and makes the copies (a random rescale, shift, mirror, recolouring, blur, frame and
noise of a training image), and writes the weights to verifier_weights.npz beside this file: plain float32
arrays and the training's settings, read without pickle.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

WEIGHTS = Path(__file__).with_name("verifier_weights.npz")


class Verifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(9, 24, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 48, 3), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(48, 48, 3), nn.ReLU())
        self.out = nn.Linear(96, 1)

    def forward(self, q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) queries and aligned references, float in [0, 1] -> (n,) logits."""
        x = torch.cat([q, w, q - w], 1)
        if not self.training:   # faster in inference (see `logits`); training keeps the layout the weights were fit in
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv(x)
        return self.out(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))[:, 0]

    @torch.no_grad()
    def logits(self, q: torch.Tensor, w: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """forward() in chunks, without gradients, float32 (n,). Chunks of 256 stay in cache: with channels_last
        (the weights too, see `read`) about 3.5x faster on 2 CPU cores than chunks of 1,024 in the default layout."""
        out = [self(q[s:s + chunk].float(), w[s:s + chunk].float()) for s in range(0, len(q), chunk)]
        return torch.cat(out) if out else torch.zeros(0)


def fit(q: torch.Tensor, w: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int, batch: int = 256,
        lr: float = 2e-3, progress: bool = True) -> Verifier:
    """A Verifier trained on aligned pairs (q, w: (n, 3, h, w) in [0, 1], any float dtype; y: (n,) 1 same shot,
    0 not) with binary cross-entropy, AdamW and a cosine learning rate; initial weights and batch order from
    `seed`."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Verifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = len(y) // batch
    if per_epoch == 0:
        raise ValueError(f"verifier.fit: {len(y)} training pairs, fewer than one batch of {batch}")
    steps, step = epochs * per_epoch, 0
    y = y.float()
    for epoch in range(epochs):
        order, total, t0 = torch.randperm(len(y), generator=g), 0.0, time.time()
        for s in tqdm(range(0, per_epoch * batch, batch), desc=f"verifier epoch {epoch + 1}/{epochs}",
                      disable=not progress, leave=False):
            i = order[s:s + batch]
            loss = F.binary_cross_entropy_with_logits(net(q[i].float(), w[i].float()), y[i])
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            step += 1
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        if progress:
            print(f"verifier epoch {epoch + 1}/{epochs}: loss {total / per_epoch:.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    return net.to(memory_format=torch.channels_last).eval()


def save(net: Verifier, path: Path, **settings) -> None:
    """The weights as float32 arrays (one per parameter) and the settings as a JSON string, in one .npz."""
    arrays = {k: v.detach().float().contiguous().numpy() for k, v in net.state_dict().items()}
    np.savez(path, __settings__=np.array(json.dumps(settings, sort_keys=True)), **arrays)


def read(path: Path = WEIGHTS) -> tuple[Verifier, dict]:
    """A Verifier with the weights in `path` (eval mode) and the settings it was trained with."""
    net = Verifier()
    try:
        with np.load(path, allow_pickle=False) as z:
            settings = json.loads(str(z["__settings__"]))
            state = {k: torch.from_numpy(z[k]) for k in net.state_dict()}
    except (OSError, KeyError, ValueError) as e:
        raise RuntimeError(f"{path}: not the duplicate finder's verifier weights ({e}); "
                           "rebuild them with `python bench/train_verifier.py`") from e
    net.load_state_dict(state)
    return net.to(memory_format=torch.channels_last).eval(), settings


@functools.lru_cache(maxsize=1)
def default() -> Verifier:
    """The committed verifier (verifier_weights.npz), read once."""
    return read(WEIGHTS)[0]
