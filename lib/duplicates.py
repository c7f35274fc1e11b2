"""Exact and near duplicates between two image sets (any query set against any reference set).

Exact duplicates are found by hashing the raw bytes, so every byte-identical pair is
listed. Near duplicates (the same shot shifted, cropped and rescaled, colour-changed or
re-compressed) are found in two stages:

1. Retrieval: each image becomes a small, shift-tolerant descriptor of 192 numbers, from
   its grey levels at 16x16: a blurred 8x8 thumbnail (64) and a 4x4 grid of overlapping
   cells holding histograms of gradient orientation (8 bins each, 128), each part
   mean/contrast-normalised, the thumbnail at half the weight (_retrieval_descriptor).
   A blocked matrix product against the reference set keeps the `top_k` best
   reference images per query; no similarity block larger than
   (query_block, ref_block) is ever held.
2. Scoring: each candidate pair is aligned on 16x16 grey thumbnails, comparing 12x12
   windows: the query moved by -4..+5 pixels along each axis (+-2 cells of 2 pixels, times
   two 1-pixel phases), the reference at zoom 1 and magnified by 1/z or shrunk by z for z
   in ZOOMS (0.9, 0.8). The pair is scored by two complementary signals at the best
   alignment, both normalised cross-correlations of mean/contrast-normalised windows:
     - pixels: grey levels (robust to brightness, contrast and hue changes),
     - gradients: the (dx, dy) gradient field (separates images that share a smooth
       layout but not their edges, where grey-level correlation alone is fooled).
   The best alignment maximises the mean of the two, and score = clip(that mean, 0, 1);
   1 means identical up to brightness/contrast.

Verdicts: exact -> kind "exact"; score >= near_threshold -> kind "near", verdict confirm;
review_threshold <= score < near_threshold -> kind "review", verdict reject (listed for a
person to decide through lib/review.py).

lib/planted.py plants known duplicates into real images, the ground truth that the tests
and bench/bench_duplicates.py measure this finder against.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import image_hashes

PAIR_COLUMNS = ["query_idx", "ref_idx", "kind", "score", "pixel", "gradient", "verdict"]
SHIFT = 2           # alignment search: +-2 cells of the 16x16 thumbnail = +-4 pixels of the 32x32 image
                    # (with the query's two 1-pixel phases: shifts of -4..+5 pixels)
ZOOMS = (0.9, 0.8)  # alignment search: central crops rescaled to full size, tried on either side
N_ORIENT = 8        # retrieval: orientation bins of the gradient histograms
THUMB_WEIGHT = 0.5  # retrieval: weight of the grey thumbnail against the gradient histograms


@dataclass(frozen=True)
class Found:
    pairs: pd.DataFrame       # flagged pairs, PAIR_COLUMNS, by score (highest first), then query_idx, ref_idx;
                              # exact pairs score 1, and a near pair can tie with them at 1
    best_score: np.ndarray    # (n_query,) float32 best near-duplicate score of each query (1 for an exact copy,
                              # 0 when nothing was scored, e.g. exact_only)
    best_ref: np.ndarray      # (n_query,) int64 reference index of that best score (-1 when none)
    seconds: float            # wall time of the search


# ---------------------------------------------------------------- exact duplicates

def exact_pairs(*, x_query: np.ndarray, x_ref: np.ndarray, same_set: bool = False) -> np.ndarray:
    """(n_pairs, 2) int64 (query index, reference index) of byte-identical images.

    same_set: query and reference are the same array; list each pair once (q < r), no self pairs.
    """
    by_hash: dict[bytes, list[int]] = {}
    for j, h in enumerate(image_hashes(x_ref)):
        by_hash.setdefault(h, []).append(j)
    if same_set:
        out = [(a, b) for rows in by_hash.values() for k, a in enumerate(rows) for b in rows[k + 1:]]
    else:
        out = [(i, j) for i, h in enumerate(image_hashes(x_query)) for j in by_hash.get(h, ())]
    return np.asarray(sorted(out), np.int64).reshape(-1, 2)


# ---------------------------------------------------------------- descriptors

def _grey(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 1, 32, 32) float32 luma in [0, 1]."""
    x = x_uint8.float()
    return ((0.299 / 255) * x[..., 0] + (0.587 / 255) * x[..., 1] + (0.114 / 255) * x[..., 2]).unsqueeze(1)


def _gradients(g: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w) -> (n, 2, h, w) central differences (dx, dy), edges replicated."""
    p = F.pad(g, (1, 1, 1, 1), mode="replicate")
    return torch.cat([p[..., 1:-1, 2:] - p[..., 1:-1, :-2], p[..., 2:, 1:-1] - p[..., :-2, 1:-1]], dim=1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, d): subtract the mean, scale to unit norm (flat rows stay zero)."""
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _retrieval_descriptor(x_uint8: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 64 + 16 * N_ORIENT) = (n, 192) float32 zero-mean unit rows, tolerant to
    shifts of a few pixels.

    From the grey image at 16x16: a blurred 8x8 thumbnail (3x3 mean, stride 2: 64) and a 4x4
    grid of overlapping 6x6 cells, each holding a histogram of unsigned gradient orientations
    (N_ORIENT soft bins, square-rooted: 128), each part mean/contrast-normalised; the thumbnail
    weighs THUMB_WEIGHT (half) as much as the histograms.
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


def _area_map(*, zoom: float, offset: float, n_out: int = 16) -> torch.Tensor:
    """(n_out, 32) linear map of one image axis: 32 pixels -> n_out cells of 2 pixels, zoomed about the centre.

    Output cell j spans [2j + offset, 2j + 2 + offset] in the 32-pixel frame of the zoomed image,
    i.e. [16 + (2j + offset - 16) / zoom, 16 + (2j + 2 + offset - 16) / zoom] in the source;
    each source pixel weighs by its overlap (area resampling). zoom > 1 magnifies (a central
    crop), zoom < 1 shrinks; sources past the border repeat the edge pixel.
    """
    m = np.zeros((n_out, 32))
    for j in range(n_out):
        lo = 16 + (2 * j + offset - 16) / zoom
        hi = 16 + (2 * j + 2 + offset - 16) / zoom
        for px in range(int(np.floor(lo)), int(np.ceil(hi))):
            m[j, min(max(px, 0), 31)] += max(0.0, min(hi, px + 1) - max(lo, px))
    return torch.tensor(m / m.sum(1, keepdims=True), dtype=torch.float32)


def _resample(g: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """(n, 1, 32, 32) grey, (m, n_out, 32) axis maps -> (n, m, 1, n_out, n_out): maps @ image @ maps^T."""
    return torch.stack([mp @ g[:, 0] @ mp.T for mp in maps], dim=1).unsqueeze(2)


def _query_maps() -> torch.Tensor:
    """(2, 16, 32): axis maps halving the whole image, moved by 0 or 1 pixel (phases).

    _query_views applies them to rows and columns: 2 x 2 = 4 phases.
    """
    return torch.stack([_area_map(zoom=1.0, offset=d) for d in (0, 1)])


def _ref_maps() -> torch.Tensor:
    """(1 + 2*len(ZOOMS), 16, 32): the reference halved, magnified by 1/z and shrunk by z for z in ZOOMS."""
    zooms = [1.0] + [1 / z for z in ZOOMS] + list(ZOOMS)
    return torch.stack([_area_map(zoom=z, offset=0) for z in zooms])


def _query_views(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 4, 1, 16, 16): the 4 pixel phases (rows x columns move by 0/1)."""
    m = _query_maps()
    g = _grey(x_uint8)[:, 0]
    rows = [m[dy] @ g for dy in (0, 1)]                                          # (n, 16, 32) each
    return torch.stack([r @ m[dx].T for r in rows for dx in (0, 1)], dim=1).unsqueeze(2)


def _ref_views(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, n_zoom, 1, 16, 16): the reference at each zoom of _ref_maps."""
    return _resample(_grey(x_uint8), _ref_maps())


def _shifted_windows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw windows of every shift, and their centred norms, for the moving side of an alignment.

    v: (b, m, 1, 16, 16) grey thumbnails (m views per image). Returns pixel windows
    (b, m * n_shift, w*w), gradient windows (b, m * n_shift, 2*w*w) and the norms of the
    mean-subtracted windows, (b, m * n_shift) each, from box sums (no window is normalised).
    """
    b, m = v.shape[:2]
    w, n_pos = 16 - 2 * SHIFT, 2 * SHIFT + 1
    flat = v.reshape(b * m, 1, 16, 16)
    out = []
    for c in (flat, _gradients(flat)):
        k = c.shape[1]
        st = c.stride()
        win = c.as_strided((b * m, n_pos, n_pos, k, w, w), (st[0], st[2], st[3], st[1], st[2], st[3]))
        win = win.reshape(b, m * n_pos * n_pos, k * w * w)                   # (b, m*n_shift, k*w*w)
        s1 = F.avg_pool2d(c, w, 1).sum(1) * (w * w)                         # (b*m, n_pos, n_pos) window sums
        s2 = F.avg_pool2d(c * c, w, 1).sum(1) * (w * w)
        norm = (s2 - s1 * s1 / (k * w * w)).clamp_min(1e-10).sqrt().reshape(b, m * n_pos * n_pos)
        out += [win, norm]
    return out[0], out[2], out[1], out[3]


def _central_windows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, m, 1, 16, 16) -> unit, zero-mean central windows: pixel (n, m, w*w), gradient (n, m, 2*w*w)."""
    n, m = v.shape[:2]
    w = 16 - 2 * SHIFT
    flat = v.reshape(n * m, 1, 16, 16)
    pix = flat[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(n * m, -1)
    grad = _gradients(flat)[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(n * m, -1)
    return _unit(pix).reshape(n, m, -1), _unit(grad).reshape(n, m, -1)


def score_candidates(*, x_query: np.ndarray | torch.Tensor, x_ref: np.ndarray | torch.Tensor, cand: np.ndarray,
                     weights: tuple[float, float] = (0.5, 0.5), block: int = 256, progress: bool = False,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity of each query to each of its candidates: (score, pixel, gradient), each (n_query, k) float32.

    cand: (n_query, k) reference indices. Each signal is a normalised cross-correlation of
    12x12 windows of 16x16 grey thumbnails (pixels; the (dx, dy) gradient field). The alignment
    (every pixel shift in -4..5 of the query; the reference at zoom 1, 1/z and z for z in ZOOMS)
    is the one that maximises weights[0] * pixel + weights[1] * gradient, which is the score
    (clipped to [0, 1]). The default equal weights were chosen on planted pairs
    (bench/bench_duplicates.py).
    """
    x_query, x_ref = torch.as_tensor(np.asarray(x_query)), torch.as_tensor(np.asarray(x_ref))
    cand = np.asarray(cand, np.int64)
    n_q, k = cand.shape
    n_zoom = 1 + 2 * len(ZOOMS)
    # reference windows once per distinct candidate, float16: (n_unique, n_zoom, d) each
    uniq, slot = np.unique(cand, return_inverse=True)
    slot = torch.as_tensor(slot.reshape(n_q, k))
    ref_pix, ref_grad = [], []
    for s in range(0, len(uniq), 4096):
        p_, g_ = _central_windows(_ref_views(x_ref[torch.as_tensor(uniq[s:s + 4096])]))
        ref_pix.append(p_.half())
        ref_grad.append(g_.half())
    ref_pix = torch.cat(ref_pix) if ref_pix else torch.zeros((0, n_zoom, 1), dtype=torch.half)
    ref_grad = torch.cat(ref_grad) if ref_grad else torch.zeros((0, n_zoom, 1), dtype=torch.half)
    out = np.zeros((3, n_q, k), np.float32)
    for s in tqdm(range(0, n_q, block), desc="near-duplicate scoring", disable=not progress):
        c = slot[s:s + block]
        b = len(c)
        q_pix, q_grad, q_pix_norm, q_grad_norm = _shifted_windows(_query_views(x_query[s:s + b]))  # all shifts
        r_pix = ref_pix[c.reshape(-1)].float().reshape(b, k * n_zoom, -1)
        r_grad = ref_grad[c.reshape(-1)].float().reshape(b, k * n_zoom, -1)
        pix = torch.bmm(q_pix, r_pix.transpose(1, 2)) / q_pix_norm[..., None]      # (b, n_align, k*n_zoom)
        grad = torch.bmm(q_grad, r_grad.transpose(1, 2)) / q_grad_norm[..., None]
        per_cand = lambda t: t.reshape(b, -1, k, n_zoom).transpose(2, 3).reshape(b, -1, k)  # noqa: E731
        best, arg = per_cand(weights[0] * pix + weights[1] * grad).max(dim=1)   # over alignments: (b, k)
        out[0, s:s + b] = best.clamp(0, 1).numpy()
        out[1, s:s + b] = per_cand(pix).gather(1, arg[:, None])[:, 0].numpy()
        out[2, s:s + b] = per_cand(grad).gather(1, arg[:, None])[:, 0].numpy()
    return out[0], out[1], out[2]


def score_pairs(*, x_query: np.ndarray | torch.Tensor, x_ref: np.ndarray | torch.Tensor, pairs: np.ndarray,
                weights: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """score_candidates for given (query index, reference index) pairs: (score, pixel, gradient), (n_pairs,) each."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    x_query = np.asarray(x_query)
    sc, pix, grad = score_candidates(x_query=x_query[pairs[:, 0]], x_ref=x_ref, cand=pairs[:, 1:2], weights=weights)
    return sc[:, 0], pix[:, 0], grad[:, 0]


# ---------------------------------------------------------------- search

def candidates(*, x_query: np.ndarray, x_ref: np.ndarray, top_k: int, same_set: bool = False,
               query_block: int = 2048, ref_block: int = 16384, progress: bool = True) -> np.ndarray:
    """(n_query, min(top_k, n_ref)) int64: the reference images nearest each query by the retrieval
    descriptor, nearest first.

    same_set: x_query is x_ref; a query's own row ranks below every other row, and
    min(top_k + 1, n_ref) columns are returned.
    Memory: the reference descriptors, (n_ref, 192) float32, and one (query_block, ref_block)
    float32 similarity block at a time.
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
        score, pix, grad = score_candidates(x_query=x_query, x_ref=x_ref, cand=cand, progress=progress)
        q = np.repeat(np.arange(len(x_query)), cand.shape[1])
        r = cand.reshape(-1)
        score, pix, grad = score.reshape(-1), pix.reshape(-1), grad.reshape(-1)
        if same_set:
            keep = q != r
            q, r, score, pix, grad = q[keep], r[keep], score[keep], pix[keep], grad[keep]
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
