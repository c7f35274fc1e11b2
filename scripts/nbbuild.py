"""Build a committed notebook (no outputs) from a percent-format script.

    python scripts/nbbuild.py src.py notebooks/NN_name.ipynb
    python scripts/nbbuild.py --kernelspec notebooks/*.ipynb   # only switch python3 -> memaudit in place

Cells are separated by lines starting with `# %%`; `# %% [markdown]` cells are
markdown (leading `# ` stripped); the cell marked `# %% tags=["parameters"]`
becomes papermill's parameters cell.
"""
import re
import sys

import nbformat

# The project kernel (jupyter/kernels/memaudit: this checkout's lib); the pipeline runs every notebook in it.
KERNELSPEC = {"name": "memaudit", "display_name": "memaudit (project)", "language": "python"}
OLD_KERNELSPEC = '"kernelspec": {\n   "display_name": "Python 3",\n   "language": "python",\n   "name": "python3"\n  }'
NEW_KERNELSPEC = ('"kernelspec": {\n   "display_name": "memaudit (project)",\n   "language": "python",\n'
                  '   "name": "memaudit"\n  }')


def build(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    chunks = re.split(r"^# %%(.*)$", text, flags=re.M)
    for header, body in zip(chunks[1::2], chunks[2::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            src = "\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if "parameters" in header:
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    return nb


def set_kernelspec(text: str) -> str:
    """A committed notebook's text with the python3 kernelspec replaced by the project's; nothing else changes
    (cells, ids and formatting stay byte for byte)."""
    return text.replace(OLD_KERNELSPEC, NEW_KERNELSPEC)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--kernelspec"]:  # python scripts/nbbuild.py --kernelspec notebooks/*.ipynb
        for path in sys.argv[2:]:
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(set_kernelspec(text))
    else:
        src, dst = sys.argv[1], sys.argv[2]
        nbformat.write(build(open(src).read()), dst)
