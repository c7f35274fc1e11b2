"""Contact sheets of (test, train) pairs for judging by eye: 20 pairs per PNG, each row of a sheet holds
two pairs, each pair drawn as test | train | train mirrored, 4x enlarged, with its id and caption.

    python bench/render_pairs.py PAIRS.csv OUT_PREFIX [--ref train|test]

PAIRS.csv: columns test_idx, train_idx and optionally id, caption. The official CIFAR-100 copy is read;
--ref test draws the second image from the test split (within-test pairs).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib import data  # noqa: E402

SCALE = 4           # 32 px -> 128 px
PER_SHEET = 20
PER_ROW = 2         # pairs side by side in one row of the sheet
CAPTION_PX = 14


def sheet(x_q: np.ndarray, x_r: np.ndarray, rows: pd.DataFrame) -> Image.Image:
    side = 32 * SCALE
    cell_w, cell_h = 3 * side + 4 * 4 + 20, side + CAPTION_PX + 6
    n_rows = (len(rows) + PER_ROW - 1) // PER_ROW
    img = Image.new("RGB", (PER_ROW * cell_w, n_rows * cell_h), "white")
    draw = ImageDraw.Draw(img)
    for k, (_, row) in enumerate(rows.iterrows()):
        x0, y0 = (k % PER_ROW) * cell_w, (k // PER_ROW) * cell_h
        a, b = x_q[int(row["test_idx"])], x_r[int(row["train_idx"])]
        for j, im in enumerate((a, b, b[:, ::-1])):
            img.paste(Image.fromarray(np.ascontiguousarray(im)).resize((side, side), Image.NEAREST),
                      (x0 + 4 + j * (side + 4), y0 + CAPTION_PX + 2))
        cap = f"#{row['id']}  {int(row['test_idx'])} | {int(row['train_idx'])}  {row.get('caption', '')}"
        draw.text((x0 + 4, y0 + 1), cap, fill="black")
        draw.line([(x0 + cell_w - 8, y0), (x0 + cell_w - 8, y0 + cell_h)], fill="grey")
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs")
    ap.add_argument("out_prefix")
    ap.add_argument("--ref", choices=["train", "test"], default="train")
    args = ap.parse_args()
    ds = data.load_cifar(dataset="cifar100")
    rows = pd.read_csv(args.pairs)
    if "id" not in rows:
        rows["id"] = np.arange(len(rows))
    rows["caption"] = rows["caption"].fillna("") if "caption" in rows else ""
    x_r = ds.x_test if args.ref == "test" else ds.x_train
    for s in range(0, len(rows), PER_SHEET):
        out = f"{args.out_prefix}_{s // PER_SHEET:02d}.png"
        sheet(ds.x_test, x_r, rows.iloc[s:s + PER_SHEET]).save(out)
        print(out)


if __name__ == "__main__":
    main()
