"""Jupyter server settings for `make lab` (and any test or CI job that starts the server): safe by default.

`make lab` passes this file with --config. The server:
- serves the repository root (not notebooks/), so notebooks, lib/ and figures/ are all reachable;
- listens on 127.0.0.1 only: other machines cannot connect (use `ssh -L 8888:127.0.0.1:8888 host` to reach
  it from elsewhere);
- always requires a token (random, printed in the URL at start), for every endpoint, including those that
  do not declare their own authentication rule.

Opening the server to other hosts is an explicit choice, never a default: set MEMAUDIT_LAB_IP to the
address to listen on (e.g. 0.0.0.0) AND MEMAUDIT_LAB_PASSWORD_HASH to a hashed password made with
`python -c "from jupyter_server.auth import passwd; print(passwd())"`. Without the hash the server refuses
to start. Traffic is plain HTTP unless you also pass --certfile/--keyfile: prefer the ssh tunnel.

Kernels and saving:
- the `memaudit` kernel is this checkout's jupyter/kernels/memaudit/ (searched before any installed kernelspec,
  so `make lab` needs no registration, with pip or conda): it imports this checkout's `lib`, whichever checkout
  the environment's editable install points at (see jupyter/kernels/memaudit/launch.py);
- notebooks under notebooks/ (the committed sources) are saved without outputs, execution counts or widget
  state (`strip_outputs`, a pre-save hook): running a notebook interactively never changes its source beyond
  what you typed. Executed copies elsewhere (runs/, your own scratch notebooks) are saved as they are.
"""
import ipaddress
import os
import warnings
from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

ROOT = Path(__file__).resolve().parents[1]


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:  # "", "*" (all interfaces) or a host name
        return False


SOURCE_NOTEBOOKS = "notebooks/"  # API path (relative to the root) of the committed notebooks


def strip_outputs(model, path, contents_manager=None, **kwargs):
    """pre_save_hook: a notebook saved under notebooks/ keeps its cells and metadata but no outputs.

    Code cells lose their outputs and execution counts, the notebook its widget state (what
    tests/test_notebooks.py requires of a committed notebook). Other notebooks are left as they are.
    """
    if model.get("type") != "notebook" or not str(path).lstrip("/").startswith(SOURCE_NOTEBOOKS):
        return
    nb = model.get("content") or {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)


c.ServerApp.root_dir = str(ROOT)
c.ContentsManager.pre_save_hook = strip_outputs
# traitlets validates the hook twice while loading this file, and jupyter_server then warns that strip_outputs
# overrides strip_outputs: not so, there is one hook
warnings.filterwarnings("ignore", message=r"Overriding existing pre_save_hook \(strip_outputs\)")
# This checkout's kernelspecs (jupyter/kernels/) before the installed ones: JUPYTER_PATH's first entry wins, for the
# kernel list and for starting kernels alike (KernelSpecManager.kernel_dirs is not configurable). lib/pipeline.py
# does the same for papermill.
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    [str(ROOT / "jupyter")] + [d for d in os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
                               if d and Path(d) != ROOT / "jupyter"])
# Kernels started here are interactive: tqdm shows widget bars (the pipeline's MEMAUDIT_HEADLESS is for papermill).
os.environ.pop("MEMAUDIT_HEADLESS", None)
c.ServerApp.allow_unauthenticated_access = False  # every endpoint needs the token (or password)
c.ServerApp.disable_check_xsrf = False
c.ServerApp.allow_origin = ""                     # no cross-origin requests
# The token is jupyter's default: random, generated at start and printed in the URL (set explicitly here it
# would print as "token=..."). Only this file and jupyter_config.* are read when --config is given, not
# ~/.jupyter/jupyter_server_config.*; tests/test_security.py checks that the started server refuses requests
# without it.

ip = os.environ.get("MEMAUDIT_LAB_IP", "").strip() or "127.0.0.1"
c.ServerApp.ip = ip
if _is_loopback(ip):
    c.ServerApp.allow_remote_access = False       # also refuses DNS-rebinding requests (non-local Host header)
else:
    hashed = os.environ.get("MEMAUDIT_LAB_PASSWORD_HASH", "").strip()
    if not hashed:
        raise SystemExit(
            f"jupyter/jupyter_server_config.py: MEMAUDIT_LAB_IP={ip!r} would open the server to other hosts; "
            "set MEMAUDIT_LAB_PASSWORD_HASH (python -c \"from jupyter_server.auth import passwd; print(passwd())\") "
            "to do so, or leave MEMAUDIT_LAB_IP unset (127.0.0.1) and use an ssh tunnel")
    c.PasswordIdentityProvider.hashed_password = hashed
    c.PasswordIdentityProvider.password_required = True
    c.ServerApp.allow_remote_access = True
