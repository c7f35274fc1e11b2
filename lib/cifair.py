"""ciFAIR's duplicate lists (Barz & Denzler 2020) and their agreement with our finder.

ciFAIR lists CIFAR test images with a duplicate in the training set (or, for the
*_test list, within the test set) as `TestID,TrainID,Distance,Judgment` on OFFICIAL
indices, CRLF line ends. Judgment: 0 exact duplicate, 1 near-duplicate, 2 very similar.
ciFAIR replaced all three classes in its test set; we keep their judgment as our kind:
0 -> exact, 1 and 2 -> near (both with verdict confirm, since a person judged them).

Anything that puts these indices next to images needs the official copy: `compare`
calls data.require_official first; `duplicates_table` is given images only on an official copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import data, reference

JUDGMENTS = {0: "exact", 1: "near-duplicate", 2: "very similar"}
KIND_OF_JUDGMENT = {0: "exact", 1: "near", 2: "near"}


class CifairError(ValueError):
    """A ciFAIR list is malformed."""


def read_list(path: Path | str) -> pd.DataFrame:
    """test_idx, train_idx (int64), distance (float64), judgment (int64 0/1/2), judgment_name (str)."""
    path = Path(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)  # the C parser takes CRLF as a line end
    raw.columns = [c.strip() for c in raw.columns]
    want = ["TestID", "TrainID", "Distance", "Judgment"]
    if list(raw.columns) != want:
        raise CifairError(f"{path}: columns {list(raw.columns)}, expected {want}")
    try:
        out = pd.DataFrame({
            "test_idx": raw["TestID"].str.strip().astype(np.int64),
            "train_idx": raw["TrainID"].str.strip().astype(np.int64),
            "distance": raw["Distance"].str.strip().astype(np.float64),
            "judgment": raw["Judgment"].str.strip().astype(np.int64),
        })
    except ValueError as e:
        raise CifairError(f"{path}: a value is not a number ({e})") from None
    bad = ~out["judgment"].isin(list(JUDGMENTS))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CifairError(f"{path}: line {i + 2}: judgment {out['judgment'].iloc[i]} is not one of 0, 1, 2")
    out["judgment_name"] = out["judgment"].map(JUDGMENTS)
    return out


def load(*, dataset: str = "cifar100", within_test: bool = False, reference_dir: str = "",
         download: bool = True) -> pd.DataFrame:
    """ciFAIR's train-test list (or the within-test list) for a dataset, fetched if needed."""
    key = {("cifar100", False): "cifair_cifar100", ("cifar100", True): "cifair_cifar100_test",
           ("cifar10", False): "cifair_cifar10"}.get((dataset, within_test))
    if key is None:
        raise KeyError(f"ciFAIR publishes no {'within-test ' if within_test else ''}list for {dataset} here")
    return read_list(reference.fetch(key, reference_dir=reference_dir, download=download))


def compare(*, ds: data.Cifar, cifair: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    """Agreement of our flagged pairs with ciFAIR's list, by ciFAIR judgment class.

    found: our pairs counted as duplicates (train_idx, test_idx; run indices, which equal
    official indices on the full official copy). Per judgment: listed, found (listed and
    flagged by us), missed; a last row `extra` counts our pairs that ciFAIR does not list.
    Refuses (data.DataError) unless ds is the full official dataset.
    """
    data.require_official(ds, "ciFAIR's duplicate list")
    ours = set(zip(found["train_idx"].astype(np.int64), found["test_idx"].astype(np.int64)))
    theirs = list(zip(cifair["train_idx"], cifair["test_idx"]))
    hit = np.array([p in ours for p in theirs], bool)
    rows = []
    for j, name in JUDGMENTS.items():
        m = (cifair["judgment"] == j).to_numpy()
        rows.append(dict(judgment=name, listed=int(m.sum()), found=int((hit & m).sum()),
                         missed=int((~hit & m).sum())))
    rows.append(dict(judgment="all", listed=len(cifair), found=int(hit.sum()), missed=int((~hit).sum())))
    extra = len(ours - set(theirs))
    rows.append(dict(judgment="extra (ours only)", listed=0, found=extra, missed=0))
    return pd.DataFrame(rows)


def duplicates_table(*, cifair: pd.DataFrame, finder: pd.DataFrame | None, score_fn=None) -> pd.DataFrame:
    """ciFAIR's pairs joined with the finder's into one table of flagged (train, test) pairs (official indices).

    cifair: read_list(...). finder: the finder's flagged pairs (train_idx, test_idx, kind, score,
    verdict), or None when no image search was possible (not the official copy).
    score_fn(pairs (n, 2) [test, train]) -> (n,) scores: the finder's score of given pairs, to
    score ciFAIR's pairs on the images (None: NaN).
    Rows: every ciFAIR pair, with kind KIND_OF_JUDGMENT[judgment] and verdict confirm (a person
    judged it), turned to kind "exact" when the finder found the two byte-identical; then every
    finder pair ciFAIR does not list, with the finder's kind and verdict. Columns: train_idx,
    test_idx, kind, score, verdict, source (cifair | finder), judgment (-1 for finder-only rows),
    finder_kind (the finder's own verdict on the pair: exact | near | review | none).
    """
    tr, te = cifair["train_idx"].to_numpy(np.int64), cifair["test_idx"].to_numpy(np.int64)
    listed = pd.DataFrame({"train_idx": tr, "test_idx": te, "kind": cifair["judgment"].map(KIND_OF_JUDGMENT).to_numpy(),
                           "score": np.full(len(tr), np.nan), "verdict": "confirm", "source": "cifair",
                           "judgment": cifair["judgment"].to_numpy(np.int64), "finder_kind": "none"})
    if finder is None:
        return listed
    if score_fn is not None and len(listed):
        listed["score"] = np.asarray(score_fn(np.stack([te, tr], axis=1)), np.float64)
    kind_of = {(a, b): k for a, b, k in zip(finder["train_idx"], finder["test_idx"], finder["kind"])}
    listed["finder_kind"] = [kind_of.get((a, b), "none") for a, b in zip(tr, te)]
    exact = listed["finder_kind"].eq("exact").to_numpy()
    listed.loc[exact, ["kind", "score"]] = ["exact", 1.0]
    keys = set(zip(tr.tolist(), te.tolist()))
    only = finder[[(a, b) not in keys for a, b in zip(finder["train_idx"], finder["test_idx"])]]
    only = only.assign(source="finder", judgment=-1, finder_kind=only["kind"])
    return pd.concat([listed, only[listed.columns]], ignore_index=True)
