"""Ground truth the duplicate finder is measured against: planted duplicates of real images, and the
split of ciFAIR's judged lists into a tuning and a report half (cifair_halves).

Distinct real images are drawn from a pool. Some go into the reference set and a copy of
each, changed by a known transformation (exact copy, shift, crop, colour change, JPEG
re-compression), becomes a query whose answer is known; others are changed the same way but
left out of the reference set (queries whose answer is "no duplicate"). Used by
tests/test_duplicates.py and bench/bench_duplicates.py; the finder itself is lib/duplicates.py.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from .duplicates import find

PLANT_KINDS = ("exact", "shift", "crop", "colour", "jpeg")


def _shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by 1-4 pixels (the larger of |dx|, |dy|) in a random direction; the border is reflected."""
    d = int(rng.integers(1, 5))
    dx, dy = int(rng.integers(-d, d + 1)), int(rng.integers(-d, d + 1))
    if rng.random() < 0.5:
        dx = d * (1 if rng.random() < 0.5 else -1)
    else:
        dy = d * (1 if rng.random() < 0.5 else -1)
    p = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    return np.ascontiguousarray(p[4 + dy:36 + dy, 4 + dx:36 + dx])


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop of 0.8-0.95 of the side at a random position, rescaled to 32x32 (bicubic)."""
    c = int(round(32 * rng.uniform(0.8, 0.95)))
    x0, y0 = int(rng.integers(0, 32 - c + 1)), int(rng.integers(0, 32 - c + 1))
    return np.asarray(Image.fromarray(img[y0:y0 + c, x0:x0 + c]).resize((32, 32), Image.BICUBIC))


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast x0.7-1.3 and a hue rotation of up to +-0.1 turn (36 degrees)."""
    im = Image.fromarray(img)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + int(round(255 * rng.uniform(-0.1, 0.1)))) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """JPEG re-compression at quality 30-90 (PIL)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def plant(*, x: np.ndarray, kinds: list[str] | np.ndarray, seed: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 copies of x, image i changed by transformation kinds[i] (PLANT_KINDS)."""
    rng = np.random.default_rng([seed, 0xD0B])
    make = {"exact": lambda im, _: im.copy(), "shift": _shift, "crop": _crop, "colour": _colour, "jpeg": _jpeg}
    unknown = set(kinds) - set(make)
    if unknown:
        raise ValueError(f"unknown planted kinds {sorted(unknown)} (known: {', '.join(PLANT_KINDS)})")
    return np.stack([make[k](img, rng) for img, k in zip(x, kinds)]).astype(np.uint8)


@dataclass(frozen=True)
class PlantedSet:
    x_query: np.ndarray     # (n_query, 32, 32, 3) uint8: transformed held-out images
    x_ref: np.ndarray       # (n_ref, 32, 32, 3) uint8: reference images, the originals of the positives among them
    kind: np.ndarray        # (n_query,) str: transformation applied to each query
    true_ref: np.ndarray    # (n_query,) int64: reference index of the query's original, -1 for negatives


def planted_set(*, x_pool: np.ndarray, n_ref: int, n_positive_per_kind: int, n_negative_per_kind: int,
                seed: int, clean_threshold: float | None = None, top_k: int = 16) -> PlantedSet:
    """Ground truth from real images: `n_ref` reference images and held-out images, all distinct rows of x_pool.

    Positives: a held-out image's original is inserted into the reference set at a random row,
    the query is its transformed copy. Negatives: transformed held-out images whose original is
    not in the reference set (their true answer is "no duplicate").
    clean_threshold: real images repeat in CIFAR; when given, the drawn images are first
    searched against each other and every image in a pair scoring at or above it is
    replaced, so that an unplanted real duplicate is not counted as a false positive.
    """
    rng = np.random.default_rng([seed, 0x91A7])
    n_kinds = len(PLANT_KINDS)
    n_pos, n_neg = n_positive_per_kind * n_kinds, n_negative_per_kind * n_kinds
    n_need = n_ref + n_pos + n_neg
    rows = rng.permutation(len(x_pool))
    if clean_threshold is not None:
        drawn = rows[:min(len(rows), int(n_need * 1.3) + 100)]
        f = find(x_query=x_pool[drawn], x_ref=x_pool[drawn], near_threshold=1.0, review_threshold=clean_threshold,
                 top_k=top_k, same_set=True, progress=False)
        bad = np.zeros(len(drawn), bool)
        bad[f.pairs["query_idx"].to_numpy()] = True
        bad[f.pairs["ref_idx"].to_numpy()] = True
        rows = drawn[~bad]
    rows = rows[:n_need]
    if len(rows) < n_need:
        raise ValueError(f"x_pool has {len(rows)} usable images, {n_need} needed")
    base, pos, neg = rows[:n_ref], rows[n_ref:n_ref + n_pos], rows[n_ref + n_pos:]
    kind = np.array([k for k in PLANT_KINDS for _ in range(n_positive_per_kind)]
                    + [k for k in PLANT_KINDS for _ in range(n_negative_per_kind)])
    ref_rows = np.concatenate([base, pos])
    order = rng.permutation(len(ref_rows))                  # positives at random rows of the reference set
    where = np.empty(len(ref_rows), np.int64)
    where[order] = np.arange(len(ref_rows))
    true_ref = np.concatenate([where[n_ref:], np.full(n_neg, -1, np.int64)])
    x_query = plant(x=x_pool[np.concatenate([pos, neg])], kinds=kind, seed=seed)
    return PlantedSet(x_query=x_query, x_ref=x_pool[ref_rows[order]], kind=kind, true_ref=true_ref)


def planted_quality(*, planted: PlantedSet, pairs: pd.DataFrame, kinds: tuple[str, ...] = ("exact", "near"),
                    ) -> pd.DataFrame:
    """Precision and recall per planted kind of the pairs flagged with a kind in `kinds`.

    A flagged pair is correct when it links a query to its own original. Recall: positives whose
    original is flagged; precision: flagged pairs that are correct (pairs of negatives count as false).
    """
    hit = pairs[pairs["kind"].isin(kinds)]
    q, r = hit["query_idx"].to_numpy(), hit["ref_idx"].to_numpy()
    correct = planted.true_ref[q] == r
    rows = []
    for k in (*PLANT_KINDS, "all"):
        in_k = np.ones(len(planted.kind), bool) if k == "all" else planted.kind == k
        n_pos = int((in_k & (planted.true_ref >= 0)).sum())
        flagged_k = in_k[q]
        tp = int((correct & flagged_k).sum())
        n_flag = int(flagged_k.sum())
        rows.append(dict(kind=k, positives=n_pos, flagged=n_flag, true_pos=tp,
                         precision=tp / n_flag if n_flag else float("nan"),
                         recall=tp / n_pos if n_pos else float("nan")))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- judged ground truth: ciFAIR's lists, split

CIFAIR_SPLIT_SEED = 20200   # the finder's settings were tuned on one half of the test images, reported on the other


def cifair_halves(n_test: int = 10000, seed: int = CIFAIR_SPLIT_SEED) -> np.ndarray:
    """(n_test,) bool: True for the *tuning* half of the (official) test images, False for the *report* half.

    A seeded permutation of the test indices, first half tuning. ciFAIR's train-test rows (one per
    test image) and every judged pair follow their test image; lib/duplicates.py's SCORE_WEIGHTS and
    the dup_* thresholds were chosen on the tuning half only (bench/fit_duplicates.py).
    """
    perm = np.random.default_rng(seed).permutation(n_test)
    tune = np.zeros(n_test, bool)
    tune[perm[:n_test // 2]] = True
    return tune
