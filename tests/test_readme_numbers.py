"""The numbers README.md quotes from the committed reports (figures/reference/, figures/quick/) are the reports'.

The README's "Committed reports" section repeats counts a reader wants at a glance (FZ's pairs, ciFAIR's and the
finder's duplicates among the memorized points, the groups, the buckets, the quick run's null model). They went
stale twice when a finder change regenerated the reports and the README was not edited; each check here reads
one number group from the README and the same group from the report it comes from, so the next regeneration that
moves one fails here, naming the claim.
"""
import html
import re

import pytest

from lib.params import ROOT

REFERENCE = ROOT / "figures" / "reference"
QUICK = ROOT / "figures" / "quick"


def _pattern(template: str) -> str:
    """`{name}` -> a named integer group (thousands separators allowed), `{name:f}` -> a named decimal group."""
    out = re.sub(r"\{(\w+):f\}", r"(?P<\1>\\d+\\.\\d+)", template)
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[\\d,]+)", out)


def _text(path) -> str:
    """A report's visible text (tags, scripts and inline images dropped), whitespace collapsed."""
    s = path.read_text()
    s = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", s, flags=re.S)
    s = re.sub(r"data:image/[^\"')]+", " ", s)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", s)).split())


def _numbers(template: str, text: str, where: str) -> dict:
    m = re.search(_pattern(template), text)
    assert m, f"{where} no longer says {template!r}"
    return {k: v.replace(",", "") for k, v in m.groupdict().items()}


def _table(path) -> dict:
    """A markdown table's rows: first cell -> the other cells."""
    rows = [line.strip().strip("|").split("|") for line in path.read_text().splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


README = (ROOT / "README.md").read_text()
README_FLAT = " ".join(README.split())

# (what the claim is about, README template, report file, report template): the same named groups in both
CLAIMS = [
    ("FZ's released pairs and their points",
     "FZ's file holds {pairs} \\*pairs\\* over {train} unique train and {test} unique test points",
     REFERENCE / "buckets_vs_paper.md",
     "holds {pairs} high-influence pairs over {train} unique train points and {test} unique test points"),
    ("ciFAIR's duplicates among the memorized points",
     "ciFAIR lists at least {exact} memorized points with an exact copy .*? Near duplicates: at least {near} "
     "\\(\\+{similar} \"very similar\"\\)",
     REFERENCE / "buckets_vs_paper.md",
     "ciFAIR lists at least {exact} exact and {near} near-duplicate memorized points .*? adds {similar} more"),
    ("FZ's pairs that are ciFAIR pairs",
     "FZ's pairs that are themselves ciFAIR pairs: {all} \\({exact} / {near} / {similar}\\)",
     REFERENCE / "buckets_vs_paper.md",
     "duplicate pairs: {all} \\(exact {exact}, near-duplicate {near}, very similar {similar}\\)"),
    ("the finder's duplicates among the memorized points",
     "calls {calls} of the {points} points duplicates \\({exact} exact, {near} near;",
     REFERENCE / "03_leakage_detection.html",
     "of {points} memorized points: .*? the finder calls {calls} duplicates \\(exact {exact}, near {near}\\)"),
    ("where the finder and ciFAIR disagree",
     "disagree on {cifair_only} ciFAIR-listed points and {finder_only} points ciFAIR does not list",
     REFERENCE / "03_leakage_detection.html",
     "ciFAIR only: {cifair_only} memorized points finder only: {finder_only} memorized points"),
    ("the sub-population groups",
     "the stated rule gives {groups} groups over {points} train points \\({kept} once",
     REFERENCE / "buckets_vs_paper.md",
     "gives {groups} groups holding {points} train points \\({kept} once duplicates take precedence\\)"),
    ("the high-influence pairs outside the groups",
     "The other {other} pairs are on `04_pairs_\\*`",
     REFERENCE / "04_subpopulations.html",
     "{other} other pairs on \\d+ pages"),
    ("the quick run's null model at the threshold used",
     "{chance} of the {pairs} high-influence pairs \\({pairs_pct} %\\) and {chance_points} of the {points} grouped "
     "points \\({points_pct} %\\)",
     QUICK / "02_memorization_scores.html",
     "{pairs} real pairs vs {chance} by chance \\({pairs_pct}%\\); {points} grouped train points vs {chance_points} "
     "by chance \\({points_pct}%\\)"),
]

# README templates of the buckets, and the column of buckets_vs_paper.md they come from
BUCKETS = [
    ("Leakage\\+Shift / Memorized from the released files with ciFAIR 0\\+1\\+2: {leak} / {mem} points, mean "
     "memorization {leak_mean:f} / {mem_mean:f}", "ciFAIR 0+1+2: points"),
    ("The run's own buckets \\(ciFAIR's pairs and the finder's confirmed ones\\): {leak} / {mem} points, mean "
     "memorization {leak_mean:f} / {mem_mean:f}", "this run: points"),
]


@pytest.mark.parametrize("claim", CLAIMS, ids=[c[0] for c in CLAIMS])
def test_readme_quotes_the_committed_report(claim):
    what, readme, path, report = claim
    said = _numbers(readme, README_FLAT, f"README.md ({what})")
    assert said == _numbers(report, _text(path), path.relative_to(ROOT)), \
        f"README.md quotes {what} as {said}; {path.relative_to(ROOT)} says otherwise: update the README"


@pytest.mark.parametrize("claim", BUCKETS, ids=["released files", "this run"])
def test_readme_quotes_the_committed_buckets(claim):
    readme, column = claim
    said = _numbers(readme, README_FLAT, "README.md (buckets)")
    table = _table(REFERENCE / "buckets_vs_paper.md")
    col = table["quantity"].index(column)
    row = lambda name: table[name][col]  # noqa: E731
    assert (said["leak"], said["mem"]) == (row("Leakage+Shift bucket"), row("Memorized bucket"))
    for key, name in (("leak_mean", "mean memorization, Leakage+Shift"), ("mem_mean", "mean memorization, Memorized")):
        places = len(said[key].split(".")[1])
        assert said[key] == f"{float(row(name)):.{places}f}", f"README.md quotes {name} ({column}) as {said[key]}"


def test_readme_quotes_the_quick_null_model_at_fz_threshold():
    """'at FZ's 0.15, 93 % of the pairs and all grouped points' against the null-model table's 0.15 row."""
    said = _numbers("at FZ's 0.15, {pairs_pct} % of the pairs and all grouped points", README_FLAT, "README.md")
    text = _text(QUICK / "02_memorization_scores.html")
    row = re.search(r"infl_threshold 0\.15((?: [\d.]+){12})", text)
    assert row, "figures/quick/02_memorization_scores.html has no null-model row at 0.15"
    cells = row.group(1).split()      # pairs, train points, grouped points: real, chance mean, chance max, share
    assert int(said["pairs_pct"]) == round(100 * float(cells[3]))
    assert float(cells[11]) == 1.0, "the README says all grouped points appear by chance at 0.15"
