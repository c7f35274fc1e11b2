"""Run one notebook of the pipeline headlessly: `python -m lib.pipeline <params> <notebook>`.

Validates the parameter set and the machine first (so a bad key or a GPU set on a
CPU machine stops in a second), executes the notebook with papermill into
runs/<params>/, never over the source, exports it to HTML in figures/<params>/ and
refreshes the report index there. A failed run is kept as *.failed.ipynb and
leaves no executed notebook behind, so make re-runs it.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

from . import params as params_mod
from .run_folder import RunFolder

NOTEBOOKS = params_mod.ROOT / "notebooks"


def execute(params_name: str, notebook: Path, *, extra: dict | None = None) -> Path:
    import nbformat
    import papermill

    p = params_mod.load(params_name)
    params_mod.resolve_device(p)
    notebook = Path(notebook).resolve()
    if not notebook.is_file():  # before anything is deleted
        raise params_mod.ParamsError(f"{notebook}: no such notebook")
    run = RunFolder.of(p)
    run.root.mkdir(parents=True, exist_ok=True)
    p.fig_dir.mkdir(parents=True, exist_ok=True)
    run.write_params(p)
    out = run.notebook(notebook.name)
    partial = out.with_suffix(".partial.ipynb")
    failed = out.with_suffix(".failed.ipynb")
    out.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    clear_step_figures(p.fig_dir, notebook.name)
    try:
        papermill.execute_notebook(
            str(notebook), str(partial), parameters={"params_name": params_name, **(extra or {})},
            cwd=str(params_mod.ROOT), kernel_name="python3", log_output=True, progress_bar=False,
        )
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        print(f"{notebook.name} failed; the executed copy is {failed}", file=sys.stderr)
        raise
    export_html(nbformat.read(partial, as_version=4), p.fig_dir / notebook.with_suffix(".html").name)
    os.replace(partial, out)
    write_index(p)
    return out


# nbconvert's lab template with every remote load taken out: require.js and MathJax (cdnjs), mermaid
# (cdnjs, imported when a diagram is present) and the jupyter-widgets renderer (unpkg). The CSS is inlined
# and matplotlib figures are embedded as data: URIs, so an export opens offline, loading nothing.
# Math in markdown then shows as TeX source; widgets show their text fallback.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
"""


def html_exporter():
    """nbconvert's HTMLExporter (lab template) that references nothing remote (see OFFLINE_TEMPLATE)."""
    from nbconvert import HTMLExporter

    # The URLs are emptied too, so a block nbconvert may add later cannot bring them back.
    return HTMLExporter(template_name="lab", raw_template=OFFLINE_TEMPLATE, require_js_url="", mathjax_url="",
                        mermaid_js_url="", mermaid_layout_elk_js_url="", jupyter_widgets_base_url="",
                        widget_renderer_url="")


def export_html(nb, path: Path) -> Path:
    """Write the executed notebook `nb` (an nbformat node) as a self-contained HTML page at `path`."""
    body, _ = html_exporter().from_notebook_node(nb)
    path = Path(path)
    path.write_text(body)
    return path


def clear_step_figures(fig_dir: Path, notebook_name: str) -> list[Path]:
    """Remove figures/<params>/NN_* of step NN before it runs, so no page of an older run survives it."""
    prefix = notebook_name[:3]  # "03_"
    if not (len(prefix) == 3 and prefix[:2].isdigit() and prefix[2] == "_"):
        return []
    gone = sorted(Path(fig_dir).glob(f"{prefix}*"))
    for f in gone:
        f.unlink()
    return gone


def write_index(p: params_mod.Params) -> Path:
    """figures/<params>/index.html: the executed notebooks in order, with the scale stated."""
    pages = sorted(p.fig_dir.glob("[0-9][0-9]_*.html"))
    scale = (f"dataset {p.dataset}, classes {'all' if p.classes is None else len(p.classes)}, "
             f"train/class {p.n_train_per_class or 'all'}, model {p.model}, {p.epochs} epochs, "
             f"{p.n_subset_models} subset models, {p.n_retrain_models} models per retraining condition, "
             f"mode {p.mode}")
    if not p.trains:
        scale = (f"mode {p.mode}, no model trained: FZ's released high-influence pairs and ciFAIR's duplicate lists "
                 f"on the full {p.dataset}")
    warn = "" if p.paper_scale or not p.trains else (
        "<p><b>Not the paper's scale.</b> Numbers here come from a reduced CPU parameter set; "
        "they show the method working and must not be compared with the paper's values.</p>")
    items = "\n".join(f'<li><a href="{html.escape(x.name)}">{html.escape(x.stem)}</a></li>' for x in pages)
    sheets = {}
    for f in sorted(p.fig_dir.glob("[0-9][0-9]_*_[0-9][0-9]*.png")):
        sheets.setdefault(f.stem.rsplit("_", 1)[0], []).append(f.name)
    review = "\n".join(
        f'<li>{html.escape(stem)}: {len(files)} page(s): '
        + " ".join(f'<a href="{html.escape(n)}">{i + 1}</a>' for i, n in enumerate(files)) + "</li>"
        for stem, files in sheets.items())
    reviewed = (RunFolder.filename("duplicates"), RunFolder.filename("groups"), "review_pages.csv")
    tables = "\n".join(f'<li><a href="{n}">{n}</a></li>' for n in reviewed if (p.fig_dir / n).is_file())
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>Report: {p.name}</title></head><body>"
           f"<h1>Is memorization actually necessary? Report for parameter set <code>{p.name}</code></h1>"
           f"<p>Scale: {html.escape(scale)}.</p>{warn}<h2>Notebooks</h2><ol>{items}</ol>"
           + (f"<h2>Review sheets</h2><ul>{review}</ul>" if review else "")
           + (f"<h2>What a reviewer decides on</h2><ul>{tables}</ul>" if tables else "") + "</body></html>")
    path = p.fig_dir / "index.html"
    path.write_text(doc)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", help="parameter set name (params/<name>.yaml)")
    ap.add_argument("notebook", type=Path)
    args = ap.parse_args(argv)
    try:
        execute(args.params, args.notebook)
    except (params_mod.ParamsError, params_mod.MachineError) as e:
        sys.exit(f"error: {e}")  # one line, before any work


if __name__ == "__main__":
    main()
