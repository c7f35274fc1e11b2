"""Cheap memorization estimators against the many-model ground truth (issue 20), measured in one run.

  1. the cost of recording training dynamics: train_model with record_dynamics off and on, interleaved
     pairs on the truth's data and model (full set), CPU seconds of the training process (wall too);
     goal <= 10 % slower;
  2. agreement with the truth against compute (model-trainings x epochs), for each estimator of
     lib/estimators.py: Spearman with the truth's mem, the top-|S| overlap with the truth's set S
     (mem >= 0.25; precision = recall at that size), FZ 0/1's precision / recall of S at its own
     threshold, and the recall of the truth's high-influence pairs (the top 50 passing FZ's rule). Seeded repeats (random draws of
     k models) in both directions of the split: the truth of one pool of subset models scores
     estimators drawn from the other pool, never from the models it was computed from; the
     training-dynamics models are separate full-set trainings. shrunk_dynM: FZ 0/1 from k subset models
     shrunk toward its prediction from M dynamics models (compute: k + M model-trainings);
  3. the answer: the compute at which each estimator first reaches (mean over repeats) the agreement
     FZ's 0/1 estimate has with every model of a pool; a plot of the curves goes to
     figures/estimators/agreement_vs_compute.png.

Needs `make truth` (runs/truth/ and bench/data/truth_reference.npz); without it only part 1 runs.
Run: `make bench` or `python bench/bench_estimators.py [--repeats R] [--overhead-pairs N]`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from lib import data, params
from lib import estimators as E
from lib.subsets import open_subset_store
from lib.train import train_model

REFERENCE = ROOT / "bench" / "data" / "truth_reference.npz"
FIGURE = ROOT / "figures" / "estimators" / "agreement_vs_compute.png"
KS = (8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724)  # FZ subset models from a pool (x sqrt 2;
#                                                                     plus the whole pool)
MS = (1, 2, 4, 8, 16)                # training-dynamics models drawn from the dynamics store
SHRINK_MS = (4, 16)                  # dynamics models behind the shrunk (combined) estimator
SOFT_SCALE = 0.25  # logits; fz_margin on sigmoid(margin / 0.25). Picked on a first look at 88 truth models
#                    (0.25 / 0.5 / 1 / 2 / 4, both directions): its lead over FZ 0/1 is optimistic by that choice
METRICS = ("spearman", "set_topS", "pair_recall")


# ---------------------------------------------------------------- 1. recording overhead
def recording_overhead(P, ds, *, n_pairs: int) -> dict:
    """Median CPU-seconds (and wall) ratio of record_dynamics on / off over interleaved pairs of full-set models."""
    hp = E.dynamics_hparams(P)
    idx = np.arange(len(ds.y_train))

    def one(record: bool, seed: int) -> tuple[float, float]:
        c0, w0 = time.process_time(), time.perf_counter()
        train_model(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test, train_idx=idx,
                    n_classes=ds.n_classes, seed=seed, hp=hp, device="cpu", threads=1, record_dynamics=record)
        return time.process_time() - c0, time.perf_counter() - w0

    one(False, 0)  # warm-up (allocator, first-call kernels)
    off, on = [], []
    for pair in range(n_pairs):  # alternate which goes first, so a load change hits both sides alike
        order = (False, True) if pair % 2 == 0 else (True, False)
        for record in order:
            (on if record else off).append(one(record, seed=100 + pair))
    off, on = np.array(off), np.array(on)
    return dict(cpu_off=np.median(off[:, 0]), cpu_on=np.median(on[:, 0]), wall_off=np.median(off[:, 1]),
                wall_on=np.median(on[:, 1]), cpu_ratio=np.median(on[:, 0] / off[:, 0]),
                wall_ratio=np.median(on[:, 1] / off[:, 1]))


# ---------------------------------------------------------------- 2. agreement vs compute
def agreement(score, *, truth: dict, infl=None) -> dict:
    """score (n_train,) against one pool's truth; infl (n_train, n_test) or None (no pair estimate)."""
    s_true = truth["set"]
    found = E.top_n(score, len(s_true))
    out = dict(spearman=E.spearman(score, truth["mem"]), set_topS=E.precision_recall(found, s_true)[1],
               pair_recall=np.nan)
    if infl is not None:
        out["pair_recall"] = E.pair_recall(infl, truth_train=truth["pair_train"], truth_test=truth["pair_test"],
                                           y_train=truth["y_train"], y_test=truth["y_test"])
    return out


def load_pool(store, ids: np.ndarray) -> dict:
    """The subset store's rows `ids` in memory (float32 margins)."""
    return dict(masks=np.asarray(store.masks[ids]), train_correct=np.asarray(store.train_correct[ids]),
                train_margin=np.asarray(store.train_margin[ids], np.float32),
                test_correct=np.asarray(store.test_correct[ids]),
                test_margin=np.asarray(store.test_margin[ids], np.float32))


def curves(ref: dict, subsets, dyn, *, epochs: int, repeats: int, seed: int) -> list[dict]:
    """One row per (estimator, compute, direction, repeat) with the three agreement measures."""
    rows = []
    thr = float(ref["mem_threshold"])
    truths = {p: dict(mem=ref[f"mem_{p}"], set=ref[f"memorized_idx_{p}"], pair_train=ref[f"pair_train_{p}"],
                      pair_test=ref[f"pair_test_{p}"], y_train=ref["y_train"], y_test=ref["y_test"])
              for p in E.POOLS}
    for d, (truth_pool, est_pool) in enumerate([("even", "odd"), ("odd", "even")]):
        truth = truths[truth_pool]
        pool = load_pool(subsets, ref[f"model_ids_{est_pool}"])
        n_pool = len(pool["masks"])
        for k in sorted({k for k in KS if k < n_pool} | {n_pool}):
            for rep in range(1 if k == n_pool else repeats):
                rng = np.random.default_rng([seed, d, k, rep])
                r = np.sort(rng.choice(n_pool, k, replace=False))
                m = pool["masks"][r]
                s01 = E.mem_mod.memorization(masks=m, train_correct=pool["train_correct"][r])
                fz = s01.mem.astype(np.float64)
                fzm = E.fz_margin(masks=m, train_margin=pool["train_margin"][r])
                fzs = E.fz_margin(masks=m, train_margin=pool["train_margin"][r], scale=SOFT_SCALE)
                a01 = agreement(fz, truth=truth, infl=E.influence_matrix(masks=m, test_values=pool["test_correct"][r]))
                p, rc = E.precision_recall(np.flatnonzero(fz >= thr), truth["set"])
                a01.update(set_precision_thr=p, set_recall_thr=rc)
                am = agreement(fzm, truth=truth, infl=E.influence_matrix(masks=m, test_values=pool["test_margin"][r]))
                soft_test = 0.5 * (1 + np.tanh(pool["test_margin"][r] / (2 * SOFT_SCALE)))
                asoft = agreement(fzs, truth=truth, infl=E.influence_matrix(masks=m, test_values=soft_test))
                for name, a in (("fz_01", a01), ("fz_margin", am), (f"fz_soft{SOFT_SCALE}", asoft)):
                    rows.append(dict(estimator=name, models=k, compute=k * epochs, direction=d, repeat=rep, **a))
                for mm in ([] if dyn is None else SHRINK_MS):  # FZ from k models + mm dynamics models
                    pick = np.random.default_rng([seed, 9, d, k, rep, mm]).choice(len(dyn["dyn_loss"]), mm, replace=False)
                    feats = E.dynamics_features(dyn["dyn_loss"][pick], dyn["dyn_margin"][pick])
                    a = agreement(E.shrunk(fz=fz, se=s01.se, features=feats), truth=truth)
                    a["pair_recall"] = a01["pair_recall"]  # pairs: FZ's influence, unchanged
                    rows.append(dict(estimator=f"shrunk_dyn{mm}", models=k + mm, compute=(k + mm) * epochs,
                                     direction=d, repeat=rep, **a))
        if dyn is None:
            continue
        n_dyn = len(dyn["dyn_loss"])
        for mm in sorted({m for m in MS if m < n_dyn} | {n_dyn}):
            for rep in range(1 if mm == n_dyn else repeats):
                rng = np.random.default_rng([seed, 7, d, mm, rep])
                r = np.sort(rng.choice(n_dyn, mm, replace=False))
                for name, score in (("cumulative_loss", E.cumulative_loss(dyn["dyn_loss"][r])),
                                    ("slow_learning", E.slow_learning(dyn["dyn_margin"][r])),
                                    ("late_learning", E.late_learning(dyn["dyn_margin"][r]))):
                    rows.append(dict(estimator=name, models=mm, compute=mm * epochs, direction=d, repeat=rep,
                                     **agreement(score, truth=truth)))
    return rows


def summarize(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    g = df.groupby(["estimator", "models", "compute"])[list(METRICS)]
    lo, hi = g.min().add_suffix("_min"), g.max().add_suffix("_max")
    return df, g.mean().join(lo).join(hi).reset_index()


def answer(table, *, anchor_k: int) -> list[str]:
    """For each estimator and metric: the smallest compute whose mean agreement reaches FZ 0/1's at
    anchor_k, and how far it gets within 1/10 of that compute."""
    anchor = table[(table.estimator == "fz_01") & (table.models == anchor_k)].iloc[0]
    lines = []
    for metric in METRICS:
        target = anchor[metric]
        lines.append(f"{metric}: FZ 0/1 at k = {anchor_k} ({anchor.compute:.0f} model-epochs) has {target:.3f}")
        for est, t in table.groupby("estimator"):
            t = t.sort_values("compute")
            if t[metric].isna().all():
                lines.append(f"  {est:16s} gives no estimate of this kind")
                continue
            tenth = t[t.compute <= anchor.compute / 10]
            at_tenth = (f"within 1/10 of the compute: {tenth[metric].max():.3f} (best, at "
                        f"{tenth.loc[tenth[metric].idxmax()].models:.0f} models)" if len(tenth) else "")
            ok = t[(t[metric] >= target - 1e-12) & ~((t.estimator == "fz_01") & (t.models == anchor_k))]
            if len(ok):
                c = ok.iloc[0]
                lines.append(f"  estimator {est} reaches the agreement FZ 0/1 has at k = {anchor_k} with "
                             f"{c.models:.0f} model-trainings ({c.compute:.0f} model-epochs, "
                             f"{c.compute / anchor.compute:.1%} of the compute; {c[metric]:.3f}); {at_tenth}")
            else:
                best = t.loc[t[metric].idxmax()]
                lines.append(f"  estimator {est} does not reach it: best {best[metric]:.3f} at {best.models:.0f} "
                             f"models ({best.compute / anchor.compute:.1%} of the compute); {at_tenth}")
    return lines


def plot(table, *, anchor_k: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = dict(spearman="Spearman with the truth's mem", set_topS="overlap with the mem >= 0.25 set (top-|S|)",
                  pair_recall="recall of the truth's high-influence pairs")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    anchor = table[(table.estimator == "fz_01") & (table.models == anchor_k)].iloc[0]
    colors = {est: plt.cm.tab10(i) for i, est in enumerate(sorted(table.estimator.unique()))}  # same in every panel
    for ax, metric in zip(axes, METRICS):
        for est, t in table.groupby("estimator"):
            if t[metric].isna().all():
                continue
            t = t.sort_values("compute")
            ax.plot(t.compute, t[metric], marker="o", ms=3, label=est, color=colors[est])
            ax.fill_between(t.compute, t[f"{metric}_min"], t[f"{metric}_max"], alpha=0.2, color=colors[est])
        ax.axhline(anchor[metric], ls="--", c="gray", lw=1, label=f"FZ 0/1 at k = {anchor_k}")
        ax.axvline(anchor.compute / 10, ls=":", c="gray", lw=1, label="1/10 of its compute")
        ax.set_xscale("log")
        ax.set_xlabel("compute: model-trainings x epochs")
        ax.set_title(titles[metric], fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="random draws of k models per k and direction")
    ap.add_argument("--overhead-pairs", type=int, default=4, help="off/on model pairs for the recording cost (0: skip)")
    ap.add_argument("--reference", default=str(REFERENCE), help="the truth's reference .npz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    P = params.load("truth")
    ds = data.load(P)
    load0 = os.getloadavg()

    print("== 1. recording per-epoch per-example loss and margin: cost (full-set truth model, one thread)")
    o = recording_overhead(P, ds, n_pairs=args.overhead_pairs) if args.overhead_pairs else None
    print("skipped (--overhead-pairs 0)") if o is None else print(f"off {o['cpu_off']:.2f} CPU-s, on {o['cpu_on']:.2f} CPU-s: {o['cpu_ratio'] - 1:+.1%} (median of "
          f"{args.overhead_pairs} interleaved pairs; goal <= +10 %); wall {o['wall_off']:.2f} vs {o['wall_on']:.2f} s "
          f"({o['wall_ratio'] - 1:+.1%}); load average {os.getloadavg()[0]:.1f}")

    print("\n== 2. agreement with the ground truth against compute")
    try:
        ref = E.read_reference(args.reference)
        subsets = open_subset_store(P, ds=ds, mode="r")
    except FileNotFoundError as e:
        print(f"skipped: {e}. Run `make truth` first (about an hour on 2 cores).")
        return
    if str(ref["meta_data_digest"]) != data.content_digest(ds):
        raise SystemExit(f"{args.reference} was made on other data than params/truth.yaml selects; rerun `make truth`")
    missing = np.setdiff1d(ref["model_ids"], subsets.done())
    if len(missing):
        raise SystemExit(f"{len(missing)} models of the reference are not completed in {subsets.path}")
    try:
        dstore = E.open_dynamics_store(P, ds=ds, mode="r")
        done = dstore.done()
        dyn = dict(dyn_loss=np.asarray(dstore.dyn_loss[done], np.float32),
                   dyn_margin=np.asarray(dstore.dyn_margin[done], np.float32)) if len(done) else None
    except FileNotFoundError:
        dyn = None
    n_even, n_odd = len(ref["model_ids_even"]), len(ref["model_ids_odd"])
    se = ref["se"]
    print(f"truth: {len(ref['model_ids'])} subset models (r = {P.subset_ratio}, {P.epochs} epochs) in two disjoint "
          f"pools of {n_even} / {n_odd}; all-model SE median {np.median(se):.4f}, max {se.max():.4f}; per pool "
          f"median {np.median(ref['se_even']):.4f}; |S| = {len(ref['memorized_idx'])} (all), "
          f"{len(ref['memorized_idx_even'])} / {len(ref['memorized_idx_odd'])} (pools); pairs "
          f"{len(ref['pair_train_even'])} / {len(ref['pair_train_odd'])}; "
          f"{0 if dyn is None else len(dyn['dyn_loss'])} dynamics models")
    rows = curves(ref, subsets, dyn, epochs=P.epochs, repeats=args.repeats, seed=args.seed)
    df, table = summarize(rows)
    anchor_k = min(n_even, n_odd)
    with_thr = df[df.estimator == "fz_01"].groupby("models")[["set_precision_thr", "set_recall_thr"]].mean()
    print(table[["estimator", "models", "compute", *METRICS]].to_string(index=False, float_format="%.3f"))
    print("\nFZ 0/1 at its own threshold (mem >= 0.25): precision / recall of the truth's set")
    print(with_thr.to_string(float_format="%.3f"))
    print("\n== 3. the answer (means over repeats and both directions)")
    for line in answer(table, anchor_k=anchor_k):
        print(line)
    print(f"\nplot: {plot(table, anchor_k=anchor_k, path=FIGURE).relative_to(ROOT)}; load average at start "
          f"{load0[0]:.1f}, now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
