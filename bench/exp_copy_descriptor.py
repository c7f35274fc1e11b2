"""Experiment (issue 13, stop 25): a learned copy descriptor in place of the finder's whitened hand-made one.

    python bench/exp_copy_descriptor.py [--epochs 20]    # about 6 minutes on 2 cores; not part of `make bench`

A small MLP (432 -> 512 -> 512 -> 128, unit output; f(d) + f(d mirrored), so a mirror image is a copy by
construction) maps the finder's hand-made 432-number descriptor (lib/duplicates.py _raw_descriptors) to a
copy descriptor. It is trained by instance discrimination (InfoNCE as in SimCLR, Chen et al. 2020; batch 1024,
temperature 0.07, AdamW with cosine decay): two random copies of each *training* image (`augment`: rescaled,
shifted, mirrored, recoloured, blurred, framed, noisy) must pick each other out of the batch. Test images and
judged pairs are never trained on. Then, on the tuning half of ciFAIR's judged pairs only:
  1. retrieval: the share of ciFAIR's pairs 0/1 whose train image is among the test image's k most similar
     train images, the finder's retrieval (_retrieve: whitened descriptor, re-ranked with its views) beside
     the learned descriptor's (dot products with all 50,000);
  2. the score: bench/fit_duplicates.py's cross-validation (pixel, gradient, colour and a gap), with the gap
     (similarity - the 10th neighbour's) taken from the finder's descriptor or from the learned one, on
     the labelled pairs of fit_duplicates plus the two samples below.

Measured at stop 25 (2 cores, seed 0, 20 epochs, loss 2.18 -> 0.45): retrieval @6 0.946 -> 0.965, @50
0.965 -> 0.975; cross-validated share of ciFAIR's pairs within the 25-false budget 0.857 both (looser budgets:
0.889 -> 0.901 at 40, 0.907 -> 0.923 at 60; noisy, one judged-false pair of weight 40 moves it). It was not
adopted, because at the operating point it gained about nothing. Replacing the finder's retrieval with it and refitting, the new finder confirmed 310 unlisted
tuning-half pairs that no judgment file held; a seeded sample of 100 (bench/cifair_tuning_experiment_judgments.csv)
had 13 that were not the same shot (the descriptor is colour-invariant, so the same studio pose in another
colour -- green vs red pears, a grey vs a red can -- stands out from its neighbours as a copy does).
Estimated directly (judged-false pairs plus the sample's false share times its stratum), that finder reaches
25 false flags per 5,000 tuning images at a threshold where it finds 0.884-0.896 of ciFAIR's tuning pairs;
the committed finder finds 0.886 at about 26 (20 judged-false pairs, plus 180 unjudged ones of which a
seeded sample of 60, bench/cifair_tuning_prior_judgments.csv, held 2). Tried as well, no better: 40 epochs
with stronger rescaling, hard-negative batches (each image with its nearest training neighbours that the
finder does not call copies), the learned gap beside the finder's, a "rival" (the best other candidate's
pixel + gradient; +1-2 points in cross-validation), high-pass and colour-strict signals (diagonal colour map,
chroma correlation). The learned descriptor's retrieval gain is real; the score cannot use it without
admitting look-alikes, so a stronger verifier (a pair model seeing both images) would have to come first.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from lib import data, duplicates  # noqa: E402

import fit_duplicates as fit  # noqa: E402  (labelled pairs, cross-validation; sets MEMAUDIT_REFERENCE_DIR as tests do)
from train_verifier import augment  # noqa: E402  (random copies of training images)

SEED = 0


class CopyDescriptor(nn.Module):
    def __init__(self, hidden: int = 512, dim: int = 128):
        super().__init__()
        mirror = duplicates._mirror()
        self.f = nn.Sequential(nn.Linear(len(mirror), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                               nn.Linear(hidden, dim))
        self.register_buffer("mirror", torch.as_tensor(mirror))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.f(raw) + self.f(raw[:, self.mirror]), dim=1)

    @torch.no_grad()
    def embed(self, x_uint8: np.ndarray, chunk: int = 8192) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x_uint8))
        return torch.cat([self(duplicates._raw_descriptors(x[s:s + chunk])[0]) for s in range(0, len(x), chunk)])


def train(x_uint8: np.ndarray, *, seed: int, epochs: int, batch: int = 1024, lr: float = 2e-3,
          temperature: float = 0.07) -> tuple[CopyDescriptor, list[float]]:
    x = torch.as_tensor(np.asarray(x_uint8))
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CopyDescriptor()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = len(x) // batch
    losses = []
    with tqdm(total=epochs * per_epoch, desc="copy descriptor") as bar:
        for epoch in range(epochs):
            order, total = torch.randperm(len(x), generator=g), 0.0
            for s in range(per_epoch):
                xb = x[order[s * batch:(s + 1) * batch]]
                with torch.no_grad():
                    a, b = (duplicates._raw_descriptors(augment(xb, g))[0] for _ in range(2))
                logits = net(a) @ net(b).T / temperature
                target = torch.arange(len(xb))
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * per_epoch + s) / (epochs * per_epoch)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                bar.update()
            losses.append(total / per_epoch)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return net.eval(), losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    a = ap.parse_args()
    ds = data.load_cifar(dataset="cifar100")
    data.require_official(ds, "ciFAIR's duplicate list")
    net, losses = train(ds.x_train, seed=SEED, epochs=a.epochs)
    print(f"trained {a.epochs} epochs on the 50,000 training images: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    er = net.embed(ds.x_train)

    lab = fit.labelled_pairs(ds)
    cif = lab["cifair"].to_numpy(bool, copy=True)
    q, r = lab["q"].to_numpy(), torch.as_tensor(lab["r"].to_numpy(np.int64, copy=True))
    sim = net.embed(ds.x_test[q]) @ er.T                                   # (labelled pairs, 50,000)
    own = sim[torch.arange(len(q)), r]
    learned_rank = (sim[cif] > own[cif, None]).sum(1).numpy()
    ret = duplicates._retrieve(x_query=ds.x_test, x_ref=ds.x_train, top_k=50, rows=q[cif])
    finder_rank = np.array([np.flatnonzero(c == t)[0] if (c == t).any() else 99 for c, t in zip(ret.cand, r[cif])])
    print(f"\n1. retrieval, ciFAIR's {int(cif.sum())} tuning pairs 0/1: share with the train image among the k most similar")
    for k in (1, 6, 20, 50):
        print(f"  k={k:2d}: finder {np.mean(finder_rank < k):.3f}   learned {np.mean(learned_rank < k):.3f}")

    x = fit.pair_signals(ds, lab)[:, :4]        # pixel, gradient, colour and the finder's gap (not the verifier)
    gap = (own - sim.topk(duplicates.HUB_RANK, dim=1).values[:, -1]).numpy()
    print(f"\n2. the score, cross-validated on {len(lab)} labelled tuning pairs: share of ciFAIR's pairs at the lowest "
          "threshold whose weighted judged-false pairs are within each budget")
    for name, xx in (("finder's gap", x), ("learned gap", np.column_stack([x[:, :3], gap]))):
        print(f"  {name:13s} " + fit.within_budgets(xx, lab))


if __name__ == "__main__":
    main()
