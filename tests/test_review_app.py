"""The review app's callbacks, driven from Python as the buttons and the key box drive them (no browser).

A decision lands in the review file atomically (temporary file + os.replace; a failed write leaves the old file
and no temporary behind), a new session (a kernel restart) resumes at the first undecided item with every
decision kept, and review.merge on the written file changes `final` for exactly that item: what moves the
buckets on the next run.
"""
import html
import json
import os

import numpy as np
import pandas as pd
import pytest

from lib import review
from lib.params import ROOT
from lib.review_app import GROUP_PX, PAIR_PX, ReviewApp, ReviewSession
from lib.run_folder import RunFolder


@pytest.fixture
def run(tmp_path):
    """A run folder with 4 flagged pairs (2 of memorized points) and 2 groups."""
    r = RunFolder(tmp_path / "runs" / "t")
    dups = pd.DataFrame({
        "train_idx": [5, 6, 7, 8], "test_idx": [1, 2, 3, 4], "train_label": [0, 1, 1, 0], "test_label": [0, 1, 0, 0],
        "kind": ["near", "exact", "review", "near"], "copy_kind": ["near", "exact", "review", "near"],
        "score": [0.95, 1.0, 0.85, 0.92], "memorized": [False, True, False, True],
        "verdict": ["confirm", "confirm", "reject", "confirm"], "source": ["finder"] * 4, "judgment": [-1, 0, -1, -1],
        "finder_kind": ["near", "exact", "review", "near"], "decision": [""] * 4, "decided_by": ["auto"] * 4,
        "final": [True, True, False, True]})
    r.write_duplicates(dups)
    groups = pd.DataFrame({
        "group_id": [11, 12], "class": [0, 1], "train_idx": ["5 8", "6 7 9"], "test_idx": ["1", "2 3"],
        "n_train": [2, 3], "n_test": [1, 2], "size_rel_class": [0.1, 0.2], "n_pairs": [2, 4], "infl_min": [0.2, 0.3],
        "infl_max": [0.5, 0.6], "verdict": ["confirm", "confirm"], "decision": ["", ""], "decided_by": ["auto"] * 2,
        "final": [True, True], "class_name": ["apple", "bee"]})
    r.write_groups(groups)
    return r


def _session(run, tmp_path):
    files = {"duplicates": tmp_path / "review" / "duplicates.csv", "groups": tmp_path / "review" / "groups.csv"}
    return ReviewSession("t", run, review_files=files)


def _app(session):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    return ReviewApp(session, x_train=x_train, x_test=x_test, class_names=["apple", "bee"])


def test_items_are_every_pair_then_every_group_memorized_first(run, tmp_path):
    s = _session(run, tmp_path)
    assert [(i.artifact, i.key) for i in s.items] == [
        ("duplicates", (6, 2)), ("duplicates", (8, 4)), ("duplicates", (5, 1)), ("duplicates", (7, 3)),
        ("groups", (11,)), ("groups", (12,))]
    assert s.pos == 0 and s.counts() == {"items": 6, "decided": 0, "confirm": 0, "reject": 0}


def test_the_view_shows_images_at_a_readable_size_with_the_automatic_verdict(run, tmp_path):
    import ipywidgets as w
    from PIL import Image
    import io

    app = _app(_session(run, tmp_path))
    assert "automatic verdict <b>confirm</b>" in app.header.value and "score 1.000" in app.header.value
    images = [c for cell in app.view.children for c in cell.children if isinstance(c, w.Image)]
    assert len(images) == 2  # the pair, train beside test
    assert all(Image.open(io.BytesIO(i.value)).size[0] >= 128 and int(i.width) >= 128 for i in images)
    assert PAIR_PX >= 128 and GROUP_PX >= 64
    app.session.go(5)  # group 12: 3 train + 2 test images
    app.render()
    images = [c for cell in app.view.children for c in cell.children if isinstance(c, w.Image)]
    assert len(images) == 5 and all(Image.open(io.BytesIO(i.value)).size[0] >= 64 for i in images)
    assert "group 12" in app.header.value and "bee" in app.header.value
    # every button names its one-key shortcut, and the key box maps the same keys
    assert {b.description[-3:] for b in app.buttons.values()} == {f"({k})" for k in ReviewApp.ACTIONS}


def test_a_click_writes_the_review_file_atomically(run, tmp_path, monkeypatch):
    s = _session(run, tmp_path)
    app = _app(s)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b))[1])
    app.buttons["reject"].click()  # pair (6, 2)
    path = s.files["duplicates"]
    assert len(replaced) == 1 and replaced[0][1] == str(path)
    tmp = replaced[0][0]
    assert os.path.dirname(tmp) == str(path.parent) and tmp != str(path)  # a temporary beside it, renamed over it
    table = review.read_decisions(path, keys=["train_idx", "test_idx"])  # the format lib/review.py reads
    assert dict(zip(zip(table.train_idx, table.test_idx), table.decision)) == {
        (5, 1): "", (6, 2): "reject", (7, 3): "", (8, 4): ""}
    assert sorted(p.name for p in path.parent.iterdir()) == ["duplicates.csv"]  # no temporary left
    assert s.pos == 1  # on to the next item

    # a write that fails leaves the previous file as it was and no temporary behind
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("disk full")))
    app.buttons["confirm"].click()
    assert "not saved (disk full)" in app.status.value and s.pos == 1  # said so, and stayed on the item
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["duplicates.csv"]


def test_keys_act_like_the_buttons(run, tmp_path):
    s = _session(run, tmp_path)
    app = _app(s)
    app.keys.value = "c"          # what the browser sends when c is typed into the key box
    assert app.keys.value == ""   # emptied for the next key
    assert s.decision(0) == "confirm" and s.pos == 1
    app.keys.value = "s"          # skip: nothing written, on to the next
    assert s.decision(1) == "" and s.pos == 2
    app.keys.value = "b"          # back
    assert s.pos == 1
    app.keys.value = "R"          # reject (case does not matter)
    assert s.decision(1) == "reject"
    app.keys.value = "q"          # not a shortcut: nothing happens
    assert s.pos == 2 and s.counts()["decided"] == 2
    app.session.go(0)
    app.keys.value = "x"          # auto: my decision removed, the automatic verdict stands again
    assert s.decision(0) == ""


def test_a_restart_resumes_at_the_first_undecided_item_and_loses_nothing(run, tmp_path):
    s = _session(run, tmp_path)
    app = _app(s)
    app.confirm()        # (6, 2)
    app.skip()           # (8, 4) skipped
    app.reject()         # (5, 1)
    app.reject()         # (7, 3)
    app.reject()         # group 11
    assert s.pos == 5    # group 12
    del app, s           # the kernel restarts
    s2 = _session(run, tmp_path)
    assert s2.pos == 1 and s2.current.key == (8, 4)  # the skipped pair is the first undecided one
    assert [s2.decision(i) for i in range(6)] == ["confirm", "", "reject", "reject", "reject", ""]
    s2.decide("confirm")
    assert s2.current.key == (12,)
    s2.decide("confirm")
    assert s2.done and s2.counts() == {"items": 6, "decided": 6, "confirm": 3, "reject": 3}
    app = _app(s2)
    assert "every item has a decision" in app.header.value
    # a third session starts at the end: nothing left to decide
    assert _session(run, tmp_path).done


def test_merge_on_the_written_file_changes_final_for_that_item(run, tmp_path):
    s = _session(run, tmp_path)
    auto_dups, auto_groups = run.read_duplicates(), run.read_groups()
    s.decide("reject")             # pair (6, 2): automatic verdict confirm
    s.go(3)
    s.decide("confirm")            # pair (7, 3): automatic verdict reject
    s.go(4)
    s.decide("reject")             # group 11
    dups = review.merge(auto_dups, keys=["train_idx", "test_idx"], review_file=s.files["duplicates"])
    final = dict(zip(zip(dups.train_idx, dups.test_idx), dups.final))
    assert final == {(5, 1): True, (6, 2): False, (7, 3): True, (8, 4): True}
    assert dups.set_index(["train_idx", "test_idx"]).loc[(6, 2), "decided_by"] == "reviewer"
    groups = review.merge(auto_groups, keys=["group_id"], review_file=s.files["groups"])
    assert dict(zip(groups.group_id, groups.final)) == {11: False, 12: True}
    # the bucket rule: a group's points count only while the group is final (lib/subpop.py)
    from lib import subpop
    assert subpop.confirmed_train_idx(groups).tolist() == [6, 7, 9]


def test_decisions_on_items_the_run_no_longer_lists_are_kept(run, tmp_path):
    s = _session(run, tmp_path)
    path = s.files["duplicates"]
    path.parent.mkdir(parents=True)
    path.write_text("train_idx,test_idx,decision\n99,98,reject\n6,2,confirm\n")  # a hand edit before the session
    s = _session(run, tmp_path)
    assert s.decision(0) == "confirm" and s.pos == 1
    s.decide("reject")  # (8, 4)
    table = review.read_decisions(path, keys=["train_idx", "test_idx"])
    assert dict(zip(zip(table.train_idx, table.test_idx), table.decision)) == {
        (5, 1): "", (6, 2): "confirm", (7, 3): "", (8, 4): "reject", (99, 98): "reject"}


def test_a_malformed_review_file_is_reported_and_left_alone(run, tmp_path):
    s = _session(run, tmp_path)
    app = _app(s)
    path = s.files["duplicates"]
    path.parent.mkdir(parents=True)
    path.write_text("train_idx,test_idx,decision\n6,2,maybe\n")
    app.confirm()
    assert "decision 'maybe' must be confirm, reject or empty" in html.unescape(app.status.value)
    assert path.read_text() == "train_idx,test_idx,decision\n6,2,maybe\n"


def test_the_review_notebook_is_thin_and_committed_without_outputs():
    nb = json.loads((ROOT / "notebooks" / "review_decisions.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert nb["metadata"]["kernelspec"]["name"] == "memaudit"
    assert all(not c["outputs"] and not c["execution_count"] for c in code)
    assert "ReviewApp.open(params_name)" in "".join(code[-1]["source"]) and len(code) == 2
    assert "parameters" in code[0]["metadata"]["tags"]


def test_a_run_without_its_tables_says_which_notebook_to_run(tmp_path, run):
    from lib.run_folder import MissingArtifact

    empty = _session(RunFolder(tmp_path / "runs" / "empty"), tmp_path)
    assert empty.done and empty.items == [] and len(empty.missing) == 2
    app = _app(empty)
    assert "Nothing to review." in app.header.value and "run notebook 03 for" in html.unescape(app.header.value)
    run.path("groups").unlink()  # duplicates only: the pairs are reviewed, the missing groups are named
    s = _session(run, tmp_path)
    assert len(s.items) == 4 and s.missing == ["groups.csv (run notebook 04 for 't' first)"]
    with pytest.raises(MissingArtifact, match="nothing to review in runs/nosuchrun/"):
        _open_a_run_that_never_ran()


def _open_a_run_that_never_ran():
    from dataclasses import replace
    from unittest import mock

    from lib import params
    P = replace(params.load("smoke"), name="nosuchrun")  # runs/nosuchrun/ does not exist
    with mock.patch.object(params, "load", lambda name: P):
        ReviewApp.open("nosuchrun")
