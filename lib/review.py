"""Reviewer decisions over automatic verdicts, for any table of flagged items.

A notebook writes its automatic table (one row per flagged item: key columns plus a
`verdict` of confirm|reject). A person copies it to params/review/<params name>/<file>.csv
and fills the `decision` column with confirm, reject, or leaves it empty. `merge` reads
only the key columns and `decision` of that copy and adds to the automatic table:

    decision    confirm | reject | "" (no decision)
    decided_by  reviewer (a decision was given) | auto (the automatic verdict stands)
    final       bool: the item counts downstream (decision if given, else verdict == confirm)

Used for runs/<name>/duplicates.csv (keys train_idx, test_idx) and runs/<name>/groups.csv
(key group_id).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .params import PARAMS_DIR

DECISIONS = ("confirm", "reject", "")


class ReviewError(ValueError):
    """A review file is malformed; the message names the file and the row."""


def review_path(*, params_name: str, artifact: str) -> Path:
    """params/review/<params name>/<file>: a reviewer's copy of a run-folder table (artifact duplicates | groups)."""
    from .run_folder import RunFolder

    return PARAMS_DIR / "review" / params_name / RunFolder.filename(artifact)


def read_decisions(path: Path | str, *, keys: list[str]) -> pd.DataFrame:
    """The key columns and `decision` of a review file; errors name the file and the line."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReviewError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in (*keys, "decision") if c not in table.columns]
    if missing:
        raise ReviewError(f"{path}: missing column(s) {missing} (needs {keys + ['decision']})")
    raw = table
    table = table[[*keys, "decision"]].copy()
    table["decision"] = table["decision"].str.strip().str.lower()
    for i, value in enumerate(table["decision"]):
        if value not in DECISIONS:
            raise ReviewError(f"{path}: line {i + 2}: decision {value!r} must be confirm, reject or empty")
    for key in keys:
        for i, value in enumerate(table[key]):
            try:
                int(value)
            except ValueError:
                raise ReviewError(f"{path}: line {i + 2}: {key} {value!r} is not an integer") from None
        table[key] = table[key].astype(np.int64)
    dup = table.duplicated(keys, keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ReviewError(f"{path}: line {i + 2}: {dict(table.loc[i, keys])} is listed twice")
    _refuse_edited_verdicts(raw, path=path)
    return table


def _refuse_edited_verdicts(raw: pd.DataFrame, *, path: Path) -> None:
    """A decision written into `verdict` or `final` instead of `decision` would be ignored: refuse it.

    In a copied table, a row without a decision has final == (verdict == confirm); a row where
    that no longer holds, or a verdict that is not confirm/reject, was edited by hand.
    """
    if not {"verdict", "final"} <= set(raw.columns):
        return
    verdict = raw["verdict"].str.strip().str.lower()
    final = raw["final"].str.strip().str.lower()
    undecided = raw["decision"].str.strip().eq("")
    bad = undecided & (~verdict.isin(["confirm", "reject"]) | ~final.isin(["true", "false"])
                       | (final.eq("true") != verdict.eq("confirm")))
    if bad.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:8])
        raise ReviewError(f"{path}: line(s) {lines}: `verdict`/`final` were edited but `decision` is empty; "
                          "write confirm or reject in the decision column (verdict and final are recomputed)")


def merge(auto: pd.DataFrame, *, keys: list[str], review_file: Path | str | None) -> pd.DataFrame:
    """`auto` (key columns + verdict) with decision, decided_by and final added from `review_file`.

    A missing review file means no decisions. A decided row whose key is not in `auto` is an
    error naming the file and the lines (swapped key columns, or a table that changed since the
    review was made): a decision must never be dropped silently.
    """
    if "verdict" not in auto.columns:
        raise ValueError("the automatic table needs a 'verdict' column (confirm|reject)")
    bad = set(auto["verdict"]) - {"confirm", "reject"}
    if bad:
        raise ValueError(f"automatic verdicts must be confirm or reject, got {sorted(bad)}")
    out = auto.drop(columns=[c for c in ("decision", "decided_by", "final") if c in auto.columns]).copy()
    if review_file is not None and Path(review_file).is_file():
        decided = read_decisions(review_file, keys=keys)
        key_auto = out[keys].astype(np.int64)
        joined = key_auto.merge(decided, on=keys, how="left")
        out["decision"] = joined["decision"].fillna("").to_numpy()
        unknown = decided.merge(key_auto, on=keys, how="left", indicator=True)["_merge"].eq("left_only")
        lost = np.flatnonzero((unknown & decided["decision"].ne("")).to_numpy())
        if len(lost):
            shown = "; ".join(f"line {i + 2}: " + ", ".join(f"{k}={decided.loc[i, k]}" for k in keys) for i in lost[:5])
            raise ReviewError(f"{review_file}: {len(lost)} decided row(s) match no flagged item ({shown}"
                              f"{' ...' if len(lost) > 5 else ''}); were key columns swapped, or did the table "
                              "change since the review? Fix or delete those rows")
    else:
        out["decision"] = ""
    by_person = out["decision"] != ""
    out["decided_by"] = np.where(by_person, "reviewer", "auto")
    out["final"] = np.where(by_person, out["decision"] == "confirm", out["verdict"] == "confirm").astype(bool)
    return out


def write_template(table: pd.DataFrame, *, path: Path | str) -> Path:
    """Write a table (with an empty or given `decision` column) for a reviewer to fill in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table.copy()
    if "decision" not in t.columns:
        t["decision"] = ""
    t.to_csv(path, index=False)
    return path
