"""Sub-population groups from the high-influence pairs (paper section 5.1, step 1).

The paper's rule: memorized training points that strongly influence the *same*
test point belong to one sub-population. Here that is a bipartite graph,
memorized train points <-> test points, one edge per high-influence pair; a
group is a connected component holding at least `min_train` train points (two
train points sharing a test point, or chained through several test points).
Step 2, the visual check, is the reviewer's: notebook 04 draws every group and
params/review/<name>/groups.csv can reject any of them.

Groups are tabled one row per group, with the index lists as space-separated
ints so the table is the groups.csv of the run-folder contract.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

GROUP_COLUMNS = ["group_id", "class", "train_idx", "test_idx", "n_train", "n_test", "size_rel_class",
                 "n_pairs", "infl_min", "infl_max", "verdict"]


def format_idx(idx) -> str:
    """Sorted ints as one space-separated string (a groups.csv cell)."""
    return " ".join(str(int(i)) for i in np.sort(np.asarray(idx, np.int64)))


def parse_idx(cell) -> np.ndarray:
    """Inverse of format_idx; an empty or missing cell is an empty array."""
    if not isinstance(cell, str) or not cell.strip():
        return np.zeros(0, np.int64)
    return np.asarray(cell.split(), np.int64)


def components(*, train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of the bipartite graph given by the pairs (train_idx[i], test_idx[i]).

    Returns (train_nodes, train_comp, test_nodes, test_comp): the unique train and
    test indices and the component id of each; ids are 0..n_comp-1, numbered in
    order of each component's smallest train index.
    """
    train_idx = np.asarray(train_idx, np.int64)
    test_idx = np.asarray(test_idx, np.int64)
    if len(train_idx) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    train_nodes, e_tr = np.unique(train_idx, return_inverse=True)  # (n_u_train,)
    test_nodes, e_tt = np.unique(test_idx, return_inverse=True)   # (n_u_test,)
    n_u_tr, n_nodes = len(train_nodes), len(train_nodes) + len(test_nodes)
    adj = coo_matrix((np.ones(len(train_idx), np.int8), (e_tr, n_u_tr + e_tt)), shape=(n_nodes, n_nodes))
    _, comp = connected_components(adj, directed=False)  # (n_nodes,) scipy's ids
    # renumber by each component's smallest train index: ids then do not depend on scipy's order
    comp_ids, first_pos = np.unique(comp[:n_u_tr], return_index=True)
    renum = np.full(comp.max() + 1, -1, np.int64)
    renum[comp_ids[np.argsort(first_pos)]] = np.arange(len(comp_ids))
    return train_nodes, renum[comp[:n_u_tr]], test_nodes, renum[comp[n_u_tr:]]


def find_groups(*, train_idx: np.ndarray, test_idx: np.ndarray, infl: np.ndarray, memorized_idx: np.ndarray,
                y_train: np.ndarray, min_train: int) -> pd.DataFrame:
    """One row per sub-population group (columns GROUP_COLUMNS).

    train_idx, test_idx, infl: the high-influence pairs (n_pairs,); only pairs whose train
    point is memorized are edges. y_train: (n_train,) label of every train index, used
    for the group's class and its size relative to the class's train count.
    group_id is the group's smallest train index: a reviewer's decision keyed by it cannot land
    on another group when a rerun changes the pairs. Automatic verdict: "confirm" when all
    train points of the group share one label, "reject" otherwise (a sub-population lives
    inside one class).
    """
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    infl = np.asarray(infl, np.float64)
    y_train = np.asarray(y_train, np.int64)
    keep = np.isin(train_idx, np.asarray(memorized_idx, np.int64))
    train_idx, test_idx, infl = train_idx[keep], test_idx[keep], infl[keep]
    if len(train_idx) == 0:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    class_count = np.bincount(y_train)  # (n_classes,) train points per class
    train_nodes, train_comp, _, _ = components(train_idx=train_idx, test_idx=test_idx)
    pair_comp = train_comp[np.searchsorted(train_nodes, train_idx)]  # (n_pairs,) component of each edge
    rows = []
    for c in np.flatnonzero(np.bincount(train_comp) >= min_train):
        members = train_nodes[train_comp == c]
        on = pair_comp == c
        labels = np.unique(y_train[members])
        cls = int(np.bincount(y_train[members]).argmax())
        rows.append(dict(
            group_id=int(members[0]), **{"class": cls}, train_idx=format_idx(members),
            test_idx=format_idx(np.unique(test_idx[on])), n_train=len(members), n_test=len(np.unique(test_idx[on])),
            size_rel_class=len(members) / class_count[cls], n_pairs=int(on.sum()),
            infl_min=float(infl[on].min()), infl_max=float(infl[on].max()),
            verdict="confirm" if len(labels) == 1 else "reject",
        ))
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def confirmed_mask(groups: pd.DataFrame) -> pd.Series:
    """Which groups count: column `final` (bool, after review) when present, else verdict == confirm."""
    if "final" not in groups:
        return groups["verdict"].eq("confirm")
    if not pd.api.types.is_bool_dtype(groups["final"]):
        raise TypeError("groups: column 'final' must be bool (read the table with RunFolder.read_groups)")
    return groups["final"]


def confirmed_train_idx(groups: pd.DataFrame) -> np.ndarray:
    """Sorted unique train indices of the groups that count (confirmed_mask)."""
    cells = [parse_idx(s) for s in groups.loc[confirmed_mask(groups), "train_idx"]] if len(groups) else []
    return np.unique(np.concatenate(cells)) if cells else np.zeros(0, np.int64)


def group_rows(groups: pd.DataFrame, *, x_train: np.ndarray, x_test: np.ndarray, y_train: np.ndarray,
               y_test: np.ndarray, class_names: list[str], train_idx: np.ndarray, test_idx: np.ndarray,
               infl: np.ndarray, mem: np.ndarray) -> list[list[tuple[np.ndarray, str]]]:
    """Rows for grids.image_rows (a Figure 3 analog): each group's train images, then its test images.

    Train captions give index, label and memorization score; test captions give index,
    label and the largest influence any of the group's train points has on it.
    x_*, y_*: images and labels by run index; mem: (n_train,) score by train index.
    """
    train_idx, test_idx, infl = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64), np.asarray(infl)
    rows = []
    for cell_tr, cell_tt in zip(groups["train_idx"], groups["test_idx"]):
        members, tests = parse_idx(cell_tr), parse_idx(cell_tt)
        row = [(x_train[i], f"train {i}\n{class_names[y_train[i]]}\nmem {mem[i]:.2f}") for i in members]
        for j in tests:
            on = (test_idx == j) & np.isin(train_idx, members)
            row.append((x_test[j], f"TEST {j}\n{class_names[y_test[j]]}\ninfl {infl[on].max():.2f}"))
        rows.append(row)
    return rows
