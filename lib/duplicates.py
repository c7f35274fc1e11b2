"""Exact and near duplicates between two image sets (any query set against any reference set).

Exact duplicates are found by hashing the raw bytes, so every byte-identical pair is
listed. Near duplicates (the same shot shifted, cropped and rescaled, colour-changed or
re-compressed) are found in two stages:

1. Retrieval: each image becomes a small, shift-tolerant descriptor (a blurred 8x8
   grey-level thumbnail and its 8x8 gradient field, each mean/contrast-normalised).
   A blocked matrix product against the reference set keeps the `top_k` best
   reference images per query; nothing larger than one block is ever held.
2. Scoring: each candidate pair is aligned at 16x16 (shifts of up to +-2 cells, i.e.
   +-4 pixels, and zooms of 0.9 and 0.8 on either side) and scored by two
   complementary signals at the best alignment, both normalised cross-correlations of
   mean/contrast-normalised windows:
     - pixels: grey levels (robust to brightness, contrast and hue changes),
     - gradients: the (dx, dy) gradient field (separates images that share a smooth
       layout but not their edges, where grey-level correlation alone is fooled).
   score = clip(mean of the two, 0, 1); 1 means identical up to brightness/contrast.

Verdicts: exact -> kind "exact"; score >= near_threshold -> kind "near", verdict confirm;
review_threshold <= score < near_threshold -> kind "review", verdict reject (listed for a
person to decide through lib/review.py).

The second half of the module plants known duplicates into real images, the ground
truth that the tests and bench/bench_duplicates.py measure the finder against.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from tqdm.auto import tqdm

PAIR_COLUMNS = ["query_idx", "ref_idx", "kind", "score", "pixel", "gradient", "verdict"]
SHIFT = 2           # alignment search: +-2 cells of the 16x16 thumbnail = +-4 pixels of the 32x32 image
ZOOMS = (0.9, 0.8)  # alignment search: central crops rescaled to full size, tried on either side
N_ORIENT = 8        # retrieval: orientation bins of the gradient histograms
THUMB_WEIGHT = 0.5  # retrieval: weight of the grey thumbnail against the gradient histograms


@dataclass(frozen=True)
class Found:
    pairs: pd.DataFrame       # flagged pairs, PAIR_COLUMNS, sorted by score (exact first)
    best_score: np.ndarray    # (n_query,) float32 best near-duplicate score of each query (1 for an exact copy)
    best_ref: np.ndarray      # (n_query,) int64 reference index of that best score
    seconds: float            # wall time of the search


# ---------------------------------------------------------------- exact duplicates

def _hashes(x: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest() for img in x]


def exact_pairs(*, x_query: np.ndarray, x_ref: np.ndarray, same_set: bool = False) -> np.ndarray:
    """(n_pairs, 2) int64 (query index, reference index) of byte-identical images.

    same_set: query and reference are the same array; list each pair once (q < r), no self pairs.
    """
    by_hash: dict[bytes, list[int]] = {}
    for j, h in enumerate(_hashes(x_ref)):
        by_hash.setdefault(h, []).append(j)
    h_query = None if same_set else _hashes(x_query)
    out = []
    for i in range(len(x_query)):
        if same_set:
            continue
        for j in by_hash.get(h_query[i], ()):
            out.append((i, j))
    if same_set:
        for rows in by_hash.values():
            out.extend((a, b) for k, a in enumerate(rows) for b in rows[k + 1:])
    return np.asarray(sorted(out), np.int64).reshape(-1, 2)


# ---------------------------------------------------------------- descriptors

def _grey(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 1, 32, 32) float32 luma in [0, 1]."""
    rgb = x_uint8.float().div_(255.0)
    return (rgb @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(1)


def _gradients(g: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w) -> (n, 2, h, w) central differences (dx, dy), edges replicated."""
    p = F.pad(g, (1, 1, 1, 1), mode="replicate")
    return torch.cat([p[..., 1:-1, 2:] - p[..., 1:-1, :-2], p[..., 2:, 1:-1] - p[..., :-2, 1:-1]], dim=1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, d): subtract the mean, scale to unit norm (flat rows stay zero)."""
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _retrieval_descriptor(x_uint8: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 192) float32 unit rows, tolerant to shifts of a few pixels.

    A blurred 8x8 grey thumbnail (64) and a 4x4 grid of overlapping cells, each holding a
    histogram of unsigned gradient orientations (8 soft bins, square-rooted: 128), each part
    mean/contrast-normalised; the thumbnail weighs half as much as the histograms.
    """
    # orientation bins live on the doubled angle, so a gradient and its opposite fall in the same bin
    phis = np.arange(N_ORIENT) * 2 * np.pi / N_ORIENT
    basis = torch.tensor(np.stack([np.cos(phis), np.sin(phis)]), dtype=torch.float32)  # (2, N_ORIENT)
    out = []
    for s in range(0, len(x_uint8), chunk):
        g = F.avg_pool2d(_grey(x_uint8[s:s + chunk]), 2)                           # (n, 1, 16, 16)
        n = len(g)
        thumb = F.avg_pool2d(g, 3, 2, 1, count_include_pad=False).reshape(n, -1)   # (n, 64)
        gx, gy = _gradients(g).unbind(1)                                           # (n, 16, 16) each
        mag = (gx * gx + gy * gy).sqrt().clamp_min(1e-6)
        doubled = torch.stack([(gx * gx - gy * gy) / mag, 2 * gx * gy / mag], dim=-1)  # |g| at angle 2*theta
        bins = (doubled @ basis).clamp_min(0).permute(0, 3, 1, 2).contiguous()     # (n, N_ORIENT, 16, 16)
        hist = F.avg_pool2d(bins, 6, 4, 1, count_include_pad=False).reshape(n, -1).sqrt()  # (n, 4*4*N_ORIENT)
        out.append(torch.cat([THUMB_WEIGHT * _unit(thumb), _unit(hist)], dim=1) / np.sqrt(1 + THUMB_WEIGHT ** 2))
    return torch.cat(out) if out else torch.zeros((0, 64 + 16 * N_ORIENT))


def _views(x_uint8: torch.Tensor, phases: bool) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, n_zoom, n_phase, 1, 16, 16) grey thumbnails at 16x16.

    Zooms: the whole image, then central crops of ZOOMS rescaled to full size. Phases
    (when asked): the image moved by 0 or 1 pixel along each axis before halving the
    resolution, so that window shifts of whole cells plus phases cover every pixel shift.
    """
    g = _grey(x_uint8)                                                           # (n, 1, 32, 32)
    zoomed = [g]
    for z in ZOOMS:
        c = int(round(32 * z))
        o = (32 - c) // 2
        zoomed.append(F.interpolate(g[..., o:o + c, o:o + c], size=32, mode="bilinear", antialias=True,
                                    align_corners=False))
    out = []
    for im in zoomed:
        if phases:
            p = F.pad(im, (0, 1, 0, 1), mode="replicate")
            ph = [p[..., dy:dy + 32, dx:dx + 32] for dy in (0, 1) for dx in (0, 1)]
        else:
            ph = [im]
        out.append(torch.stack([F.avg_pool2d(v, 2) for v in ph], dim=1))
    return torch.stack(out, dim=1)


def _windows(v: torch.Tensor, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, 1, 16, 16) -> unit-normalised pixel and gradient windows of size (16 - 2*SHIFT)^2.

    shifted: all (2*SHIFT + 1)^2 window positions -> (m, n_shift, d); else the central one -> (m, 1, d).
    """
    w = 16 - 2 * SHIFT
    grad = _gradients(v)
    if shifted:
        pix = F.unfold(v, w).transpose(1, 2)                                    # (m, n_shift, w*w)
        gr = F.unfold(grad, w).transpose(1, 2)                                  # (m, n_shift, 2*w*w)
    else:
        pix = v[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(len(v), 1, -1)
        gr = grad[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(len(v), 1, -1)
    m, s = pix.shape[:2]
    return _unit(pix.reshape(m * s, -1)).reshape(m, s, -1), _unit(gr.reshape(m * s, -1)).reshape(m, s, -1)


def score_pairs(*, x_query: np.ndarray | torch.Tensor, x_ref: np.ndarray | torch.Tensor,
                pairs: np.ndarray, weights: tuple[float, float] = (0.5, 0.5), batch: int = 2048,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity of given (query index, reference index) pairs: (score, pixel, gradient), each (n_pairs,) float32.

    Each signal is a normalised cross-correlation of 12x12 windows of the 16x16 thumbnails;
    the alignment (every pixel shift in -4..5 and zooms of ZOOMS on either side) is the one
    that maximises their weighted mean, which is the score (clipped to [0, 1]).
    weights: (pixel, gradient); the default (equal) was chosen on planted pairs (bench/bench_duplicates.py).
    """
    x_query, x_ref = torch.as_tensor(np.asarray(x_query)), torch.as_tensor(np.asarray(x_ref))
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.zeros((3, len(pairs)), np.float32)
    n_zoom = 1 + len(ZOOMS)
    # zoom the reference (the query is a crop of it), zoom the query (the reverse), or neither
    combos = [(0, 0)] + [(0, k) for k in range(1, n_zoom)] + [(k, 0) for k in range(1, n_zoom)]
    for s in range(0, len(pairs), batch):
        p = torch.as_tensor(pairs[s:s + batch])
        b = len(p)
        vq = _views(x_query[p[:, 0]], phases=True)     # (b, n_zoom, 4, 1, 16, 16)
        vr = _views(x_ref[p[:, 1]], phases=False)      # (b, n_zoom, 1, 1, 16, 16)
        best = torch.full((b,), -2.0)
        best_pix, best_grad = torch.zeros(b), torch.zeros(b)
        for iq, ir in combos:
            q_pix, q_grad = _windows(vq[:, iq].reshape(-1, 1, 16, 16), shifted=True)  # (b*4, n_shift, d)
            r_pix, r_grad = _windows(vr[:, ir, 0], shifted=False)                     # (b, 1, d)
            pix = torch.einsum("bsd,bd->bs", q_pix.reshape(b, -1, q_pix.shape[-1]), r_pix[:, 0])   # (b, 4*n_shift)
            grad = torch.einsum("bsd,bd->bs", q_grad.reshape(b, -1, q_grad.shape[-1]), r_grad[:, 0])
            val, arg = (weights[0] * pix + weights[1] * grad).max(dim=1)
            better = val > best
            best = torch.where(better, val, best)
            best_pix = torch.where(better, pix.gather(1, arg[:, None])[:, 0], best_pix)
            best_grad = torch.where(better, grad.gather(1, arg[:, None])[:, 0], best_grad)
        out[0, s:s + b] = best.clamp(0, 1).numpy()
        out[1, s:s + b] = best_pix.numpy()
        out[2, s:s + b] = best_grad.numpy()
    return out[0], out[1], out[2]


# ---------------------------------------------------------------- search

def candidates(*, x_query: np.ndarray, x_ref: np.ndarray, top_k: int, same_set: bool = False,
               query_block: int = 2048, ref_block: int = 16384, progress: bool = True) -> np.ndarray:
    """(n_query, top_k) int64: the reference images nearest each query by the retrieval descriptor.

    Memory: one (query_block, ref_block) float32 similarity block at a time.
    """
    d_ref = _retrieval_descriptor(torch.as_tensor(x_ref))     # (n_ref, 192)
    n_q = len(x_query)
    k = min(top_k + (1 if same_set else 0), len(x_ref))
    idx_out = np.zeros((n_q, k), np.int64)
    bar = tqdm(range(0, n_q, query_block), desc="near-duplicate retrieval", disable=not progress)
    for s in bar:
        d_q = _retrieval_descriptor(torch.as_tensor(x_query[s:s + query_block]))
        best_val = torch.full((len(d_q), 0), -2.0)
        best_idx = torch.zeros((len(d_q), 0), dtype=torch.int64)
        for r in range(0, len(x_ref), ref_block):
            sim = d_q @ d_ref[r:r + ref_block].T                  # (bq, br) cosine
            if same_set:                                          # a query is not its own duplicate
                rows = torch.arange(len(d_q))
                cols = torch.arange(s, s + len(d_q)) - r
                ok = (cols >= 0) & (cols < sim.shape[1])
                sim[rows[ok], cols[ok]] = -2.0
            v, i = sim.topk(min(k, sim.shape[1]), dim=1)
            best_val = torch.cat([best_val, v], dim=1)
            best_idx = torch.cat([best_idx, i + r], dim=1)
            best_val, keep = best_val.topk(min(k, best_val.shape[1]), dim=1)
            best_idx = best_idx.gather(1, keep)
        idx_out[s:s + len(d_q)] = best_idx.numpy()
    return idx_out[:, :top_k] if not same_set else idx_out[:, :k]


def find(*, x_query: np.ndarray, x_ref: np.ndarray, near_threshold: float, review_threshold: float,
         top_k: int, exact_only: bool = False, same_set: bool = False, progress: bool = True) -> Found:
    """Exact and near duplicates of each query image among the reference images.

    same_set: x_query is x_ref (e.g. test against test): no self pairs, each pair once (query < ref).
    """
    import time

    t0 = time.perf_counter()
    exact = exact_pairs(x_query=x_query, x_ref=x_ref, same_set=same_set)
    rows = [pd.DataFrame({"query_idx": exact[:, 0], "ref_idx": exact[:, 1], "kind": "exact", "score": 1.0,
                          "pixel": 1.0, "gradient": 1.0, "verdict": "confirm"})]
    best_score = np.zeros(len(x_query), np.float32)
    best_ref = np.full(len(x_query), -1, np.int64)
    if not exact_only and len(x_query) and len(x_ref):
        cand = candidates(x_query=x_query, x_ref=x_ref, top_k=top_k, same_set=same_set, progress=progress)
        q = np.repeat(np.arange(len(x_query)), cand.shape[1])
        r = cand.reshape(-1)
        if same_set:
            keep = q != r
            q, r = q[keep], r[keep]
        score, pix, grad = score_pairs(x_query=x_query, x_ref=x_ref, pairs=np.stack([q, r], 1))
        order = np.lexsort((-score, q))                           # per query, best first
        first = order[np.r_[True, q[order][1:] != q[order][:-1]]]
        best_score[q[first]] = score[first]
        best_ref[q[first]] = r[first]
        flagged = score >= review_threshold
        q, r, score, pix, grad = q[flagged], r[flagged], score[flagged], pix[flagged], grad[flagged]
        if same_set:  # each unordered pair once, as (smaller, larger)
            q, r = np.minimum(q, r), np.maximum(q, r)
        near = pd.DataFrame({"query_idx": q, "ref_idx": r, "kind": np.where(score >= near_threshold, "near", "review"),
                             "score": score.astype(np.float64), "pixel": pix.astype(np.float64),
                             "gradient": grad.astype(np.float64)})
        near["verdict"] = np.where(near["kind"] == "near", "confirm", "reject")
        near = near.sort_values("score", ascending=False).drop_duplicates(["query_idx", "ref_idx"])
        if len(exact):  # an exact pair is listed once, as exact
            ex = set(map(tuple, exact.tolist()))
            near = near[[(a, b) not in ex for a, b in zip(near["query_idx"], near["ref_idx"])]]
        rows.append(near)
    if len(exact):
        best_score[exact[:, 0]] = 1.0
        best_ref[exact[:, 0]] = exact[:, 1]
    pairs = pd.concat(rows, ignore_index=True)[PAIR_COLUMNS]
    pairs = pairs.astype({"query_idx": np.int64, "ref_idx": np.int64, "score": np.float64})
    pairs = pairs.sort_values(["score", "query_idx", "ref_idx"], ascending=[False, True, True], ignore_index=True)
    return Found(pairs=pairs, best_score=best_score, best_ref=best_ref, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- planted duplicates (ground truth)

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
                seed: int) -> PlantedSet:
    """Ground truth from real images: `n_ref` reference images and held-out images, all distinct rows of x_pool.

    Positives: a held-out image's original is inserted into the reference set at a random row,
    the query is its transformed copy. Negatives: transformed held-out images whose original is
    not in the reference set (their true answer is "no duplicate").
    """
    rng = np.random.default_rng([seed, 0x91A7])
    n_kinds = len(PLANT_KINDS)
    n_pos, n_neg = n_positive_per_kind * n_kinds, n_negative_per_kind * n_kinds
    rows = rng.permutation(len(x_pool))[:n_ref + n_pos + n_neg]
    if len(rows) < n_ref + n_pos + n_neg:
        raise ValueError(f"x_pool has {len(x_pool)} images, {n_ref + n_pos + n_neg} needed")
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
