"""Table 2 analog and per-subset table from hand-made per-model results; notebooks 05-06 end to end on smoke."""
import math

import numpy as np
import pandas as pd
import pytest

from lib import retrain, tables

ACC = {  # fractions, as the stores hold them
    "full_nowd": np.array([0.50, 0.52, 0.54]),
    "minus_memorized_nowd": np.array([0.48, 0.50]),
    "random_for_minus_memorized_nowd": np.array([0.51, 0.52]),
    "full_wd": np.array([0.60, 0.60, 0.61, 0.63]),
    "minus_memorized_wd": np.array([0.58, 0.59, 0.60]),
    "random_for_minus_memorized_wd": np.array([0.60, 0.61, 0.59]),
    "minus_memorized_bucket_wd": np.array([0.61, 0.60, 0.60]),
}


def test_table2_cells_are_the_statistics():
    t = tables.table2(acc=ACC, n_remove={"minus_memorized_nowd": 10, "minus_memorized_wd": 10,
                                         "minus_memorized_bucket_wd": 6}, seed=0, n_boot=500)
    r = t.loc["Original (FZ)"]
    # hand-computed in percent: baseline 52 (var 4), condition 49 (var 2)
    assert r["drop"] == pytest.approx(3.0) and r["std"] == pytest.approx(math.sqrt(6.0))
    assert r["baseline_acc"] == pytest.approx(52.0) and r["condition_acc"] == pytest.approx(49.0)
    assert r["n_models"] == 2 and r["n_models_baseline"] == 3 and r["n_removed"] == 10
    assert r["control_drop"] == pytest.approx(52.0 - 51.5)
    assert r["excess_drop"] == pytest.approx(51.5 - 49.0)
    assert r["ci_low"] < 3.0 < r["ci_high"] and r["boot_low"] <= 3.0 <= r["boot_high"]
    assert r["paper_drop"] == 2.54 and r["paper_std"] == 0.20
    mc = t.loc["Model Convergence"]
    assert mc["drop"] == pytest.approx(100 * (ACC["full_wd"].mean() - ACC["minus_memorized_wd"].mean()))
    # Leakage+Shift was not trained: its own cells are empty, the paper's are still shown
    ls = t.loc["Leakage+Shift Bucket"]
    assert math.isnan(ls["drop"]) and ls["paper_drop"] == 1.25
    mb = t.loc["Memorized Bucket"]
    assert not math.isnan(mb["drop"]) and math.isnan(mb["control_drop"])  # no control trained
    text = tables.format_table2(t)
    assert text.loc["Original (FZ)", "ours: drop (pp)"] == "3.00 ± 2.45"
    assert text.loc["Original (FZ)", "PAPER's drop (%)"] == "2.54 ± 0.20"
    assert text.loc["Leakage+Shift Bucket", "ours: drop (pp)"] == "-"
    md = tables.markdown(text)
    assert "| Original (FZ) |" in md and "3.00 ± 2.45" in md


def test_table2_without_results_shows_only_the_paper():
    t = tables.table2(acc={}, n_remove={}, seed=0)
    assert list(t.index) == [r[0] for r in tables.PAPER_TABLE2]
    assert t["drop"].isna().all() and t["paper_drop"].tolist() == [2.54, 1.78, 1.25, 0.54]


def test_subset_table_locates_the_loss():
    # 10 test points; removing the memorized points costs exactly the duplicated points 0, 1
    n_test = 10
    base = np.ones((3, n_test), bool)
    cond = np.ones((2, n_test), bool)
    cond[:, [0, 1]] = False
    ctrl = np.ones((2, n_test), bool)
    ctrl[0, 5] = False  # the random control loses one "other" point in one model
    b = {"duplicate_test_idx": np.array([0, 1]), "influenced_test_idx_leakage": np.array([1, 2]),
         "influenced_test_idx_memorized": np.array([3]), "memorized_idx": np.array([0]),
         "leakage_shift_idx": np.array([0]), "memorized_bucket_idx": np.array([], np.int64)}
    subsets = {r: retrain.eval_subsets(buckets=b, removal=r, n_test=n_test) for r in retrain.REMOVAL_KEYS}
    st = tables.subset_table(correct={"full_nowd": base, "minus_memorized_nowd": cond,
                                      "random_for_minus_memorized_nowd": ctrl}, subsets=subsets)
    untrained = st[st["row"] == "Memorized Bucket"].set_index("test subset")  # sizes only
    assert untrained["n_test"].tolist() == [0, 1, 9] and untrained["drop"].isna().all()
    st = st[st["row"] == "Original (FZ)"].set_index("test subset")
    assert st.loc["duplicate", "n_test"] == 2 and st.loc["influenced", "n_test"] == 2  # {2, 3}
    assert st.loc["duplicate", "drop"] == pytest.approx(100.0)
    assert st.loc["influenced", "drop"] == pytest.approx(0.0) and st.loc["other", "drop"] == pytest.approx(0.0)
    assert st.loc["duplicate", "share"] == pytest.approx(1.0)
    assert st["share"].sum() == pytest.approx(1.0)  # the subsets partition the test set
    assert st.loc["other", "control_drop"] == pytest.approx(100 * 0.5 / 6)
    assert isinstance(tables.format_subset_table(st.reset_index()), pd.DataFrame)


@pytest.mark.slow
def test_notebooks_05_06_smoke_end_to_end(tmp_path):
    """The smoke parameter set (under its own run name) through 05 and 06 with hand-made buckets.

    The Table 2 cells must be the statistics of the stored accuracies: changing one stored
    test_acc and rerunning 06 changes the table accordingly.
    """
    import shutil

    from lib import params, pipeline

    yaml = tmp_path / "smoke_utility_e2e.yaml"  # the smoke set; its own runs/ and figures/ folders
    yaml.write_text((params.PARAMS_DIR / "smoke.yaml").read_text())
    P = params.load(yaml)
    for d in (P.run_dir, P.fig_dir):
        shutil.rmtree(d, ignore_errors=True)
    try:
        P.run_dir.mkdir(parents=True)
        mem = np.arange(0, 1000, 40)  # 25 "memorized" points, all in the Memorized bucket
        np.savez(P.run_dir / "buckets.npz", memorized_idx=mem, leakage_shift_idx=np.zeros(0, np.int64),
                 memorized_bucket_idx=mem, cause=np.zeros(0, str), duplicate_test_idx=np.zeros(0, np.int64),
                 influenced_test_idx_leakage=np.zeros(0, np.int64), influenced_test_idx_memorized=np.arange(10, 30))
        nb = pipeline.NOTEBOOKS
        pipeline.execute(str(yaml), nb / "05_marginal_utility.ipynb")
        pipeline.execute(str(yaml), nb / "06_results_tables.ipynb")
        for f in ("table2.md", "table2.png", "drops.png", "table_subsets.md", "05_learning_curves.png",
                  "05_final_accuracy.png"):
            assert (P.fig_dir / f).is_file(), f
        planned = retrain.plan(P=P, buckets=retrain.load_buckets(P.run_dir))
        assert len(planned) == 8  # the empty Leakage+Shift bucket and its control are not trained
        n_train, n_test = 1000, 500
        res = retrain.load_results(P=P, planned=planned, n_train=n_train, n_test=n_test)
        assert all(len(r.ids) == P.n_retrain_models for r in res.values())

        def expected_cell():
            res = retrain.load_results(P=P, planned=planned, n_train=n_train, n_test=n_test)
            t = tables.table2(acc={n: r.test_acc for n, r in res.items()},
                              n_remove={p.condition.name: p.n_remove for p in planned}, seed=P.seed)
            return tables.format_table2(t).loc["Memorized Bucket", "ours: drop (pp)"]

        md = (P.fig_dir / "table2.md").read_text()
        cell = expected_cell()
        assert f"| Memorized Bucket | 25 | 2/2 |" in md and cell in md
        assert "NOT THE PAPER'S SCALE" in md and "1000 train / 500 test images" in md
        assert f"{retrain.n_epochs(P)} epochs, {P.n_retrain_models} models per condition" in md
        assert "| Leakage+Shift Bucket | 0 |" in md

        st = retrain.open_condition(P=P, planned=[p for p in planned if p.condition.name == "full_wd"][0],
                                    n_train=n_train, n_test=n_test)
        st.test_acc[0] = st.test_acc[0] + 0.25  # a baseline model 25 points better: the drop grows by 12.5
        st.test_acc.flush()
        new_cell = expected_cell()
        assert float(new_cell.split(" ± ")[0]) == pytest.approx(float(cell.split(" ± ")[0]) + 12.5, abs=0.011)
        pipeline.execute(str(yaml), nb / "06_results_tables.ipynb")
        md2 = (P.fig_dir / "table2.md").read_text()
        assert new_cell in md2 and cell not in md2
    finally:
        for d in (P.run_dir, P.fig_dir):
            shutil.rmtree(d, ignore_errors=True)
