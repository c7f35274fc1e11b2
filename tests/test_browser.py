"""What a person sees: the smoke report in a real (headless) browser, and JupyterLab as `make lab` starts it.

- The report: Chromium (Debian's `chromium`, driven over the DevTools protocol with websocket-client) opens
  figures/smoke/index.html and every HTML page it links to; every image loads (naturalWidth > 0), none is shown
  wider than the page limit (1,200 px; review sheets are not even drawn wider), and the console shows no error
  except blocked network requests (remote hosts are unreachable on purpose: the pages must not need them).
- The server: started exactly as `make lab` starts it, on a free port; notebook 00 runs on smoke in the project
  kernel `memaudit` through the server's REST API and the kernel's websocket channel, with no error output; the
  kernel imports this checkout's `lib` and shows widget progress bars (the pipeline's runs show text bars).
- The kernel: this checkout's kernelspec wins over any installed one and imports this checkout's `lib`, also when
  another checkout shares the environment (a copy of the repository with a marker in its lib).
- Saving: a notebook under notebooks/ is saved without outputs (jupyter/jupyter_server_config.py's pre-save hook).

Without Chromium the browser test is skipped, saying why (`apt-get install -y chromium`), except where
MEMAUDIT_REQUIRE_BROWSER=1 (.ci/run sets it): there a missing browser fails.
"""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from lib import params, pipeline
from lib.params import ROOT

PAGE_LIMIT = 1200
CONFIG = ROOT / "jupyter" / "jupyter_server_config.py"
REQUIRED = os.environ.get("MEMAUDIT_REQUIRE_BROWSER", "") not in ("", "0")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _need_chromium() -> str:
    exe = _chromium()
    if exe is None:
        if REQUIRED:
            pytest.fail("MEMAUDIT_REQUIRE_BROWSER=1 but no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH: `apt-get install -y chromium` to run the browser test")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# A tiny Chrome DevTools protocol client


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol; remote hosts do not resolve."""

    def __init__(self, exe: str, profile: Path, width: int = 1280, height: int = 900):
        import websocket

        args = [exe, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, (method, msg["error"])
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def open(self, url: str):
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions since the last open(), except failed network requests."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')} "
                           f"{p['exceptionDetails'].get('exception', {}).get('description', '')[:200]}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error" and p["entry"].get("source") != "network":
                out.append(f"log: {p['entry'].get('text')}")
        return out

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


IMAGES_JS = """(async () => {
  await Promise.all(Array.from(document.images).map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  return Array.from(document.images).map(i => ({src: (i.getAttribute('src') || '').slice(0, 60),
      natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
})()"""
LINKS_JS = "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"


def _smoke_report() -> Path:
    """figures/smoke/index.html, made (or brought up to date) by the pipeline as `make all PARAMS=smoke` does."""
    r = subprocess.run(["make", "-C", str(ROOT), "all", "PARAMS=smoke", f"PY={sys.executable}", "ENV_STAMP="],
                       capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    index = params.load("smoke").fig_dir / "index.html"
    assert index.is_file()
    return index


@pytest.mark.slow
def test_the_smoke_report_in_a_real_browser(tmp_path):
    exe = _need_chromium()
    index = _smoke_report()
    browser = Browser(exe, tmp_path / "profile")
    try:
        browser.open(index.as_uri())
        pages = [index.as_uri()] + sorted({h.split("#")[0] for h in browser.js(LINKS_JS)
                                           if h.startswith("file:") and h.split("#")[0].endswith(".html")})
        assert len(pages) > 1 + 6  # the report and at least every notebook export
        for h in browser.js(LINKS_JS):  # every other link is to a file beside the report
            if h.startswith("file:"):
                assert Path(urllib.request.url2pathname(h[len("file://"):].split("#")[0])).exists(), h
        problems = {}
        for url in pages:
            if url != index.as_uri():
                browser.open(url)
            images = browser.js(IMAGES_JS)
            name = url.rsplit("/", 1)[1]
            bad = [i for i in images if i["natural"] <= 0] + [i for i in images if i["shown"] > PAGE_LIMIT]
            bad += [i for i in images if re.match(r"\d\d_.+_\d\d\.png$", i["src"]) and i["natural"] > PAGE_LIMIT]
            if bad or browser.errors():
                problems[name] = {"images": bad[:3], "errors": browser.errors()[:3]}
            if name == "index.html":
                assert len(images) >= 10, images  # thumbnails of the figures and the first review pages
        assert not problems, problems
    finally:
        browser.close()


# ---------------------------------------------------------------------------------------------------------------
# JupyterLab as `make lab` starts it


def _make_lab_command(tmp_path) -> list[str]:
    out = subprocess.run(["make", "-s", "-n", "lab", f"DEPS_MK={tmp_path / 'deps.mk'}", "ENV_STAMP=", f"PY={sys.executable}"],
                         cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if " -m jupyter lab" in ln]
    assert len(lines) == 1, out.stdout + out.stderr
    return shlex.split(lines[0])


class Lab:
    """The server `make lab` starts, on a free port; requests carry its token."""

    def __init__(self, tmp_path):
        port = _free_port()
        cmd = _make_lab_command(tmp_path) + ["--no-browser", f"--port={port}", "--ServerApp.port_retries=0"]
        env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")}
        env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.log, found = [], threading.Event()
        url_re = re.compile(r"(http://127\.0\.0\.1:%d)/lab\?token=([0-9a-f]{32,})" % port)

        def read():
            for line in self.proc.stdout:
                self.log.append(line)
                if url_re.search(line):
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 90
        while not found.wait(0.2) and self.proc.poll() is None and time.monotonic() < deadline:
            pass
        assert found.is_set(), "the server did not start:\n" + "".join(self.log)
        self.base, self.token = url_re.search("".join(self.log)).groups()
        self.port = port
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/status")
                break
            except OSError:
                time.sleep(0.2)

    def request(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)


class KernelChannel:
    """A kernel's websocket channel on the server (the JSON message protocol)."""

    def __init__(self, lab: Lab, kernel_id: str):
        import websocket

        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {lab.token}"], timeout=300, suppress_origin=True)

    def execute(self, code: str) -> list[dict]:
        """Run `code`; its iopub messages (outputs, errors), once the kernel is idle again and has replied."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": "execute_request",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, idle, replied = [], False, None
        while not (idle and replied):
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if msg["channel"] == "shell" and kind == "execute_reply":
                replied = msg["content"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind in ("stream", "error", "display_data", "execute_result"):
                out.append(msg)
        if replied.get("status") == "error":
            out.append({"header": {"msg_type": "error"}, "content": replied})
        return out

    def close(self):
        self.ws.close()


def _errors(outputs: list[dict]) -> list[str]:
    return [f"{o['content'].get('ename')}: {o['content'].get('evalue')}" for o in outputs
            if o["header"]["msg_type"] == "error"]


def _text(outputs: list[dict]) -> str:
    return "".join(o["content"].get("text", "") for o in outputs if o["header"]["msg_type"] == "stream")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX process groups")
def test_make_lab_runs_notebook_00_on_smoke_in_the_project_kernel(tmp_path):
    lab = Lab(tmp_path)
    session = channel = None
    try:
        specs = lab.request("GET", "/api/kernelspecs")["kernelspecs"]
        assert "launch.py" in " ".join(specs["memaudit"]["spec"]["argv"])  # this checkout's spec, not an installed one
        session = lab.request("POST", "/api/sessions", {"path": "notebooks/00_prepare_data.ipynb", "type": "notebook",
                                                         "name": "00_prepare_data.ipynb", "kernel": {"name": "memaudit"}})
        assert session["kernel"]["name"] == "memaudit"
        channel = KernelChannel(lab, session["kernel"]["id"])
        probe = channel.execute("import lib, os, tqdm.auto\nprint(lib.__file__)\nprint(os.getcwd())\n"
                                "print(tqdm.auto.tqdm.__mro__[1].__module__)")
        lib_file, cwd, bars = _text(probe).split()
        assert Path(lib_file) == ROOT / "lib" / "__init__.py" and Path(cwd) == ROOT / "notebooks"
        assert bars == "tqdm.notebook"  # widget progress bars in Lab (ipywidgets + jupyterlab_widgets)
        nb = json.loads((ROOT / "notebooks" / "00_prepare_data.ipynb").read_text())
        outputs = []
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                source = 'params_name = "smoke"'
            out = channel.execute(source)
            assert not _errors(out), (source[:200], _errors(out))
            outputs += out
        text = _text(outputs)
        assert "parameter set: smoke" in text and "official content" in text
        assert "IProgress not found" not in text
        assert any("image/png" in o["content"].get("data", {}) for o in outputs)  # the figures were shown
    finally:
        if channel:
            channel.close()
        if session:
            lab.request("DELETE", f"/api/sessions/{session['id']}")
        lab.close()


# ---------------------------------------------------------------------------------------------------------------
# The kernel: this checkout's lib, text bars in headless runs


def _run_in_kernel(kernel_dirs: list[str], code: str, *, cwd: Path, headless: bool) -> str:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "MEMAUDIT_HEADLESS": "1" if headless else "0"}
    km = KernelManager(kernel_name="memaudit", kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    km.start_kernel(cwd=str(cwd), env=env)
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out = []
        reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m))
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _copy_checkout(dst: Path) -> Path:
    """A second checkout of this repository (what the kernel needs of it), with a marker in its lib."""
    for name in ("lib", "jupyter", "params", "scripts"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    (dst / "notebooks").mkdir()
    with open(dst / "lib" / "__init__.py", "a") as f:
        f.write('\nCHECKOUT = "the copy"\n')
    return dst


@pytest.mark.slow
def test_the_kernel_imports_its_own_checkouts_lib(tmp_path):
    copy = _copy_checkout(tmp_path / "other checkout")
    probe = ("import lib, tqdm.auto\n"
             "print(lib.__file__, getattr(lib, 'CHECKOUT', 'main'), tqdm.auto.tqdm.__mro__[1].__module__, sep='|')")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # each checkout's kernelspec imports that checkout's lib, whatever the working directory and the editable install
    for root, marker in ((copy, "the copy"), (ROOT, "main")):
        out = _run_in_kernel([str(root / "jupyter" / "kernels")], probe, cwd=elsewhere, headless=True)
        assert out.strip().split("|") == [str(root / "lib" / "__init__.py"), marker, "tqdm.std"], out  # text bars
    out = _run_in_kernel([str(ROOT / "jupyter" / "kernels")], probe, cwd=elsewhere, headless=False)
    assert out.strip().split("|")[-1] == "tqdm.notebook", out  # interactive: widget bars

    # the pipeline of the copy runs its notebooks in the copy's kernel, with the copy's lib
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_name = "x"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import lib, sys\nprint('LIB', lib.__file__, getattr(lib, 'CHECKOUT', 'main'))")]
    nb.metadata["kernelspec"] = {"name": "memaudit", "display_name": "memaudit (project)", "language": "python"}
    nbformat.write(nb, copy / "notebooks" / "98_which_lib.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_PATH", "MEMAUDIT_HEADLESS", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-m", "lib.pipeline", "smoke", "notebooks/98_which_lib.ipynb"], cwd=copy,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    executed = (copy / "runs" / "smoke" / "98_which_lib.ipynb").read_text()
    printed = "".join(json.loads(executed)["cells"][-1]["outputs"][0]["text"])
    assert printed == f"LIB {copy / 'lib' / '__init__.py'} the copy\n", printed
    page = (copy / "figures" / "smoke" / "98_which_lib.code.html").read_text()
    assert "LIB ./lib/__init__.py the copy" in page and str(tmp_path) not in page  # the export names no machine path
    assert (copy / "figures" / "smoke" / "index.html").is_file()


def test_the_pipeline_kernel_is_found_and_falls_back_with_a_message(tmp_path, monkeypatch, capsys):
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.delenv("JUPYTER_PATH", raising=False)  # both restored after the test
    monkeypatch.delenv("MEMAUDIT_HEADLESS", raising=False)
    assert pipeline.headless_kernel() == "memaudit" and os.environ["MEMAUDIT_HEADLESS"] == "1"
    spec = KernelSpecManager().get_kernel_spec("memaudit")  # as papermill finds it
    assert spec.resource_dir == str(ROOT / "jupyter" / "kernels" / "memaudit")
    assert spec.argv[0] == "python" and "{resource_dir}/launch.py" in spec.argv  # the env's python, this launcher
    monkeypatch.setattr(pipeline.params_mod, "ROOT", tmp_path)  # a checkout without jupyter/kernels/
    assert pipeline.headless_kernel() == "python3"
    assert "no kernelspec jupyter/kernels/memaudit" in capsys.readouterr().err


def test_every_notebook_carries_the_project_kernel():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "memaudit", path.name


# ---------------------------------------------------------------------------------------------------------------
# Saving in Lab strips the outputs of the committed notebooks


def _config(monkeypatch):
    from traitlets.config import Config

    for k in ("MEMAUDIT_LAB_IP", "MEMAUDIT_LAB_PASSWORD_HASH", "JUPYTER_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MEMAUDIT_HEADLESS", "1")  # the config file sets and removes variables: undone after the test
    c = Config()
    exec(compile(CONFIG.read_text(), str(CONFIG), "exec"), {"get_config": lambda: c, "__file__": str(CONFIG)})
    return c


def test_saving_a_notebook_under_notebooks_strips_its_outputs(tmp_path, monkeypatch):
    import nbformat
    from jupyter_server.services.contents.filemanager import FileContentsManager

    c = _config(monkeypatch)
    assert "MEMAUDIT_HEADLESS" not in os.environ  # Lab's kernels are interactive
    from jupyter_client.kernelspec import KernelSpecManager
    assert os.environ["JUPYTER_PATH"].split(os.pathsep)[0] == str(ROOT / "jupyter")
    assert KernelSpecManager().get_kernel_spec("memaudit").resource_dir == str(ROOT / "jupyter" / "kernels" / "memaudit")
    cm = FileContentsManager(root_dir=str(tmp_path), config=c)  # the hook from the config, as the server gets it
    assert cm.pre_save_hook is c.ContentsManager.pre_save_hook
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "runs").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("print(1)", execution_count=3)]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"] = {"name": "memaudit", "display_name": "memaudit (project)", "language": "python"}
    for where in ("notebooks/x.ipynb", "runs/x.ipynb"):
        cm.save({"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}, where)
    saved = json.loads((tmp_path / "notebooks" / "x.ipynb").read_text())
    assert saved["cells"][1]["outputs"] == [] and saved["cells"][1]["execution_count"] is None
    assert "widgets" not in saved["metadata"] and saved["metadata"]["kernelspec"]["name"] == "memaudit"
    assert "".join(saved["cells"][1]["source"]) == "print(1)" and "".join(saved["cells"][0]["source"]) == "# t"
    kept = json.loads((tmp_path / "runs" / "x.ipynb").read_text())  # an executed copy elsewhere keeps its outputs
    assert kept["cells"][1]["outputs"] and kept["cells"][1]["execution_count"] == 3
