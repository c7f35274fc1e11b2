"""Run one notebook of the pipeline headlessly: `python -m lib.pipeline <params> <notebook>`.

Validates the parameter set and the machine first (so a bad key or a GPU set on a
CPU machine stops in a second), executes the notebook with papermill into
runs/<params>/, never over the source, exports it to HTML in figures/<params>/ and
refreshes the report index there. A failed run is kept as *.failed.ipynb and
leaves no executed notebook behind, so make re-runs it.
"""
from __future__ import annotations

import argparse
import json
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
    if p.executor == "local":  # executor slurm: the models train on the cluster's nodes, not here (login node)
        params_mod.resolve_device(p)
    notebook = Path(notebook).resolve()
    if not notebook.is_file():  # before anything is deleted
        raise params_mod.ParamsError(f"{notebook}: no such notebook")
    run = RunFolder.of(p)
    if notebook.name.startswith("00_"):  # the data passes its checks before anything is created in runs/
        from . import data

        data.load(p)
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
            cwd=str(params_mod.ROOT), kernel_name=headless_kernel(), log_output=True, progress_bar=False,
        )
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        mark_failed(p.fig_dir, notebook.name)
        write_index(p)
        print(f"{notebook.name} failed; the executed copy is {failed.relative_to(params_mod.ROOT)}", file=sys.stderr)
        raise
    export_html(nbformat.read(partial, as_version=4), p.fig_dir / notebook.with_suffix(".html").name)
    record_outputs(run, notebook.name)
    os.replace(partial, out)
    mark_succeeded(p.fig_dir, notebook.name)
    write_index(p)
    return out


# nbconvert's lab template with every remote load taken out: require.js and MathJax (cdnjs), mermaid
# (cdnjs, imported when a diagram is present) and the jupyter-widgets renderer (unpkg). The CSS is inlined
# and matplotlib figures are embedded as data: URIs, so an export opens offline, loading nothing.
# Math in markdown then shows as TeX source; widgets show their text fallback. Images are at most 1,200 px wide.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}<style>
/* no image is shown wider than 1,200 px, the report's page limit (wider matplotlib figures are scaled down) */
body .jp-OutputArea-output img, body .jp-RenderedHTMLCommon img { max-width: min(100%, 1200px); height: auto; }
</style>{% endblock extra_css %}
"""


def html_exporter(*, code: bool = False):
    """nbconvert's HTMLExporter (lab template) that references nothing remote (see OFFLINE_TEMPLATE).

    code=False (the reviewer's page): code cells and prompts are left out, markdown and outputs stay.
    Consecutive stream outputs are merged and carriage returns applied, so a text progress bar shows its last
    state only, not one line per update.
    """
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    # The URLs are emptied too, so a block nbconvert may add later cannot bring them back.
    return HTMLExporter(config=Config({"CoalesceStreamsPreprocessor": {"enabled": True}}),
                        template_name="lab", raw_template=OFFLINE_TEMPLATE, require_js_url="", mathjax_url="",
                        mermaid_js_url="", mermaid_layout_elk_js_url="", jupyter_widgets_base_url="",
                        widget_renderer_url="", exclude_input=not code, exclude_input_prompt=not code,
                        exclude_output_prompt=not code)


def code_page(path: Path) -> Path:
    """figures/<params>/NN_name.code.html: the with-code export beside NN_name.html."""
    path = Path(path)
    return path.with_name(path.name[:-len(".html")] + ".code.html" if path.name.endswith(".html") else path.name)


def export_html(nb, path: Path, *, with_code: bool = True) -> Path:
    """Write the executed notebook `nb` (an nbformat node) as self-contained HTML pages: at `path` without code
    (for reviewers) and, with_code, at NN_name.code.html beside it. No page holds an absolute path of this machine
    (report.scrub_paths: the checkout becomes ".", the environment "[python env]", ...). Returns `path`."""
    from . import report

    path = Path(path)
    for code, dst in ((False, path), (True, code_page(path))) if with_code else ((False, path),):
        body, _ = html_exporter(code=code).from_notebook_node(nb)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_text(report.scrub_paths(body))
        os.replace(tmp, dst)
    return path


def headless_kernel() -> str:
    """The kernel papermill runs a step in: this checkout's `memaudit` kernelspec (jupyter/kernels/memaudit/).

    Its directory goes first on JUPYTER_PATH, so the kernel is found without registration (from the venv, a conda
    env or a test) and is this checkout's even when an installed `memaudit` points elsewhere; it imports this
    checkout's `lib` (launch.py there checks it). MEMAUDIT_HEADLESS=1 makes tqdm print text bars (no widget in
    the executed notebook or its export). Both variables are set in this process, for the kernels it starts.
    Without that kernelspec (a partial copy of the repository) the step runs in `python3`, and says so.
    """
    kernels = params_mod.ROOT / "jupyter" / "kernels"
    os.environ["MEMAUDIT_HEADLESS"] = "1"
    if not (kernels / "memaudit" / "kernel.json").is_file():
        print("lib/pipeline: no kernelspec jupyter/kernels/memaudit in this checkout; running in python3, which "
              "imports whichever lib the environment's install points at", file=sys.stderr)
        return "python3"
    path = [str(kernels.parent)] + [d for d in os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
                                    if d and d != str(kernels.parent)]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(path)
    return "memaudit"


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
    """figures/<params>/index.html: the report (lib/report.py)."""
    from . import report

    return report.write(p)


# ---------------------------------------------------------------- a failed step marks the report
STATUS = "status.json"  # figures/<params>/status.json: the step that failed last, while it stays failed


def mark_failed(fig_dir: Path, notebook_name: str) -> None:
    """Record that step NN failed: the report says it is incomplete and that pages from NN on are stale."""
    (Path(fig_dir) / STATUS).write_text(json.dumps({"failed": notebook_name, "stale_from": notebook_name[:2]}))


def mark_succeeded(fig_dir: Path, notebook_name: str) -> None:
    """Clear the failure mark once the step that failed (or an earlier one rerun before it) succeeds."""
    status = read_status(fig_dir)
    if status and status["failed"] == notebook_name:
        (Path(fig_dir) / STATUS).unlink()


def read_status(fig_dir: Path) -> dict | None:
    """{"failed": notebook name, "stale_from": "NN"} while a step's last run failed, else None."""
    path = Path(fig_dir) / STATUS
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- artifacts changed or vanished since their step
def _step_artifacts(run: RunFolder, notebook_name: str) -> list[Path]:
    """The run-folder files the step writes (its artifacts in run_folder.ARTIFACTS), as they are now."""
    from .run_folder import ARTIFACTS

    out = []
    for artifact, (_, writer) in ARTIFACTS.items():
        if writer == Path(notebook_name).stem:
            path = run.path(artifact)
            out += sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] * path.is_file()
    return out


def record_outputs(run: RunFolder, notebook_name: str) -> Path:
    """runs/<params>/.outputs/<notebook>.json: size and mtime of every artifact the step left behind."""
    rec = {str(f.relative_to(run.root)): [f.stat().st_size, f.stat().st_mtime_ns]
           for f in _step_artifacts(run, notebook_name)}
    path = run.root / ".outputs" / f"{Path(notebook_name).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=0, sort_keys=True))
    return path


def check_outputs(params_name: str) -> list[str]:
    """Steps whose artifacts changed or vanished since they ran: their executed notebooks are removed
    (so make reruns them, and every step after), and one line per step says what changed."""
    p = params_mod.load(params_name)
    run = RunFolder.of(p)
    lines = []
    for rec_path in sorted((run.root / ".outputs").glob("*.json")):
        executed = run.notebook(f"{rec_path.stem}.ipynb")
        if not executed.is_file():
            continue
        rec = json.loads(rec_path.read_text())
        changed = [rel for rel, (size, mtime) in rec.items()
                   if not (run.root / rel).is_file() or [(run.root / rel).stat().st_size,
                                                          (run.root / rel).stat().st_mtime_ns] != [size, mtime]]
        if changed:
            executed.unlink()
            lines.append(f"{rec_path.stem}: {len(changed)} artifact(s) changed or vanished since it ran "
                         f"({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}); it reruns")
    return lines


# The errors a user can fix (a file, a key, the disk); the runner prints them as one line.
USER_ERRORS = {"ParamsError", "MachineError", "DataError", "ReviewError", "StoreMismatch", "StoreCorrupt", "DiskFull",
               "MissingArtifact", "NonFiniteLoss", "FormatError", "CifairError", "ReferenceError"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", help="parameter set name (params/<name>.yaml)")
    ap.add_argument("notebook", type=Path, nargs="?")
    ap.add_argument("--check", action="store_true", help="only check the recorded artifacts of the steps that ran")
    args = ap.parse_args(argv)
    debug = os.environ.get("MEMAUDIT_DEBUG", "") not in ("", "0")
    try:
        if args.check:
            for line in check_outputs(args.params):
                print(line)
            return
        if args.notebook is None:
            ap.error("give a notebook (or --check)")
        execute(args.params, args.notebook)
    except Exception as e:
        from papermill.exceptions import PapermillExecutionError

        name, text = ((e.ename, e.evalue) if isinstance(e, PapermillExecutionError) else (type(e).__name__, str(e)))
        if debug or name not in USER_ERRORS:
            raise
        sys.exit(f"error: {text} ({name}; MEMAUDIT_DEBUG=1 shows the traceback)")


if __name__ == "__main__":
    main()
