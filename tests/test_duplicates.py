"""The duplicate finder against known answers: planted duplicates of real CIFAR images, and ciFAIR's
judged lists on the official copy (the report half, which its settings were not tuned on)."""
import numpy as np
import pandas as pd
import pytest

from lib import cifair, data, duplicates, params, planted

# bench/bench_duplicates.py chose the finder's settings on planted sets drawn from the *test* split
# with seed params.seed of the quick set (0). This test holds both out: its pool is the *train* split
# (less any image byte-identical to a test image) and its seeds are other ones; precision and recall
# are pooled over the seeds, so the margins hold over several draws, not one.
HELD_OUT_SEEDS = (101, 202, 303)
# Recall of ciFAIR's judgments 0 + 1 at the default automatic verdict, on the report half (measured
# 0.908 train-test, 276 of 304 pairs, and 0.886 within test, 31 of 35, by bench/bench_duplicates.py);
# each floor is the measured value less about 1 %, so losing 3 train-test pairs or 1 within-test pair fails.
# The goal was 0.98: not reached (at top_k 6 retrieval alone misses 3.6 % (report) to 5.4 % (tuning) of them).
CIFAIR_RECALL_FLOOR = 0.90
CIFAIR_WITHIN_RECALL_FLOOR = 0.88


@pytest.fixture(scope="module")
def cifar():
    """The CIFAR-100 copy the tests are pointed at, read once for the module."""
    return data.load_cifar(dataset="cifar100")


@pytest.fixture(scope="module")
def held_out_pool(cifar):
    """Train images none of which is byte-identical to a test image (the bench's pool)."""
    in_test = set(data.image_hashes(cifar.x_test))
    keep = np.array([h not in in_test for h in data.image_hashes(cifar.x_train)])
    return cifar.x_train[keep]


def _pooled(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """planted_quality tables of several seeds -> one table of summed counts and pooled precision/recall."""
    t = pd.concat(tables).groupby("kind", sort=False)[["positives", "flagged", "true_pos"]].sum()
    t["precision"] = t["true_pos"] / t["flagged"].where(t["flagged"] > 0)
    t["recall"] = t["true_pos"] / t["positives"].where(t["positives"] > 0)
    return t


@pytest.mark.slow
def test_planted_precision_recall_held_out(held_out_pool, smoke):
    assert params.load("quick").seed not in HELD_OUT_SEEDS  # the bench's seed is not a test seed
    auto, listed = [], []
    for seed in HELD_OUT_SEEDS:
        # reference: 800 real images; queries: 20 per kind planted from other images, 20 per kind with no
        # original in the reference (images repeated in CIFAR itself are set aside first)
        ps = planted.planted_set(x_pool=held_out_pool, n_ref=800, n_positive_per_kind=20, n_negative_per_kind=20,
                                 seed=seed, clean_threshold=smoke.dup_review_threshold)
        found = duplicates.find(x_query=ps.x_query, x_ref=ps.x_ref, near_threshold=smoke.dup_near_threshold,
                                review_threshold=smoke.dup_review_threshold, top_k=smoke.dup_top_k, progress=False)
        auto.append(planted.planted_quality(planted=ps, pairs=found.pairs))
        listed.append(planted.planted_quality(planted=ps, pairs=found.pairs, kinds=("exact", "near", "review")))
    q, q_listed = _pooled(auto), _pooled(listed)
    assert q.loc["all", "positives"] == 100 * len(HELD_OUT_SEEDS)
    assert q.loc["exact", "recall"] == 1.0 and q.loc["exact", "precision"] == 1.0, q
    assert q.loc["all", "recall"] >= 0.95, q
    assert q.loc["all", "precision"] >= 0.95, q
    # every planted positive is at least listed (near or for review) with its own original
    assert q_listed.loc["all", "recall"] >= 0.97, q_listed


def _recall(listed: pd.DataFrame, flagged: set[tuple[int, int]], unordered: bool = False) -> float:
    key = (lambda a, b: (min(a, b), max(a, b))) if unordered else (lambda a, b: (a, b))
    hit = [key(a, b) in flagged for a, b in zip(listed["test_idx"], listed["train_idx"])]
    return float(np.mean(hit))


@pytest.mark.slow
def test_cifair_recall_on_the_report_half(cifar_full, smoke):
    """find()'s automatic verdict on ciFAIR's judgments 0 + 1, report half, train-test and within test.

    Only the listed test images are searched (near_scores: a query's candidates and scores do not depend on
    the other queries), against the whole train (or test) set, with find()'s code path and defaults."""
    assert cifar_full.verdict == data.OFFICIAL_CONTENT  # ciFAIR's indices need the official order
    report = ~planted.cifair_halves(len(cifar_full.x_test))
    near = smoke.dup_near_threshold

    lst = cifair.load(dataset="cifar100")
    lst = lst[report[lst["test_idx"]] & lst["judgment"].isin([0, 1])]
    queries = np.unique(lst["test_idx"])
    c = duplicates.near_scores(x_query=cifar_full.x_test, x_ref=cifar_full.x_train, top_k=smoke.dup_top_k,
                               rows=queries)
    exact = duplicates.exact_pairs(x_query=cifar_full.x_test[queries], x_ref=cifar_full.x_train)
    flagged = set(zip(c.loc[c["score"] >= near, "query_idx"], c.loc[c["score"] >= near, "ref_idx"]))
    flagged |= {(int(queries[q]), int(r)) for q, r in exact}
    assert _recall(lst[lst["judgment"] == 0], flagged) == 1.0
    recall = _recall(lst, flagged)
    assert recall >= CIFAIR_RECALL_FLOOR, f"train-test recall {recall:.3f} on {len(lst)} report-half pairs"

    within = cifair.load(dataset="cifar100", within_test=True)
    within = within[report[within["test_idx"]] & within["judgment"].isin([0, 1])]
    both = np.unique(np.r_[within["test_idx"], within["train_idx"]])   # find(same_set) looks from either side
    c = duplicates.near_scores(x_query=cifar_full.x_test, x_ref=cifar_full.x_test, top_k=smoke.dup_top_k,
                               same_set=True, rows=both)
    c = c[c["score"] >= near]
    flagged = {(min(a, b), max(a, b)) for a, b in zip(c["query_idx"], c["ref_idx"])}
    flagged |= {tuple(p) for p in duplicates.exact_pairs(x_query=cifar_full.x_test, x_ref=cifar_full.x_test,
                                                          same_set=True).tolist()}
    recall = _recall(within, flagged, unordered=True)
    assert recall >= CIFAIR_WITHIN_RECALL_FLOOR, f"within-test recall {recall:.3f} on {len(within)} report-half pairs"


def test_exact_duplicates_always_found(smoke_data):
    x_ref = smoke_data.x_train[:400]
    rng = np.random.default_rng(1)
    idx_copy = rng.choice(len(x_ref), size=25, replace=False)
    x_query = np.concatenate([smoke_data.x_test[:75], x_ref[idx_copy]])
    pairs = duplicates.exact_pairs(x_query=x_query, x_ref=x_ref)
    got = set(map(tuple, pairs.tolist()))
    # each planted copy is found, plus any byte-identical images the sets already shared
    assert {(75 + i, int(j)) for i, j in enumerate(idx_copy)} <= got
    # one changed pixel value is no longer an exact copy
    x_query[-1, 0, 0, 0] ^= 1
    assert (99, int(idx_copy[-1])) not in set(map(tuple, duplicates.exact_pairs(x_query=x_query, x_ref=x_ref).tolist()))
    # exact pairs come first in find(), with score 1 and verdict confirm, even with exact hashing only
    found = duplicates.find(x_query=x_query, x_ref=x_ref, near_threshold=0.9, review_threshold=0.4, top_k=4,
                            exact_only=True, progress=False)
    ex = found.pairs[found.pairs["kind"] == "exact"]
    assert {(75 + i, int(j)) for i, j in enumerate(idx_copy[:-1])} <= set(zip(ex["query_idx"], ex["ref_idx"]))
    assert (ex["score"] == 1.0).all() and (ex["verdict"] == "confirm").all()


def test_same_set_lists_each_pair_once_without_self_pairs(smoke_data):
    x = np.concatenate([smoke_data.x_test[:200], smoke_data.x_test[[3, 7]]])  # rows 200, 201 copy rows 3, 7
    found = duplicates.find(x_query=x, x_ref=x, near_threshold=0.9, review_threshold=0.4, top_k=4,
                            same_set=True, progress=False)
    p = found.pairs
    assert (p["query_idx"] < p["ref_idx"]).all()
    assert not p.duplicated(["query_idx", "ref_idx"]).any()
    ex = set(zip(p.loc[p["kind"] == "exact", "query_idx"], p.loc[p["kind"] == "exact", "ref_idx"]))
    assert {(3, 200), (7, 201)} <= ex


def test_near_scores_of_a_subset_equal_find(smoke_data):
    # tests and the bench score a subset of queries; it must be exactly what find() computes for them
    xq, xr = smoke_data.x_test[:120], smoke_data.x_train[:600]
    found = duplicates.find(x_query=xq, x_ref=xr, near_threshold=0.9, review_threshold=0.0, top_k=4, progress=False)
    rows = np.array([5, 17, 60, 119])
    sub = duplicates.near_scores(x_query=xq, x_ref=xr, top_k=4, rows=rows)
    full = found.pairs.set_index(["query_idx", "ref_idx"])["score"]
    for q, r, s in zip(sub["query_idx"], sub["ref_idx"], sub["score"]):
        if s > 0:
            assert full.loc[(q, r)] == pytest.approx(s, abs=1e-6)


def test_retrieval_descriptor_mirrors_exactly(smoke_data):
    # similarity = even . even + |odd . odd| is the better of the two orientations only if a left-right
    # flip permutes the raw descriptor exactly as _mirror() says
    import torch
    x = torch.as_tensor(smoke_data.x_test[:64])
    a, _ = duplicates._raw_descriptors(x)
    b, _ = duplicates._raw_descriptors(x.flip(2))
    assert (b - a[:, duplicates._mirror()]).abs().max() < 1e-3


def test_scores_identity_mirror_and_transform_order(smoke_data):
    x = smoke_data.x_test[:64]
    diag = np.stack([np.arange(64)] * 2, 1)
    same = duplicates.score_pairs(x_query=x, x_ref=x, pairs=diag)[0]
    assert np.all(same > 0.98)
    mirrored = duplicates.score_pairs(x_query=np.ascontiguousarray(x[:, :, ::-1]), x_ref=x, pairs=diag)[0]
    assert np.all(mirrored > 0.98)
    shifted = planted.plant(x=x, kinds=["shift"] * 64, seed=3)
    s_shift = duplicates.score_pairs(x_query=shifted, x_ref=x, pairs=diag)[0]
    other = duplicates.score_pairs(x_query=shifted, x_ref=x, pairs=np.stack([np.arange(64), (np.arange(64) + 1) % 64], 1))[0]
    assert np.median(s_shift) > 0.95 and np.median(other) < 0.2
    assert ((0 <= other) & (other <= 1)).all()


def test_colour_fit_accepts_recoloured_copies_and_rejects_other_colours(smoke_data):
    import torch
    x = duplicates._rgb(torch.as_tensor(smoke_data.x_test[:64]))                # (n, 3, 32, 32) float queries
    ref = x.clone()                                                              # and their "aligned" copies
    assert (duplicates._colour_fit(x, ref) > 0.99).all()
    # an invertible global recolouring keeps the colour signal: swapped channels, a tint with less contrast
    for m, b in ((torch.eye(3)[[2, 0, 1]], 0.0), (0.6 * torch.eye(3), torch.tensor([0.2, 0.1, 0.0]))):
        recoloured = (torch.einsum("ij,njhw->nihw", m, ref) + torch.as_tensor(b).reshape(-1, 1, 1)).clamp(0, 1)
        assert (duplicates._colour_fit(x, recoloured) > 0.9).float().mean() > 0.9
    # the same layout with the colours of one half of the image swapped (a red can where a green one was) does not
    part = ref.clone()
    part[:, :, :, 16:] = part[:, [1, 2, 0], :, 16:]
    chroma = (ref - ref.mean(1, keepdim=True))[..., 16:].std((2, 3)).mean(1)
    colourful = chroma > 0.05
    assert colourful.sum() >= 10
    assert np.median(duplicates._colour_fit(x, part)[colourful].numpy()) < 0.7
    # a grey image says nothing about colour: 1
    grey = ref.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert (duplicates._colour_fit(x, grey) == 1).all()


def test_views_resample_as_grid_sample(smoke_data, monkeypatch):
    import torch
    import torch.nn.functional as F
    monkeypatch.setattr(duplicates, "VIEWS", ((1.25, 0.0, 0.0), (0.8, 0.1, -0.05)))
    x = torch.as_tensor(smoke_data.x_test[:16])
    v = duplicates._views(x)
    th = torch.tensor([[[1 / 1.25, 0, 0], [0, 1 / 1.25, 0]], [[1 / 0.8, 0, 0.1], [0, 1 / 0.8, -0.05]]]).repeat(16, 1, 1)
    img = x.permute(0, 3, 1, 2).float().repeat_interleave(2, 0)
    want = F.grid_sample(img, F.affine_grid(th, img.shape, align_corners=False), padding_mode="border",
                         align_corners=False).permute(0, 2, 3, 1)
    assert (v - want).abs().max() < 0.01


def test_views_bring_cropped_copies_up(cifar, monkeypatch):
    # copies cropped off-centre to about 3/4 of the image and rescaled: re-ranking with the query's VIEWS
    # ranks them higher than the query's own descriptor does
    import torch
    x_ref = cifar.x_train[:6000]
    views = duplicates.VIEWS
    monkeypatch.setattr(duplicates, "VIEWS", ((1.35, 0.08, -0.06),))
    x_query = duplicates._views(torch.as_tensor(x_ref[:150])).round().clamp(0, 255).byte().numpy()

    def ranks():
        c = duplicates.candidates(x_query=x_query, x_ref=x_ref, top_k=50, progress=False)
        return np.array([np.flatnonzero(row == i)[0] if (row == i).any() else 50 for i, row in enumerate(c)])
    monkeypatch.setattr(duplicates, "VIEWS", views)
    with_views = ranks()
    monkeypatch.setattr(duplicates, "VIEWS", ())
    without = ranks()
    assert (with_views == 0).mean() >= (without == 0).mean() + 0.05, ((with_views == 0).mean(), (without == 0).mean())
    assert (with_views <= without).mean() > 0.9


@pytest.mark.slow
def test_retrieval_gap_overrides_the_coarse_gate(cifar_full):
    """Test 2596 and train 14396 are the same photo of a worm (pixel agreement 0.99 once aligned; ciFAIR lists the
    pair). The 2-pixel coarse grid underrates the thin bright line (coarse score below COARSE_GATE), but retrieval
    singles the train image out (its similarity is COARSE_GATE_GAP or more above the query's hub), so it is refined
    and confirmed; without the exception it scored 0."""
    q, r, defaults = 2596, 14396, params.Params()
    x_q = cifar_full.x_test[[q]]
    ret = duplicates._retrieve(x_query=x_q, x_ref=cifar_full.x_train, top_k=defaults.dup_top_k)
    k = list(ret.cand[0]).index(r)
    kw = dict(x_query=x_q, x_ref=cifar_full.x_train, cand=ret.cand, sim=ret.sim, hub=ret.hub,
              gate=duplicates.COARSE_GATE)
    plain, bypass = duplicates._score(**kw), duplicates._score(**kw, gate_gap=duplicates.COARSE_GATE_GAP)
    assert plain[5][0, k] < duplicates.COARSE_GATE and ret.sim[0, k] - ret.hub[0] >= duplicates.COARSE_GATE_GAP
    assert plain[0][0, k] == 0 and bypass[1][0, k] > 0.95
    c = duplicates.near_scores(x_query=cifar_full.x_test, x_ref=cifar_full.x_train, top_k=defaults.dup_top_k,
                               rows=np.array([q]))
    assert c.loc[c["ref_idx"] == r, "score"].item() >= defaults.dup_near_threshold


def test_measure_floor_only_skips_pairs_that_cannot_reach_it(smoke_data):
    # floor 0.9, not the default 0.5: with the fitted weights nearly every refined pair could reach 0.5 with colour 1
    # and the verifier at the top of VERIFIER_CLIP, so at 0.5 almost nothing is skipped and the skip is not tested
    x = smoke_data.x_test[:200]
    cand = duplicates.candidates(x_query=x, x_ref=smoke_data.x_train[:800], top_k=4, progress=False)
    sim, hub = duplicates._pair_similarity(x_query=x, x_ref=smoke_data.x_train[:800], cand=cand)
    kw = dict(x_query=x, x_ref=smoke_data.x_train[:800], cand=cand, sim=sim, hub=hub, gate=None)
    at = 0.9
    floor, every = duplicates._score(**kw, measure_floor=at), duplicates._score(**kw, measure_floor=0.0)
    high = every[0] >= at
    assert high.sum() >= 5 and (~high).sum() >= 100
    assert np.allclose(floor[0][high], every[0][high], atol=1e-6)          # a pair that can reach it is measured
    assert (floor[0][~high] < at + 1e-6).all() and (floor[0][~high] >= every[0][~high] - 1e-6).all()  # an upper bound
    assert np.isnan(floor[3]).any() and not np.isnan(every[3]).any()
    assert np.isnan(floor[4]).any() and not np.isnan(every[4]).any()     # the verifier is gated as colour is
    assert np.array_equal(np.isnan(floor[3]), np.isnan(floor[4]))
