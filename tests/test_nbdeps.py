"""scripts/nbdeps.py: each notebook step depends on exactly the lib modules it uses."""
import json
import subprocess
import sys

from lib.params import ROOT


def deps(*notebooks):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "nbdeps.py"), *map(str, notebooks)],
                         capture_output=True, text=True, check=True).stdout
    return {line.split(" := ")[0][5:]: set(line.split(" := ")[1].split()) for line in out.splitlines()}


def test_direct_lazy_and_transitive_imports_are_followed(tmp_path):
    nb = tmp_path / "99_x.ipynb"
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["from lib import tables  (prose, not code)"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "from lib import leakage\n", "import lib.stats\n"]},
    ]}))
    d = deps(nb)["99_x.ipynb"]
    # leakage -> cifair, duplicates (module level); cifair -> data, reference; the runner -> pipeline, params
    assert {"lib/leakage.py", "lib/duplicates.py", "lib/cifair.py", "lib/stats.py", "lib/pipeline.py"} <= d
    assert "lib/tables.py" not in d and "lib/train.py" not in d  # not imported by anything it uses


def test_preparing_data_does_not_depend_on_training_or_leakage():
    d = deps(ROOT / "notebooks" / "00_prepare_data.ipynb")["00_prepare_data.ipynb"]
    assert "lib/data.py" in d and not d & {"lib/train.py", "lib/duplicates.py", "lib/retrain.py"}
