"""Table 2 analog and per-subset table from hand-made per-model results; notebooks 05-06 end to end on smoke."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lib import data, render, retrain, stats, tables
from lib.buckets import Buckets
from lib.params import ROOT

ACC = {  # fractions, as the stores hold them
    "full_nowd": np.array([0.50, 0.52, 0.54]),
    "minus_memorized_nowd": np.array([0.48, 0.50]),
    "random_for_minus_memorized_nowd": np.array([0.51, 0.52]),
    "full_wd": np.array([0.60, 0.60, 0.61, 0.63]),
    "minus_memorized_wd": np.array([0.58, 0.59, 0.60]),
    "random_for_minus_memorized_wd": np.array([0.60, 0.61, 0.59]),
    "minus_memorized_bucket_wd": np.array([0.61, 0.60, 0.60]),
}
N_REMOVE = {"minus_memorized_nowd": 10, "minus_memorized_wd": 10, "minus_memorized_bucket_wd": 6}
OURS = ["n_models", "n_models_baseline", "baseline_acc", "condition_acc", "drop", "std", "ci_low", "ci_high",
        "p_welch", "boot_low", "boot_high", "control_n_models", "control_drop", "control_std", "control_ci_low",
        "control_ci_high", "control_p_welch", "excess_drop", "excess_ci_low", "excess_ci_high", "excess_p_welch"]
PAPER = ROOT.parent / "shared" / "paper" / "is-memorization-actually-necessary.txt"


def welch(a, b):
    """scipy's Welch test of mean(a) - mean(b): (p, ci_low, ci_high), independent of lib.stats."""
    r = sps.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    ci = r.confidence_interval(0.95)
    return r.pvalue, ci.low, ci.high


def paper_table2() -> tuple[list[str], list[tuple[float, float]]]:
    """The paper's own Table 2, read from its text: column headers and (drop, std) in %."""
    if not PAPER.is_file():
        pytest.skip(f"the paper's text is not at {PAPER}")
    lines = PAPER.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("Accuracy Drop\t"))
    values = [(float(m), float(s)) for m, s in re.findall(r"\$(\d+\.\d+) \\pm (\d+\.\d+)\\%\$", lines[row])]
    headers = [h.strip() for h in lines[row - 1].split("\t")[1:]]  # "Result", then our three rows
    return ["Original"] + headers[1:], values


def test_table2_cells_are_the_statistics():
    t = tables.table2(acc=ACC, n_remove=N_REMOVE, seed=0, n_boot=500)
    # in percent; Original (FZ): baseline 50, 52, 54 (mean 52, var 4), condition 48, 50 (mean 49, var 2),
    # its random control 51, 52 (mean 51.5, var 0.5)
    r = t.loc["Original (FZ)"]
    assert r["drop"] == pytest.approx(3.0) and r["std"] == pytest.approx(math.sqrt(6.0))
    assert r["baseline_acc"] == pytest.approx(52.0) and r["condition_acc"] == pytest.approx(49.0)
    assert r["n_models"] == 2 and r["n_models_baseline"] == 3 and r["n_removed"] == 10
    p, lo, hi = welch([50, 52, 54], [48, 50])
    assert (r["p_welch"], r["ci_low"], r["ci_high"]) == pytest.approx((p, lo, hi))
    assert math.isnan(r["boot_low"]) and math.isnan(r["boot_high"])  # 2 and 3 models: too few to resample
    assert r["control_n_models"] == 2
    assert r["control_drop"] == pytest.approx(0.5) and r["control_std"] == pytest.approx(math.sqrt(4.5))
    assert r["control_p_welch"] == pytest.approx(welch([50, 52, 54], [51, 52])[0])
    p, lo, hi = welch([51, 52], [48, 50])  # removal vs its control: control acc - condition acc
    assert r["excess_drop"] == pytest.approx(2.5)
    assert (r["excess_p_welch"], r["excess_ci_low"], r["excess_ci_high"]) == pytest.approx((p, lo, hi))
    # Model Convergence: the weight-decay baseline 60, 60, 61, 63 (mean 61, var 2) against 58, 59, 60
    # (mean 59, var 1); its control 60, 61, 59 (mean 60)
    mc = t.loc["Model Convergence"]
    assert mc["drop"] == pytest.approx(2.0) and mc["std"] == pytest.approx(math.sqrt(3.0))
    assert mc["baseline_acc"] == pytest.approx(61.0) and mc["n_models_baseline"] == 4
    assert mc["control_drop"] == pytest.approx(1.0) and mc["excess_drop"] == pytest.approx(1.0)
    assert mc["p_welch"] == pytest.approx(welch([60, 60, 61, 63], [58, 59, 60])[0])
    # Leakage+Shift was not trained: all its own cells are empty, nothing removed
    ls = t.loc["Leakage+Shift Bucket"]
    assert ls[OURS].isna().all() and ls["n_removed"] == 0
    # Memorized Bucket: 61, 60, 60 (mean 60 1/3, var 1/3) against the weight-decay baseline; no control trained
    mb = t.loc["Memorized Bucket"]
    assert mb["drop"] == pytest.approx(2 / 3) and mb["std"] == pytest.approx(math.sqrt(2 + 1 / 3))
    assert mb["n_removed"] == 6
    assert mb[[c for c in OURS if c.startswith(("control_", "excess_"))]].isna().all()

    text = render.format_table2(t)
    o = text.loc["Original (FZ)"]
    assert o["removed"] == "10" and o["models (cond/base)"] == "2/3"
    assert o["acc base → cond (%)"] == "52.00 → 49.00"
    assert o["ours: drop (pp)"] == "3.00 ± 2.45"  # sqrt(6) = 2.449
    assert o["random control: drop (pp)"] == "0.50 ± 2.12"  # sqrt(4.5) = 2.121
    assert o["removal − control (pp), p"] == "2.50 (p 0.2)"  # scipy: p = 0.199
    assert text.loc["Memorized Bucket", "ours: drop (pp)"] == "0.67 ± 1.53"  # sqrt(7/3) = 1.528
    assert text.loc["Memorized Bucket", "random control: drop (pp)"] == "-"
    assert (text.loc["Leakage+Shift Bucket"].drop("PAPER's drop (%)").tolist()
            == ["0", "-", "-", "-", "-", "-", "-", "-", "-"])
    md = render.markdown(text).splitlines()
    assert len(md) == 2 + 4 and md[0].startswith("| row | removed | models (cond/base) |")
    assert md[2].startswith("| Original (FZ) | 10 | 2/3 | 52.00 → 49.00 | 3.00 ± 2.45 |")


def test_table2_bootstrap_needs_enough_models():
    n = stats.MIN_MODELS_FOR_BOOTSTRAP
    base = 0.60 + 0.01 * np.arange(n) / (n - 1)     # 60 .. 61 %
    cond = 0.57 + 0.02 * np.arange(n) / (n - 1)     # 57 .. 59 %: drop 2.5 pp
    acc = {"full_nowd": base, "minus_memorized_nowd": cond}
    r = tables.table2(acc=acc, n_remove={}, seed=0, n_boot=2000).loc["Original (FZ)"]
    assert r["drop"] == pytest.approx(2.5)
    # percent, around the drop, and inside min(base) - max(cond) .. max(base) - min(cond) = 1 .. 4
    assert 1.0 <= r["boot_low"] < 2.5 < r["boot_high"] <= 4.0
    other = tables.table2(acc=acc, n_remove={}, seed=1, n_boot=2000).loc["Original (FZ)"]
    assert (other["boot_low"], other["boot_high"]) != (r["boot_low"], r["boot_high"])  # the seed is used
    assert other["drop"] == r["drop"] and other["ci_low"] == r["ci_low"]
    # one model fewer in either group: no bootstrap interval, the Welch one stays
    for short in ("full_nowd", "minus_memorized_nowd"):
        few = tables.table2(acc={**acc, short: acc[short][1:]}, n_remove={}, seed=0).loc["Original (FZ)"]
        assert math.isnan(few["boot_low"]) and math.isnan(few["boot_high"]) and not math.isnan(few["ci_low"])


def test_table2_shows_the_papers_table2():
    """The PAPER columns hold the values printed in the paper's Table 2, each in its own row."""
    headers, values = paper_table2()
    t = tables.table2(acc=ACC, n_remove=N_REMOVE, seed=0, n_boot=100)
    assert len(values) == 4 and len(t) == 4
    for (row, r), header, (m, s) in zip(t.iterrows(), headers, values):
        assert row.startswith(header), (row, header)
        assert (r["paper_drop"], r["paper_std"]) == (m, s), row
    text = render.format_table2(t)
    assert text["PAPER's drop (%)"].tolist() == [f"{m:.2f} ± {s:.2f}" for m, s in values]


def test_paper_note_quotes_the_paper():
    """The note under the table says the paper's text gives another value for Model Convergence: it does."""
    headers, values = paper_table2()
    text = PAPER.read_text()
    quoted = re.findall(r"(\d+\.\d+) ± (\d+\.\d+)", tables.PAPER_NOTE)
    assert len(quoted) == 2
    in_text, in_table = quoted
    assert f"${in_text[0]} \\pm {in_text[1]}\\%$" in text
    assert tuple(map(float, in_table)) == values[headers.index("Model Convergence")]
    assert tuple(map(float, in_text)) != tuple(map(float, in_table))


def test_table2_without_results_shows_only_the_paper():
    t0 = tables.table2(acc={}, n_remove={}, seed=0)
    t = tables.table2(acc=ACC, n_remove=N_REMOVE, seed=0, n_boot=100)
    assert list(t0.index) == list(t.index) and len(t0) == 4
    assert t0[OURS].isna().all().all() and (t0["n_removed"] == 0).all()
    # the paper's values do not depend on ours
    pd.testing.assert_frame_equal(t0[["paper_drop", "paper_std"]], t[["paper_drop", "paper_std"]])
    assert t0[["paper_drop", "paper_std"]].notna().all().all()
    # each row compares its removal with the full set trained alike: FZ's Original without weight decay,
    # every fix with it; Original and Model Convergence remove all memorized points, the buckets their own
    want = {"Original (FZ)": ("memorized", False), "Model Convergence": ("memorized", True),
            "Leakage+Shift Bucket": ("leakage_shift", True), "Memorized Bucket": ("memorized_bucket", True)}
    for row, r in t0.iterrows():
        cond, base = retrain.BY_NAME[r["condition"]], retrain.BY_NAME[r["baseline"]]
        assert (cond.removal, cond.weight_decay) == want[row] and not cond.random
        assert base.removal is None and base.weight_decay == cond.weight_decay
    assert render.format_table2(t0)["ours: drop (pp)"].tolist() == ["-"] * 4


def test_subset_table_locates_the_loss():
    # 10 test points; removing the memorized points costs exactly the duplicated points 0, 1
    n_test = 10
    base = np.ones((3, n_test), bool)
    cond = np.ones((2, n_test), bool)
    cond[:, [0, 1]] = False
    ctrl = np.ones((2, n_test), bool)
    ctrl[0, 5] = False  # the random control loses one "other" point in one model
    empty = np.zeros(0, np.int64)
    b = Buckets(memorized_idx=np.array([0]), leakage_shift_idx=np.array([0]), cause=np.array(["exact"]),
                memorized_bucket_idx=empty, duplicate_test_idx=np.array([0, 1]),
                influenced_test_idx_leakage=np.array([1, 2]), influenced_test_idx_memorized=np.array([3]))
    subsets = {r: tables.eval_subsets(buckets=b, removal=r, n_test=n_test) for r in retrain.REMOVAL_KEYS}
    full = tables.subset_table(correct={"full_nowd": base, "minus_memorized_nowd": cond,
                                        "random_for_minus_memorized_nowd": ctrl}, subsets=subsets)
    untrained = full[full["row"] == "Memorized Bucket"].set_index("test subset")  # sizes only
    assert untrained["n_test"].tolist() == [0, 1, 9] and untrained["drop"].isna().all()
    st = full[full["row"] == "Original (FZ)"].set_index("test subset")
    assert st.loc["duplicate", "n_test"] == 2 and st.loc["influenced", "n_test"] == 2  # {2, 3}
    assert st.loc["duplicate", "drop"] == pytest.approx(100.0)
    assert st.loc["influenced", "drop"] == pytest.approx(0.0) and st.loc["other", "drop"] == pytest.approx(0.0)
    assert st.loc["duplicate", "share"] == pytest.approx(1.0)
    assert st["share"].sum() == pytest.approx(1.0)  # the subsets partition the test set
    assert st.loc["other", "control_drop"] == pytest.approx(100 * 0.5 / 6)

    text = render.format_subset_table(full)
    dup = text.loc["Original (FZ): duplicate"]
    assert dup[["n_test", "baseline_acc", "condition_acc", "drop", "control_acc", "control_drop", "share"]].tolist() \
        == [2, "100.00", "0.00", "100.00", "100.00", "0.00", "1.00"]
    other = text.loc["Original (FZ): other"]
    assert other[["n_test", "control_acc", "control_drop", "share"]].tolist() == [6, "91.67", "8.33", "0.00"]
    assert text.loc["Memorized Bucket: other", ["drop", "share"]].tolist() == ["-", "-"]
    assert text.loc["Memorized Bucket: other", "n_test"] == 9
    assert len(text) == len(full)


@pytest.mark.slow
def test_notebooks_05_06_smoke_end_to_end(tmp_path):
    """The smoke parameter set (under its own run name) through 05 and 06 with hand-made buckets.

    The Table 2 cells must be the statistics of the stored accuracies: changing one stored
    test_acc and rerunning 06 changes the table accordingly.
    """
    import shutil

    from lib import params, pipeline
    from lib.run_folder import RunFolder

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
        planned = retrain.plan(P=P, buckets=RunFolder.of(P).read_buckets())
        assert len(planned) == 8  # the empty Leakage+Shift bucket and its control are not trained
        n_train, n_test = 1000, 500
        res = tables.load_results(P=P, planned=planned, ds=data.load(P))
        assert all(len(r.ids) == P.n_retrain_models for r in res.values())

        def expected_cell():
            res = tables.load_results(P=P, planned=planned, ds=data.load(P))
            t = tables.table2(acc={n: r.test_acc for n, r in res.items()},
                              n_remove={p.condition.name: p.n_remove for p in planned}, seed=P.seed)
            return render.format_table2(t).loc["Memorized Bucket", "ours: drop (pp)"]

        md = (P.fig_dir / "table2.md").read_text()
        cell = expected_cell()
        assert f"| Memorized Bucket | 25 | 2/2 |" in md and cell in md
        assert "NOT THE PAPER'S SCALE" in md and "1000 train / 500 test images" in md
        assert f"{retrain.n_epochs(P)} epochs, {P.n_retrain_models} models per condition" in md
        assert "| Leakage+Shift Bucket | 0 |" in md

        st = retrain.open_condition(P=P, planned=[p for p in planned if p.condition.name == "full_wd"][0],
                                    ds=data.load(P))
        st.test_acc[0] = st.test_acc[0] + 0.25  # a baseline model 25 points better: the drop grows by 12.5
        st.row_crc[0] = st._row_crc(0)  # rewritten as a model would be, checksum included
        st.test_acc.flush(), st.row_crc.flush()
        new_cell = expected_cell()
        assert float(new_cell.split(" ± ")[0]) == pytest.approx(float(cell.split(" ± ")[0]) + 12.5, abs=0.011)
        pipeline.execute(str(yaml), nb / "06_results_tables.ipynb")
        md2 = (P.fig_dir / "table2.md").read_text()
        assert new_cell in md2 and cell not in md2
    finally:
        for d in (P.run_dir, P.fig_dir):
            shutil.rmtree(d, ignore_errors=True)
