"""Make rules: which lib modules each notebook step uses (its imports, followed through lib).

    python3 scripts/nbdeps.py notebooks/*.ipynb > runs/.deps.mk

Writes one line per notebook, `DEPS_<notebook file> := lib/a.py lib/b.py ...`: the lib
modules its code cells import, directly or through other lib modules (imports inside
functions included), plus the runner's (lib/pipeline.py, module-level imports: the runner
calls nothing that imports lazily). The Makefile makes each
step depend on these, so editing one module reruns only the steps that use it. Standard
library only: it runs before the project's environment exists.
"""
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"


def lib_imports(tree: ast.Module, *, inside_lib: bool, lazy: bool = True) -> set[str]:
    """Names of lib modules imported in a parsed source (lazy: also inside functions)."""
    out = set()
    for node in (ast.walk(tree) if lazy else tree.body):
        if isinstance(node, ast.ImportFrom):
            if inside_lib and node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.split(".")[0] == "lib":
                base = node.module[4:] if node.module != "lib" else None
            else:
                continue
            if base:
                out.add(base.split(".")[0])
            else:  # from . import a, b / from lib import a, b
                out.update(a.name for a in node.names if (LIB / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lib."))
    return {m for m in out if (LIB / f"{m}.py").is_file()}


def closure(modules: set[str], *, lazy: bool = True) -> set[str]:
    """The modules and everything they import from lib, transitively (lazy: imports inside functions too)."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += lib_imports(ast.parse((LIB / f"{m}.py").read_text()), inside_lib=True, lazy=lazy) - seen
    return seen


def notebook_imports(path: Path) -> set[str]:
    """lib modules a notebook's code cells import; every lib module if a cell does not parse (be safe)."""
    out = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in "".join(cell["source"]).splitlines()
                         if not line.lstrip().startswith(("%", "!")))
        try:
            out |= lib_imports(ast.parse(code), inside_lib=False)
        except SyntaxError:
            return {p.stem for p in LIB.glob("*.py")}
    return out


def main(paths: list[str]) -> None:
    # the runner executes a notebook and writes its parameters: only its module-level imports run
    runner = closure({"pipeline"}, lazy=False)
    for p in map(Path, paths):
        mods = sorted(closure(notebook_imports(p)) | runner | {"__init__"})
        print(f"DEPS_{p.name} := " + " ".join(f"lib/{m}.py" for m in mods))


if __name__ == "__main__":
    main(sys.argv[1:])
