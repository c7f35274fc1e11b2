"""Keep the false-flag judgments in step with the duplicate finder (bench/bench_duplicates.py, section 3).

    python bench/rejudge_duplicates.py --stratum "NAME"            # after changing lib/duplicates.py
    (judge the pairs in bench/to_judge.csv by eye: the sheets are in bench/to_judge/)
    python bench/rejudge_duplicates.py --stratum "NAME" --merge bench/to_judge.csv

The false-flag estimate needs, for the finder in use, every confirmed report-half pair that ciFAIR does not
list (the population, bench/cifair_unlisted_population.csv: pair -> stratum) and judgments of a seeded sample
or census of each stratum (bench/cifair_unlisted_judgments.csv). When the finder changes:
  - a pair still confirmed keeps its stratum, and its judgment if it had one: a uniform sample of a stratum,
    cut to the pairs still confirmed, is a uniform sample of what is left of it;
  - a pair no longer confirmed leaves the population; its judgment row stays, as stratum "no longer flagged";
  - a newly confirmed pair joins the new stratum NAME, which is judged in full (a census): the first call
    writes those pairs to bench/to_judge.csv with a judgment column to fill ("same shot" or "not the same
    shot") and draws them (test | train | train mirrored) into bench/to_judge/; --merge adds the judged rows.
Each stratum's stratum_size (pairs confirmed now) and stratum_drawn (of them judged) are then recomputed.
Nothing is written until every new pair has a judgment (--merge); the first call only lists them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("MEMAUDIT_REFERENCE_DIR") and (ROOT.parent / "shared" / "data" / "reference").is_dir():
    os.environ["MEMAUDIT_REFERENCE_DIR"] = str(ROOT.parent / "shared" / "data" / "reference")  # as tests/conftest.py

POPULATION = ROOT / "bench" / "cifair_unlisted_population.csv"
JUDGMENTS = ROOT / "bench" / "cifair_unlisted_judgments.csv"
GONE = "no longer flagged"
VERDICTS = ("same shot", "not the same shot")


def unlisted_confirmed(pairs: pd.DataFrame, listed: pd.DataFrame, report: np.ndarray) -> set[tuple[int, int]]:
    """find()'s confirmed (test, train) pairs on report-half test images that ciFAIR's list does not hold."""
    keys = set(zip(listed["test_idx"], listed["train_idx"]))
    conf = pairs[pairs["verdict"] == "confirm"]
    return {(int(a), int(b)) for a, b in zip(conf["query_idx"], conf["ref_idx"]) if (a, b) not in keys and report[a]}


def restratify(current: set[tuple[int, int]], population: pd.DataFrame, judgments: pd.DataFrame,
               new_stratum: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(population, judgments, to_judge) for the finder whose unlisted confirmed pairs are `current`.

    population: test_idx, train_idx, stratum of the previous finder; judgments: test_idx, train_idx, judgment,
    stratum, ... (other columns kept). to_judge: the newly confirmed pairs that have no judgment yet."""
    if new_stratum in set(population["stratum"]) | {GONE}:
        raise ValueError(f"stratum {new_stratum!r} is already in use: name the new stratum afresh")
    old = dict(zip(zip(population["test_idx"], population["train_idx"]), population["stratum"]))
    stratum = {p: old.get(p, new_stratum) for p in current}
    pop = pd.DataFrame(sorted((a, b, s) for (a, b), s in stratum.items()), columns=["test_idx", "train_idx", "stratum"])
    j = judgments.copy()
    key = list(zip(j["test_idx"], j["train_idx"]))
    j["stratum"] = [stratum.get(p, GONE) for p in key]
    judged = set(key)
    to_judge = pd.DataFrame(sorted(p for p, s in stratum.items() if s == new_stratum and p not in judged),
                            columns=["test_idx", "train_idx"])
    size = pop["stratum"].value_counts()
    drawn = j.loc[j["stratum"] != GONE, "stratum"].value_counts()
    j["stratum_size"] = [int(size.get(s, 0)) for s in j["stratum"]]
    j["stratum_drawn"] = [int(drawn.get(s, 0)) for s in j["stratum"]]
    return pop, j, to_judge


def merge(judgments: pd.DataFrame, judged: pd.DataFrame, new_stratum: str) -> pd.DataFrame:
    """The judgment rows of `judged` (test_idx, train_idx, judgment, optional note/score) added as stratum
    `new_stratum`; every judgment must be one of VERDICTS."""
    bad = judged[~judged["judgment"].isin(VERDICTS)]
    if len(bad):
        raise ValueError(f"{len(bad)} rows without a judgment of {VERDICTS} (first: test {bad['test_idx'].iloc[0]}, "
                         f"train {bad['train_idx'].iloc[0]})")
    rows = judged.assign(stratum=new_stratum, note=judged.get("note", pd.Series("", index=judged.index)).fillna(""))
    return pd.concat([judgments, rows[[c for c in judgments.columns if c in rows.columns]]], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stratum", required=True, help="name of the stratum of newly confirmed pairs (a census)")
    ap.add_argument("--merge", help="to_judge.csv with its judgment column filled")
    args = ap.parse_args()
    from lib import cifair, data, duplicates, params, planted

    P = params.load("quick")
    ds = data.load_cifar(dataset="cifar100")
    data.require_official(ds, "ciFAIR's duplicate list")
    found = duplicates.find(x_query=ds.x_test, x_ref=ds.x_train, near_threshold=P.dup_near_threshold,
                            review_threshold=P.dup_review_threshold, top_k=P.dup_top_k)
    current = unlisted_confirmed(found.pairs, cifair.load(dataset="cifar100"), ~planted.cifair_halves(len(ds.x_test)))
    population, judgments = pd.read_csv(POPULATION), pd.read_csv(JUDGMENTS)
    if args.merge:
        judgments = merge(judgments, pd.read_csv(args.merge), args.stratum)
    pop, j, to_judge = restratify(current, population, judgments, args.stratum)
    print(f"{len(current)} unlisted confirmed report-half pairs: {int((pop['stratum'] != args.stratum).sum())} kept "
          f"from before, {int((pop['stratum'] == args.stratum).sum())} new; {len(to_judge)} of the new not judged yet")
    if len(to_judge):
        score = found.pairs.set_index(["query_idx", "ref_idx"])["score"]
        to_judge["score"] = [round(float(score.loc[p]), 4) for p in zip(to_judge["test_idx"], to_judge["train_idx"])]
        to_judge["judgment"], to_judge["note"] = "", ""
        to_judge["id"] = np.arange(len(to_judge))
        to_judge["caption"] = [f"s{s:.2f}" for s in to_judge["score"]]
        out = ROOT / "bench" / "to_judge.csv"
        to_judge.to_csv(out, index=False)
        sheets = ROOT / "bench" / "to_judge"
        sheets.mkdir(exist_ok=True)
        import subprocess
        subprocess.run([sys.executable, str(ROOT / "bench" / "render_pairs.py"), str(out), str(sheets / "sheet")],
                       check=True)
        print(f"judge them: {out} (sheets in {sheets}/), then rerun with --merge {out}; nothing written yet")
        return
    pop.to_csv(POPULATION, index=False)
    j.sort_values(["stratum", "test_idx", "train_idx"]).to_csv(JUDGMENTS, index=False)
    print(f"wrote {POPULATION.name} and {JUDGMENTS.name}")


if __name__ == "__main__":
    main()
