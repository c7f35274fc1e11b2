"""The paper's evidence as reviewable tables: which memorized points have a copy in the test set (its
Figures 1 and 2), how ciFAIR's judgments and the project's finder agree on them, and where each
high-influence pair can be reviewed.

Pure functions on the run folder's tables (duplicates.csv after review, groups.csv, the pairs)
and the images; the notebooks draw what these return (lib/grids.py) and save the tables.
Every row is keyed as the review files are: (train_idx, test_idx) for a pair, group_id for a group.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import subpop

JUDGMENT_NAMES = {0: "exact", 1: "near-duplicate", 2: "very similar", -1: "not listed"}
FINDER_ORDER = ("exact", "near", "review", "none")  # the finder's verdicts, strongest first


def max_pixel_difference(x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """(n,) int: the largest |difference| of any channel of any pixel, per image pair (0: byte-identical)."""
    a, b = np.asarray(x_a, np.int16), np.asarray(x_b, np.int16)
    return np.abs(a - b).reshape(len(a), -1).max(axis=1) if len(a) else np.zeros(0, np.int64)


def duplicate_evidence(dups: pd.DataFrame, *, kinds: tuple[str, ...], memorized_idx: np.ndarray, pairs,
                       mem: np.ndarray, x_train: np.ndarray | None, x_test: np.ndarray | None,
                       only_memorized: bool = True) -> pd.DataFrame:
    """Flagged duplicate pairs of the given kinds, with what a reviewer needs beside the two images.

    dups: the run's duplicates table (RunFolder.read_duplicates); kinds select by copy_kind (what kind
    of copy, label conflicts included) when the table has it. pairs: the run's high-influence
    pairs (fz_format.Pairs); mem: (n_train,) memorization score by train index. x_*: the images
    (None when they cannot be joined: max_pixel_difference is then -1).
    Adds: mem, fz_pair (the pair is itself a high-influence pair), infl (its influence, NaN if not),
    max_pixel_difference, byte_identical, label_agree. Doubtful rows first: labels that disagree,
    then the lowest score.
    """
    sel = dups[(dups["copy_kind"] if "copy_kind" in dups else dups["kind"]).isin(kinds)]
    if only_memorized:
        sel = sel[np.isin(sel["train_idx"].to_numpy(), np.asarray(memorized_idx, np.int64))]
    sel = sel.copy()
    tr, te = sel["train_idx"].to_numpy(np.int64), sel["test_idx"].to_numpy(np.int64)
    infl_of = dict(zip(zip(pairs.train_idx.tolist(), pairs.test_idx.tolist()), pairs.infl.tolist()))
    sel["mem"] = np.asarray(mem, np.float64)[tr]
    sel["fz_pair"] = [(a, b) in infl_of for a, b in zip(tr.tolist(), te.tolist())]
    sel["infl"] = [infl_of.get((a, b), np.nan) for a, b in zip(tr.tolist(), te.tolist())]
    if x_train is not None and x_test is not None:
        sel["max_pixel_difference"] = max_pixel_difference(x_train[tr], x_test[te])
    else:
        sel["max_pixel_difference"] = -1
    sel["byte_identical"] = sel["max_pixel_difference"].eq(0)
    known = (sel["train_label"] >= 0) & (sel["test_label"] >= 0)
    sel["label_agree"] = ~known | sel["train_label"].eq(sel["test_label"])
    sel["_score"] = sel["score"].fillna(-1.0)
    sel = sel.sort_values(["label_agree", "_score", "train_idx", "test_idx"], ignore_index=True)
    return sel.drop(columns="_score")


def pair_caption(row, *, class_names: list[str] | None) -> str:
    """Three short lines under a duplicate pair: classes, what ciFAIR and the finder say, scores."""
    name = (lambda y: "?" if y < 0 or class_names is None else class_names[y])  # noqa: E731
    labels = name(row.train_label) if row.label_agree else f"{name(row.train_label)} ≠ {name(row.test_label)}"
    if row.max_pixel_difference == 0:
        pixels = "byte-identical"
    elif row.max_pixel_difference > 0:
        pixels = f"max |Δ| {row.max_pixel_difference}"
    else:
        pixels = "no images"
    judged = f"ciFAIR {JUDGMENT_NAMES[int(row.judgment)]}" if row.judgment >= 0 else "finder only"
    score = "" if np.isnan(row.score) else f" score {row.score:.2f}"
    fz = f" infl {row.infl:.2f}" if row.fz_pair else ""
    return (f"{labels}\n{judged} · finder {row.finder_kind}{score}\n{pixels} · mem {row.mem:.2f}{fz}"
            f"{'' if row.final else ' · REJECTED'}")


def finder_vs_cifair(dups: pd.DataFrame, *, memorized_idx: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement of ciFAIR's judgments and the finder's own verdicts on the memorized points.

    Per memorized train point: ciFAIR's strongest judgment among its listed pairs (or "not listed")
    and the finder's strongest verdict among all its pairs (exact > near > review > none).
    Returns (crosstab of points: ciFAIR rows x finder columns, per-point table with columns
    train_idx, cifair, finder, agree), where agree means both call it a duplicate (finder exact or
    near; ciFAIR any judgment) or neither does.
    """
    mem = np.asarray(memorized_idx, np.int64)
    on = dups[np.isin(dups["train_idx"].to_numpy(), mem)]
    listed = on[on["source"].eq("cifair")].groupby("train_idx")["judgment"].min()
    rank = {k: i for i, k in enumerate(FINDER_ORDER)}
    finder = on.groupby("train_idx")["finder_kind"].agg(lambda s: min(s, key=rank.__getitem__))
    points = pd.DataFrame({"train_idx": mem})
    points["cifair"] = points["train_idx"].map(listed).fillna(-1).astype(int).map(JUDGMENT_NAMES)
    points["finder"] = points["train_idx"].map(finder).fillna("none")
    points["agree"] = points["cifair"].ne("not listed") == points["finder"].isin(["exact", "near"])
    table = pd.crosstab(points["cifair"], points["finder"]).reindex(
        index=[JUDGMENT_NAMES[j] for j in (0, 1, 2, -1)], columns=list(FINDER_ORDER), fill_value=0)
    table.index.name, table.columns.name = "ciFAIR (points)", "finder"
    return table, points


def cifair_pair_counts(pairs, cifair_list: pd.DataFrame) -> dict[str, int]:
    """High-influence pairs that are themselves ciFAIR (train, test) duplicate pairs, by judgment."""
    listed = dict(zip(zip(cifair_list["train_idx"].tolist(), cifair_list["test_idx"].tolist()),
                      cifair_list["judgment"].tolist()))
    j = np.array([listed.get(p, -1) for p in zip(pairs.train_idx.tolist(), pairs.test_idx.tolist())])
    return {"all": int((j >= 0).sum()), **{JUDGMENT_NAMES[k]: int((j == k).sum()) for k in (0, 1, 2)}}


def pair_places(pairs, groups: pd.DataFrame) -> pd.DataFrame:
    """Where each high-influence pair is reviewed: on its group's page, or on a pair page.

    A pair whose train point belongs to a sub-population group (confirmed or not: every group
    is drawn) is shown with that group; every other pair on the pair pages. Columns: train_idx,
    test_idx, place ("group" | "pair"), group_id (-1 for pair pages).
    """
    group_of = {}
    for gid, cell in zip(groups["group_id"], groups["train_idx"]) if len(groups) else []:
        for i in subpop.parse_idx(cell):
            group_of[int(i)] = int(gid)
    gid = np.array([group_of.get(int(i), -1) for i in pairs.train_idx], np.int64)
    return pd.DataFrame({"train_idx": pairs.train_idx, "test_idx": pairs.test_idx,
                         "place": np.where(gid >= 0, "group", "pair"), "group_id": gid})


def disagreements(dups: pd.DataFrame, points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The pairs behind finder_vs_cifair's disagreements, one per memorized point, both ways.

    "ciFAIR only": points ciFAIR lists that the finder does not call a duplicate: ciFAIR's pair.
    "finder only": points the finder calls a duplicate (exact or near) that ciFAIR does not list:
    the finder's highest-scoring pair of the point.
    """
    called = points["finder"].isin(["exact", "near"])
    ids = {"ciFAIR only": points.loc[points["cifair"].ne("not listed") & ~called, "train_idx"],
           "finder only": points.loc[points["cifair"].eq("not listed") & called, "train_idx"]}
    out = {}
    for name, train_ids in ids.items():
        rows = dups[dups["train_idx"].isin(train_ids)]
        rows = (rows[rows["source"].eq("cifair")] if name == "ciFAIR only"
                else rows[rows["finder_kind"].isin(["exact", "near"])])
        out[name] = rows.sort_values("score", ascending=False).drop_duplicates("train_idx").reset_index(drop=True)
    return out
