"""Image grids for the figures: rows of captioned 32x32 images, and paged review sheets.

Two families:

- `image_rows`, `image_grid`, `pair_rows`: one pyplot figure each (returned, for `plt.show()` in a
  notebook), for small illustrative grids.
- `pair_pages`, `group_pages`: review sheets that draw *every* item (no item is dropped), split into
  pages `<stem>_00.png`, `<stem>_01.png`, ... of bounded size, and return for each page the keys of
  the items it holds (`Page`), so a caller can prove every flagged pair / group is on exactly one page.
  `clear_pages(stem)` removes the pages of a previous run; both functions call it first.

Review sheets are laid out in pixels and drawn without any matplotlib figure (so none stays open,
nothing is shown, the pyplot backend does not matter, and ~100 pages take seconds): the images are
pasted, upscaled by an integer factor (nearest neighbour, >= 2x: a 32 px image is >= 64 px), into one
RGB array, and the text is drawn on it with Pillow in matplotlib's own monospaced font (DejaVu Sans
Mono) at `pt * DPI / 72` px; wrapping/truncation uses the font's measured advance, so every caption
stays inside its own cell.

Hard limits (module constants, checked by tests/test_grids.py): pages are at most `MAX_WIDTH` px wide
and `MAX_HEIGHT` px high (a single group larger than a page is continued on the next page); all text
is at least `CAPTION_PT` points at `DPI`, i.e. >= 8 px tall.
"""
from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Hashable, Sequence

import matplotlib.pyplot as plt
import numpy as np

# ---------------------------------------------------------------------------------------------
# Small pyplot grids (kept as they were: notebooks show the returned figure)
# ---------------------------------------------------------------------------------------------


def image_rows(rows: list[list[tuple[np.ndarray, str]]], *, title: str = "", row_labels: list[str] | None = None,
               cell: float = 1.3, path: Path | str | None = None, fontsize: int = 7):
    """Draw rows of (image (32, 32, 3) uint8, caption); ragged rows leave blanks.

    Saves to `path` (PNG) when given and returns the figure. For many rows use `group_pages`.
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
    """Side-by-side pairs: (index in a, index in b, caption); captions go on the a-side.

    One figure with all given pairs; for review sheets of every flagged pair use `pair_pages`.
    """
    cells = []
    for ia, ib, caption in pairs:
        cells.append((x_a[ia], f"{labels[0]} {ia}\n{caption}"))
        cells.append((x_b[ib], f"{labels[1]} {ib}"))
    per_row = 2 * pairs_per_row
    rows = [cells[i:i + per_row] for i in range(0, len(cells), per_row)]
    return image_rows(rows, title=title, path=path)


# ---------------------------------------------------------------------------------------------
# Paged review sheets
# ---------------------------------------------------------------------------------------------

DPI = 100                 # px per inch of a page at 100 % (font px = pt * DPI / 72; written in the PNG)
MAX_WIDTH = 1200          # px, hard limit on a page's width
MAX_HEIGHT = 1600         # px, hard limit on a page's height
MIN_WIDTH = 640           # px, narrowest page (so headers of small groups stay on one line)
CAPTION_PT = 8.0          # captions and page sub-titles: 8 pt * 100 / 72 = 11.1 px
HEADER_PT = 9.0           # group headers (bold)
TITLE_PT = 11.0           # page title (bold)
FONT = "DejaVu Sans Mono"  # monospaced, ships with matplotlib: wrapping by measured advance is exact
MIN_SCALE, MAX_SCALE = 2, 4   # images are drawn at 2x-4x (a 32 px image: 64-128 px)
MAX_CAPTION_LINES = 4     # caption lines under an image / a pair (longer text is truncated with "…")
MAX_HEADER_LINES = 2
MAX_TITLE_LINES = 2
_LINE_FACTOR = 1.35       # px reserved per text line, in units of the font's px size (>= rendered height)

_MARGIN = 16              # page margin, px
_IMG_PAD = 4              # image -> caption, px
_PAIR_INNER = 6           # left image -> right image, px
_PAIR_GAP = 24            # pair -> pair, px
_CELL_GAP = 8             # image cell -> image cell in a group, px
_ROW_GAP = 12             # image row -> next row, px
_BLOCK_GAP = 18           # group block -> next group block (a grey rule is drawn in the middle), px
_TITLE_GAP = 10           # title block -> content, px
_BORDER = (170, 170, 170)  # 1 px frame around each image (white-background images stay visible)
_RULE = (200, 200, 200)


@dataclass(frozen=True)
class Page:
    """One written page: its PNG path and the keys of the items it holds (in drawing order).

    pair_pages: key = (left_idx, right_idx). group_pages: key = the group's key; a group too large for
    one page is listed in `keys` of the page where it starts and in `continued` of the later pages.
    """
    path: Path
    keys: list = field(default_factory=list)
    continued: list = field(default_factory=list)


def _px(pt: float) -> float:
    return pt * DPI / 72.0


def _line_h(pt: float) -> int:
    return int(math.ceil(_LINE_FACTOR * _px(pt)))


@lru_cache(maxsize=None)
def _font(pt: float, bold: bool):
    """FONT at `pt` points (pt * DPI / 72 px) as a Pillow FreeType font; the TTF is matplotlib's own."""
    from matplotlib.font_manager import FontProperties, findfont
    from PIL import ImageFont

    path = findfont(FontProperties(family=FONT, weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size=_px(pt))


@lru_cache(maxsize=None)
def _advance(pt: float, bold: bool) -> float:
    """Width in px of the widest of a few wide characters (all equal in a monospaced font)."""
    f = _font(pt, bold)
    return max(f.getlength(c * 10) / 10 for c in "MW@m_0·…")


def _chars(width_px: float, pt: float, bold: bool = False) -> int:
    """How many characters fit in width_px (1 px slack; the advance is the widest measured glyph)."""
    return max(1, int((width_px - 1) / _advance(pt, bold)))


def _wrap(text: Any, width: int, max_lines: int) -> list[str]:
    """Wrap each line of `text` to `width` characters; keep at most `max_lines` (last one ends in '…')."""
    text = "" if text is None else str(text)
    if not text.strip():
        return []
    lines: list[str] = []
    for para in text.replace("\t", " ").split("\n"):
        lines += textwrap.wrap(para, width, break_long_words=True, break_on_hyphens=False) or [""]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:max(width - 1, 0)].rstrip() + "…"
    return lines


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from uint8/float, grey, RGB or RGBA input."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):  # channels first
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected an image (H, W, 3), got shape {np.shape(img)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if np.nanmax(a, initial=0) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    return a


def _plain(key: Any) -> Any:
    """numpy scalars -> Python scalars (also inside tuples), so keys compare and print plainly."""
    if isinstance(key, tuple):
        return tuple(_plain(k) for k in key)
    if isinstance(key, np.generic):
        return key.item()
    return key


class _Sheet:
    """A page being laid out in pixel coordinates (origin top-left): images and text runs."""

    def __init__(self, width: int):
        self.width = width
        self.images: list[tuple[int, int, int, np.ndarray]] = []   # (x, y, box px, image)
        self.texts: list[tuple[int, int, list[str], float, bool, tuple]] = []  # (x, y, lines, pt, bold, rgb)
        self.rules: list[int] = []                                    # y of horizontal rules

    def image(self, x: int, y: int, box: int, img: np.ndarray):
        self.images.append((x, y, box, img))

    def text(self, x: int, y: int, lines: list[str], pt: float, *, bold: bool = False,
             colour: tuple[int, int, int] = (0, 0, 0)):
        self.texts.extend([(x, y, list(lines), pt, bold, colour)] if lines else [])

    def render(self, height: int, path: Path) -> None:
        """Paste the images into one RGB page, draw the text on it, write the PNG (exactly width x height)."""
        from PIL import Image, ImageDraw

        w, h = self.width, int(height)
        canvas = np.full((h, w, 3), 255, np.uint8)
        for y in self.rules:
            canvas[y, _MARGIN:w - _MARGIN] = _RULE
        for x, y, box, img in self.images:
            a = _as_rgb(img)
            s = max(1, box // max(a.shape[0], a.shape[1]))
            a = np.repeat(np.repeat(a, s, axis=0), s, axis=1)[:box, :box]
            ih, iw = a.shape[:2]
            x0, y0 = x + (box - iw) // 2, y + (box - ih) // 2
            canvas[max(y0 - 1, 0):y0 + ih + 1, max(x0 - 1, 0):x0 + iw + 1] = _BORDER
            canvas[y0:y0 + ih, x0:x0 + iw] = a
        page = Image.fromarray(canvas, "RGB")
        draw = ImageDraw.Draw(page)
        boxes = []  # (x0, y0, x1, y1, font px, text) of every text line drawn
        for x, y, lines, pt, bold, colour in self.texts:
            font, lh = _font(pt, bold), _line_h(pt)
            for i, line in enumerate(lines):
                draw.text((x, y + i * lh), line, font=font, fill=colour)
                boxes.append((*draw.textbbox((x, y + i * lh), line, font=font), font.size, line))
        _save_page(page, path, boxes)


def _save_page(page, path: Path, boxes: list) -> None:
    """Write the page PNG (a seam for tests, which also get the drawn text boxes)."""
    page.save(path, format="PNG", dpi=(DPI, DPI), compress_level=1)


def _page_path(stem: Path, i: int) -> Path:
    return stem.with_name(f"{stem.name}_{i:02d}.png")


def _stem(stem: Path | str) -> Path:
    stem = Path(stem)
    return stem.with_suffix("") if stem.suffix.lower() == ".png" else stem


def clear_pages(stem: Path | str) -> int:
    """Remove the page files `<stem>_NN.png` (two or more digits) of a previous run; returns how many."""
    stem = _stem(stem)
    folder = stem.parent
    if not folder.is_dir():
        return 0
    pattern = re.compile(re.escape(stem.name) + r"_\d{2,}\.png")
    n = 0
    for p in folder.iterdir():
        if pattern.fullmatch(p.name) and p.is_file():
            p.unlink()
            n += 1
    return n


def _title_lines(title: str, width_px: int) -> list[str]:
    return _wrap(title, _chars(width_px, TITLE_PT, True), MAX_TITLE_LINES)


def _title_height(lines: list[str]) -> int:
    return len(lines) * _line_h(TITLE_PT) + _line_h(CAPTION_PT) + _TITLE_GAP


def _draw_title(sheet: _Sheet, lines: list[str], subtitle: str) -> int:
    """Title + one sub-title line at the top; returns the y where content starts."""
    y = _MARGIN
    sheet.text(_MARGIN, y, lines, TITLE_PT, bold=True)
    y += len(lines) * _line_h(TITLE_PT)
    sheet.text(_MARGIN, y, _wrap(subtitle, _chars(sheet.width - 2 * _MARGIN, CAPTION_PT), 1), CAPTION_PT,
               colour=(64, 64, 64))
    return y + _line_h(CAPTION_PT) + _TITLE_GAP


def _range(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}–{b}"


def pair_pages(*, x_left: Sequence[np.ndarray] | np.ndarray, x_right: Sequence[np.ndarray] | np.ndarray,
               items: Sequence[tuple[int, int, str]], labels: tuple[str, str] = ("train", "test"), title: str,
               stem: Path | str, pairs_per_row: int = 4, rows_per_page: int = 6) -> list[Page]:
    """Draw every (left_idx, right_idx, caption) pair: x_left[left_idx] beside x_right[right_idx].

    Under each pair: its key line "<labels[0]> <left_idx> · <labels[1]> <right_idx>" (the review
    file's key), then the caption (multi-line allowed; wrapped to the pair's width, at most
    MAX_CAPTION_LINES lines). Pages hold at most pairs_per_row x rows_per_page pairs, in input order;
    pairs_per_row is lowered when it cannot fit MAX_WIDTH at 2x, rows_per_page when a page would pass
    MAX_HEIGHT. Removes the pages of a previous run first (`clear_pages`), writes
    `<stem>_00.png`, `<stem>_01.png`, ... and returns one `Page` per file, keys = (left_idx, right_idx).
    No items: nothing is written, returns [].
    """
    stem = _stem(stem)
    clear_pages(stem)
    items = [(_plain(a), _plain(b), c) for a, b, c in items]
    if not items:
        return []
    if pairs_per_row < 1 or rows_per_page < 1:
        raise ValueError("pairs_per_row and rows_per_page must be >= 1")
    stem.parent.mkdir(parents=True, exist_ok=True)

    def width(n: int, box: int) -> int:
        return 2 * _MARGIN + n * (2 * box + _PAIR_INNER) + (n - 1) * _PAIR_GAP

    n_cols = max(1, min(pairs_per_row, len(items)))
    while n_cols > 1 and width(n_cols, 32 * MIN_SCALE) > MAX_WIDTH:
        n_cols -= 1
    scale = max((s for s in range(MAX_SCALE, MIN_SCALE - 1, -1) if width(n_cols, 32 * s) <= MAX_WIDTH),
                default=MIN_SCALE)
    box = 32 * scale
    block = 2 * box + _PAIR_INNER
    page_w = min(MAX_WIDTH, max(MIN_WIDTH, width(n_cols, box)))
    chars = _chars(block, CAPTION_PT)
    lh = _line_h(CAPTION_PT)

    cells = []  # (key, left image, right image, key lines, caption lines)
    for a, b, caption in items:
        key_lines = _wrap(f"{labels[0]} {a} · {labels[1]} {b}", chars, 3)
        cells.append(((a, b), x_left[a], x_right[b], key_lines, _wrap(caption, chars, MAX_CAPTION_LINES)))
    rows = [cells[i:i + n_cols] for i in range(0, len(cells), n_cols)]
    row_h = [box + _IMG_PAD + max(len(c[3]) + len(c[4]) for c in r) * lh + _ROW_GAP for r in rows]

    t_lines = _title_lines(title, page_w - 2 * _MARGIN)
    body = MAX_HEIGHT - _MARGIN - _title_height(t_lines) - _MARGIN
    pages: list[list[int]] = []   # row indices per page
    used = 0
    for i, h in enumerate(row_h):
        if pages and len(pages[-1]) < rows_per_page and used + h <= body:
            pages[-1].append(i)
            used += h
        else:
            pages.append([i])
            used = h

    out = []
    n_items = len(cells)
    first = 0
    for p, row_ids in enumerate(pages):
        sheet = _Sheet(page_w)
        n_here = sum(len(rows[i]) for i in row_ids)
        y = _draw_title(sheet, t_lines, f"page {p + 1} of {len(pages)} · pairs {_range(first + 1, first + n_here)} "
                                        f"of {n_items} · left: {labels[0]}, right: {labels[1]}")
        keys = []
        for i in row_ids:
            for j, (key, left, right, key_lines, cap_lines) in enumerate(rows[i]):
                x = _MARGIN + j * (block + _PAIR_GAP)
                sheet.image(x, y, box, left)
                sheet.image(x + box + _PAIR_INNER, y, box, right)
                ty = y + box + _IMG_PAD
                sheet.text(x, ty, key_lines, CAPTION_PT, bold=True)
                sheet.text(x, ty + len(key_lines) * lh, cap_lines, CAPTION_PT)
                keys.append(key)
            y += row_h[i]
        path = _page_path(stem, p)
        sheet.render(y - _ROW_GAP + _MARGIN, path)
        out.append(Page(path=path, keys=keys))
        first += n_here
    return out


def group_pages(*, groups: Sequence[tuple[Hashable, str, Sequence[tuple[np.ndarray, str]]]], title: str,
                stem: Path | str, max_per_row: int = 12, rows_per_page: int = 12) -> list[Page]:
    """Draw every group as a block: its header line, then its (image, caption) cells in rows of <= max_per_row.

    groups: (key, header, images), e.g. (4012, "group 4012 · apple · counts", [(img, "train 5\\napple"), ...]).
    Blocks are packed in input order; a page ends between two groups (a block is never split when it
    fits on one page; one larger than a page continues on the next pages, header marked "(continued)").
    A page holds at most rows_per_page image rows and is at most MAX_HEIGHT px high. All pages share
    one cell size: images at the largest scale (2x-4x) that fits min(max_per_row, largest group)
    cells in MAX_WIDTH. Removes the pages of a previous run first, writes `<stem>_NN.png`, and returns
    one `Page` per file, keys = group keys. No groups: nothing is written, returns [].
    """
    stem = _stem(stem)
    clear_pages(stem)
    groups = [(_plain(k), h, list(imgs)) for k, h, imgs in groups]
    if not groups:
        return []
    if max_per_row < 1 or rows_per_page < 1:
        raise ValueError("max_per_row and rows_per_page must be >= 1")
    stem.parent.mkdir(parents=True, exist_ok=True)

    def slot_for(n: int) -> int:
        return (MAX_WIDTH - 2 * _MARGIN + _CELL_GAP) // n - _CELL_GAP

    n_cols = max(1, min(max_per_row, max(len(g[2]) for g in groups)))
    while n_cols > 1 and slot_for(n_cols) < 32 * MIN_SCALE:
        n_cols -= 1
    slot_max = slot_for(n_cols)
    box = 32 * min(MAX_SCALE, max(MIN_SCALE, slot_max // 32))
    slot = min(slot_max, box + 32)
    page_w = min(MAX_WIDTH, max(MIN_WIDTH, 2 * _MARGIN + n_cols * slot + (n_cols - 1) * _CELL_GAP))
    cap_chars = _chars(slot, CAPTION_PT)
    head_chars = _chars(page_w - 2 * _MARGIN, HEADER_PT, True)
    lh, hh = _line_h(CAPTION_PT), _line_h(HEADER_PT)

    # each block: header lines + rows of (image, caption lines); heights in px
    blocks = []
    for key, header, images in groups:
        cells = [(img, _wrap(cap, cap_chars, MAX_CAPTION_LINES)) for img, cap in images]
        rows = [cells[i:i + n_cols] for i in range(0, len(cells), n_cols)]
        heights = [box + _IMG_PAD + max(len(c[1]) for c in r) * lh + _ROW_GAP for r in rows]
        blocks.append((key, str(header), rows, heights))

    def head_lines(header: str, cont: bool) -> list[str]:
        return _wrap(header + (" (continued)" if cont else ""), head_chars, MAX_HEADER_LINES) or [" "]

    t_lines = _title_lines(title, page_w - 2 * _MARGIN)
    body = MAX_HEIGHT - _MARGIN - _title_height(t_lines) - _MARGIN

    # pages: list of [(block index, first row, end row, continued?)]
    pages: list[list[tuple[int, int, int, bool]]] = []
    used_h, used_r = 0, 0
    for b, (key, header, rows, heights) in enumerate(blocks):
        head_h = len(head_lines(header, False)) * hh + _IMG_PAD
        need_h = head_h + sum(heights) + _BLOCK_GAP
        if pages and used_r + len(rows) <= rows_per_page and used_h + need_h <= body:
            pages[-1].append((b, 0, len(rows), False))
            used_h, used_r = used_h + need_h, used_r + len(rows)
            continue
        # a new page; a block too large for one page is cut into page-sized chunks of rows
        start, cont = 0, False
        while True:
            head_h = len(head_lines(header, cont)) * hh + _IMG_PAD
            h, end = head_h + _BLOCK_GAP, start
            while end < len(rows) and end - start < rows_per_page and h + heights[end] <= body:
                h += heights[end]
                end += 1
            if end == start and end < len(rows):   # a single row taller than a page: draw it anyway
                h += heights[end]
                end += 1
            pages.append([(b, start, end, cont)])
            used_h, used_r = h, end - start
            if end >= len(rows):
                break
            start, cont = end, True

    out = []
    n_groups = len(blocks)
    for p, parts in enumerate(pages):
        sheet = _Sheet(page_w)
        firsts = [b for b, _, _, cont in parts if not cont]
        conts = [b for b, _, _, cont in parts if cont]
        what = (f"groups {_range(firsts[0] + 1, firsts[-1] + 1)} of {n_groups}" if firsts
                else f"group {conts[0] + 1} of {n_groups} continued")
        y = _draw_title(sheet, t_lines, f"page {p + 1} of {len(pages)} · {what}")
        keys, continued = [], []
        bottom = y
        for k, (b, r0, r1, cont) in enumerate(parts):
            key, header, rows, heights = blocks[b]
            if k > 0:
                sheet.rules.append(y - _BLOCK_GAP // 2)
            lines = head_lines(header, cont)
            sheet.text(_MARGIN, y, lines, HEADER_PT, bold=True)
            y += len(lines) * hh + _IMG_PAD
            bottom = y
            for r in range(r0, r1):
                for j, (img, cap_lines) in enumerate(rows[r]):
                    x = _MARGIN + j * (slot + _CELL_GAP)
                    sheet.image(x, y, box, img)
                    sheet.text(x, y + box + _IMG_PAD, cap_lines, CAPTION_PT)
                y += heights[r]
                bottom = y - _ROW_GAP
            y += _BLOCK_GAP
            (continued if cont else keys).append(key)
        path = _page_path(stem, p)
        sheet.render(min(MAX_HEIGHT, bottom + _MARGIN), path)
        out.append(Page(path=path, keys=keys, continued=continued))
    return out
