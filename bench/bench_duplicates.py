"""Duplicate finder: precision/recall on planted duplicates, signals side by side, imagededup, timing.

    CIFAR_DATA_DIR=... python bench/bench_duplicates.py [--small]

Planted duplicates are built from real images of the CIFAR-100 copy in CIFAR_DATA_DIR
(its test split is the pool): exact copies, shifts of 1-4 px, crops of 0.8-0.95 rescaled,
brightness/contrast/hue changes, JPEG re-compression; as many negatives (transformed images
whose original is absent); lib/planted.py makes them. The finder's settings were chosen on
these planted sets (test split, the params seed 0), so tests/test_duplicates.py checks them on
held-out ones (train split, other seeds). Then the whole test split (10,000) is searched
against the whole train split (50,000) at the default thresholds and what is flagged is counted.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import data, duplicates, params, planted  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--small", action="store_true", help="fewer planted pairs, skip the 10,000 x 50,000 run")
args = ap.parse_args()
P = params.load("quick")  # dup_* defaults (the quick set does not override them)
ds = data.load_cifar(dataset="cifar100")
print(f"data: {ds.folder} (official copy: {ds.official}); thresholds near {P.dup_near_threshold}, "
      f"review {P.dup_review_threshold}, top_k {P.dup_top_k}")

# ---------------------------------------------------------------- planted pairs
n_per_kind = 40 if args.small else 200
t0 = time.perf_counter()
ps = planted.planted_set(x_pool=ds.x_test, n_ref=4000, n_positive_per_kind=n_per_kind,
                         n_negative_per_kind=n_per_kind, seed=P.seed, clean_threshold=P.dup_review_threshold)
print(f"\nplanted: {len(ps.x_ref)} reference images, {len(ps.x_query)} queries ({n_per_kind} positives and "
      f"{n_per_kind} negatives per kind); images already repeated in the pool (score >= "
      f"{P.dup_review_threshold}) were set aside first [{time.perf_counter() - t0:.0f} s]")
found = duplicates.find(x_query=ps.x_query, x_ref=ps.x_ref, near_threshold=P.dup_near_threshold,
                        review_threshold=P.dup_review_threshold, top_k=P.dup_top_k, progress=False)
q_auto = planted.planted_quality(planted=ps, pairs=found.pairs)
q_list = planted.planted_quality(planted=ps, pairs=found.pairs, kinds=("exact", "near", "review"))
table = q_auto[["kind", "positives", "flagged", "true_pos", "precision", "recall"]].rename(
    columns={"flagged": "flagged(auto)", "precision": "P(auto)", "recall": "R(auto)"})
table["P(+review)"] = q_list["precision"]
table["R(+review)"] = q_list["recall"]
print("\nthis finder, default thresholds: auto = exact + near (verdict confirm); +review = also the review band")
print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

# signals side by side: the same candidates, the alignment and score from one signal or both
cand = duplicates.candidates(x_query=ps.x_query, x_ref=ps.x_ref, top_k=P.dup_top_k, progress=False)
exact = duplicates.exact_pairs(x_query=ps.x_query, x_ref=ps.x_ref)
rows = []
for name, w in [("pixel NCC only", (1.0, 0.0)), ("gradient NCC only", (0.0, 1.0)), ("pixel + gradient", (0.5, 0.5))]:
    sc = duplicates.score_candidates(x_query=ps.x_query, x_ref=ps.x_ref, cand=cand, weights=w)[0]
    pos = ps.true_ref >= 0
    true_sc = np.where(cand[pos] == ps.true_ref[pos, None], sc[pos], 0).max(1)
    neg_best = sc[~pos].max(1)
    for thr in (P.dup_near_threshold,):
        qi, ki = np.nonzero(sc >= thr)
        pairs = pd.DataFrame({"query_idx": np.r_[exact[:, 0], qi], "ref_idx": np.r_[exact[:, 1], cand[qi, ki]],
                              "kind": "near"}).drop_duplicates()
        qq = planted.planted_quality(planted=ps, pairs=pairs).set_index("kind")
        rows.append(dict(signal=name, threshold=thr, precision=qq.loc["all", "precision"],
                         recall=qq.loc["all", "recall"],
                         **{f"R {k}": qq.loc[k, "recall"] for k in planted.PLANT_KINDS if k != "exact"},
                         **{"pos score q05": np.quantile(true_sc, 0.05), "neg best q99": np.quantile(neg_best, 0.99)}))
print("\nsignals (same candidates; exact hashing included):")
print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))

# ---------------------------------------------------------------- imagededup, side by side
print("\nimagededup:")
try:
    import imagededup
    from imagededup.methods import PHash, DHash, CNN
    print(f"  version {imagededup.__version__}")
    for name, method in [("PHash", PHash), ("DHash", DHash)]:
        h = method(verbose=False)
        t1 = time.perf_counter()
        bits = lambda x: np.array([[int(c, 16) for c in h.encode_image(image_array=im)] for im in x], np.uint8)  # noqa: E731
        hq, hr = bits(ps.x_query), bits(ps.x_ref)                      # (n, 16) hex digits of the 64-bit hash
        popcount = np.array([bin(i).count("1") for i in range(16)], np.int64)
        for thr in (10, 4):                                            # imagededup's default max distance, and strict
            dist = np.stack([popcount[hq[i] ^ hr].sum(1) for i in range(len(hq))])  # (n_query, n_ref) hamming
            qi, ri = np.nonzero(dist <= thr)
            qq = planted.planted_quality(planted=ps, pairs=pd.DataFrame(
                {"query_idx": qi, "ref_idx": ri, "kind": "near"})).set_index("kind")
            print(f"  {name} hamming <= {thr:2d}: precision {qq.loc['all', 'precision']:.3f} recall "
                  f"{qq.loc['all', 'recall']:.3f}  by kind R " + " ".join(
                      f"{k} {qq.loc[k, 'recall']:.2f}" for k in planted.PLANT_KINDS)
                  + f"  P " + " ".join(f"{k} {qq.loc[k, 'precision']:.2f}" for k in planted.PLANT_KINDS)
                  + f"  [{time.perf_counter() - t1:.0f} s]")
    try:
        CNN(verbose=False)
        print("  CNN: loaded (not expected without downloaded weights)")
    except Exception as e:  # noqa: BLE001 - report why the CNN method cannot run here
        print(f"  CNN: not run: it needs pretrained MobileNetV3 weights downloaded by torchvision, which fails "
              f"here ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
except ImportError as e:
    print(f"  not installed ({e}); `pip install imagededup` to compare")

# ---------------------------------------------------------------- the whole test set against the whole train set
if not args.small:
    print(f"\nwhole test ({len(ds.x_test)}) vs train ({len(ds.x_train)}), load average before: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cpu0 = time.process_time()
    f = duplicates.find(x_query=ds.x_test, x_ref=ds.x_train, near_threshold=P.dup_near_threshold,
                        review_threshold=P.dup_review_threshold, top_k=P.dup_top_k, progress=False)
    cpu_s = time.process_time() - cpu0
    print(f"  CPU time {cpu_s:.1f} s over all threads: about {cpu_s / os.cpu_count():.0f} s of wall time on "
          f"{os.cpu_count()} otherwise idle cores")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  time {f.seconds:.1f} s (load average after: {os.getloadavg()[0]:.1f}); peak RSS of this process "
          f"{peak_gb:.2f} GiB (includes the dataset and the planted sets above)")
    counts = f.pairs.groupby("kind").agg(pairs=("query_idx", "size"), test_images=("query_idx", "nunique"))
    print("  flagged across train and test of this copy (pairs and distinct test images per kind):")
    print("  " + counts.to_string().replace("\n", "\n  "))
    within = duplicates.exact_pairs(x_query=ds.x_train, x_ref=ds.x_train, same_set=True)
    n_extra = len(within) and len(np.unique(within[:, 1]))
    print(f"  exact: {counts.loc['exact', 'test_images'] if 'exact' in counts.index else 0} test images byte-identical "
          f"to a train image; within train {n_extra} extra copies ({len(within)} identical pairs)")
    print("  score distribution of each test image's best match (quantiles .5 .9 .99):",
          np.round(np.quantile(f.best_score, [0.5, 0.9, 0.99]), 3))
