"""The judged pairs behind the duplicate finder's false-flag estimate (bench/bench_duplicates.py, section 3):
the committed files agree with each other and with the finder in use, and bench/rejudge_duplicates.py carries
judgments over a change of the finder correctly."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from lib import cifair, data, duplicates, planted
from lib.params import ROOT

_spec = importlib.util.spec_from_file_location("rejudge", ROOT / "bench" / "rejudge_duplicates.py")
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)


def _pairs(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df["test_idx"].astype(int), df["train_idx"].astype(int)))


def test_committed_judgments_describe_the_committed_population():
    pop, j = pd.read_csv(R.POPULATION), pd.read_csv(R.JUDGMENTS)
    assert not pop.duplicated(["test_idx", "train_idx"]).any() and not j.duplicated(["test_idx", "train_idx"]).any()
    assert set(j["judgment"]) <= set(R.VERDICTS)
    flagged = j[j["stratum"] != R.GONE]
    assert _pairs(flagged) <= _pairs(pop)                              # every judged flagged pair is in the population
    assert not _pairs(j[j["stratum"] == R.GONE]) & _pairs(pop)
    stratum_of = dict(zip(zip(pop["test_idx"], pop["train_idx"]), pop["stratum"]))
    assert all(stratum_of[p] == s for p, s in zip(zip(flagged["test_idx"], flagged["train_idx"]), flagged["stratum"]))
    size, drawn = pop["stratum"].value_counts(), flagged["stratum"].value_counts()
    for s, g in flagged.groupby("stratum"):
        assert (g["stratum_size"] == size[s]).all() and (g["stratum_drawn"] == drawn[s]).all(), s
    # strata named censuses are judged in full
    for s in size.index:
        if "census" in s or s.endswith(": all"):
            assert drawn.get(s, 0) == size[s], s


@pytest.mark.slow
def test_committed_population_is_the_finder_in_use(cifar_full, smoke):
    """Every confirmed report-half pair ciFAIR does not list, for the finder at its defaults: if lib/duplicates.py
    changes what it confirms, the judgments no longer describe it (run bench/rejudge_duplicates.py)."""
    assert cifar_full.verdict == data.OFFICIAL_CONTENT
    report = ~planted.cifair_halves(len(cifar_full.x_test))
    rows = np.flatnonzero(report)
    c = duplicates.near_scores(x_query=cifar_full.x_test, x_ref=cifar_full.x_train, top_k=smoke.dup_top_k, rows=rows)
    confirmed = c[c["score"] >= smoke.dup_near_threshold]
    exact = duplicates.exact_pairs(x_query=cifar_full.x_test, x_ref=cifar_full.x_train)
    pairs = pd.DataFrame({"query_idx": np.r_[confirmed["query_idx"], exact[:, 0]],
                          "ref_idx": np.r_[confirmed["ref_idx"], exact[:, 1]], "verdict": "confirm"})
    current = R.unlisted_confirmed(pairs, cifair.load(dataset="cifar100"), report)
    assert current == _pairs(pd.read_csv(R.POPULATION))


def test_restratify_keeps_samples_drops_gone_pairs_and_lists_new_ones():
    pop = pd.DataFrame({"test_idx": [1, 2, 3, 4, 5], "train_idx": [10, 20, 30, 40, 50],
                        "stratum": ["all", "all", "sample", "sample", "sample"]})
    j = pd.DataFrame({"test_idx": [1, 2, 3, 9], "train_idx": [10, 20, 30, 90], "score": 0.9,
                      "judgment": ["same shot", "not the same shot", "same shot", "same shot"], "note": "",
                      "stratum": ["all", "all", "sample", R.GONE], "stratum_size": [2, 2, 3, 0],
                      "stratum_drawn": [2, 2, 1, 0]})
    # the new finder drops (2, 20) and (4, 40), keeps the rest, and confirms (6, 60) and (7, 70)
    current = {(1, 10), (3, 30), (5, 50), (6, 60), (7, 70)}
    new_pop, new_j, to_judge = R.restratify(current, pop, j, "v2")
    assert _pairs(new_pop) == current
    assert dict(zip(zip(new_pop["test_idx"], new_pop["train_idx"]), new_pop["stratum"])) == {
        (1, 10): "all", (3, 30): "sample", (5, 50): "sample", (6, 60): "v2", (7, 70): "v2"}
    by = new_j.set_index(["test_idx", "train_idx"])
    assert by.loc[(2, 20), "stratum"] == R.GONE and by.loc[(9, 90), "stratum"] == R.GONE
    assert by.loc[(1, 10), ["stratum_size", "stratum_drawn"]].tolist() == [1, 1]
    assert by.loc[(3, 30), ["stratum_size", "stratum_drawn"]].tolist() == [2, 1]   # 1 of the 2 kept is judged
    assert _pairs(to_judge) == {(6, 60), (7, 70)}
    with pytest.raises(ValueError, match="already in use"):
        R.restratify(current, pop, j, "sample")
    # judging the new pairs makes "v2" a census
    judged = to_judge.assign(judgment=["same shot", "not the same shot"], note="")
    with pytest.raises(ValueError, match="without a judgment"):
        R.merge(j, to_judge.assign(judgment=""), "v2")
    _, j3, left = R.restratify(current, pop, R.merge(j, judged, "v2"), "v2")
    assert left.empty
    v2 = j3[j3["stratum"] == "v2"]
    assert len(v2) == 2 and (v2["stratum_size"] == 2).all() and (v2["stratum_drawn"] == 2).all()
