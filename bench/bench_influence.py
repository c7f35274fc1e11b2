"""Blocked influence for 50,000 train x 10,000 test examples from 4,000 synthetic models.

Measured side by side in one run:
  - lib.memorization.influence (float32 matmul per block of train examples, top-k + thresholded
    pairs kept): wall time and memory;
  - the definition as a per-pair loop (mean over models that trained on i minus mean over
    models that did not), timed on a random sample of pairs and extrapolated to all pairs.
Synthetic models: each trains on a random 70% of the train set; test example j is right with
its own probability, except for planted pairs (train i -> test j) where j is right whenever
the model trained on i, so the planted pairs must come out on top (checked, not timed).

    python bench/bench_influence.py [--models 4000 --train 50000 --test 10000]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import memorization  # noqa: E402


def rss_mb() -> float:
    """Current resident memory of this process, MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KB on Linux


def synthetic(*, n_models: int, n_train: int, n_test: int, n_planted: int, seed: int):
    rng = np.random.default_rng(seed)
    masks = np.empty((n_models, n_train), bool)  # (n_models, n_train)
    test_correct = np.empty((n_models, n_test), bool)  # (n_models, n_test)
    p_test = rng.random(n_test, dtype=np.float32)  # per test example difficulty
    for start in range(0, n_models, 500):  # in row chunks: a float (4000, 50000) draw would be GBs
        rows = slice(start, start + 500)
        masks[rows] = rng.random((len(masks[rows]), n_train), dtype=np.float32) < 0.7
        test_correct[rows] = rng.random((len(masks[rows]), n_test), dtype=np.float32) < p_test
    planted_tr = rng.choice(n_train, n_planted, replace=False)
    planted_tt = rng.choice(n_test, n_planted, replace=False)
    test_correct[:, planted_tt] = masks[:, planted_tr]  # infl(planted_tr -> planted_tt) = 1
    return masks, test_correct, planted_tr, planted_tt


def per_pair_loop(masks, test_correct, pairs) -> tuple[np.ndarray, float]:
    """The definition, one (i, j) at a time; returns values and seconds."""
    t = time.perf_counter()
    out = np.empty(len(pairs))
    for n, (i, j) in enumerate(pairs):
        held_in = masks[:, i]
        out[n] = test_correct[held_in, j].mean() - test_correct[~held_in, j].mean()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4000)
    ap.add_argument("--train", type=int, default=50000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--sample", type=int, default=2000, help="pairs timed with the per-pair loop")
    args = ap.parse_args()

    t = time.perf_counter()
    masks, test_correct, planted_tr, planted_tt = synthetic(n_models=args.models, n_train=args.train,
                                                            n_test=args.test, n_planted=200, seed=0)
    print(f"synthetic data: {args.models} models x {args.train} train / {args.test} test "
          f"({(masks.nbytes + test_correct.nbytes) / 2**20:.0f} MB bool), {time.perf_counter() - t:.1f} s; "
          f"torch threads {torch.get_num_threads()}")

    rss_before = rss_mb()
    t = time.perf_counter()
    inf = memorization.influence(masks=masks, test_correct=test_correct, top_k=args.top_k, block=args.block,
                                 infl_threshold=0.5, progress=True)
    t_blocked = time.perf_counter() - t
    peak = peak_rss_mb()

    # the loop is timed on pairs drawn from the top-k lists, so its values also check the blocked ones
    rng = np.random.default_rng(1)
    tt = rng.integers(0, args.test, args.sample)
    rank = rng.integers(0, args.top_k, args.sample)
    sample = np.stack([inf.top_idx[tt, rank], tt], 1)  # (sample, 2) train, test
    loop_vals, t_loop = per_pair_loop(masks, test_correct, sample)
    n_pairs = args.train * args.test
    t_loop_all = t_loop / args.sample * n_pairs

    # correctness checks on the same run (not timed): planted pairs on top, sample agrees with the loop
    planted = set(zip(planted_tr.tolist(), planted_tt.tolist()))
    found = set(zip(inf.train_idx.tolist(), inf.test_idx.tolist()))
    top1_ok = (inf.top_idx[planted_tt, 0] == planted_tr).mean()
    agree = np.abs(inf.top_infl[tt, rank] - loop_vals).max()

    print(f"blocked influence: {t_blocked:.1f} s for {n_pairs:.2e} pairs ({n_pairs / t_blocked:.2e} pairs/s), "
          f"block {args.block}, top-{args.top_k}")
    print(f"memory: RSS before {rss_before:.0f} MB (inputs), process peak {peak:.0f} MB, "
          f"peak above inputs {peak - rss_before:.0f} MB; a dense float32 matrix would be {n_pairs * 4 / 2**30:.1f} GB")
    print(f"per-pair loop: {t_loop / args.sample * 1e6:.1f} us/pair on {args.sample} sampled pairs -> "
          f"{t_loop_all / 3600:.1f} h extrapolated to all pairs")
    print(f"ratio: blocked is {t_loop_all / t_blocked:,.0f}x faster than the per-pair loop")
    print(f"checks: planted pairs found {len(planted & found)}/{len(planted)}, top-1 is the planted train "
          f"example for {top1_ok:.0%}, pairs kept {len(found)}, max |blocked - loop| on the sampled "
          f"top-k entries {agree:.1e}")
    print(f"goal (< 60 s): {'met' if t_blocked < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
