"""The run folder runs/<name>/: one naming rule, and one typed read and write per artifact.

Every notebook and lib module reaches the run folder through here (datamodels' single
naming rule); nothing else builds a path inside it. Layout:

    params.resolved.yaml          the parameters the run used (Params.save)
    NN_name.ipynb                 executed notebooks (lib/pipeline.py)
    subsets/                      FZ's subset models, a store (lib/store.py)          notebook 01
    memorization/scores.npz       mem, se, n_in, n_out, estimable                     notebook 02
    memorization/high_infl_pairs.npz   FZ's pair format (tr_idx, tt_idx, infl, mem)
    memorization/memorized_idx.npy     int64 sorted: the points removed and bucketed
    memorization/top_influencers.npz   idx, infl (n_test, K); (n_test, 0) in reference mode
    memorization/chance.csv       real vs chance pair counts per influence threshold (train mode; lib/chance.py)
    duplicates.csv                flagged (train, test) pairs with review columns    notebook 03
    groups.csv                    sub-population groups with review columns          notebook 04
    buckets.npz                   Leakage+Shift / Memorized                          notebook 04
    utility/<condition>/          one retraining store per condition                 notebook 05
    tables/<name>.csv             computed result tables (numbers, before formatting) notebook 06

A reader of a missing artifact gets MissingArtifact naming the file and the notebook
that writes it.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .params import Params

# artifact -> (path inside the run folder, the notebook that writes it)
ARTIFACTS = {
    "params": ("params.resolved.yaml", "any notebook"),
    "subsets": ("subsets", "01_train_subsets"),
    "scores": ("memorization/scores.npz", "02_memorization_scores"),
    "pairs": ("memorization/high_infl_pairs.npz", "02_memorization_scores"),
    "memorized": ("memorization/memorized_idx.npy", "02_memorization_scores"),
    "top_influencers": ("memorization/top_influencers.npz", "02_memorization_scores"),
    "chance": ("memorization/chance.csv", "02_memorization_scores"),
    "duplicates": ("duplicates.csv", "03_leakage_detection"),
    "groups": ("groups.csv", "04_subpopulations"),
    "buckets": ("buckets.npz", "04_subpopulations"),
    "utility": ("utility", "05_marginal_utility"),
    "tables": ("tables", "06_results_tables"),
}

# duplicates.csv: column -> dtype (review columns decision, decided_by, final follow lib/review.py)
DUPLICATE_DTYPES = {"train_idx": np.int64, "test_idx": np.int64, "train_label": np.int64, "test_label": np.int64,
                    "kind": str, "copy_kind": str, "score": np.float64, "memorized": bool, "verdict": str, "source": str,
                    "judgment": np.int64, "finder_kind": str}
REVIEW_DTYPES = {"decision": str, "decided_by": str, "final": bool}
# groups.csv: index lists are space-separated ints (subpop.format_idx)
GROUP_DTYPES = {"group_id": np.int64, "class": np.int64, "train_idx": str, "test_idx": str, "n_train": np.int64,
                "n_test": np.int64, "size_rel_class": np.float64, "n_pairs": np.int64, "infl_min": np.float64,
                "infl_max": np.float64, "verdict": str}


class MissingArtifact(FileNotFoundError):
    """An artifact a notebook needs has not been written (its step has not run)."""


class RunFolder:
    """runs/<name>/ of one parameter set (or any folder, for tests)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @classmethod
    def of(cls, P: Params) -> "RunFolder":
        return cls(P.run_dir)

    def path(self, artifact: str, *parts: str) -> Path:
        """The one naming rule: runs/<name>/<ARTIFACTS[artifact]>/<parts...>."""
        if artifact not in ARTIFACTS:
            raise KeyError(f"unknown run-folder artifact {artifact!r} (known: {', '.join(ARTIFACTS)})")
        return self.root.joinpath(ARTIFACTS[artifact][0], *parts)

    @staticmethod
    def filename(artifact: str) -> str:
        """The artifact's file name (e.g. duplicates.csv): also the name of its review file."""
        return Path(ARTIFACTS[artifact][0]).name

    def exists(self, artifact: str) -> bool:
        return self.path(artifact).exists()

    def _need(self, artifact: str, *parts: str) -> Path:
        path = self.path(artifact, *parts)
        if not path.exists():
            raise MissingArtifact(f"{path} is missing: run notebook {ARTIFACTS[artifact][1]} for "
                                  f"'{self.root.name}' first")
        return path

    def _new(self, artifact: str, *parts: str) -> Path:
        path = self.path(artifact, *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def notebook(self, name: str) -> Path:
        """The executed copy of notebook `name` (e.g. 03_leakage_detection.ipynb)."""
        return self.root / name

    def write_params(self, P: Params) -> Path:
        """The resolved parameters, next to the run's outputs."""
        path = self._new("params")
        path.write_text(yaml.safe_dump(P.to_dict(), sort_keys=False))
        return path

    # ------------------------------------------------------------ stores
    def subset_store(self) -> Path:
        return self.path("subsets")

    def utility_store(self, condition: str) -> Path:
        return self.path("utility", condition)

    # ------------------------------------------------------------ memorization (notebook 02)
    def write_memorization(self, *, scores, pairs, memorized_idx: np.ndarray, top, n_test: int) -> list[Path]:
        """scores, FZ-format pairs, the memorized indices and the top influencers (None: no ranking exists)."""
        from . import fz_format

        np.savez(self._new("scores"), **scores.arrays())
        fz_format.write_pairs(self._new("pairs"), pairs)
        np.save(self._new("memorized"), np.unique(np.asarray(memorized_idx, np.int64)))
        if top is None:
            idx, infl = np.zeros((n_test, 0), np.int64), np.zeros((n_test, 0), np.float32)
        else:
            if len(top.top_idx) != n_test:
                raise ValueError(f"top influencers cover {len(top.top_idx)} test examples, expected {n_test}")
            idx, infl = top.top_idx.astype(np.int64), top.top_infl.astype(np.float32)
        np.savez(self._new("top_influencers"), idx=idx, infl=infl)
        return [self.path(a) for a in ("scores", "pairs", "memorized", "top_influencers")]

    def read_scores(self):
        from .memorization import Scores

        with np.load(self._need("scores"), allow_pickle=False) as f:
            return Scores(**{k.name: f[k.name] for k in fields(Scores) if k.name in f.files})

    def read_pairs(self):
        from . import fz_format

        return fz_format.read_pairs(self._need("pairs"))

    def read_memorized(self) -> np.ndarray:
        """(n_mem,) int64 sorted run indices of the memorized points."""
        return np.load(self._need("memorized"), allow_pickle=False)

    def read_top_influencers(self) -> tuple[np.ndarray, np.ndarray]:
        """(idx (n_test, K) int64, infl (n_test, K) float32); K = 0 when no ranking exists."""
        with np.load(self._need("top_influencers"), allow_pickle=False) as f:
            return f["idx"], f["infl"]

    def write_chance(self, table: pd.DataFrame) -> Path:
        path = self._new("chance")
        table.to_csv(path)
        return path

    def read_chance(self) -> pd.DataFrame:
        return pd.read_csv(self._need("chance"), index_col=0)

    # ------------------------------------------------------------ duplicates (03), groups and buckets (04)
    def write_duplicates(self, dups: pd.DataFrame) -> Path:
        return _write_csv(self._new("duplicates"), dups, {**DUPLICATE_DTYPES, **REVIEW_DTYPES})

    def read_duplicates(self) -> pd.DataFrame:
        return _read_csv(self._need("duplicates"), {**DUPLICATE_DTYPES, **REVIEW_DTYPES})

    def write_groups(self, groups: pd.DataFrame) -> Path:
        return _write_csv(self._new("groups"), groups, {**GROUP_DTYPES, **REVIEW_DTYPES})

    def read_groups(self) -> pd.DataFrame:
        return _read_csv(self._need("groups"), {**GROUP_DTYPES, **REVIEW_DTYPES})

    def write_buckets(self, b) -> Path:
        path = self._new("buckets")
        np.savez(path, **{f.name: getattr(b, f.name) for f in fields(b)})
        return path

    def read_buckets(self):
        from .buckets import Buckets

        with np.load(self._need("buckets"), allow_pickle=False) as z:
            return Buckets(**{f.name: z[f.name] for f in fields(Buckets)})

    def copy_to_report(self, artifact: str, fig_dir: Path | str) -> Path:
        """Put a reviewable table (duplicates | groups) beside the report's pages, under the same name."""
        import shutil

        dst = Path(fig_dir) / self.filename(artifact)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._need(artifact), dst)
        return dst

    # ------------------------------------------------------------ result tables (06)
    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        path = self._new("tables", f"{name}.csv")
        table.to_csv(path)
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self._need("tables", f"{name}.csv"), index_col=0)


def _write_csv(path: Path, table: pd.DataFrame, dtypes: dict) -> Path:
    """Columns in the schema's order first (all required), extra columns after; atomic replace."""
    missing = [c for c in dtypes if c not in table.columns and c not in REVIEW_DTYPES]
    if missing:
        raise ValueError(f"{path.name}: table lacks column(s) {missing}")
    cols = [c for c in dtypes if c in table.columns] + [c for c in table.columns if c not in dtypes]
    tmp = path.with_suffix(".tmp")
    table[cols].to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _read_csv(path: Path, dtypes: dict) -> pd.DataFrame:
    """A CSV written by _write_csv, every schema column in its dtype (bools from True/False text)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col, dtype in dtypes.items():
        if col not in table.columns:
            continue
        if dtype is bool:
            text = table[col].str.strip().str.lower()
            if not text.isin(["true", "false"]).all():
                raise ValueError(f"{path}: column {col} holds values other than True/False")
            table[col] = text.eq("true")
        elif dtype is str:
            continue
        else:
            table[col] = pd.to_numeric(table[col].replace("", np.nan)).astype(dtype)
    return table
