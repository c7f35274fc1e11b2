"""Table 2 of the paper and where the accuracy is lost, computed from the retraining stores.

Reads the completed rows of each condition's store (lib/retrain.py) and computes every
number of the tables from them; formatting and drawing them is lib/render.py's job.
Accuracies are fractions in the inputs and percent (drops: percentage points) in the
tables, as in the paper. The paper's published values sit in their own, labelled
columns: they come from ResNet50 on the full CIFAR-100, 100 models per condition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from . import retrain, stats
from .buckets import Buckets
from .params import Params

# (row of the paper's Table 2, our removal condition, the paper's drop mean and std in %)
PAPER_TABLE2 = (
    ("Original (FZ)", "minus_memorized_nowd", 2.54, 0.20),
    ("Model Convergence", "minus_memorized_wd", 1.78, 0.32),
    ("Leakage+Shift Bucket", "minus_leakage_shift_wd", 1.25, 0.32),
    ("Memorized Bucket", "minus_memorized_bucket_wd", 0.54, 0.29),
)
# The paper's text (section 5.2) gives 1.28 +- 0.48 for Model Convergence where its Table 2 gives 1.78 +- 0.32.
PAPER_NOTE = ("Paper's values: Table 2 of 'Is memorization actually necessary?' (ResNet50, full CIFAR-100, "
              "160 epochs, 100 models per condition). Its section 5.2 text gives 1.28 ± 0.48 for Model "
              "Convergence where its Table 2 gives 1.78 ± 0.32; the table's value is shown.")


def _pct(x: float) -> float:
    return 100.0 * x


def eval_subsets(*, buckets: Buckets, removal: str, n_test: int) -> dict[str, np.ndarray]:
    """Disjoint test subsets for a removal: where its accuracy could be lost.

    duplicate:  test points that duplicate a removed training point (the Memorized
                bucket has none by construction: duplicated points go to Leakage+Shift)
    influenced: test points strongly influenced by a removed point, not already in `duplicate`
    other:      every remaining test point
    The three partition range(n_test), so the overall drop is their size-weighted sum.
    """
    dup = np.unique(np.asarray(buckets.duplicate_test_idx, np.int64))
    infl_leak = np.asarray(buckets.influenced_test_idx_leakage, np.int64)
    infl_mem = np.asarray(buckets.influenced_test_idx_memorized, np.int64)
    if removal == "memorized":
        infl = np.union1d(infl_leak, infl_mem)
    elif removal == "leakage_shift":
        infl = np.unique(infl_leak)
    elif removal == "memorized_bucket":
        dup, infl = np.zeros(0, np.int64), np.unique(infl_mem)
    else:
        raise ValueError(f"unknown removal {removal!r}; known: {sorted(retrain.REMOVAL_KEYS)}")
    infl = np.setdiff1d(infl, dup)
    other = np.setdiff1d(np.arange(n_test), np.union1d(dup, infl))
    return {"duplicate": dup, "influenced": infl, "other": other}


@dataclass(frozen=True)
class Results:
    """The completed models of one condition, read from its store."""
    ids: np.ndarray           # (k,) int64 model ids of the completed rows
    test_acc: np.ndarray      # (k,) float64
    train_acc: np.ndarray     # (k,) float64, on the points each model trained on
    test_correct: np.ndarray  # (k, n_test) bool
    curve: np.ndarray         # (k, n_epochs) float32 test accuracy after each epoch
    seconds: np.ndarray       # (k,) float64 training time per model


def load_results(*, P: Params, planned: list[retrain.Planned], ds) -> dict[str, Results]:
    """condition name -> Results, for every planned condition whose store exists and has completed models.

    Opening a store checks its signature (parameters, data, removal set) and its files, read-only,
    so results made otherwise are refused rather than tabled, and damaged rows are left out.
    """
    out = {}
    for p in planned:
        if not (p.path / "signature.json").is_file():
            continue
        st = retrain.open_condition(P=P, planned=p, ds=ds, mode="r")
        done = st.done()
        if len(done) == 0:
            continue
        out[p.condition.name] = Results(
            ids=done, test_acc=np.asarray(st.test_acc[done], np.float64),
            train_acc=np.asarray(st.train_acc[done], np.float64),
            test_correct=np.asarray(st.test_correct[done], bool), curve=np.asarray(st.curve[done], np.float32),
            seconds=np.asarray(st.seconds[done], np.float64))
    return out


def plan_table(*, planned: list[retrain.Planned]):
    """One row per planned condition: what it removes, with which weight decay, against which baseline."""
    return pd.DataFrame([{"condition": p.condition.name, "removes": p.condition.removal or "-",
                          "random": p.condition.random, "n_removed": p.n_remove, "weight_decay": p.weight_decay,
                          "baseline": p.condition.baseline or "-",
                          "store": f"{p.path.parent.name}/{p.path.name}"} for p in planned],
                        columns=["condition", "removes", "random", "n_removed", "weight_decay", "baseline", "store"])


def results_table(*, results: dict[str, Results], planned: list[retrain.Planned]):
    """One row per condition: models done, mean and std of test and train accuracy, seconds per model."""
    rows = []
    for p in planned:
        r = results.get(p.condition.name)
        rows.append({"condition": p.condition.name, "n_removed": p.n_remove, "models": 0 if r is None else len(r.ids),
                     "test_acc_mean": np.nan if r is None else r.test_acc.mean(),
                     "test_acc_std": np.nan if r is None or len(r.ids) < 2 else r.test_acc.std(ddof=1),
                     "train_acc_mean": np.nan if r is None else r.train_acc.mean(),
                     "seconds_per_model": np.nan if r is None else r.seconds.mean()})
    return pd.DataFrame(rows).set_index("condition")


def table2(*, acc: Mapping[str, np.ndarray], n_remove: Mapping[str, int], seed: int,
           n_boot: int = 10_000) -> pd.DataFrame:
    """One row per row of the paper's Table 2, numbers in percent.

    acc: condition name -> (n_models,) test accuracy (fraction) of its completed models;
    a condition missing from `acc` (not trained) leaves its row's own numbers NaN.
    n_remove: condition name -> points removed.
    Columns: ours (drop, std, Welch CI and p, bootstrap CI), the matching random
    control's drop, the excess of the removal over its control (condition vs
    control accuracy, Welch), and the paper's value.
    """
    rows = []
    for row, cond_name, paper_mean, paper_std in PAPER_TABLE2:
        cond = retrain.BY_NAME[cond_name]
        ctrl_name = f"random_for_{cond_name}"
        r = {"row": row, "condition": cond_name, "baseline": cond.baseline, "n_removed": n_remove.get(cond_name, 0),
             "paper_drop": paper_mean, "paper_std": paper_std}
        have = cond_name in acc and cond.baseline in acc and len(acc[cond_name]) and len(acc[cond.baseline])
        if have:
            base = np.asarray(acc[cond.baseline], np.float64) * 100
            cur = np.asarray(acc[cond_name], np.float64) * 100
            d = stats.drop(baseline=base, condition=cur)
            lo = hi = math.nan  # too few models for a bootstrap interval (stats.MIN_MODELS_FOR_BOOTSTRAP)
            if min(len(base), len(cur)) >= stats.MIN_MODELS_FOR_BOOTSTRAP:
                lo, hi = stats.bootstrap_ci(baseline=base, condition=cur, seed=seed, n_boot=n_boot)
            r.update(n_models=d.n_condition, n_models_baseline=d.n_baseline, baseline_acc=d.mean_baseline,
                     condition_acc=d.mean_condition, drop=d.drop, std=d.std, ci_low=d.ci_low, ci_high=d.ci_high,
                     p_welch=d.p, boot_low=lo, boot_high=hi)
            if ctrl_name in acc and len(acc[ctrl_name]):
                ctrl = np.asarray(acc[ctrl_name], np.float64) * 100
                dc = stats.drop(baseline=base, condition=ctrl)
                ex = stats.drop(baseline=ctrl, condition=cur)  # control acc - condition acc
                r.update(control_n_models=dc.n_condition, control_drop=dc.drop, control_std=dc.std,
                         control_ci_low=dc.ci_low, control_ci_high=dc.ci_high, control_p_welch=dc.p,
                         excess_drop=ex.drop, excess_ci_low=ex.ci_low, excess_ci_high=ex.ci_high,
                         excess_p_welch=ex.p)
        rows.append(r)
    cols = ["row", "condition", "baseline", "n_removed", "n_models", "n_models_baseline", "baseline_acc",
            "condition_acc", "drop", "std", "ci_low", "ci_high", "p_welch", "boot_low", "boot_high",
            "control_n_models", "control_drop", "control_std", "control_ci_low", "control_ci_high",
            "control_p_welch", "excess_drop", "excess_ci_low", "excess_ci_high", "excess_p_welch",
            "paper_drop", "paper_std"]
    return pd.DataFrame(rows).reindex(columns=cols).set_index("row")


def subset_table(*, correct: Mapping[str, np.ndarray], subsets: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """Where the accuracy is lost: per Table 2 row and test subset, mean accuracies (%) and drops (pp).

    correct: condition name -> (n_models, n_test) bool test correctness of its completed models.
    subsets: removal name -> {"duplicate", "influenced", "other"} -> test indices (retrain.eval_subsets).
    `share` is the subset's contribution to the overall drop (size-weighted drop / overall drop).
    Rows of conditions not trained keep their subset sizes, with NaN accuracies.
    """
    def acc(name: str, idx: np.ndarray) -> float:
        if name not in correct or len(idx) == 0:
            return math.nan
        return _pct(float(np.mean(stats.subset_accuracy(test_correct=correct[name], idx=idx))))

    rows = []
    for row, cond_name, _, _ in PAPER_TABLE2:
        cond = retrain.BY_NAME[cond_name]
        if cond.removal not in subsets:
            continue
        parts = subsets[cond.removal]
        n_test = sum(len(idx) for idx in parts.values())
        trained = cond_name in correct and cond.baseline in correct
        overall = _pct(correct[cond.baseline].mean() - correct[cond_name].mean()) if trained else math.nan
        for part, idx in parts.items():
            a_base, a_cond, a_ctrl = (acc(n, idx) for n in (cond.baseline, cond_name, f"random_for_{cond_name}"))
            d = a_base - a_cond
            rows.append({"row": row, "test subset": part, "n_test": len(idx), "baseline_acc": a_base,
                         "condition_acc": a_cond, "drop": d, "control_acc": a_ctrl, "control_drop": a_base - a_ctrl,
                         "share": d * len(idx) / n_test / overall if overall and not math.isnan(d) else math.nan})
    return pd.DataFrame(rows, columns=["row", "test subset", "n_test", "baseline_acc", "condition_acc", "drop",
                                       "control_acc", "control_drop", "share"])


