"""The report (figures/<name>/index.html) is a report, and no report holds a path of the machine it was made on.

- one page: the scale and what it means, the headline table inline, a thumbnail of every figure, what to review
  where (sheets and tables), the notebook exports (without and with code); built from a made-up figures folder;
- the notebook exports hide the code (a with-code copy sits beside them) and hold no absolute path;
- the committed figures/ hold no /work/, /root/, /home/ or /tmp/ path (this one passes once the committed
  reports are regenerated with this code).
"""
import html
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from lib import params, pipeline, report
from lib.params import ROOT
from test_security import remote_loads  # the scanner tests/test_security.py checks the exports with

TABLE2 = """# Table 2 analog: test accuracy drop per removal (x)

Scale: parameter set 'x'.

| row | removed | ours: drop (pp) | PAPER's drop (%) |
|---|---|---|---|
| Original (FZ) | 209 | 6.40 ± 3.42 | 2.54 ± 0.20 |
| Memorized Bucket | 0 | - | 0.54 ± 0.29 |
"""
BUCKETS = """# Buckets vs the paper (x)

**Not the paper's scale**: `x` <script>alert(1)</script>

| quantity | paper | this run: points |
|---|---|---|
| exact duplicates | 119 | 4 |

- FZ's released file holds 1015 pairs;
  a wrapped line of the same item.
- second *item*
"""


def _png(path, w=40, h=30):
    from PIL import Image

    Image.new("RGB", (w, h), (200, 100, 50)).save(path)


@pytest.fixture
def fig_dir(tmp_path):
    d = tmp_path / "figures" / "x"
    d.mkdir(parents=True)
    for name in ("00_samples.png", "02_mem_histogram.png", "drops.png", "table2.png", "03_near_00.png",
                 "03_near_01.png", "03_exact_00.png", "04_groups_00.png", "04_pairs_00.png", "04_pairs_01.png",
                 "03_disagree_cifair_00.png"):
        _png(d / name)
    (d / "table2.md").write_text(TABLE2)
    (d / "buckets_vs_paper.md").write_text(BUCKETS)
    (d / "table_subsets.md").write_text("# Per subset\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (d / "duplicates.csv").write_text("train_idx,test_idx,verdict\n1,2,confirm\n")
    (d / "groups.csv").write_text("group_id,verdict\n3,confirm\n")
    (d / "review_pages.csv").write_text("page,item,train_idx,test_idx,group_id\n03_near_00.png,duplicate,1,2,-1\n"
                                        "03_near_01.png,duplicate,3,4,-1\n03_near_01.png,duplicate,5,6,-1\n"
                                        "04_groups_00.png,group,-1,-1,3\n")
    for nb in ("00_prepare_data", "03_leakage_detection"):
        (d / f"{nb}.html").write_text("<html></html>")
        (d / f"{nb}.code.html").write_text("<html></html>")
    return d


def _links(page: str, tag: str, attr: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(rf"<{tag}\b[^>]*\b{attr}='([^']*)'", page)]


def test_the_report_shows_everything_on_one_page(fig_dir):
    P = params.load("smoke")
    page = report.write(P, fig_dir).read_text()
    # what ran and what it means
    assert "Not the paper's scale." in page and "must not be compared" in page and "tiny_cnn" in page
    # the headline table, inline as HTML (not a link to a file), first in train mode
    assert "<th>ours: drop (pp)</th>" in page and "<td>6.40 ± 3.42</td>" in page
    assert page.index("Table 2 analog") < page.index("Buckets vs the paper")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # markdown text is escaped
    # a thumbnail of every figure, linking to the full size; paged sheets: first page + every page linked
    imgs, hrefs = _links(page, "img", "src"), _links(page, "a", "href")
    for name in ("00_samples.png", "02_mem_histogram.png", "drops.png", "table2.png"):
        assert name in imgs and name in hrefs
    for first, pages in (("03_near_00.png", ["03_near_01.png"]), ("04_pairs_00.png", ["04_pairs_01.png"]),
                         ("03_exact_00.png", []), ("04_groups_00.png", []), ("03_disagree_cifair_00.png", [])):
        assert first in imgs and first in hrefs and all(p in hrefs and p not in imgs for p in pages)
    assert sorted(set(imgs)) == sorted(p.name for p in fig_dir.glob("*.png") if not p.name.endswith("_01.png"))
    # what to review, where: each sheet family and each table with a line on what it holds
    for fam in ("03_near", "03_exact", "04_groups", "04_pairs", "03_disagree_cifair"):
        assert f"<code>{fam}_*</code>" in page and report.SHEETS[fam][:40] in html.unescape(page)
    assert "3 item(s) on 2 page(s)" in page  # from review_pages.csv
    for name in ("duplicates.csv", "groups.csv", "review_pages.csv"):
        assert name in hrefs and report.TABLES[name][:40] in html.unescape(page)
    assert "params/review/smoke/" in page and "review_decisions.ipynb" in page
    # the notebooks: the reviewer's page and the with-code copy
    assert hrefs.count("00_prepare_data.html") == 1 and "00_prepare_data.code.html" in hrefs
    # every link is to a file beside the page; nothing remote, no path of this machine
    assert all((fig_dir / h).is_file() for h in hrefs), [h for h in hrefs if not (fig_dir / h).is_file()]
    assert remote_loads(page) == [] and report.find_machine_paths(page) == [] and str(ROOT) not in page


def test_reference_mode_says_nothing_was_trained_and_leads_with_the_buckets(fig_dir):
    P = params.load("reference")
    assert not P.trains
    page = report.render(P, fig_dir)
    assert "Nothing was trained." in page and "reference mode" in page and "<b>Not the paper's scale.</b>" not in page
    assert page.index("Buckets vs the paper") < page.index("Table 2 analog")
    paper = replace(params.load("paper"), name="paper")
    assert paper.paper_scale and "The paper's scale." in report.render(paper, fig_dir)


def test_a_failed_step_is_stated_and_an_empty_folder_still_renders(fig_dir, tmp_path):
    (fig_dir / report.STATUS).write_text('{"failed": "04_subpopulations.ipynb", "stale_from": "04"}')
    page = report.render(params.load("smoke"), fig_dir)
    assert "Incomplete." in page and "04_subpopulations.ipynb" in page
    empty = report.render(params.load("smoke"), tmp_path / "nothing")
    assert "No result table yet" in empty and "No notebook has run yet" in empty


def test_write_index_is_the_report(monkeypatch):
    seen = []
    monkeypatch.setattr(report, "write", lambda P: seen.append(P.name) or "path")
    assert pipeline.write_index(params.load("smoke")) == "path" and seen == ["smoke"]


def test_markdown_tables_lists_and_text():
    out = report.markdown_to_html(BUCKETS, demote=1)
    assert out.startswith("<h2>Buckets vs the paper (x)</h2>")
    assert "<p><b>Not the paper&#x27;s scale</b>" not in out  # quotes stay text (quote=False)
    assert "<b>Not the paper's scale</b>: <code>x</code>" in out
    assert "<tr><td>exact duplicates</td><td>119</td><td>4</td></tr>" in out
    assert "<li>FZ's released file holds 1015 pairs; a wrapped line of the same item.</li>" in out
    assert "<li>second <i>item</i></li>" in out


def test_scrub_paths_replaces_this_machines_folders():
    text = (f"File {ROOT}/lib/data.py, line 3\n{sys.prefix}/lib/python3/site-packages/tqdm/auto.py:21: warning\n"
            f"read {ROOT.parent}/shared/data/reference and {ROOT}\n/tmp/pytest-1/x.csv; /usr/lib/x stays; "
            f"{ROOT}extra is another folder")
    out = report.scrub_paths(text)
    assert "File ./lib/data.py, line 3" in out and "read ../shared/data/reference and .\n" in out
    assert "[python env]/lib/python3/site-packages/tqdm/auto.py" in out or "./.venv/" in out
    tmp_name = "../pytest-1" if ROOT.parent == Path("/tmp") else "[tmp]/pytest-1"  # a checkout right under /tmp
    assert f"{tmp_name}/x.csv" in out and "/usr/lib/x stays" in out
    assert f"../{ROOT.name}extra is" in out  # whole folder names only: here the parent, not the checkout
    assert report.find_machine_paths("see /work/main/x and /home/a/b, /root/.cache; not http://h/work/x") == [
        "/work/main/x", "/home/a/b,", "/root/.cache;"]


def _executed_nb():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\nSome *text*."),
                nbformat.v4.new_code_cell("print(P.fig_dir)  # SECRET_SOURCE_LINE")]
    nb.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{ROOT}/figures/x\n"),
        *[nbformat.v4.new_output("stream", name="stderr", text=f"\rscoring: {i}0%|") for i in range(1, 10)],
        nbformat.v4.new_output("stream", name="stderr", text="\rscoring: 100%|\n"),  # a text progress bar
        nbformat.v4.new_output("error", ename="ValueError", evalue="boom",
                               traceback=[f"File {sys.base_prefix}/lib/python3.11/x.py:1", f"{ROOT}/lib/data.py"])]
    nb.metadata["kernelspec"] = {"name": "memaudit", "display_name": "memaudit (project)", "language": "python"}
    return nb


def test_exports_hide_the_code_keep_a_code_copy_and_hold_no_machine_path(tmp_path):
    path = pipeline.export_html(_executed_nb(), tmp_path / "03_x.html")
    assert path == tmp_path / "03_x.html"
    reviewer, with_code = path.read_text(), (tmp_path / "03_x.code.html").read_text()
    assert "SECRET_SOURCE_LINE" not in reviewer and "SECRET_SOURCE_LINE" in with_code
    assert "./figures/x" in reviewer and "Title" in reviewer and "[python]/lib/python3.11/x.py" in reviewer
    assert "scoring: 100%|" in reviewer and "scoring: 90%" not in reviewer  # a progress bar: its last state only
    for page in (reviewer, with_code):
        assert str(ROOT) not in page and report.find_machine_paths(page) == [] and remote_loads(page) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03_x.code.html", "03_x.html"]  # no temporaries


def _committed_text_files() -> list:
    try:
        out = subprocess.run(["git", "ls-files", "figures"], cwd=ROOT, capture_output=True, text=True, check=True)
        files = [ROOT / f for f in out.stdout.split()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        files = sorted((ROOT / "figures").glob("**/*"))
    return [f for f in files if f.suffix in (".html", ".md", ".csv", ".txt", ".json", ".svg") and f.is_file()]


def test_committed_figures_hold_no_path_of_the_machine_they_were_made_on():
    files = _committed_text_files()
    assert files
    bad = {str(f.relative_to(ROOT)): found[:3] for f in files if (found := report.find_machine_paths(f.read_text()))}
    assert not bad, (f"{len(bad)} committed file(s) hold absolute paths of the machine they were made on "
                     f"(regenerate them with `make all PARAMS=<name>`): {bad}")
