"""Paged review sheets (lib/grids.py): every item on exactly one page, readable and bounded pages.

Synthetic uint8 images (fixed seed); pages are written to tmp_path and checked with PIL on the file.
"""
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from lib import grids  # noqa: E402

RNG = np.random.default_rng(1234)
X_TRAIN = RNG.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
X_TEST = RNG.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
LONG = ("aquarium_fish/sweet_pepper_with_an_unreasonably_long_class_name_that_never_ends\n"
        "score 0.953 mem FINAL and a second line that is much longer than any pair could hold\n"
        "third line\nfourth line\nfifth line that must be cut")


def pair_items(n, caption=lambda i: f"apple/apple\nscore 0.9{i % 10}"):
    return [(int(i * 7 % 400), int(i * 11 % 300), caption(i)) for i in range(n)]


def make_groups(sizes, caption=lambda g, j: f"train {g * 100 + j}\napple\nmem 0.9{j % 10}"):
    return [(4000 + g, f"group {4000 + g} · apple · counts",
             [(X_TRAIN[(g * 13 + j) % 400], caption(g, j)) for j in range(n)]) for g, n in enumerate(sizes)]


@pytest.fixture
def drawn(monkeypatch):
    """Record, per written page, its size and the text lines drawn on it (boxes from the renderer)."""
    record = {}
    save = grids._save_page

    def spy(page, path, boxes):
        record[path.name] = (page.size, list(boxes))
        save(page, path, boxes)

    monkeypatch.setattr(grids, "_save_page", spy)
    return record


def written(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_every_pair_is_on_exactly_one_page(tmp_path, drawn):
    items = pair_items(57)
    pages = grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=items, title="near: 57 pairs",
                             stem=tmp_path / "near", pairs_per_row=4, rows_per_page=6)
    assert [p.path.name for p in pages] == ["near_00.png", "near_01.png", "near_02.png"]
    assert written(tmp_path) == [p.path.name for p in pages]
    seen = Counter(k for p in pages for k in p.keys)
    assert seen == Counter((a, b) for a, b, _ in items) and max(seen.values()) == 1
    assert [len(p.keys) for p in pages] == [24, 24, 9]
    assert all(type(a) is int and type(b) is int for p in pages for a, b in p.keys)
    # the key line under each pair names the review file's key, on the page that lists it
    for p in pages:
        lines = {b[5] for b in drawn[p.path.name][1]}
        for a, b in p.keys:
            assert f"train {a} · test {b}" in lines


def test_every_group_is_on_exactly_one_page_and_blocks_stay_whole(tmp_path, drawn):
    sizes = [2, 30, 0, 5, 12, 13, 1, 7, 25, 3] * 4 + [300]   # the last one is larger than a page
    groups = make_groups(sizes)
    pages = grids.group_pages(groups=groups, title="groups", stem=tmp_path / "groups")
    assert written(tmp_path) == [f"groups_{i:02d}.png" for i in range(len(pages))]
    seen = Counter(k for p in pages for k in p.keys)
    assert seen == Counter(k for k, _, _ in groups) and max(seen.values()) == 1
    assert [k for p in pages for k in p.keys] == [k for k, _, _ in groups]   # input order
    # every group that fits on a page is drawn whole on the page that lists it
    for p in pages:
        captions = Counter(b[5].split()[1] for b in drawn[p.path.name][1] if b[5].startswith("train "))
        for key in p.keys:
            g = key - 4000
            if sizes[g] <= 100:
                assert sum(captions[str(g * 100 + j)] for j in range(sizes[g])) == sizes[g]
    # the oversized group continues on later pages, marked as such, all its images drawn once
    big = 4000 + len(sizes) - 1
    cont = [p for p in pages if big in p.continued]
    assert cont and all(p.keys == [] for p in cont)
    heads = [b[5] for p in cont for b in drawn[p.path.name][1] if b[5].startswith(f"group {big}")]
    assert heads and all("(continued)" in h for h in heads)
    base = (len(sizes) - 1) * 100
    drawn_big = Counter(int(b[5].split()[1]) for p in pages for b in drawn[p.path.name][1]
                        if b[5].startswith("train ") and int(b[5].split()[1]) >= base)
    assert drawn_big == Counter(range(base, base + 300))


@pytest.mark.parametrize("per_row", [1, 4, 9, 30])
def test_pages_are_at_most_1200_px_wide_and_of_bounded_height(tmp_path, per_row):
    pages = grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(70, lambda i: LONG), title="x" * 300,
                             stem=tmp_path / "pairs", pairs_per_row=per_row, rows_per_page=20)
    pages += grids.group_pages(groups=make_groups([40, 3, 90, 1]), title="t", stem=tmp_path / "groups",
                               max_per_row=per_row * 3, rows_per_page=50)
    assert len(pages) >= 2
    for p in pages:
        w, h = Image.open(p.path).size
        assert w <= grids.MAX_WIDTH == 1200
        assert h <= grids.MAX_HEIGHT == 1600


def test_text_is_at_least_8_px_and_images_at_least_64_px(tmp_path, drawn):
    for pt in (grids.CAPTION_PT, grids.HEADER_PT, grids.TITLE_PT):
        assert pt * grids.DPI / 72 >= 8
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    blue = red[..., ::-1].copy()
    x = np.stack([red, blue])
    pairs = []
    for per_row in (4, 20):   # too many per row for 1,200 px: fewer pairs per row, never smaller images
        pairs += grids.pair_pages(x_left=x, x_right=x, items=[(0, 1, "c")] + [(1, 0, "d")] * 39, title="t",
                                  stem=tmp_path / f"p{per_row}", pairs_per_row=per_row)
    groups = []
    for per_row in (12, 40):
        groups += grids.group_pages(groups=[(1, "g", [(red, "r")] + [(X_TRAIN[i], f"i {i}") for i in range(39)])],
                                    title="t", stem=tmp_path / f"g{per_row}", max_per_row=per_row)
    for p in pairs[:1] + pairs[-1:] + groups:
        size, boxes = drawn[p.path.name]
        assert boxes and min(b[4] for b in boxes) >= 8          # font size in px at 100 %
        page = np.asarray(Image.open(p.path).convert("RGB"))
        assert (page == [255, 0, 0]).all(axis=-1).sum() >= 64 * 64   # the red image is drawn >= 64 x 64 px
    for p in pairs[:1] + pairs[-1:]:
        assert (np.asarray(Image.open(p.path).convert("RGB")) == [0, 0, 255]).all(axis=-1).sum() >= 64 * 64


def test_a_group_of_30_wraps_into_rows_of_at_most_12(tmp_path, drawn):
    groups = [(7, "group 7 · apple · counts", [(X_TRAIN[j], f"img {j}") for j in range(30)])]
    pages = grids.group_pages(groups=groups, title="t", stem=tmp_path / "g", max_per_row=12)
    assert len(pages) == 1 and pages[0].keys == [7]
    rows = Counter(b[1] for b in drawn[pages[0].path.name][1] if b[5].startswith("img "))
    assert sorted(rows.values(), reverse=True) == [12, 12, 6]
    # a smaller max_per_row wraps further
    pages = grids.group_pages(groups=groups, title="t", stem=tmp_path / "g5", max_per_row=5)
    rows = Counter(b[1] for b in drawn[pages[0].path.name][1] if b[5].startswith("img "))
    assert sorted(rows.values()) == [5] * 6


def test_captions_never_overlap_and_stay_on_the_page(tmp_path, drawn):
    pages = grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(30, lambda i: LONG),
                             title=LONG, stem=tmp_path / "p", pairs_per_row=4)
    pages += grids.group_pages(groups=make_groups([30, 4, 12], lambda g, j: LONG), title=LONG,
                               stem=tmp_path / "g", max_per_row=12)
    for p in pages:
        (w, h), boxes = drawn[p.path.name]
        ink = [b for b in boxes if b[2] > b[0]]
        assert any(b[5].endswith("…") for b in boxes)            # long text was truncated, not dropped
        for b in ink:
            assert 0 <= b[0] and b[2] <= w and 0 <= b[1] and b[3] <= h, b
        a = np.array([b[:4] for b in ink], float)
        over = ((a[:, None, 0] < a[None, :, 2]) & (a[None, :, 0] < a[:, None, 2])
                & (a[:, None, 1] < a[None, :, 3]) & (a[None, :, 1] < a[:, None, 3]))
        np.fill_diagonal(over, False)
        assert not over.any(), [ink[i][5] for i in np.argwhere(over)[0]]


def test_rerun_with_fewer_items_leaves_no_stale_pages(tmp_path):
    stem = tmp_path / "near"
    other = [tmp_path / "near_notes.png", tmp_path / "nearby_00.png", tmp_path / "near_00.txt"]
    for f in other:
        f.write_bytes(b"keep")
    first = grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(57), title="t", stem=stem)
    assert len(first) == 3
    second = grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(5), title="t", stem=stem)
    assert [p.path.name for p in second] == ["near_00.png"]
    assert sorted(tmp_path.glob("near_[0-9]*.png")) == [stem.with_name("near_00.png")]
    assert all(f.read_bytes() == b"keep" for f in other)
    # the same for group pages, and clear_pages itself says how many it removed
    gstem = tmp_path / "groups"
    assert len(grids.group_pages(groups=make_groups([30] * 40), title="t", stem=gstem)) > 2
    assert len(grids.group_pages(groups=make_groups([3]), title="t", stem=gstem)) == 1
    assert sorted(p.name for p in tmp_path.glob("groups_*.png")) == ["groups_00.png"]
    (tmp_path / "groups_117.png").write_bytes(b"old")
    assert grids.clear_pages(gstem) == 2
    assert grids.clear_pages(gstem) == 0
    assert grids.clear_pages(tmp_path / "missing" / "x") == 0
    assert all(f.exists() for f in other)


def test_empty_input_writes_no_page_and_clears_old_ones(tmp_path):
    grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(3), title="t", stem=tmp_path / "p")
    grids.group_pages(groups=make_groups([3]), title="t", stem=tmp_path / "g")
    assert written(tmp_path) == ["g_00.png", "p_00.png"]
    assert grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=[], title="t", stem=tmp_path / "p") == []
    assert grids.group_pages(groups=[], title="t", stem=tmp_path / "g") == []
    assert written(tmp_path) == []
    assert grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=[], title="t", stem=tmp_path / "new" / "p") == []
    assert not (tmp_path / "new").exists()


def test_no_figure_stays_open_and_old_grids_still_work(tmp_path):
    before = set(plt.get_fignums())
    grids.pair_pages(x_left=X_TRAIN, x_right=X_TEST, items=pair_items(30), title="t", stem=tmp_path / "p")
    grids.group_pages(groups=make_groups([5, 20]), title="t", stem=tmp_path / "g")
    assert set(plt.get_fignums()) == before
    figs = [grids.image_rows([[(X_TRAIN[0], "a"), (X_TRAIN[1], "b")], [(X_TRAIN[2], "c")]], row_labels=["r1", "r2"],
                             title="t", path=tmp_path / "rows.png"),
            grids.image_grid(X_TRAIN[:7], [str(i) for i in range(7)], n_cols=3, path=tmp_path / "grid.png"),
            grids.pair_rows(X_TRAIN, X_TEST, [(1, 2, "c"), (3, 4, "d")], labels=("train", "test"),
                            path=tmp_path / "pairs.png")]
    try:
        assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
        assert all((tmp_path / n).is_file() for n in ("rows.png", "grid.png", "pairs.png"))
    finally:
        for f in figs:
            plt.close(f)
