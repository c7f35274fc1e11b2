"""Image grids for the figures: rows of captioned 32x32 images."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def image_rows(rows: list[list[tuple[np.ndarray, str]]], *, title: str = "", row_labels: list[str] | None = None,
               cell: float = 1.3, path: Path | str | None = None, fontsize: int = 7):
    """Draw rows of (image (32, 32, 3) uint8, caption); ragged rows leave blanks.

    Saves to `path` (PNG) when given and returns the figure.
    """
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + (1.2 if row_labels else 0), cell * n_rows + 0.4),
                             squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if i < len(rows) and j < len(rows[i]):
                img, caption = rows[i][j]
                ax.imshow(img, interpolation="nearest")
                ax.set_title(caption, fontsize=fontsize)
            else:
                ax.axis("off")
        if row_labels and i < len(row_labels):
            axes[i, 0].set_ylabel(row_labels[i], fontsize=fontsize + 1, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=fontsize + 3)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def image_grid(images: np.ndarray, captions: list[str], *, n_cols: int = 10, title: str = "",
               path: Path | str | None = None, cell: float = 1.3):
    """A flat list of images wrapped into rows of n_cols."""
    items = list(zip(images, captions))
    rows = [items[i:i + n_cols] for i in range(0, len(items), n_cols)]
    return image_rows(rows, title=title, path=path, cell=cell)


def pair_rows(x_a: np.ndarray, x_b: np.ndarray, pairs: list[tuple[int, int, str]], *, labels: tuple[str, str],
              pairs_per_row: int = 4, title: str = "", path: Path | str | None = None):
    """Side-by-side pairs: (index in a, index in b, caption); captions go on the a-side."""
    cells = []
    for ia, ib, caption in pairs:
        cells.append((x_a[ia], f"{labels[0]} {ia}\n{caption}"))
        cells.append((x_b[ib], f"{labels[1]} {ib}"))
    per_row = 2 * pairs_per_row
    rows = [cells[i:i + per_row] for i in range(0, len(cells), per_row)]
    return image_rows(rows, title=title, path=path)
