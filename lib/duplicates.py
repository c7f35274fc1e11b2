"""Exact and near duplicates between two image sets (any query set against any reference set).

Exact duplicates are found by hashing the raw bytes, so every byte-identical pair is listed.
Near duplicates (the same shot shifted, cropped, rescaled along either axis, mirrored,
colour-changed, re-compressed or framed) are found in three stages:

1. Retrieval. Each image becomes a descriptor of 432 numbers from two 16x16 grey views: the
   image less a 3-pixel border (frames, borders and captions sit there), and a *canonical* view,
   the window of +-2 standard deviations about the centroid of the gradient energy, resampled to
   16x16, which undoes shifts and per-axis rescaling of a single subject. Each view gives a
   blurred 8x8 thumbnail (64, at half weight) and a 4x4 grid of unsigned gradient-orientation
   histograms (8 bins, square-rooted: 128); a 4x4 chroma map adds 48. The reference set's
   descriptors are split into their mirror-even and mirror-odd parts (a left-right flip permutes
   the descriptor, so it keeps the even part and negates the odd part) and each part is
   PCA-whitened on the reference set (the WHITEN_DIMS leading directions, each scaled by
   variance ** -WHITEN_POWER), which stops generic images (an apple on white, a horizon) from
   crowding out copies. Similarity = even . even + |odd . odd| is the better of the query and its
   mirror image, from one pass; a blocked matrix product keeps the RERANK most similar reference
   images of each query (exact for the first top_k and HUB_RANK, a pool of near neighbours after).
   These are re-ranked by the better of the query's similarity and that of its VIEWS (the query
   magnified 1.25x and shrunk 0.8x about its centre), so a copy that was cropped and rescaled, which
   the plain view misses, moves up; the `top_k` first are kept, with the similarity of the
   HUB_RANK-th.
2. Coarse alignment, every candidate: 12x12 windows of 16x16 grey thumbnails, the query and its
   mirror image moved by -4..+4 pixels (2-pixel steps) along each axis, the reference at zoom 1
   and magnified by 1/z or shrunk by z for z in ZOOMS; coarse score = best mean of the pixel and
   gradient correlations. Candidates below COARSE_GATE stop here (score 0 in `find`), unless
   retrieval already singles them out (similarity at least COARSE_GATE_GAP above the query's hub):
   the 2-pixel grid underrates thin structures (a worm, wires) that a 1-pixel shift decorrelates.
3. Refinement: from the best coarse alignment, ECC (maximising the correlation coefficient,
   Evangelidis & Psarakis 2008; ECC_STEPS Gauss-Newton steps on the 32x32 grey images blurred by
   1 pixel) fits x_ref = a x + c, y_ref = b y + d (mirrored when a < 0; |a|, |b| in [0.55, 1.8]).
   At that alignment four signals are measured inside a 3-pixel margin: `pixel` and `gradient`,
   each the mean over 16 patches of 8x8 pixels of the patch's correlation (so that one shared
   silhouette or horizon cannot carry the whole image), of the grey levels (blur 0.7 px) and of the
   (dx, dy) field (unblurred); `colour` (_colour_fit): how much of each image's chroma an affine
   colour map of the other explains, the smaller of the two (grey levels cannot tell a red can from
   a green one in the same studio pose; colour can, while a tinted or channel-swapped copy still fits);
   and `verifier`: the logit of lib/verifier.py's small CNN, which sees the query, the aligned reference
   and their difference, trained (bench/train_verifier.py, training images only) to tell random copies
   from the look-alikes the finder's other signals score high (an edited copy from the same pose with
   another object).

Score: a logistic combination of five signals, fitted by bench/fit_duplicates.py on the tuning
half of ciFAIR's judged pairs and of our own judged pairs (its FIT_JUDGMENTS files in bench/):

    score = sigmoid(w0 + w_pixel * pixel + w_gradient * gradient + w_colour * colour
                    + w_gap * (similarity - hub) + w_verifier * clip(verifier, *VERIFIER_CLIP))

with SCORE_WEIGHTS = (w0, w_pixel, w_gradient, w_colour, w_gap, w_verifier); similarity - hub is how far the
pair's retrieval similarity stands above the query's HUB_RANK-th neighbour (a copy stands out from
its neighbours; a generic image does not). w0 is then shifted so that the default near threshold
0.90 falls at the lowest score where the false flags on the tuning half, counted directly (every unlisted
tuning-half pair the fitted finder confirms at 0.80 or more was judged by eye:
bench/cifair_tuning_verifier_judgments.csv), stay within 5 per 1,000 test images; the score ranks pairs by how
likely they are the same shot (identical images score ~0.999), but it is calibrated to that operating point,
not to a probability.

Verdicts: exact -> kind "exact"; score >= near_threshold -> kind "near", verdict confirm;
review_threshold <= score < near_threshold -> kind "review", verdict reject (listed for a
person to decide through lib/review.py; notebook 03 pages them with the doubtful pairs first).
colour and the verifier are measured only for pairs whose score could reach MEASURE_FLOOR (0.5) with colour 1
and the verifier at the top of VERIFIER_CLIP; the others score as if they were there (an upper bound, below
0.5), so a review threshold under 0.5 lists more pairs, never fewer. With the fitted weights nearly every
refined pair can reach 0.5 that way, so in a full search nearly all are measured (about 21,000 pairs of the
10,000 x 50,000 search: 2 s on 2 cores).

lib/planted.py plants known duplicates into real images, one ground truth the tests and
bench/bench_duplicates.py measure this finder against; ciFAIR's judged lists are the other.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import verifier


PAIR_COLUMNS = ["query_idx", "ref_idx", "kind", "score", "pixel", "gradient", "colour", "verifier", "verdict"]
_SIGNALS = ("score", "pixel", "gradient", "colour", "verifier")   # _score's first outputs, in its order

# ---- retrieval descriptor
RES = 16               # both views are described at 16x16 grey
CROP = 3               # the plain view drops 3 pixels at each edge of the 32x32 image
FRAME_SPREAD = 2.0     # the canonical view spans +-2 standard deviations of the gradient energy
CELLS = 4              # 4x4 cells of orientation histograms per view
N_ORIENT = 8           # unsigned gradient orientations (bins on the doubled angle)
THUMB = 8              # 8x8 blurred grey thumbnail per view
THUMB_WEIGHT = 0.5     # thumbnail against the histograms
COLOUR_WEIGHT = 0.6    # the 4x4 chroma map against one view
WHITEN_POWER = 0.25    # partial PCA whitening: each principal direction scaled by variance ** -0.25
WHITEN_DIMS = 48       # principal directions kept in each of the mirror-even and mirror-odd parts
WHITEN_SAMPLE = 16384  # at most this many reference rows (evenly spaced) fit the whitening
HUB_RANK = 10          # a query's typical neighbour: its 10th most similar reference image
RERANK = 50            # the query's descriptor keeps its 50 most similar references; its VIEWS re-rank them
VIEWS = ((1.25, 0.0, 0.0), (0.8, 0.0, 0.0))       # (zoom, centre x, centre y): the query magnified and shrunk
# ---- coarse alignment (16x16)
SHIFT = 2              # +-2 cells of the 16x16 thumbnail = +-4 pixels of the 32x32 image
ZOOMS = (0.9, 0.8)     # central crops rescaled to full size, tried on either side
COARSE_GATE = 0.65     # find(): candidates with a lower coarse score are not refined (score 0) ...
COARSE_GATE_GAP = 0.2  # ... unless their retrieval similarity is this far above the query's hub (1 in 800 of them)
# ---- refinement (32x32)
ECC_STEPS = 4          # Gauss-Newton steps of the correlation alignment (images blurred by 1 pixel)
MARGIN = 3             # comparisons ignore 3 pixels at each edge of the query
COLOUR_BLUR = 1.0      # the colour fit compares both images blurred by 1 pixel
GREY_CHROMA = 0.02     # an image whose chroma std is below this (about 5 of 255 levels) counts as grey
MEASURE_FLOOR = 0.5    # colour and the verifier are measured only for pairs whose score could reach this with colour 1
                       # and the verifier at VERIFIER_CLIP's top; the others score as if they were there
VERIFIER_CLIP = (-40.0, 12.0)  # the verifier's logit enters the score clipped to this range (lib/verifier.py)
# ---- score: sigmoid(w0 + w_pixel * pixel + w_gradient * gradient + w_colour * colour + w_gap * (similarity - hub)
#                     + w_verifier * verifier)
SCORE_WEIGHTS = (-1.120, 1.926, 0.145, 0.829, 8.101, 0.136)   # (w0, w_pixel, w_gradient, w_colour, w_gap, w_verifier)

_LUMA = torch.tensor([0.299, 0.587, 0.114]) / 255
_PHI = torch.arange(N_ORIENT // 2, dtype=torch.float32) * 2 * np.pi / N_ORIENT
_COS, _SIN = torch.cos(_PHI).view(1, -1, 1, 1), torch.sin(_PHI).view(1, -1, 1, 1)
_IN = slice(MARGIN, 32 - MARGIN)
_C32 = (torch.arange(32, dtype=torch.float32) + 0.5) / 16 - 1     # pixel centres, [-1, 1] across the image
_UIN = _C32[_IN]


@dataclass(frozen=True)
class Found:
    pairs: pd.DataFrame       # flagged pairs, PAIR_COLUMNS, by score (highest first), then query_idx, ref_idx;
                              # exact pairs score 1, and a near pair can tie with them at 1
    best_score: np.ndarray    # (n_query,) float32 best near-duplicate score of each query (1 for an exact copy,
                              # 0 when nothing was scored, e.g. exact_only, or every candidate below COARSE_GATE)
    best_ref: np.ndarray      # (n_query,) int64 reference index of that best score (-1 when none)
    seconds: float            # wall time of the search


# ---------------------------------------------------------------- exact duplicates

_HASH_MULT = np.random.default_rng(0x5EED).integers(1, 2 ** 63, size=3072 // 8, dtype=np.uint64) | np.uint64(1)


def _fast_hash(x: np.ndarray) -> np.ndarray:
    """(n, ...) uint8 images of 3072 bytes -> (n,) uint64: a random odd linear combination of each image's 64-bit
    words (mod 2^64). Equal images hash equal; unequal ones almost never do, and exact_pairs checks the bytes."""
    w = np.ascontiguousarray(x).reshape(len(x), 3072).view(np.uint64)
    out = np.zeros(len(x), np.uint64)
    for s in range(0, len(x), 4096):
        out[s:s + 4096] = (w[s:s + 4096] * _HASH_MULT).sum(1, dtype=np.uint64)
    return out


def exact_pairs(*, x_query: np.ndarray, x_ref: np.ndarray, same_set: bool = False) -> np.ndarray:
    """(n_pairs, 2) int64 (query index, reference index) of byte-identical images.

    same_set: query and reference are the same array; list each pair once (q < r), no self pairs.
    """
    xr = np.asarray(x_ref)
    xq = xr if same_set else np.asarray(x_query)
    if not len(xr) or not len(xq):
        return np.zeros((0, 2), np.int64)
    hr, hq = _fast_hash(xr), (None if same_set else _fast_hash(xq))
    order = np.argsort(hr, kind="stable")
    if same_set:        # runs of equal hashes among the references
        hs = hr[order]
        cand = set()
        same = hs[1:] == hs[:-1]
        keep = np.r_[same, False] | np.r_[False, same]                      # members of runs of equal hashes
        for group in np.split(order[keep], np.flatnonzero(hs[keep][1:] != hs[keep][:-1]) + 1):
            g = sorted(int(v) for v in group)
            cand |= {(u, v) for k, u in enumerate(g) for v in g[k + 1:]}
    else:
        pos = np.searchsorted(hr[order], hq)
        cand = set()
        for i in np.flatnonzero((pos < len(hr)) & (hr[order][np.minimum(pos, len(hr) - 1)] == hq)):
            m = pos[i]
            while m < len(hr) and hr[order[m]] == hq[i]:
                cand.add((int(i), int(order[m])))
                m += 1
    out = [(a, b) for a, b in cand if np.array_equal(xq[a], xr[b])]       # equal hash, then equal bytes
    return np.asarray(sorted(out), np.int64).reshape(-1, 2)


# ---------------------------------------------------------------- image helpers

def _grey(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 1, 32, 32) float32 luma in [0, 1]."""
    n = len(x_uint8)
    return (x_uint8.reshape(n * 1024, 3).float() @ _LUMA).reshape(n, 1, 32, 32)


def _gradients(g: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, 2c, h, w) central differences (dx, dy), edges replicated."""
    p = F.pad(g, (1, 1, 1, 1), mode="replicate")
    return torch.cat([p[..., 1:-1, 2:] - p[..., 1:-1, :-2], p[..., 2:, 1:-1] - p[..., :-2, 1:-1]], dim=1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, d): subtract the mean, scale to unit norm (flat rows stay zero)."""
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


_BLUR: dict[float, torch.Tensor] = {}


def _blur(g: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, c, 32, 32) Gaussian blur (sigma in pixels, edges replicated), as two 32x32 matrix products."""
    if sigma not in _BLUR:
        r = max(1, int(np.ceil(2.5 * sigma)))
        k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
        m = np.zeros((32, 32))
        for i in range(32):
            for o, wt in zip(range(-r, r + 1), k / k.sum()):
                m[i, min(max(i + o, 0), 31)] += wt
        _BLUR[sigma] = torch.tensor(m, dtype=torch.float32)
    m = _BLUR[sigma]
    return m @ g @ m.T


# ---------------------------------------------------------------- retrieval

def _frames(g16: torch.Tensor) -> torch.Tensor:
    """(n, 1, 16, 16) grey -> (n, 4) moment frame (cx, cy, sx, sy) of the gradient energy (outer ring of
    cells ignored): centroid and standard deviation along each axis, in [-1, 1] image coordinates."""
    w = _gradients(g16).square().sum(1).sqrt()[:, 1:-1, 1:-1]
    c = (torch.arange(1, 15, dtype=torch.float32) + 0.5) / 8 - 1
    tot = w.sum((1, 2)).clamp_min(1e-6)
    wx, wy = w.sum(1), w.sum(2)
    cx, cy = wx @ c / tot, wy @ c / tot
    sx = ((wx @ (c * c)) / tot - cx * cx).clamp_min(0).sqrt().clamp(0.15, 1)
    sy = ((wy @ (c * c)) / tot - cy * cy).clamp_min(0).sqrt().clamp(0.15, 1)
    return torch.stack([cx, cy, sx, sy], 1)


def _describe(g: torch.Tensor) -> torch.Tensor:
    """(n, 1, RES, RES) grey view -> thumbnail (THUMB^2, weighted) and orientation histograms
    (CELLS^2 * N_ORIENT), each part mean/contrast-normalised. Pooling windows are mirror-symmetric."""
    n = len(g)
    k = RES // THUMB
    thumb = F.avg_pool2d(g, k + 2, k, 1, count_include_pad=False).reshape(n, -1)
    gx, gy = _gradients(g).unbind(1)
    gx, gy = gx.unsqueeze(1), gy.unsqueeze(1)
    mag = (gx * gx + gy * gy).sqrt().clamp_min(1e-6)
    p = (gx * gx - gy * gy) / mag * _COS + 2 * gx * gy / mag * _SIN     # |g| cos(2 theta - phi_k), k < N_ORIENT / 2
    bins = torch.cat([p.clamp_min(0), (-p).clamp_min(0)], 1)             # orientation k and k + N_ORIENT / 2
    k = RES // CELLS
    hist = F.avg_pool2d(bins, k + 2, k, 1, count_include_pad=False).reshape(n, -1).sqrt()
    return torch.cat([THUMB_WEIGHT * _unit(thumb), _unit(hist)], 1)


def _raw_descriptors(x_uint8: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 32, 32, 3) uint8 -> raw retrieval descriptors (n, 432): plain view, canonical view, chroma;
    and the moment frames (n, 4)."""
    out, frames = [], []
    norm = np.sqrt(2 * (1 + THUMB_WEIGHT ** 2) + COLOUR_WEIGHT ** 2)
    c, e = CROP, 32 - CROP
    for s in range(0, len(x_uint8), chunk):
        x = x_uint8[s:s + chunk]
        n = len(x)
        g = _grey(x)
        plain = F.adaptive_avg_pool2d(g[..., c:e, c:e], RES)
        f = _frames(F.avg_pool2d(g, 2))
        th = torch.zeros(n, 2, 3)
        th[:, 0, 0], th[:, 0, 2] = FRAME_SPREAD * f[:, 2], f[:, 0]
        th[:, 1, 1], th[:, 1, 2] = FRAME_SPREAD * f[:, 3], f[:, 1]
        canon = F.grid_sample(g, F.affine_grid(th, (n, 1, RES, RES), align_corners=False), mode="bilinear",
                              padding_mode="border", align_corners=False)
        d = _describe(torch.cat([plain, canon]))
        col = F.adaptive_avg_pool2d(x[:, c:e, c:e].permute(0, 3, 1, 2).float(), 4)
        chroma = _unit((col - col.mean(1, keepdim=True)).reshape(n, -1))
        out.append(torch.cat([d[:n], d[n:], COLOUR_WEIGHT * chroma], 1) / norm)
        frames.append(f)
    if not out:
        return torch.zeros((0, len(_mirror()))), torch.zeros((0, 4))
    return torch.cat(out), torch.cat(frames)


def _mirror() -> np.ndarray:
    """P with descriptor(left-right flipped image)[:, j] == descriptor(image)[:, P[j]]."""
    view = [i * THUMB + (THUMB - 1 - j) for i in range(THUMB) for j in range(THUMB)]
    view += [THUMB * THUMB + ((-o) % N_ORIENT) * CELLS * CELLS + i * CELLS + (CELLS - 1 - j)
             for o in range(N_ORIENT) for i in range(CELLS) for j in range(CELLS)]
    view = np.array(view)
    d = len(view)
    chroma = [2 * d + ch * 16 + i * 4 + (3 - j) for ch in range(3) for i in range(4) for j in range(4)]
    return np.concatenate([view, view + d, np.array(chroma)])


@functools.lru_cache(maxsize=1)
def _mirror_bases() -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal bases (d, d_even), (d, d_odd) of the descriptor's mirror-even and mirror-odd parts."""
    p = _mirror()
    d = len(p)
    fixed = np.flatnonzero(p == np.arange(d))
    lo = np.flatnonzero(np.arange(d) < p)                    # one index of each swapped pair
    even = np.zeros((d, len(fixed) + len(lo)))
    even[fixed, np.arange(len(fixed))] = 1
    even[lo, len(fixed) + np.arange(len(lo))] = even[p[lo], len(fixed) + np.arange(len(lo))] = 1 / np.sqrt(2)
    odd = np.zeros((d, len(lo)))
    odd[lo, np.arange(len(lo))] = 1 / np.sqrt(2)
    odd[p[lo], np.arange(len(lo))] = -1 / np.sqrt(2)
    return torch.tensor(even, dtype=torch.float32), torch.tensor(odd, dtype=torch.float32)


@dataclass(frozen=True)
class _Whitening:
    """Partial PCA whitening of the mirror-even and mirror-odd parts, fitted on reference descriptors."""
    mean: torch.Tensor   # (d,) the mirror-even part of the reference mean
    even: torch.Tensor   # (d, k) projection of the even part
    odd: torch.Tensor    # (d, k) projection of the odd part

    @classmethod
    def fit(cls, raw: torch.Tensor) -> "_Whitening":
        be, bo = (b.double() for b in _mirror_bases())
        sample = raw[::max(1, len(raw) // WHITEN_SAMPLE)].double()
        mean = be @ (be.T @ sample.mean(0)) if len(sample) else torch.zeros(raw.shape[1], dtype=torch.double)
        mats = []
        for b in (be, bo):
            z = (sample - mean) @ b
            cov = z.T @ z / max(1, len(z) - 1)
            cov = cov + 1e-6 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov), dtype=cov.dtype)
            ev, u = torch.linalg.eigh(cov)
            ev, u = ev.flip(0)[:WHITEN_DIMS], u.flip(1)[:, :WHITEN_DIMS]
            mats.append((b @ u * ev.clamp_min(1e-12).pow(-WHITEN_POWER)).float())
        return cls(mean=mean.float(), even=mats[0], odd=mats[1])

    def project(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw descriptors -> (even, odd) coordinates, scaled so that even^2 + odd^2 sums to 1 per row."""
        z = raw - self.mean
        e, o = z @ self.even, z @ self.odd
        n = (e.square().sum(1) + o.square().sum(1)).sqrt().clamp_min(1e-6)[:, None]
        return e / n, o / n


@dataclass(frozen=True)
class _Retrieved:
    cand: np.ndarray      # (n_query, k) int64 reference indices, most similar first
    sim: np.ndarray       # (n_query, k) float32 similarity of each candidate
    hub: np.ndarray       # (n_query,) float32 similarity of the query's HUB_RANK-th neighbour


def _index(x_ref: np.ndarray) -> tuple[_Whitening, torch.Tensor, torch.Tensor]:
    """The whitening fitted on the reference set and the reference set's (even, odd) coordinates."""
    raw = _raw_descriptors(torch.as_tensor(np.asarray(x_ref)))[0]
    wh = _Whitening.fit(raw)
    return (wh, *wh.project(raw))


def _search(eq_all: torch.Tensor, oq_all: torch.Tensor, er: torch.Tensor, od_r: torch.Tensor, *, keep: int,
            per_block: int | None = None, exclude: np.ndarray | None = None, query_block: int = 1024,
            ref_block: int = 4096, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities (n_query, keep) of the most similar references, most similar first.
    per_block: take at most this many from each block of ref_block references (a cheaper top-k): the list is then
    exact for its first per_block entries and a pool of near neighbours after them.
    exclude: (n_query,) a reference index per query that is never its neighbour (the query itself, same_set)."""
    n_blocks = max(1, -(-len(er) // ref_block))
    per_block = keep if per_block is None else min(keep, max(per_block, -(-keep // n_blocks)))  # keep in all
    n_q, n_r = len(eq_all), len(er)
    idx_out = np.zeros((n_q, keep), np.int64)
    sim_out = np.zeros((n_q, keep), np.float32)
    ex_all = None if exclude is None else torch.as_tensor(np.asarray(exclude, np.int64))
    for s in tqdm(range(0, n_q, query_block), desc="near-duplicate retrieval", disable=not progress):
        eq, oq = eq_all[s:s + query_block], oq_all[s:s + query_block]
        vals, inds = [], []
        for r in range(0, n_r, ref_block):
            sim = (oq @ od_r[r:r + ref_block].T).abs_().addmm_(eq, er[r:r + ref_block].T)   # even + |odd|
            if ex_all is not None:                                # a query is not its own duplicate
                cols = ex_all[s:s + query_block] - r
                ok = (cols >= 0) & (cols < sim.shape[1])
                sim[torch.arange(len(eq))[ok], cols[ok]] = -9.0
            v, i = sim.topk(min(per_block, sim.shape[1]), dim=1)
            vals.append(v)
            inds.append(i + r)
        best_v, j = torch.cat(vals, 1).topk(keep, dim=1)          # one merge of the blocks' lists
        idx_out[s:s + len(eq)] = torch.cat(inds, 1).gather(1, j).numpy()
        sim_out[s:s + len(eq)] = best_v.numpy()
    return idx_out, sim_out


@functools.lru_cache(maxsize=None)
def _view_map(zoom: float, centre: float) -> torch.Tensor:
    """(32, 32) bilinear resampling of one image axis (edges repeated): output pixel u (in [-1, 1] coordinates)
    reads the source at u / zoom + centre, as F.grid_sample with padding_mode="border" would."""
    src = (_C32 / zoom + centre + 1) * 16 - 0.5                      # source position in pixels
    lo = src.floor()
    frac = src - lo
    m = torch.zeros(32, 32)
    for off, wt in ((0, 1 - frac), (1, frac)):
        m.index_put_((torch.arange(32), (lo + off).clamp(0, 31).long()), wt, accumulate=True)
    return m


def _views(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n * len(VIEWS), 32, 32, 3) float32: each image seen through each of VIEWS, image i's
    views at rows i * len(VIEWS) ...; view (z, cx, cy) magnifies by z about (cx, cy) in [-1, 1] image coordinates
    (z < 1 shrinks; edges repeat), as if the image had been cropped and rescaled."""
    n = len(x_uint8)
    img = x_uint8.float()                                                   # (n, y, x, channel)
    out = []
    for z, cx, cy in VIEWS:                                                 # two plain matrix products per view
        a = (img.permute(0, 1, 3, 2).reshape(-1, 32) @ _view_map(z, cx).T).reshape(n, 32, 3, 32)   # (n, y, c, x')
        a = (a.permute(0, 2, 3, 1).reshape(-1, 32) @ _view_map(z, cy).T).reshape(n, 3, 32, 32)    # (n, c, x', y')
        out.append(a.permute(0, 3, 2, 1))                                   # (n, y', x', c)
    return torch.stack(out, 1).reshape(-1, 32, 32, 3)


def _view_similarity(x_uint8: torch.Tensor, cand: torch.Tensor, wh: "_Whitening", er: torch.Tensor,
                     od_r: torch.Tensor) -> torch.Tensor:
    """(n, m) the best similarity of any of the n queries' VIEWS to each of its m references `cand` (n, m)."""
    n, v = len(x_uint8), len(VIEWS)
    ev, ov = (t.reshape(n, v, -1) for t in wh.project(_raw_descriptors(_views(x_uint8))[0]))
    sv = torch.bmm(ev, er[cand].transpose(1, 2)) + torch.bmm(ov, od_r[cand].transpose(1, 2)).abs()   # (n, v, m)
    return sv.max(1).values


def _rerank(x_uint8: torch.Tensor, idx: np.ndarray, sim: np.ndarray, wh: _Whitening, er: torch.Tensor,
            od_r: torch.Tensor, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's retrieved references (idx, sim: (n_query, m), most similar first) by the better of its
    similarity and the similarity of any of the query's VIEWS, so that a cropped or rescaled copy, which the
    query's own descriptor ranks low, moves up. x_uint8: the query images. Returns idx, sim re-sorted."""
    idx, sim = idx.copy(), sim.copy()
    if not VIEWS:
        return idx, sim
    for s in range(0, len(idx), block):
        n = len(idx[s:s + block])
        c = torch.as_tensor(idx[s:s + n])
        best = torch.maximum(torch.as_tensor(sim[s:s + n]), _view_similarity(x_uint8[s:s + n], c, wh, er, od_r))
        best, order = best.sort(dim=1, descending=True, stable=True)
        idx[s:s + n], sim[s:s + n] = c.gather(1, order).numpy(), best.numpy()
    return idx, sim


def _retrieve(*, x_query: np.ndarray, x_ref: np.ndarray, top_k: int, same_set: bool = False,
              rows: np.ndarray | None = None, query_block: int = 1024, ref_block: int = 4096,
              progress: bool = False) -> _Retrieved:
    """The top_k most similar reference images of each query (of the queries `rows`, default all), with the
    similarities the score uses: RERANK references by the query's descriptor, re-ranked with its VIEWS
    (_rerank). The whitening depends on the reference set only, so a query's result does not depend on
    which other queries are searched."""
    wh, er, od_r = _index(x_ref)
    rows = np.arange(len(x_query)) if rows is None else np.asarray(rows, np.int64)
    xq = torch.as_tensor(np.asarray(x_ref if same_set else x_query)[rows])
    if same_set:
        eq, oq = er[torch.as_tensor(rows)], od_r[torch.as_tensor(rows)]
    else:
        eq, oq = wh.project(_raw_descriptors(xq)[0])
    keep = min(max(top_k, HUB_RANK, RERANK), len(er) - (1 if same_set else 0))
    idx, sim = _search(eq, oq, er, od_r, keep=keep, per_block=max(top_k, HUB_RANK),
                       exclude=rows if same_set else None, query_block=query_block, ref_block=ref_block,
                       progress=progress)
    idx, sim = _rerank(xq, idx, sim, wh, er, od_r)
    hub = sim[:, min(HUB_RANK, keep) - 1] if keep > 0 else np.zeros(len(eq), np.float32)
    k = min(top_k, keep)
    return _Retrieved(cand=idx[:, :k], sim=sim[:, :k], hub=hub)


def _pair_similarity(*, x_query: np.ndarray, x_ref: np.ndarray, cand: np.ndarray, same_set: bool = False,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Retrieval similarity of given candidates (n_query, k) and each query's hub similarity, as in find()
    (the better of the query's and its VIEWS' similarities). same_set: each query is itself an image of x_ref,
    so its most similar reference (itself) is skipped."""
    wh, er, od_r = _index(x_ref)
    xq = torch.as_tensor(np.asarray(x_query))
    eq, oq = wh.project(_raw_descriptors(xq)[0])
    keep = min(max(HUB_RANK, RERANK) + (1 if same_set else 0), len(er))
    idx, top = _rerank(xq, *_search(eq, oq, er, od_r, keep=keep, per_block=HUB_RANK + 1), wh, er, od_r)
    hub = top[:, min(HUB_RANK + (1 if same_set else 0), keep) - 1] if keep else np.zeros(len(eq), np.float32)
    c = torch.as_tensor(np.array(cand, np.int64))
    sim = (eq[:, None, :] * er[c]).sum(-1) + (oq[:, None, :] * od_r[c]).sum(-1).abs()
    if VIEWS and c.shape[1]:
        sim = torch.maximum(sim, _view_similarity(xq, c, wh, er, od_r))
    return sim.numpy(), hub


# ---------------------------------------------------------------- coarse alignment (16x16)

def _area_map(*, zoom: float, n_out: int = 16) -> torch.Tensor:
    """(n_out, 32) linear map of one image axis: 32 pixels -> n_out cells of 2 pixels, zoomed about the centre.

    Output cell j spans [2j, 2j + 2] in the 32-pixel frame of the zoomed image, i.e.
    [16 + (2j - 16) / zoom, 16 + (2j + 2 - 16) / zoom] in the source; each source pixel weighs by
    its overlap (area resampling). zoom > 1 magnifies (a central crop), zoom < 1 shrinks; sources
    past the border repeat the edge pixel.
    """
    m = np.zeros((n_out, 32))
    for j in range(n_out):
        lo, hi = 16 + (2 * j - 16) / zoom, 16 + (2 * j + 2 - 16) / zoom
        for px in range(int(np.floor(lo)), int(np.ceil(hi))):
            m[j, min(max(px, 0), 31)] += max(0.0, min(hi, px + 1) - max(lo, px))
    return torch.tensor(m / m.sum(1, keepdims=True), dtype=torch.float32)


def _zooms() -> list[float]:
    return [1.0] + [1 / z for z in ZOOMS] + list(ZOOMS)


def _ref_windows(g32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 32, 32) -> unit central 12x12 windows of the reference at each zoom of _zooms():
    pixels (n, n_zoom, 144) and gradients (n, n_zoom, 288)."""
    maps = torch.stack([_area_map(zoom=z) for z in _zooms()])
    v = torch.stack([mp @ g32[:, 0] @ mp.T for mp in maps], dim=1).unsqueeze(2)     # (n, n_zoom, 1, 16, 16)
    n, m = v.shape[:2]
    w = 16 - 2 * SHIFT
    flat = v.reshape(n * m, 1, 16, 16)
    pix = flat[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(n * m, -1)
    grad = _gradients(flat)[..., SHIFT:SHIFT + w, SHIFT:SHIFT + w].reshape(n * m, -1)
    return _unit(pix).reshape(n, m, -1), _unit(grad).reshape(n, m, -1)


def _query_windows(g32: torch.Tensor) -> list[torch.Tensor]:
    """(b, 1, 32, 32) -> every shifted 12x12 window of the query's 16x16 thumbnail and of its mirror image,
    mean-subtracted: pixels (b, 2 * n_shift, 144), their norms (b, 2 * n_shift), gradients, their norms."""
    g16 = F.avg_pool2d(g32, 2)
    v = torch.cat([g16, g16.flip(-1)], 1).reshape(-1, 1, 16, 16)    # (2b, 1, 16, 16): query, mirror
    b = len(g32)
    w, n_pos = 16 - 2 * SHIFT, 2 * SHIFT + 1
    out = []
    for c in (v, _gradients(v)):
        k, st = c.shape[1], c.stride()
        win = c.as_strided((len(c), n_pos, n_pos, k, w, w), (st[0], st[2], st[3], st[1], st[2], st[3]))
        win = win.reshape(b, 2 * n_pos * n_pos, k * w * w)
        win = win - win.mean(2, keepdim=True)
        out += [win, win.norm(dim=2).clamp_min(1e-5)]
    return out


def _coarse(gq32: torch.Tensor, ref_pix: torch.Tensor, ref_grad: torch.Tensor):
    """Coarse similarity of each query to its k candidates, best over shifts, zooms and both orientations.

    gq32 (b, 1, 32, 32); ref_pix, ref_grad (b, k, n_zoom, d) from _ref_windows. Returns score = mean of
    the pixel and gradient correlations (clipped to [0, 1]), pixel, gradient, each (b, k), and the
    alignment (b, k, 4) = (a, b, c, d): x_ref = a x + c, y_ref = b y + d in [-1, 1] coordinates."""
    b, k, nz = ref_pix.shape[:3]
    qp, qpn, qg, qgn = _query_windows(gq32)
    pix = torch.bmm(qp, ref_pix.reshape(b, k * nz, -1).transpose(1, 2)) / qpn[..., None]   # (b, n_al, k*nz)
    grad = torch.bmm(qg, ref_grad.reshape(b, k * nz, -1).transpose(1, 2)) / qgn[..., None]
    n_al = pix.shape[1]
    per_cand = lambda t: t.reshape(b, n_al, k, nz).permute(0, 2, 1, 3).reshape(b, k, n_al * nz)  # noqa: E731
    best, arg = per_cand(0.5 * (pix + grad)).max(dim=2)
    al, zi = arg // nz, arg % nz
    n_pos = 2 * SHIFT + 1
    pos = al % (n_pos * n_pos)
    dy, dx = (2 * (pos // n_pos - SHIFT)).float(), (2 * (pos % n_pos - SHIFT)).float()
    z = torch.tensor(_zooms())[zi]
    sign = torch.where(al >= n_pos * n_pos, -1.0, 1.0)                    # matched as the mirror image
    p = torch.stack([sign / z, 1 / z, -dx / 16 / z, -dy / 16 / z], -1)
    pick = lambda t: per_cand(t).gather(2, arg[..., None])[..., 0]  # noqa: E731
    return best.clamp(0, 1), pick(pix), pick(grad), p


# ---------------------------------------------------------------- refinement (32x32)

def _sample(img: torch.Tensor, p: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """img (n, c, 32, 32) sampled (bilinear, edges repeated) at x = a u + c, y = b v + d for the pixel
    centres u, v in `coords` (m,) along each axis; p (n, 4) = (a, b, c, d). -> (n, c, m * m)."""
    n, m = len(p), len(coords)
    gx = p[:, 0:1] * coords + p[:, 2:3]
    gy = p[:, 1:2] * coords + p[:, 3:4]
    grid = torch.stack([gx[:, None, :].expand(n, m, m), gy[:, :, None].expand(n, m, m)], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False).reshape(
        n, img.shape[1], -1)


def _rgb(x_uint8: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 3, 32, 32) float32 in [0, 1]."""
    return x_uint8.permute(0, 3, 1, 2).float() / 255


def _warped_rgb(xr: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(n, 32, 32, 3) uint8 references resampled at alignments p (n, 4) -> (n, 3, 32, 32) float32 in [0, 1]."""
    return _sample(_rgb(xr), p, _C32).reshape(len(p), 3, 32, 32)


def _ecc(gq: torch.Tensor, gr: torch.Tensor, p: torch.Tensor, steps: int, sigma: float = 1.0,
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlation alignment (ECC, Evangelidis & Psarakis 2008) of the reference to the query under
    x_ref = a x + c, y_ref = b y + d, from p (n, 4) = (a, b, c, d); |a|, |b| stay in [0.55, 1.8] and
    |c|, |d| <= 0.6. Returns the parameters with the best correlation seen (inside the margin, both
    images blurred by sigma pixels) and that correlation."""
    n = len(gq)
    t = _blur(gq, sigma)[..., _IN, _IN].reshape(n, -1)
    t = t - t.mean(1, keepdim=True)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-8)
    rb = _blur(gr, sigma)
    ref3 = torch.cat([rb, _gradients(rb) * 8.0], 1)          # intensity, d/du, d/dv (u: 16 pixels per unit, /2)
    m = len(_UIN)
    uu, vv = _UIN.repeat(m), _UIN.repeat_interleave(m)
    p = p.clone()
    best_p, best_rho = p.clone(), torch.full((n,), -2.0)
    eye = 1e-6 * torch.eye(4)
    for it in range(steps + 1):
        iw, rx, ry = _sample(ref3, p, _UIN).unbind(1)
        iw = iw - iw.mean(1, keepdim=True)
        inorm = iw.norm(dim=1).clamp_min(1e-8)
        rho = (t * iw).sum(1) / inorm
        better = rho > best_rho
        best_rho = torch.where(better, rho, best_rho)
        best_p = torch.where(better[:, None], p, best_p)
        if it == steps:
            break
        G = torch.stack([rx * uu, ry * vv, rx, ry], 1)                   # (n, 4, P) d(sampled image)/d(a, b, c, d)
        gm = G.mean(2, keepdim=True)
        H = torch.linalg.inv(G @ G.transpose(1, 2) - G.shape[2] * gm @ gm.transpose(1, 2) + eye)
        proj = G @ torch.stack([iw, t], 2)                               # (n, 4, 2); iw and t are centred
        hip = H @ proj[..., :1]
        ln = inorm.square() - (proj[..., 0] * hip[..., 0]).sum(1)
        ld = rho * inorm - (proj[..., 1] * hip[..., 0]).sum(1)
        lam = torch.where(ld > 1e-8, ln / ld.clamp_min(1e-8), torch.ones_like(ln))
        dp = (H @ (lam[:, None, None] * proj[..., 1:] - proj[..., :1]))[..., 0].clamp(-0.15, 0.15)
        p = p + dp
        sign = torch.where(p[:, 0] < 0, -1.0, 1.0)
        p = torch.stack([sign * p[:, 0].abs().clamp(0.55, 1.8), p[:, 1].clamp(0.55, 1.8),
                         p[:, 2].clamp(-0.6, 0.6), p[:, 3].clamp(-0.6, 0.6)], 1)
    return best_p, best_rho


def _patch_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, c, 32, 32) pairs -> (n,) mean over 16 patches (8x8 pixels, stride 6, inside the margin) of the
    patch's correlation coefficient (channels pooled; a flat patch counts as 0)."""
    def patches(t: torch.Tensor) -> torch.Tensor:
        t = t[..., _IN, _IN].contiguous()
        n, c, st = len(t), t.shape[1], t.stride()
        v = t.as_strided((n, 4, 4, c, 8, 8), (st[0], 6 * st[2], 6 * st[3], st[1], st[2], st[3])).reshape(n, 16, -1)
        return v - v.mean(2, keepdim=True)
    pa, pb = patches(a), patches(b)
    r = (pa * pb).sum(2) / (pa.square().sum(2) * pb.square().sum(2)).sqrt().clamp_min(1e-6)
    return r.mean(1)


def _colour_fit(cq: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
    """(n, 3, 32, 32) float [0, 1] queries and aligned references -> (n,) `colour`: how well
    one image's colours predict the other's chroma (each pixel's colour less its grey level).

    In each direction an affine colour map (3x3 and an offset, least squares over the pixels inside the margin,
    both images blurred by COLOUR_BLUR) is fitted and the share of the target's chroma variance it explains is
    measured; `colour` is the smaller share of the two directions, clipped to [0, 1]. An invertible global
    recolouring of a copy (a tint, a contrast change, swapped channels) fits such a map both ways; a different
    object of another colour in the same pose and on the same background mostly does not, because one colour would
    have to become several. A recolouring that loses colour (sepia, near-greyscale) fits one way only and scores
    low: when this was chosen, the smaller share ranked ciFAIR's tuning pairs better than the larger
    (bench/fit_duplicates.py's cross-validation: 0.914 vs 0.896 at that fit's operating point), at that cost.
    When either image has no chroma (a grey image: chroma std < GREY_CHROMA) colour says nothing and is 1."""
    n = len(cq)
    z = torch.cat([_blur(c, COLOUR_BLUR)[..., _IN, _IN].reshape(n, 3, -1) for c in (cq, cw)], 1)   # (n, 6, P)
    z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
    gram = (z @ z.transpose(1, 2)).double()                                  # (n, 7, 7): every sum the fits need
    n_px = z.shape[2]
    chroma = torch.eye(3, dtype=torch.double) - 1 / 3                         # colour -> colour less its grey level
    mean = gram[:, :6, 6] / n_px
    cov = gram[:, :6, :6] / n_px - mean[:, :, None] * mean[:, None, :]
    spread = {k: (chroma @ cov[:, k:k + 3, k:k + 3] @ chroma).diagonal(dim1=1, dim2=2) for k in (0, 3)}  # per channel
    coloured = (spread[0].mean(1) >= GREY_CHROMA ** 2) & (spread[3].mean(1) >= GREY_CHROMA ** 2)   # neither is grey
    out = torch.ones(n, dtype=torch.double)
    for src, dst in ((slice(0, 3), slice(3, 6)), (slice(3, 6), slice(0, 3))):
        xs = torch.cat([torch.arange(7)[src], torch.tensor([6])])             # source colours and the constant
        xx, xa = gram[:, xs][:, :, xs], gram[:, xs][:, :, dst]
        w = torch.linalg.solve(xx + 1e-4 * torch.eye(4, dtype=torch.double), xa)       # (n, 4, 3) the colour map
        rr = gram[:, dst, dst] - xa.transpose(1, 2) @ w - w.transpose(1, 2) @ xa + w.transpose(1, 2) @ xx @ w
        res = (chroma @ rr @ chroma).diagonal(dim1=1, dim2=2).sum(1)           # chroma energy of the residual
        share = (1 - res / (spread[dst.start].sum(1) * n_px).clamp_min(1e-9)).clamp(0, 1)
        out = torch.minimum(out, torch.where(coloured, share, torch.ones_like(share)))
    return out.float()


def align_pairs(xq: torch.Tensor, xr: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired (n, 32, 32, 3) uint8 images -> the queries and the references aligned to them as the finder aligns a
    candidate (best coarse shift/zoom/mirror, then ECC), each (n, 3, 32, 32) float32 in [0, 1]."""
    qs, ws = [torch.zeros(0, 3, 32, 32)], [torch.zeros(0, 3, 32, 32)]
    for s in range(0, len(xq), chunk):
        q, r = xq[s:s + chunk], xr[s:s + chunk]
        gq, gr = _grey(q), _grey(r)
        rp, rg = (v.half().float()[:, None] for v in _ref_windows(gr))     # as _score keeps them
        p, _ = _ecc(gq, gr, _coarse(gq, rp, rg)[3][:, 0], ECC_STEPS)
        ws.append(_warped_rgb(r, p))
        qs.append(_rgb(q))
    return torch.cat(qs), torch.cat(ws)


def _refine(xq: torch.Tensor, xr: torch.Tensor, p0: torch.Tensor, gap: np.ndarray, measure_floor: float = MEASURE_FLOOR,
            verify: bool = True) -> tuple[torch.Tensor, ...]:
    """Paired images (n, 32, 32, 3), their coarse alignment and retrieval gaps -> (pixel, gradient, colour, verifier)
    at the ECC alignment: the patch correlations of grey levels and of the gradient field, _colour_fit and the
    verifier's logit (lib/verifier.py; not clipped). colour and verifier are measured only where the score could
    reach measure_floor (with colour 1 and the verifier at the top of VERIFIER_CLIP); elsewhere they are NaN, and
    the verifier is NaN everywhere when verify is False (bench/train_verifier.py trains it on this finder)."""
    gq, gr = _grey(xq), _grey(xr)
    p, _ = _ecc(gq, gr, p0, ECC_STEPS)
    gw = _sample(gr, p, _C32).reshape(len(p), 1, 32, 32)
    pix, grad = _patch_ncc(_blur(gq, 0.7), _blur(gw, 0.7)), _patch_ncc(_gradients(gq), _gradients(gw))
    col, ver = torch.full_like(pix, float("nan")), torch.full_like(pix, float("nan"))
    top = np.full(len(p), VERIFIER_CLIP[1], np.float32)
    need = torch.as_tensor(_combine(pix.numpy(), grad.numpy(), np.ones(len(p), np.float32), gap, top) >= measure_floor)
    if need.any():
        cq, cw = _rgb(xq[need]), _warped_rgb(xr[need], p[need])
        col[need] = _colour_fit(cq, cw)
        if verify:
            ver[need] = verifier.default().logits(cq[..., _IN, _IN], cw[..., _IN, _IN])
    return pix, grad, col, ver


def _combine(pixel: np.ndarray, gradient: np.ndarray, colour: np.ndarray, gap: np.ndarray,
             ver: np.ndarray) -> np.ndarray:
    """The score: sigmoid(w0 + w_pixel * pixel + w_gradient * gradient + w_colour * colour + w_gap * gap
    + w_verifier * the verifier's logit clipped to VERIFIER_CLIP)."""
    w0, wp, wg, wc, wh, wv = SCORE_WEIGHTS
    z = w0 + wp * pixel + wg * gradient + wc * colour + wh * gap + wv * np.clip(ver, *VERIFIER_CLIP)
    return (1 / (1 + np.exp(-np.clip(z, -50, 50)))).astype(np.float32)


def _score(*, x_query, x_ref, cand: np.ndarray, sim: np.ndarray, hub: np.ndarray, gate: float | None,
           gate_gap: float | None = None, measure_floor: float = MEASURE_FLOOR, verify: bool = True,
           block: int = 512, progress: bool = False) -> tuple[np.ndarray, ...]:
    """score, pixel, gradient, colour, verifier, coarse score (n_query, k) of each query against its candidates;
    candidates whose coarse score is below `gate` are not refined (score 0, the signals NaN), unless their retrieval
    gap (sim - hub) is at least `gate_gap` (None: no exception). colour and the
    verifier are measured where the score could reach measure_floor, and count as 1 and the top of VERIFIER_CLIP
    elsewhere (NaN in the output); verify=False: the verifier is never run (and counts as that top)."""
    xq_all, xr_all = torch.as_tensor(np.asarray(x_query)), torch.as_tensor(np.asarray(x_ref))
    cand = np.asarray(cand, np.int64)
    n_q, k = cand.shape
    nz = len(_zooms())
    uniq, slot = np.unique(cand, return_inverse=True)
    slot = torch.as_tensor(slot.reshape(n_q, k))
    rp, rg = [torch.zeros((0, nz, d), dtype=torch.half) for d in (144, 288)]
    parts = [_ref_windows(_grey(xr_all[torch.as_tensor(uniq[s:s + 2048])])) for s in range(0, len(uniq), 2048)]
    if parts:   # reference windows once per distinct candidate, float16
        rp, rg = torch.cat([a.half() for a, _ in parts]), torch.cat([b.half() for _, b in parts])
    coarse = np.zeros((n_q, k), np.float32)
    align = np.zeros((n_q, k, 4), np.float32)
    for s in tqdm(range(0, n_q, block), desc="near-duplicate alignment", disable=not progress):
        sl = slot[s:s + block].reshape(-1)
        b = len(sl) // k
        sc, _, _, p = _coarse(_grey(xq_all[s:s + b]), rp[sl].float().reshape(b, k, nz, -1),
                              rg[sl].float().reshape(b, k, nz, -1))
        coarse[s:s + b], align[s:s + b] = sc.numpy(), p.numpy()
    pix = np.full((n_q, k), np.nan, np.float32)
    grad = np.full((n_q, k), np.nan, np.float32)
    col = np.full((n_q, k), np.nan, np.float32)
    ver = np.full((n_q, k), np.nan, np.float32)
    gap = np.asarray(sim, np.float32) - np.asarray(hub, np.float32)[:, None]
    refine = np.ones((n_q, k), bool) if gate is None else coarse >= gate
    if gate is not None and gate_gap is not None:
        refine |= gap >= gate_gap
    qi, ki = np.nonzero(refine)
    for s in range(0, len(qi), 1024):
        q, kk = qi[s:s + 1024], ki[s:s + 1024]
        a, g, c, v = _refine(xq_all[torch.as_tensor(q)], xr_all[torch.as_tensor(cand[q, kk])],
                             torch.as_tensor(align[q, kk]), gap[q, kk], measure_floor, verify)
        pix[q, kk], grad[q, kk], col[q, kk], ver[q, kk] = a.numpy(), g.numpy(), c.numpy(), v.numpy()
    score = np.where(np.isfinite(pix), _combine(np.nan_to_num(pix), np.nan_to_num(grad), np.nan_to_num(col, nan=1.0),
                                                gap, np.nan_to_num(ver, nan=VERIFIER_CLIP[1])), 0)
    return score.astype(np.float32), pix, grad, col, ver, coarse


def score_candidates(*, x_query: np.ndarray | torch.Tensor, x_ref: np.ndarray | torch.Tensor, cand: np.ndarray,
                     same_set: bool = False, progress: bool = False) -> tuple[np.ndarray, ...]:
    """Score of each query against each of its candidates: (score, pixel, gradient, colour, verifier), each
    (n_query, k) float32.

    cand: (n_query, k) reference indices. Every candidate is refined (no COARSE_GATE). The retrieval
    similarity and the query's hub similarity are measured against the whole of x_ref, as in find()
    (same_set: the queries are images of x_ref, and a query's own image does not count as its neighbour).
    """
    x_query, x_ref = np.asarray(x_query), np.asarray(x_ref)
    cand = np.asarray(cand, np.int64)
    sim, hub = _pair_similarity(x_query=x_query, x_ref=x_ref, cand=cand, same_set=same_set)
    return _score(x_query=x_query, x_ref=x_ref, cand=cand, sim=sim, hub=hub, gate=None, progress=progress)[:5]


def score_pairs(*, x_query: np.ndarray | torch.Tensor, x_ref: np.ndarray | torch.Tensor, pairs: np.ndarray,
                same_set: bool = False) -> tuple[np.ndarray, ...]:
    """score_candidates for given (query index, reference index) pairs: (score, pixel, gradient, colour, verifier),
    (n_pairs,) each."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    x_query = np.asarray(x_query)
    out = score_candidates(x_query=x_query[pairs[:, 0]], x_ref=x_ref, cand=pairs[:, 1:2], same_set=same_set)
    return tuple(v[:, 0] for v in out)


# ---------------------------------------------------------------- search

def candidates(*, x_query: np.ndarray, x_ref: np.ndarray, top_k: int, same_set: bool = False,
               query_block: int = 1024, ref_block: int = 4096, progress: bool = True) -> np.ndarray:
    """(n_query, min(top_k, n_ref)) int64: the reference images most similar to each query by the retrieval
    descriptor (the better of the query and its mirror image), most similar first.

    same_set: x_query is x_ref; a query is never its own candidate (min(top_k, n_ref - 1) columns).
    Memory: the reference descriptors, (n_ref, 432) then (n_ref, 2 * WHITEN_DIMS) float32, and one
    (query_block, ref_block) float32 similarity block at a time.
    """
    return _retrieve(x_query=x_query, x_ref=x_ref, top_k=top_k, same_set=same_set, query_block=query_block,
                     ref_block=ref_block, progress=progress).cand


def near_scores(*, x_query: np.ndarray, x_ref: np.ndarray, top_k: int, same_set: bool = False,
                rows: np.ndarray | None = None, progress: bool = False) -> pd.DataFrame:
    """Every retrieved candidate of the queries `rows` (default all) with find()'s signals: query_idx, ref_idx,
    score, pixel, gradient, colour, verifier (score 0 and NaN signals below COARSE_GATE, see COARSE_GATE_GAP). find()
    flags these by its thresholds; a query's candidates do not depend on which other queries are searched, so a
    subset gives find()'s answer for those queries (tests use this)."""
    rows = np.arange(len(x_query)) if rows is None else np.asarray(rows, np.int64)
    ret = _retrieve(x_query=x_query, x_ref=x_ref, top_k=top_k, same_set=same_set, rows=rows, progress=progress)
    xq = np.asarray(x_ref if same_set else x_query)[rows]
    out = _score(x_query=xq, x_ref=x_ref, cand=ret.cand, sim=ret.sim, hub=ret.hub, gate=COARSE_GATE,
                 gate_gap=COARSE_GATE_GAP, progress=progress)
    k = ret.cand.shape[1]
    return pd.DataFrame({"query_idx": np.repeat(rows, k), "ref_idx": ret.cand.reshape(-1),
                         **{name: v.reshape(-1) for name, v in zip(_SIGNALS, out)}})


def find(*, x_query: np.ndarray, x_ref: np.ndarray, near_threshold: float, review_threshold: float,
         top_k: int, exact_only: bool = False, same_set: bool = False, progress: bool = True) -> Found:
    """Exact and near duplicates of each query image among the reference images.

    near_threshold, review_threshold: thresholds on the score (how likely the pair is the same shot; 0.90 is the
    operating point it was calibrated to, see the module docstring).
    same_set: x_query is x_ref (e.g. test against test): no self pairs, each pair once (query < ref).
    """
    t0 = time.perf_counter()
    exact = exact_pairs(x_query=x_query, x_ref=x_ref, same_set=same_set)
    rows = [pd.DataFrame({"query_idx": exact[:, 0], "ref_idx": exact[:, 1], "kind": "exact", "score": 1.0,
                          "pixel": 1.0, "gradient": 1.0, "colour": 1.0, "verifier": np.nan, "verdict": "confirm"})]
    best_score = np.zeros(len(x_query), np.float32)
    best_ref = np.full(len(x_query), -1, np.int64)
    if not exact_only and len(x_query) and len(x_ref) > (1 if same_set else 0):
        c = near_scores(x_query=x_query, x_ref=x_ref, top_k=top_k, same_set=same_set, progress=progress)
        q, r, score = c["query_idx"].to_numpy(), c["ref_idx"].to_numpy(), c["score"].to_numpy()
        order = np.lexsort((-score, q))                           # per query, best first
        first = order[np.r_[True, q[order][1:] != q[order][:-1]]]
        scored = score[first] > 0
        best_score[q[first][scored]] = score[first][scored]
        best_ref[q[first][scored]] = r[first][scored]
        c = c[score >= review_threshold]
        q, r = c["query_idx"].to_numpy(), c["ref_idx"].to_numpy()
        if same_set:  # each unordered pair once, as (smaller, larger)
            q, r = np.minimum(q, r), np.maximum(q, r)
        near = pd.DataFrame({"query_idx": q, "ref_idx": r,
                             "kind": np.where(c["score"] >= near_threshold, "near", "review"),
                             **{name: c[name].to_numpy(np.float64) for name in _SIGNALS}})
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
