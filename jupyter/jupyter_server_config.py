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
"""
import ipaddress
import os
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


c.ServerApp.root_dir = str(ROOT)
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
