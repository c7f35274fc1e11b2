"""Rendering of the result tables and plots: markdown, PNG tables, drop and learning-curve plots.

Takes the DataFrames computed by lib/tables.py (and lib/buckets.py) and the per-condition
results; computes nothing itself beyond formatting.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import retrain, stats
from .tables import PAPER_NOTE

def _pm(m: float, s: float, digits: int = 2) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if not math.isnan(s) else f"{m:.{digits}f}"


def _ci(lo: float, hi: float) -> str:
    return "-" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def format_table2(t: pd.DataFrame) -> pd.DataFrame:
    """The Table 2 analog as strings: ours, the control, and the paper's values (labelled)."""
    out = pd.DataFrame(index=t.index)
    f = lambda c: t[c].astype(float)  # noqa: E731
    out["removed"] = t["n_removed"].astype(int).astype(str)
    out["models (cond/base)"] = [("-" if math.isnan(a) else f"{int(a)}/{int(b)}")
                                 for a, b in zip(f("n_models"), f("n_models_baseline"))]
    out["acc base → cond (%)"] = ["-" if math.isnan(a) else f"{a:.2f} → {b:.2f}"
                                  for a, b in zip(f("baseline_acc"), f("condition_acc"))]
    out["ours: drop (pp)"] = [_pm(m, s) for m, s in zip(f("drop"), f("std"))]
    out["95% CI (Welch)"] = [_ci(a, b) for a, b in zip(f("ci_low"), f("ci_high"))]
    out["p (Welch)"] = [_p(p) for p in f("p_welch")]
    out["95% CI (bootstrap)"] = [_ci(a, b) for a, b in zip(f("boot_low"), f("boot_high"))]
    out["random control: drop (pp)"] = [_pm(m, s) for m, s in zip(f("control_drop"), f("control_std"))]
    out["removal − control (pp), p"] = ["-" if math.isnan(m) else f"{m:.2f} (p {_p(p)})"
                                        for m, p in zip(f("excess_drop"), f("excess_p_welch"))]
    out["PAPER's drop (%)"] = [_pm(m, s) for m, s in zip(f("paper_drop"), f("paper_std"))]
    return out


def markdown(df: pd.DataFrame, *, index: bool = True) -> str:
    """A pipe table, the index as the first column unless index=False; ends with a newline."""
    head = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for idx, row in zip(df.index, df.itertuples(index=False)):
        lines.append("| " + " | ".join(([str(idx)] if index else []) + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def write_table(*, table: pd.DataFrame, title: str, notes: list[str], path_md: Path, path_png: Path | None = None):
    """The formatted table as markdown (title, notes, table) and optionally as a PNG image."""
    path_md = Path(path_md)
    path_md.parent.mkdir(parents=True, exist_ok=True)
    path_md.write_text(f"# {title}\n\n" + "".join(f"{n}\n\n" for n in notes) + markdown(table))
    if path_png is None:
        return None
    cells = [[str(i)] + [str(v) for v in row] for i, row in table.iterrows()]
    cols = [table.index.name or ""] + list(table.columns)
    fig, ax = plt.subplots(figsize=(min(2.0 + 1.6 * len(cols), 26), 1.2 + 0.45 * (len(cells) + 1) + 0.3 * len(notes)))
    ax.axis("off")
    tab = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(list(range(len(cols))))
    tab.scale(1, 1.5)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, 0.01, "\n".join(textwrap.fill(n, 220) for n in notes), fontsize=7, va="bottom")
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
    return fig


def plot_drops(t: pd.DataFrame, *, path: Path | None = None, scale: str = ""):
    """Drops with 95% Welch intervals: ours, the random control's, and the paper's (± std) apart."""
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.8 * len(t)))
    f = lambda c: t[c].astype(float).to_numpy()  # noqa: E731
    for off, m, lo, hi, label, kw in [
        (-0.2, f("drop"), f("ci_low"), f("ci_high"), "ours: removal (95% CI)", dict(fmt="o", color="C0")),
        (0.0, f("control_drop"), f("control_ci_low"), f("control_ci_high"), "ours: random control (95% CI)",
         dict(fmt="s", color="C7")),
    ]:
        err = np.vstack([m - lo, hi - m])
        ax.errorbar(m, y + off, xerr=np.where(np.isnan(err), 0, err), label=label, capsize=3, **kw)
    ax.errorbar(f("paper_drop"), y + 0.2, xerr=f("paper_std"), fmt="D", color="C3", capsize=3,
                label="PAPER's value (± std; ResNet50, full CIFAR-100)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, t.index)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy drop (percentage points)")
    ax.set_title("Accuracy drop per removal" + (f"\n{scale}" if scale else ""), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def scale_text(*, P, n_train: int, n_test: int, n_classes: int) -> str:
    """One line saying at what scale a run was made (so CPU numbers are not read as the paper's)."""
    data = (f"parameter set '{P.name}' (mode {P.mode}): {P.dataset}, {n_classes} classes, {n_train} train / "
            f"{n_test} test images")
    if not P.retrain:
        return data + ", retraining off (no models trained)"
    return (data + f", model {P.model} (width {P.width}), {retrain.n_epochs(P)} epochs, "
            f"{P.n_retrain_models} models per condition, weight decay {P.weight_decay} where used")


def table2_notes(*, P, scale: str, state: str) -> list[str]:
    """The lines printed above Table 2: scale, state, definitions, and the paper's provenance."""
    warn = ("" if P.paper_scale or not P.retrain else
            "NOT THE PAPER'S SCALE: a reduced CPU run; its numbers show the method working and must not be "
            "compared with the paper's values.")
    return [n for n in [
        f"Scale: {scale}.", warn, state,
        "Ours: drop = mean baseline accuracy - mean accuracy without the points (percentage points); ± is "
        "sqrt(s_base^2 + s_cond^2), the spread of the drop between one baseline and one retrained model; 95% CI "
        "and p from Welch's unequal-variance t-test; bootstrap CI: 10,000 seeded resamples of each group, shown "
        f"only with at least {stats.MIN_MODELS_FOR_BOOTSTRAP} models per group (with fewer its simulated coverage "
        "falls to 78-92 %). "
        "Random control: as many training points removed, drawn at random afresh per model. "
        "removal - control: control accuracy minus removal accuracy, Welch p. A row with 0 removed was not "
        "trained (its bucket is empty).",
        PAPER_NOTE,
    ] if n]


def format_subset_table(st: pd.DataFrame) -> pd.DataFrame:
    """The per-subset table with readable numbers (index: Table 2 row and subset)."""
    out = st.set_index(["row", "test subset"]).copy()
    out.index = [f"{a}: {b}" for a, b in out.index]
    out.index.name = "removal: test subset"
    for c in ["baseline_acc", "condition_acc", "drop", "control_acc", "control_drop", "share"]:
        out[c] = [("-" if math.isnan(v) else f"{v:.2f}") for v in out[c].astype(float)]
    return out


def plot_curves(*, results: Mapping, path: Path | None = None):
    """Test accuracy per epoch, mean over each condition's models with a ± std band."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (name, r) in enumerate(results.items()):
        cond = retrain.BY_NAME[name]
        curve = np.asarray(r.curve, np.float64) * 100  # (k, n_epochs)
        m, s = curve.mean(0), (curve.std(0, ddof=1) if len(curve) > 1 else np.zeros(curve.shape[1]))
        ep = np.arange(1, curve.shape[1] + 1)
        ok = np.isfinite(m)  # epochs not evaluated are NaN
        ep, m, s = ep[ok], m[ok], s[ok]
        ls = ":" if cond.random else ("-" if cond.removal is None else "--")
        ax.plot(ep, m, ls, color=f"C{k}", label=f"{name} ({len(curve)})")
        ax.fill_between(ep, m - s, m + s, color=f"C{k}", alpha=0.07)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Learning curves per condition (solid: full set, dashed: removal, dotted: random control)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_accuracies(*, results: Mapping, path: Path | None = None):
    """Final test accuracy of every model, one column per condition, with the mean marked."""
    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4.5))
    rng = np.random.default_rng(0)  # horizontal jitter only, for visibility
    for k, name in enumerate(names):
        acc = np.asarray(results[name].test_acc, np.float64) * 100
        ax.scatter(k + rng.uniform(-0.15, 0.15, len(acc)), acc, s=14, color=f"C{k}", alpha=0.8)
        ax.hlines(acc.mean(), k - 0.3, k + 0.3, color="k", lw=1.5)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("Final test accuracy per model (bar: mean)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
