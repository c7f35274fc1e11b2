"""Reviewer decisions over automatic verdicts: the round trip through a review file."""
import pandas as pd
import pytest

from lib import review


def auto_table():
    return pd.DataFrame({"train_idx": [5, 9, 12, 40], "test_idx": [1, 2, 3, 4],
                         "kind": ["exact", "near", "review", "near"], "score": [1.0, 0.95, 0.85, 0.93],
                         "verdict": ["confirm", "confirm", "reject", "confirm"]})


def test_no_review_file_keeps_automatic_verdicts(tmp_path):
    out = review.merge(auto_table(), keys=["train_idx", "test_idx"], review_file=tmp_path / "missing.csv")
    assert list(out["final"]) == [True, True, False, True]
    assert set(out["decided_by"]) == {"auto"} and set(out["decision"]) == {""}


def test_round_trip_rejection_removes_pair_downstream(tmp_path):
    auto = auto_table()
    path = review.write_template(auto, path=tmp_path / "review" / "duplicates.csv")
    edited = pd.read_csv(path, keep_default_na=False)
    edited.loc[edited["train_idx"] == 9, "decision"] = "reject"      # a person rejects an automatic 'near'
    edited.loc[edited["train_idx"] == 12, "decision"] = "Confirm"    # and confirms one left for review
    edited.to_csv(path, index=False)
    out = review.merge(auto, keys=["train_idx", "test_idx"], review_file=path).set_index("train_idx")
    assert out.loc[9, "final"] == False and out.loc[9, "decided_by"] == "reviewer"  # noqa: E712
    assert out.loc[12, "final"] == True and out.loc[12, "decision"] == "confirm"   # noqa: E712
    assert out.loc[5, "final"] == True and out.loc[5, "decided_by"] == "auto"      # noqa: E712
    downstream = out[out["final"]].index.tolist()
    assert downstream == [5, 12, 40]


def test_bad_decision_names_file_and_line(tmp_path):
    path = tmp_path / "groups.csv"
    pd.DataFrame({"group_id": [0, 1, 2], "decision": ["confirm", "", "maybe"]}).to_csv(path, index=False)
    auto = pd.DataFrame({"group_id": [0, 1, 2], "verdict": ["confirm", "reject", "confirm"]})
    with pytest.raises(review.ReviewError, match=r"groups\.csv: line 4: decision 'maybe'"):
        review.merge(auto, keys=["group_id"], review_file=path)


def test_generic_keys_and_unknown_rows(tmp_path):
    path = tmp_path / "groups.csv"
    pd.DataFrame({"group_id": [2, 7], "decision": ["reject", "confirm"]}).to_csv(path, index=False)
    auto = pd.DataFrame({"group_id": [0, 1, 2], "verdict": ["confirm", "reject", "confirm"]})
    with pytest.raises(review.ReviewError, match=r"groups\.csv: 1 decided row.*line 3: group_id=7"):
        review.merge(auto, keys=["group_id"], review_file=path)  # a decision is never dropped silently
    pd.DataFrame({"group_id": [2, 7], "decision": ["reject", ""]}).to_csv(path, index=False)
    out = review.merge(auto, keys=["group_id"], review_file=path)  # an undecided unknown row is harmless
    assert list(out["final"]) == [True, False, False]
    assert list(out["decided_by"]) == ["auto", "auto", "reviewer"]
