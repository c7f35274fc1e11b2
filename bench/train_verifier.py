"""Train the duplicate finder's pair verifier (lib/verifier.py) and write its weights.

    python bench/train_verifier.py [--seed 0] [--epochs 5] [--out lib/verifier_weights.npz]   # ~5 min on 2 cores

Training images only, no judgment and no test image (the tuning and report halves of ciFAIR's lists stay unseen):
  - not the same shot: each training image's NEIGHBOURS nearest other training images (the finder's retrieval)
    that pass its coarse gate and that its score *before the verifier* (BASE_WEIGHTS: pixel, gradient, colour and
    the retrieval gap) puts below LOOKALIKE_BELOW: look-alikes the finder has already aligned, such as the same
    studio pose with another object. A few unlisted copies among them are label noise.
  - the same shot: as many training images (at most all 50,000, drawn by the seed) against a random copy of
    themselves (`augment`).
Each pair is aligned as the finder aligns a candidate (lib/duplicates.py align_pairs) and the margin cut, so the
verifier sees what the finder shows it. Training: lib/verifier.py fit (5 epochs of about 20 s here). Then refit
the score with bench/fit_duplicates.py.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib import data, duplicates, verifier  # noqa: E402

NEIGHBOURS = 3
LOOKALIKE_BELOW = 0.85
BASE_WEIGHTS = (-5.394, 1.158, 4.869, 2.042, 7.653)   # the finder's score before the verifier (w0, pixel, gradient,
                                                      # colour, gap), as fitted by bench/fit_duplicates.py at stop 25


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def augment(x_uint8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> float32 in [0, 255]: a random copy of each image: rescaled by up to 1.35x either way
    (the axes up to 10 % apart), shifted by up to 15 % (edges repeated), mirrored half the time; channel gains
    0.85-1.15, contrast 0.7-1.3, brightness +-25, saturation 0.5-1.5 (grey one time in 10), hue +-0.1 turn;
    blurred three times in 10, a 1-3 pixel frame one time in 10, noise of 2 levels. Draws come from g."""
    n = len(x_uint8)
    img = x_uint8.permute(0, 3, 1, 2).float()
    scale, aspect = _uniform((n,), -0.3, 0.3, g), _uniform((n,), -0.1, 0.1, g)
    th = torch.zeros(n, 2, 3)
    th[:, 0, 0] = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) * torch.exp(-(scale + aspect))
    th[:, 1, 1] = torch.exp(-(scale - aspect))
    th[:, :, 2] = _uniform((n, 2), -0.15, 0.15, g)
    img = F.grid_sample(img, F.affine_grid(th, list(img.shape), align_corners=False), padding_mode="border",
                        align_corners=False)
    mean = img.mean((1, 2, 3), keepdim=True)
    img = ((img * _uniform((n, 3, 1, 1), 0.85, 1.15, g) - mean) * _uniform((n, 1, 1, 1), 0.7, 1.3, g)
           + mean + _uniform((n, 1, 1, 1), -25, 25, g))
    grey = img.mean(1, keepdim=True)
    chroma = (img - grey) * _uniform((n, 1, 1, 1), 0.5, 1.5, g) * (torch.rand(n, 1, 1, 1, generator=g) >= 0.1)
    ang = _uniform((n, 1, 1, 1), -0.2 * math.pi, 0.2 * math.pi, g)          # rotate chroma about the grey axis
    k = 1 / math.sqrt(3)
    cross = k * torch.stack([chroma[:, 2] - chroma[:, 1], chroma[:, 0] - chroma[:, 2], chroma[:, 1] - chroma[:, 0]], 1)
    img = grey + chroma * torch.cos(ang) + cross * torch.sin(ang)
    blur = torch.rand(n, generator=g) < 0.3
    if blur.any():
        img[blur] = duplicates._blur(img[blur], 0.8)
    framed = torch.rand(n, generator=g) < 0.1
    if framed.any():
        w = int(torch.randint(1, 4, (1,), generator=g))
        ring = torch.ones(1, 1, 32, 32)
        ring[..., w:32 - w, w:32 - w] = 0
        img[framed] = img[framed] * (1 - ring) + torch.rand(int(framed.sum()), 3, 1, 1, generator=g) * 255 * ring
    return (img + torch.randn(img.shape, generator=g) * 2).clamp(0, 255).permute(0, 2, 3, 1)


def lookalikes(x: np.ndarray, progress: bool = True) -> np.ndarray:
    """(n, 2) (image, neighbour) index pairs of x: each image's NEIGHBOURS nearest other images that pass the coarse
    gate and score below LOOKALIKE_BELOW by BASE_WEIGHTS."""
    ret = duplicates._retrieve(x_query=x, x_ref=x, top_k=NEIGHBOURS, same_set=True, progress=progress)
    _, pix, grad, col, _, _ = duplicates._score(x_query=x, x_ref=x, cand=ret.cand, sim=ret.sim, hub=ret.hub,
                                                gate=duplicates.COARSE_GATE, measure_floor=0.0, verify=False,
                                                progress=progress)
    z = np.tensordot(BASE_WEIGHTS, np.stack([np.ones_like(pix), pix, grad, col, ret.sim - ret.hub[:, None]]), axes=1)
    q, k = np.nonzero(np.isfinite(z) & (1 / (1 + np.exp(-np.nan_to_num(z))) < LOOKALIKE_BELOW))
    return np.stack([q, ret.cand[q, k]], 1).astype(np.int64)


def training_pairs(x: np.ndarray, seed: int, progress: bool = True) -> tuple[torch.Tensor, ...]:
    """Aligned (query, reference, label) pairs of the margin-cut images, float16: look-alikes 0, copies 1."""
    neg = lookalikes(x, progress)
    xt = torch.as_tensor(np.asarray(x))
    qn, wn = duplicates.align_pairs(xt[torch.as_tensor(neg[:, 0])], xt[torch.as_tensor(neg[:, 1])])
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(xt), generator=g)[:len(neg)]
    qp, wp = duplicates.align_pairs(augment(xt[idx], g).round().to(torch.uint8), xt[idx])
    cut = duplicates._IN
    if progress:
        print(f"training pairs: {len(neg)} look-alikes, {len(idx)} copies", flush=True)
    return (torch.cat([qn, qp])[..., cut, cut].half(), torch.cat([wn, wp])[..., cut, cut].half(),
            torch.cat([torch.zeros(len(qn)), torch.ones(len(qp))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=verifier.WEIGHTS)
    a = ap.parse_args()
    ds = data.load_cifar(dataset="cifar100")
    q, w, y = training_pairs(ds.x_train, a.seed)
    net = verifier.fit(q, w, y, seed=a.seed, epochs=a.epochs)
    verifier.save(net, a.out, seed=a.seed, epochs=a.epochs, neighbours=NEIGHBOURS, lookalike_below=LOOKALIKE_BELOW,
                  lookalikes=int((y == 0).sum()), copies=int((y == 1).sum()), train_images=len(ds.x_train),
                  script="bench/train_verifier.py")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
