"""Notebooks: committed without outputs, each with a papermill parameters cell; 00 runs on smoke."""
import json

import pytest

from lib import params, pipeline
from lib.params import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_prepare_data.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and not cell.get("execution_count"), f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_takes_params_name(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "params_name" in "".join(tagged[0]["source"])


def test_outputs_check_catches_an_executed_notebook(tmp_path):
    """The check above must fail on a notebook with outputs (it is not a test that cannot fail)."""
    nb = json.loads(NOTEBOOKS[0].read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    bad = tmp_path / "x.ipynb"
    bad.write_text(json.dumps(nb))
    with pytest.raises(AssertionError):
        test_committed_notebooks_carry_no_outputs(bad)


@pytest.mark.slow
def test_prepare_data_on_smoke_makes_its_figures():
    p = params.load("smoke")
    out = pipeline.execute("smoke", ROOT / "notebooks" / "00_prepare_data.ipynb")
    assert out == p.run_dir / "00_prepare_data.ipynb" and out.is_file()
    for f in ("00_class_counts.png", "00_samples.png", "00_prepare_data.html"):
        assert (p.fig_dir / f).stat().st_size > 1000, f
    assert "00_prepare_data.html" in (p.fig_dir / "index.html").read_text()
    text = out.read_text()
    assert "verdict 'official content'" in text and "test_with_train_copy" in text
    assert (p.run_dir / "params.resolved.yaml").is_file()


def test_failed_step_leaves_no_executed_notebook(tmp_path, monkeypatch):
    """A failing notebook is kept as *.failed.ipynb, so make reruns it instead of skipping it."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_name = "x"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "99_fail.ipynb"
    nbformat.write(nb, src)
    p = params.load("smoke")
    with pytest.raises(Exception, match="boom"):
        pipeline.execute("smoke", src)
    assert not (p.run_dir / "99_fail.ipynb").exists()
    assert (p.run_dir / "99_fail.failed.ipynb").is_file()
    (p.run_dir / "99_fail.failed.ipynb").unlink()


def test_a_step_removes_its_own_old_figures_only(tmp_path):
    for name in ("04_groups_03.png", "04_buckets.png", "03_exact_00.png", "table2.md", "04x.png"):
        (tmp_path / name).write_text("old")
    gone = pipeline.clear_step_figures(tmp_path, "04_subpopulations.ipynb")
    assert sorted(p.name for p in gone) == ["04_buckets.png", "04_groups_03.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03_exact_00.png", "04x.png", "table2.md"]


def test_a_mistyped_notebook_deletes_nothing(tmp_path):
    p = params.load("smoke")
    p.fig_dir.mkdir(parents=True, exist_ok=True)
    keep = p.fig_dir / "07_keep_me.png"
    keep.write_text("x")
    with pytest.raises(params.ParamsError, match="no such notebook"):
        pipeline.execute("smoke", ROOT / "notebooks" / "07_typo.ipynb")
    assert keep.is_file()
    keep.unlink()
