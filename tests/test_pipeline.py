"""The whole notebook chain through the Makefile on smoke params, and its incremental rule."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lib import params
from lib.params import ROOT
from lib.run_folder import RunFolder


def make(*args: str) -> subprocess.CompletedProcess:
    # use this interpreter's environment as is (as with an active conda env)
    return subprocess.run(["make", "-C", str(ROOT), *args, "PARAMS=smoke", f"PY={sys.executable}", "ENV_STAMP="],
                          capture_output=True, text=True, env=os.environ)


@pytest.mark.slow
def test_make_all_on_smoke_runs_every_step_and_then_only_what_changed():
    p = params.load("smoke")
    r = make("all")
    assert r.returncode == 0, r.stderr[-3000:]
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for nb in notebooks:
        assert (p.run_dir / nb.name).is_file(), nb.name
        assert (p.fig_dir / nb.with_suffix(".html").name).is_file(), nb.name

    # what each step hands to the next (the run-folder contract), read back through its one owner
    run = RunFolder.of(p)
    mem = run.read_scores()
    n_train = len(mem.mem)
    memorized = run.read_memorized()
    pairs = run.read_pairs()
    # the memorized set removed and bucketed is the train side of the high-influence pairs (FZ's, the paper's)
    assert len(pairs) and np.array_equal(memorized, np.unique(pairs.train_idx))
    assert (mem.mem[memorized] >= p.mem_threshold).all()
    assert np.isin(memorized, np.flatnonzero(mem.estimable & (mem.mem >= p.mem_threshold))).all()
    chance = run.read_chance()  # the null model's counts, beside the real ones, at the threshold used
    assert np.isclose(chance.index, p.infl_threshold).any() and (chance["pairs: chance (mean)"] >= 0).all()
    assert "by chance" in (ROOT / "runs" / "smoke" / "02_memorization_scores.ipynb").read_text()
    dups = run.read_duplicates()
    assert {"train_idx", "test_idx", "kind", "score", "verdict", "decision", "final"} <= set(dups.columns)
    assert dups["final"].dtype == bool
    b = run.read_buckets()
    both = np.concatenate([b.leakage_shift_idx, b.memorized_bucket_idx])
    assert np.array_equal(np.sort(both), memorized) and len(np.unique(both)) == len(both) <= n_train
    table = (p.fig_dir / "table2.md").read_text()
    assert "Original" in table and "2.54" in table and "NOT THE PAPER'S SCALE" in table
    index = (p.fig_dir / "index.html").read_text()
    assert all(nb.with_suffix(".html").name in index for nb in notebooks)

    # nothing changed: nothing reruns (`all` itself is phony, so ask about the last step's output)
    last = f"runs/smoke/{notebooks[-1].name}"
    assert make("-q", last).returncode == 0
    # a changed notebook reruns from that step on, not before
    nb4 = ROOT / "notebooks" / "04_subpopulations.ipynb"
    os.utime(nb4)
    planned = make("-n", last).stdout
    assert "04_subpopulations" in planned and "05_marginal_utility" in planned and "06_results" in planned
    assert "01_train_subsets" not in planned and "03_leakage" not in planned
    # a lib module reruns only the steps that use it (and their successors)
    os.utime(ROOT / "lib" / "leakage.py")
    planned = make("-n", last).stdout
    assert "03_leakage" in planned and "02_memorization" not in planned and "00_prepare" not in planned
