"""A run's review pages: every flagged duplicate pair, every sub-population group and every other
high-influence pair drawn on paged sheets (lib/grids.py), and a manifest saying which page holds
which item, keyed as the review files are.

figures/<name>/review_pages.csv has one row per drawn item: page (file name), item (duplicate |
group | pair), train_idx, test_idx (-1 for a group), group_id (-1 unless a group). A reviewer finds
any item there; tests prove from it that every item is on exactly one page.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import evidence, grids, subpop

MANIFEST = "review_pages.csv"
MANIFEST_COLUMNS = ["page", "item", "train_idx", "test_idx", "group_id"]


def duplicate_pages(table: pd.DataFrame, *, x_train: np.ndarray, x_test: np.ndarray, class_names: list[str],
                    title: str, stem: Path) -> list[grids.Page]:
    """Every row of an evidence table (evidence.duplicate_evidence), in its order, train beside test."""
    items = [(int(r.train_idx), int(r.test_idx), evidence.pair_caption(r, class_names=class_names))
             for r in table.itertuples()]
    return grids.pair_pages(x_left=x_train, x_right=x_test, items=items, title=title, stem=stem)


def pair_pages(places: pd.DataFrame, *, pairs, mem: np.ndarray, x_train: np.ndarray, x_test: np.ndarray,
               y_train: np.ndarray, class_names: list[str], title: str, stem: Path) -> list[grids.Page]:
    """The high-influence pairs reviewed on pair pages (evidence.pair_places: place == "pair"), weakest first."""
    infl_of = dict(zip(zip(pairs.train_idx.tolist(), pairs.test_idx.tolist()), pairs.infl.tolist()))
    on = places[places["place"].eq("pair")]
    rows = sorted(zip(on["train_idx"].tolist(), on["test_idx"].tolist()), key=lambda p: (infl_of[p], p))
    items = [(a, b, f"{class_names[y_train[a]]}\ninfl {infl_of[(a, b)]:.2f} · mem {mem[a]:.2f}") for a, b in rows]
    return grids.pair_pages(x_left=x_train, x_right=x_test, items=items, title=title, stem=stem)


def group_pages(groups: pd.DataFrame, *, pairs, mem: np.ndarray, x_train: np.ndarray, x_test: np.ndarray,
                y_train: np.ndarray, y_test: np.ndarray, class_names: list[str], title: str,
                stem: Path) -> list[grids.Page]:
    """Every group (a Figure 3 analog): its train images, then the test images they influence.

    Doubtful groups first: rejected ones (mixed labels or a reviewer's reject), then the smallest.
    """
    if not len(groups):
        grids.clear_pages(stem)
        return []
    keep = subpop.confirmed_mask(groups).to_numpy()
    order = np.lexsort((groups["group_id"].to_numpy(), groups["n_train"].to_numpy(), keep))
    g = groups.iloc[order]
    rows = subpop.group_rows(g, x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test,
                             class_names=class_names, train_idx=pairs.train_idx, test_idx=pairs.test_idx,
                             infl=pairs.infl, mem=mem)
    blocks = [(int(gid), f"group {gid} · {class_names[cls]} · {n_tr} train → {n_te} test · "
               f"{'counts' if ok else 'REJECTED'}", row)
              for gid, cls, n_tr, n_te, ok, row in zip(g["group_id"], g["class"], g["n_train"], g["n_test"],
                                                       keep[order], rows)]
    return grids.group_pages(groups=blocks, title=title, stem=stem)


def manifest(*, duplicates: list[grids.Page] = (), groups: list[grids.Page] = (),
             pairs: list[grids.Page] = ()) -> pd.DataFrame:
    """One row per drawn item (MANIFEST_COLUMNS), from the pages' keys."""
    rows = []
    for kind, pages in (("duplicate", duplicates), ("pair", pairs)):
        for p in pages:
            rows += [(p.path.name, kind, int(a), int(b), -1) for a, b in p.keys]
    for p in groups:
        rows += [(p.path.name, "group", -1, -1, int(k)) for k in p.keys]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def write_manifest(table: pd.DataFrame, fig_dir: Path, *, replace_items: tuple[str, ...]) -> Path:
    """Merge `table` into figures/<name>/review_pages.csv, replacing the rows of `replace_items` (a step
    rewrites only its own items: 03 the duplicates, 04 the groups and pairs)."""
    path = Path(fig_dir) / MANIFEST
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=MANIFEST_COLUMNS)
    out = pd.concat([old[~old["item"].isin(replace_items)], table], ignore_index=True)[MANIFEST_COLUMNS]
    out.to_csv(path, index=False)
    return path


def reachable_pairs(manifest_table: pd.DataFrame, *, places: pd.DataFrame) -> pd.Series:
    """How many review pages each high-influence pair is listed on (1 for every pair when all is well).

    places: evidence.pair_places of the pairs; a pair placed in a group is listed on its group's page.
    """
    on_pair_pages = manifest_table[manifest_table["item"].eq("pair")]
    listed = pd.Series(1, index=pd.MultiIndex.from_frame(on_pair_pages[["train_idx", "test_idx"]]))
    listed = listed.groupby(level=[0, 1]).sum()
    group_count = manifest_table[manifest_table["item"].eq("group")].groupby("group_id").size()
    counts = []
    for a, b, place, gid in places[["train_idx", "test_idx", "place", "group_id"]].itertuples(index=False):
        counts.append(int(listed.get((a, b), 0)) + int(group_count.get(gid, 0)) if place == "group"
                      else int(listed.get((a, b), 0)))
    return pd.Series(counts, index=pd.MultiIndex.from_frame(places[["train_idx", "test_idx"]]), name="pages")
