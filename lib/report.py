"""The report of a run: figures/<name>/index.html, one self-contained page a reviewer opens first.

It shows, on one page and from the files the notebooks left in figures/<name>/:

- what ran: the parameter set's scale and what it means (reference mode trains nothing; a reduced CPU
  set is not the paper's scale; only `Params.paper_scale` may be compared with the paper);
- the headline table inline (Table 2 analog from table2.md; in reference mode first the buckets
  against the paper, buckets_vs_paper.md), converted from markdown here, with no dependency;
- a thumbnail of every figure, linking to the full-size PNG (paged review sheets: their first page,
  with a link to every page);
- what to review, where: the duplicate and group sheets and the review CSVs, one line each on what
  they hold, and how a decision gets back into the run (params/review/<name>/, the review notebook);
- the notebooks' HTML exports: without code (for reviewers) and with code.

The page links only to files beside it (relative links), loads nothing remote and holds no absolute
path of the machine it was made on. `scrub_paths` is also what the pipeline applies to the notebook
exports: the checkout becomes ".", its parent "..", the Python environment and the home and temporary
folders placeholders. `find_machine_paths` finds what is left (tests scan the committed figures/).
"""
from __future__ import annotations

import html
import os
import re
import sys
import tempfile
from pathlib import Path

from .params import ROOT, Params
from .run_folder import RunFolder

INDEX = "index.html"
STATUS = "status.json"    # written by lib/pipeline.py while a step's last run failed
THUMB_PX = 280           # thumbnail width in the report (CSS px); the page is at most PAGE_PX wide
PAGE_PX = 1200

# Paged review sheets (lib/pages.py): family stem -> what a reviewer decides there
SHEETS = {
    "03_exact": "Figure 1 analog: exact copies of memorized training points in the test set (train image left, "
                "test image right). Confirm a pair that is the same picture; reject one that is not.",
    "03_near": "Figure 2 analog: near duplicates of memorized training points and the review band below the "
               "automatic threshold. Confirm the same shot (shifted, cropped, re-encoded); reject different objects "
               "on similar backgrounds.",
    "03_other": "Every other flagged pair (training points that are not memorized; train mode): they do not move "
                "the buckets, but a confirmed pair is a train-test duplicate all the same.",
    "03_disagree_cifair": "Reference mode: memorized points ciFAIR lists as duplicates that the finder does not "
                          "call one (ciFAIR's pair).",
    "03_disagree_finder": "Reference mode: memorized points the finder calls a duplicate that ciFAIR does not "
                          "list (the finder's best pair).",
    "04_groups": "Figure 3 analog: every sub-population group, its memorized training images then the test "
                 "images they influence. Confirm a group that looks like one sub-population; reject a mixed one.",
    "04_pairs": "Every other high-influence pair (its training point is in no group), weakest influence first: "
                "what FZ's estimate calls memorization, for a look at what it is.",
}
PAGED = re.compile(r"^(?P<family>\d\d_.+)_(?P<page>\d\d)\.png$")

# The review tables beside the pages
TABLES = {
    RunFolder.filename("duplicates"): "every flagged (train, test) pair: kind (exact / near / review band), similarity score, "
                      "automatic verdict, source (finder or ciFAIR) and ciFAIR's judgment, and the review columns "
                      "decision / decided_by / final (final: the pair counts as leakage downstream).",
    RunFolder.filename("groups"): "every sub-population group: class, train and test indices, sizes, influence range, automatic "
                  "verdict and the same review columns (final: the group's points go to the Leakage+Shift bucket).",
    "review_pages.csv": "which review page holds which item (page, item = duplicate | disagreement | group | pair, "
                        "train_idx, test_idx, group_id): find the picture of any row of the two tables above.",
}

CSS = f"""
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: {PAGE_PX}px; margin: 0 auto;
       padding: 0 16px 48px; color: #1b1b1b; }}
h1 {{ font-size: 1.5em; margin: 0.8em 0 0.3em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
h3 {{ font-size: 1.1em; }} code {{ background: #f3f3f3; padding: 0 3px; }}
.scale {{ border-left: 6px solid #888; background: #f6f6f6; padding: 8px 14px; }}
.scale.warn {{ border-color: #d08000; background: #fff5e0; }} .scale.none {{ border-color: #3a6ea5; background: #eef4fb; }}
.md {{ overflow-x: auto; }} .src {{ font-size: 13px; color: #555; margin-top: 0; }} table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }} th {{ background: #f0f0f0; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 14px; }}
figure {{ margin: 0; width: {THUMB_PX}px; }} figure img {{ width: {THUMB_PX}px; height: auto; border: 1px solid #ccc; }}
figcaption {{ font-size: 13px; word-break: break-all; }}
.sheet {{ display: flex; gap: 16px; margin: 14px 0; align-items: flex-start; }}
.sheet > a {{ flex: none; }} .sheet img {{ width: 200px; height: auto; border: 1px solid #ccc; }}
img {{ max-width: 100%; }}
"""


# ----------------------------------------------------------------------------------------------- paths
def _machine_prefixes(root: Path) -> list[tuple[str, str]]:
    """(absolute folder, placeholder): longest first, so the most specific name wins."""
    root = Path(root).resolve()
    cands = [(root, "."), (Path(sys.prefix), "[python env]"), (Path(sys.base_prefix), "[python]"),
             (Path(sys.exec_prefix), "[python env]"), (root.parent, ".."), (Path.home(), "~"),
             (Path(tempfile.gettempdir()), "[tmp]"), (Path("/tmp"), "[tmp]")]
    seen, out = set(), []
    for path, name in cands:
        for p in {str(path), str(path.resolve())}:
            if len(Path(p).parts) >= 2 and p not in seen:  # never "/" itself
                seen.add(p)
                out.append((p, name))
    return sorted(out, key=lambda x: -len(x[0]))


def scrub_paths(text: str, *, root: Path | str = ROOT) -> str:
    """`text` with this machine's absolute folders replaced: the checkout by ".", its parent by "..", the
    Python environment by "[python env]", home by "~", the temporary folder by "[tmp]"."""
    for prefix, name in _machine_prefixes(Path(root)):
        text = re.sub(r"(?<![\w.~/-])" + re.escape(prefix) + r"(?![\w.-])", lambda m: name, text)
    return text


MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp)/[^\s\"'<>)]*")


def find_machine_paths(text: str) -> list[str]:
    """Absolute paths under /work, /root, /home or /tmp in `text` (what no committed file may hold)."""
    return MACHINE_PATH.findall(text)


# ----------------------------------------------------------------------------------------------- markdown
def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<i>\1</i>", s)
    return s


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str, *, demote: int = 2) -> str:
    """The markdown the notebooks write (headings, paragraphs, bullet lists, pipe tables, `code`, **bold**,
    *italic*) as HTML; everything else is escaped text. Headings are demoted by `demote` levels."""
    out, para, items = [], [], []
    lines = text.splitlines()

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level = min(6, len(m.group(1)) + demote)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]):
            flush()
            head = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append("<div class='md'><table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</tbody></table></div>")
            continue
        elif m := re.match(r"^[-*]\s+(.*)$", stripped):
            if para:
                flush()
            items.append(m.group(1))
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + stripped  # a wrapped list item
        else:
            if items:
                flush()
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- the page
def _e(x) -> str:
    return html.escape(str(x))


def _href(name: str) -> str:
    return html.escape(name, quote=True)


def scale_html(P: Params) -> str:
    """What ran and what it means, as an HTML block."""
    classes = "all" if P.classes is None else f"{len(P.classes)}"
    data = (f"{P.dataset}, classes: {classes}, train images per class: {P.n_train_per_class or 'all'}, "
            f"test images per class: {P.n_test_per_class or 'all'}")
    train = (f"model {P.model} (width {P.width}), {P.epochs} epochs, batch {P.batch_size}, "
             f"weight decay {P.weight_decay}")
    subsets = (f"{P.n_subset_models} subset models on {P.subset_ratio:.0%} of the training set each "
               f"(memorized: mem ≥ {P.mem_threshold}; high-influence pair: infl ≥ {P.infl_threshold})")
    retrain = (f"{P.n_retrain_models} models per retraining condition, "
               f"{P.retrain_epochs or P.epochs} epochs" if P.retrain else "retraining off")
    if not P.trains:
        cls, head = "none", "Nothing was trained."
        meaning = (f"Parameter set <code>{_e(P.name)}</code> runs in reference mode: FZ's released high-influence "
                   f"pairs stand in for the subset models and ciFAIR's duplicate lists join the duplicate finder, on "
                   f"the full {_e(P.dataset)}. The bucket counts below are computed from those files (the paper's own "
                   "inputs); no accuracy was measured, so the accuracy columns are empty and only the paper's values "
                   "are shown.")
        facts = [f"data: {data}", "memorization: FZ's released estimates (no subset models)", retrain]
    elif P.paper_scale:
        cls, head = "", "The paper's scale."
        meaning = ("ResNet50 on the full CIFAR-100 for 160 epochs, as in the paper: these numbers may be compared "
                   "with the paper's.")
        facts = [f"data: {data}", f"training: {train}",
                 "memorization: FZ's released estimates" if P.mode == "reference" else f"memorization: {subsets}",
                 f"retraining: {retrain}"]
    else:
        cls, head = "warn", "Not the paper's scale."
        meaning = (f"Parameter set <code>{_e(P.name)}</code> is a reduced run (small model, a subset of the data, "
                   "few models). Its numbers show the method working end to end; they say nothing about the paper's "
                   "claim and must not be compared with the paper's values.")
        facts = [f"data: {data}", f"training: {train}",
                 "memorization: FZ's released estimates" if P.mode == "reference" else f"memorization: {subsets}",
                 f"retraining: {retrain}"]
    return (f"<div class='scale {cls}'><p><b>{head}</b> {meaning}</p><ul>"
            + "".join(f"<li>{_e(f)}</li>" for f in facts) + f"<li>mode: {_e(P.mode)}</li></ul></div>")


def _figure(name: str) -> str:
    return (f"<figure><a href='{_href(name)}'><img src='{_href(name)}' alt='{_e(name)}'></a>"
            f"<figcaption><a href='{_href(name)}'>{_e(name)}</a></figcaption></figure>")


def _manifest_counts(fig_dir: Path) -> dict[str, int]:
    """Items per sheet family, from review_pages.csv (empty when it is missing or unreadable)."""
    import pandas as pd

    path = fig_dir / "review_pages.csv"
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}
    if "page" not in table.columns:
        return {}
    fam = table["page"].str.extract(PAGED.pattern)["family"]
    return {str(k): int(v) for k, v in fam.value_counts().items()}


def _status_html(P: Params, fig_dir: Path) -> list[str]:
    """A banner while a step's last run failed (figures/<name>/status.json, written by lib/pipeline.py)."""
    import json

    path = fig_dir / STATUS
    try:
        status = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        status = {"failed": "a step"}
    if not isinstance(status, dict) or not status.get("failed"):
        return []
    stale = status.get("stale_from")
    return [f"<div class='scale warn'><p><b>Incomplete.</b> The last run of <code>{_e(status['failed'])}</code> "
            "failed" + (f"; pages of step {_e(stale)} and later are missing or from an earlier run" if stale else "")
            + f". Fix the cause and run <code>make all PARAMS={_e(P.name)}</code> again.</p></div>"]


def render(P: Params, fig_dir: Path | str | None = None) -> str:
    """The report page of parameter set `P` over the files in `fig_dir` (default figures/<name>/)."""
    fig_dir = Path(fig_dir) if fig_dir is not None else P.fig_dir
    files = sorted(f.name for f in fig_dir.iterdir() if f.is_file()) if fig_dir.is_dir() else []
    parts = [f"<h1>Is memorization actually necessary? Report for <code>{_e(P.name)}</code></h1>",
             "<p>Re-examining Feldman &amp; Zhang (2020): how much of the 2.54 % accuracy drop from removing memorized "
             "CIFAR-100 points comes from non-converged training, train–test duplicates and sub-population shift. "
             "Every file named here sits beside this page.</p>",
             *_status_html(P, fig_dir), "<h2 id='scale'>What ran</h2>", scale_html(P)]

    # ---- headline tables
    order = ["buckets_vs_paper.md", "table2.md"] if P.mode == "reference" else ["table2.md", "buckets_vs_paper.md"]
    shown = [n for n in order if n in files]
    parts.append("<h2 id='results'>Results</h2>")
    if not shown:
        parts.append("<p>No result table yet: notebooks 04 and 06 write buckets_vs_paper.md and table2.md.</p>")
    for n in shown:
        parts.append(f"<section>{markdown_to_html((fig_dir / n).read_text(), demote=2)}"
                     f"<p class='src'>(from <a href='{_href(n)}'>{_e(n)}</a>)</p></section>")
    if "table_subsets.md" in files:
        parts.append("<details><summary>Accuracy per test subset (<a href='table_subsets.md'>table_subsets.md</a>)"
                     f"</summary>{markdown_to_html((fig_dir / 'table_subsets.md').read_text(), demote=3)}</details>")

    # ---- what to review, where
    pngs = [f for f in files if f.endswith(".png")]
    families: dict[str, list[str]] = {}
    for f in pngs:
        if m := PAGED.match(f):
            families.setdefault(m.group("family"), []).append(f)
    counts = _manifest_counts(fig_dir)
    parts.append("<h2 id='review'>What to review, where</h2>")
    if families:
        for fam in sorted(families):
            pages = families[fam]
            n = counts.get(fam)
            what = SHEETS.get(fam, "Review sheet.")
            links = " ".join(f"<a href='{_href(p)}'>{i + 1}</a>" for i, p in enumerate(pages))
            parts.append(f"<div class='sheet'><a href='{_href(pages[0])}'><img src='{_href(pages[0])}' "
                         f"alt='{_e(pages[0])}'></a><div><b><code>{_e(fam)}_*</code></b>: {_e(what)}<br>"
                         + (f"{n} item(s) on " if n is not None else "") + f"{len(pages)} page(s): {links}</div></div>")
    else:
        parts.append("<p>No review sheets (notebooks 03 and 04 draw them when the images can be joined).</p>")
    tables = [n for n in TABLES if n in files]
    if tables:
        parts.append("<p>The tables behind the sheets:</p><ul>" + "".join(
            f"<li><a href='{_href(n)}'>{_e(n)}</a>: {_e(TABLES[n])}</li>" for n in tables) + "</ul>")
    parts.append(
        f"<p>To decide: run <code>make lab</code> and open <code>notebooks/review_decisions.ipynb</code> (confirm / "
        f"reject / skip per item; it writes <code>params/review/{_e(P.name)}/duplicates.csv</code> and "
        f"<code>groups.csv</code> after every click), or copy a table above to <code>params/review/{_e(P.name)}/</code> "
        "and fill its <code>decision</code> column (confirm | reject). A decision overrides the automatic verdict "
        f"the next time notebooks 03 and 04 run (<code>make all PARAMS={_e(P.name)}</code>), and the buckets follow.</p>")

    # ---- every other figure
    others = [f for f in pngs if not PAGED.match(f)]
    parts.append("<h2 id='figures'>Figures</h2>")
    if others:
        parts.append("<div class='thumbs'>" + "".join(_figure(f) for f in others) + "</div>")
    else:
        parts.append("<p>No figures yet.</p>")

    # ---- notebooks
    pages = [f for f in files if re.match(r"^\d\d_.+\.html$", f) and not f.endswith(".code.html")]
    parts.append("<h2 id='notebooks'>Notebooks</h2>")
    if pages:
        items = []
        for f in pages:
            code = f[:-len(".html")] + ".code.html"
            items.append(f"<li><a href='{_href(f)}'>{_e(f[:-5])}</a>"
                         + (f" (<a href='{_href(code)}'>with code</a>)" if code in files else "") + "</li>")
        parts.append("<p>Each executed notebook as a page of its text and outputs; the code is in the "
                     "<i>with code</i> copy.</p><ol start='0'>" + "".join(items) + "</ol>")
    else:
        parts.append("<p>No notebook has run yet.</p>")

    body = "\n".join(parts)
    doc = (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<title>Report: {_e(P.name)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
    return scrub_paths(doc)


def write(P: Params, fig_dir: Path | str | None = None) -> Path:
    """Write figures/<name>/index.html (atomically) and return its path."""
    fig_dir = Path(fig_dir) if fig_dir is not None else P.fig_dir
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / INDEX
    tmp = path.with_name(f".{INDEX}.{os.getpid()}.tmp")
    tmp.write_text(render(P, fig_dir))
    os.replace(tmp, path)
    return path
