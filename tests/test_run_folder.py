"""The run folder's one owner: every artifact round-trips with its types, and a missing one says who writes it."""
import numpy as np
import pandas as pd
import pytest

from lib import fz_format, memorization
from lib.run_folder import ARTIFACTS, MissingArtifact, RunFolder


def _scores(n):
    rng = np.random.default_rng(0)
    return memorization.Scores(mem=rng.random(n, np.float32), se=rng.random(n, np.float32),
                               n_in=rng.integers(0, 9, n).astype(np.int32), n_out=rng.integers(0, 9, n).astype(np.int32),
                               estimable=rng.random(n) < 0.8)


def test_memorization_round_trip_keeps_values_and_dtypes(tmp_path):
    run = RunFolder(tmp_path)
    s = _scores(11)
    pairs = fz_format.Pairs(train_idx=np.array([3, 3, 7]), test_idx=np.array([0, 2, 1]), infl=np.array([.5, .2, .3]),
                            mem=np.array([.9, .9, .4]))
    run.write_memorization(scores=s, pairs=pairs, memorized_idx=[7, 3, 3], top=None, n_test=4)
    back = run.read_scores()
    for name in ("mem", "se", "n_in", "n_out", "estimable"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
        assert getattr(back, name).dtype == getattr(s, name).dtype
    p = run.read_pairs()
    np.testing.assert_array_equal(p.train_idx, [3, 3, 7])
    np.testing.assert_array_equal(run.read_memorized(), [3, 7])  # sorted unique
    idx, infl = run.read_top_influencers()
    assert idx.shape == (4, 0) and infl.shape == (4, 0)  # reference mode: no ranking exists
    with np.load(run.path("pairs")) as f:  # FZ's key names in the file, ours in memory
        assert sorted(f.files) == ["infl", "mem", "tr_idx", "tt_idx"]


def test_duplicates_and_groups_read_back_typed(tmp_path):
    run = RunFolder(tmp_path)
    dups = pd.DataFrame({"train_idx": [5, 9], "test_idx": [1, 2], "train_label": [0, 1], "test_label": [0, -1],
                         "kind": ["exact", "near"], "copy_kind": ["exact", "near"], "score": [1.0, np.nan],
                         "memorized": [True, False],
                         "verdict": ["confirm", "reject"], "source": ["cifair", "finder"], "judgment": [0, -1],
                         "finder_kind": ["exact", "review"], "decision": ["", "confirm"],
                         "decided_by": ["auto", "reviewer"], "final": [True, True]})
    run.write_duplicates(dups)
    back = run.read_duplicates()
    assert back["final"].dtype == bool and back["memorized"].dtype == bool
    assert back["train_idx"].dtype == np.int64 and np.isnan(back["score"][1])
    pd.testing.assert_frame_equal(back.drop(columns="score"), dups.drop(columns="score"), check_dtype=False)
    assert back["final"].tolist() == [True, True] and back["decision"].tolist() == ["", "confirm"]


def test_a_bool_column_with_other_text_is_refused(tmp_path):
    run = RunFolder(tmp_path)
    run.path("duplicates").write_text("train_idx,test_idx,final\n1,2,yes\n")
    with pytest.raises(ValueError, match="final"):
        run.read_duplicates()


def test_missing_artifact_names_the_file_and_the_notebook(tmp_path):
    run = RunFolder(tmp_path / "quick")
    with pytest.raises(MissingArtifact, match=r"buckets\.npz.*04_subpopulations.*'quick'"):
        run.read_buckets()
    with pytest.raises(KeyError, match="unknown run-folder artifact"):
        run.path("nonsense")


def test_nothing_outside_run_folder_builds_a_run_folder_path():
    """The single naming rule: no lib module or notebook spells an artifact's file name but run_folder.py."""
    from lib.params import ROOT
    names = {rel.split("/")[-1] for rel, _ in ARTIFACTS.values() if "." in rel}
    sources = [p for p in (ROOT / "lib").glob("*.py") if p.name != "run_folder.py"]
    sources += list((ROOT / "notebooks").glob("*.ipynb"))
    offenders = [(p.name, n) for p in sources for n in names
                 if f'"{n}"' in p.read_text() or f"'{n}'" in p.read_text() or f'\\"{n}\\"' in p.read_text()]
    assert offenders == []
