"""Start the `memaudit` kernel so that it imports the `lib` of the checkout this file sits in.

`make lab` (jupyter/jupyter_server_config.py) and the pipeline (lib/pipeline.py) find this kernelspec in
<checkout>/jupyter/kernels/ before any installed one, so a kernel always belongs to one checkout, even when
several checkouts share an environment (whose editable install points at only one of them):

- the checkout (two folders above jupyter/kernels/memaudit/, or, for a copy of this spec installed elsewhere,
  the nearest folder above the kernel's working directory that holds lib/params.py) goes first on sys.path
  and on PYTHONPATH (for processes the kernel starts);
- `lib` is imported once and must come from that checkout, else the kernel refuses to start, saying why;
- MEMAUDIT_HEADLESS=1 (set by the pipeline for papermill runs) makes tqdm.auto choose its plain-text bars:
  tqdm.auto is imported before ipykernel is, so tqdm's own detection sees no notebook and picks tqdm.std.
  Executed notebooks and their HTML exports then hold text bars, never a widget that needs a browser (or a
  CDN) to render. In JupyterLab (variable unset) tqdm.auto shows ipywidgets bars.

The kernel itself is ipykernel's, started as `python -m ipykernel_launcher` starts it.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _is_checkout(path: Path) -> bool:
    return (path / "lib" / "params.py").is_file() and (path / "pyproject.toml").is_file()


def checkout() -> Path:
    root = HERE.parents[2]
    if _is_checkout(root):
        return root
    for path in (Path.cwd(), *Path.cwd().parents):
        if _is_checkout(path):
            return path
    sys.exit(f"memaudit kernel: no checkout found (looked at {root} and above {Path.cwd()}): "
             "start it from a notebook inside the repository")


def main() -> None:
    root = checkout()
    # `python launch.py` put this folder first on sys.path: the checkout goes there instead
    sys.path[:] = [str(root)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p and p != str(root)])
    import lib

    where = Path(lib.__file__).resolve().parent
    if where != root / "lib":
        sys.exit(f"memaudit kernel: `lib` was imported from {where}, not from this checkout's {root / 'lib'}")
    if os.environ.get("MEMAUDIT_HEADLESS") == "1":
        import tqdm.auto  # noqa: F401  (before ipykernel: tqdm picks its text bars, see above)

    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
