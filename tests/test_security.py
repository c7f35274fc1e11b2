"""Untrusted inputs cannot run code or open a door (README: Security).

- dataset pickles: a tampered CIFAR file that would run code is refused before anything runs; the official
  formats (Python 2 protocol 2, Python 3 bytes keys, the official-order copy at protocol 4) still load;
- every other loader: np.load never unpickles, params YAML never constructs objects, review CSVs are
  never evaluated, downloads with a wrong checksum are refused and leave nothing in place;
- the notebook server `make lab` starts listens on 127.0.0.1 only and refuses requests without its token;
- the HTML exports (fresh and committed) load no remote script, stylesheet or image.
"""
import ast
import hashlib
import html.parser
import io
import os
import pickle
import re
import shlex
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lib import data, params, pipeline, reference, review
from lib.params import ROOT

# ---------------------------------------------------------------------------------------------------------------
# Dataset pickles


class _Reduce:
    """Pickles as a call of `func(*args)`: what a tampered file does to run code on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, bytes]:
    """Pickles (whole file contents) that create `marker` when unpickled with plain pickle."""
    import builtins
    import posix

    touch = f"touch {shlex.quote(str(marker))}"
    code = f"open({str(marker)!r}, 'w').close()"
    images = np.zeros((2, 3072), np.uint8)
    as_blob = lambda payload: {"data": images, "fine_labels": payload, "coarse_labels": [0, 0]}  # noqa: E731
    out = {
        "os.system": pickle.dumps(_Reduce(os.system, touch), protocol=2),
        "subprocess.call": pickle.dumps(as_blob(_Reduce(subprocess.call, ["touch", str(marker)])), protocol=4),
        "builtins.exec": pickle.dumps(as_blob(_Reduce(builtins.exec, code)), protocol=4),
        "builtins.eval": pickle.dumps({"data": _Reduce(builtins.eval, code)}, protocol=0),
        "posix.system in a numpy object array": pickle.dumps(
            as_blob(np.array([_Reduce(posix.system, touch)], dtype=object)), protocol=5),
        # hand-written opcodes, as an attacker would write them (Python 2 style GLOBAL + REDUCE; INST)
        "posix.system via GLOBAL": b"\x80\x02cposix\nsystem\nU" + bytes([len(touch)]) + touch.encode() + b"\x85R.",
        "os.system via INST": b"(S'" + touch.encode() + b"'\nios\nsystem\n.",
    }
    return out


def _tiny_blobs(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    blobs = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        blobs[split] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
                        "coarse_labels": (fine // 5).tolist(), "filenames": [f"{split}_{i}.png" for i in range(n)],
                        "batch_label": f"{split} batch"}
    blobs["meta"] = {"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}
    return blobs


def _write_folder(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def _py2_pickle(obj) -> bytes:
    """`obj` as Python 2's cPickle.dump(obj, f, 2) wrote it for the official CIFAR files (numpy 1.x).

    str is a Python 2 str (SHORT_BINSTRING / BINSTRING, bytes on disk), arrays go through
    numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype.
    """
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def i(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v) if 0 <= v < 65536 else \
            b"J" + struct.pack("<i", v)

    def enc(v) -> bytes:
        if isinstance(v, str):
            return s(v.encode("latin1"))
        if isinstance(v, (int, np.integer)):
            return i(int(v))
        if isinstance(v, list):
            return b"]" + (b"(" + b"".join(enc(x) for x in v) + b"e" if v else b"")
        if isinstance(v, dict):
            return b"}(" + b"".join(enc(k) + enc(x) for k, x in v.items()) + b"u"
        if isinstance(v, np.ndarray):
            assert v.dtype == np.uint8 and v.ndim == 2
            dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
                     + b"(" + i(3) + s(b"|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + i(0) + b"tb")
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
                    + b"(" + i(1) + i(v.shape[0]) + i(v.shape[1]) + b"\x86" + dtype + b"\x89"
                    + s(np.ascontiguousarray(v).tobytes()) + b"tb")
        raise TypeError(type(v))

    return b"\x80\x02" + enc(obj) + b"."


def _bytes_keys(obj):
    """The same dict as Python 3 sees a Python 2 file read with encoding="bytes": every str is bytes."""
    if isinstance(obj, dict):
        return {k.encode(): _bytes_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_bytes_keys(v) for v in obj]
    return obj.encode() if isinstance(obj, str) else obj


@pytest.mark.parametrize("attack", list(_attacks(Path("x"))))
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path, attack):
    marker = tmp_path / "pwned"
    raw = _attacks(marker)[attack]
    blobs = _tiny_blobs()
    folder = _write_folder(tmp_path / "data", {"train": raw, "test": pickle.dumps(blobs["test"], protocol=2),
                                                 "meta": pickle.dumps(blobs["meta"], protocol=2)})
    with pytest.raises(data.DataError, match="refused to unpickle") as e:
        data.load_cifar(data_dir=str(tmp_path / "data"), download_missing=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{folder / 'train'}: refused to unpickle ")
    refused = msg.split("refused to unpickle ")[1].split(" ")[0]
    assert refused.rsplit(".", 1)[-1] in ("system", "call", "exec", "eval"), msg  # e.g. posix.system, __builtin__.eval
    time.sleep(0.2)  # a command started in the background would have created it by now
    assert not marker.exists()
    # the payload is real: plain pickle (what lib/data.py used before) runs it
    pickle.loads(raw, encoding="latin1")
    for _ in range(50):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists(), f"{attack}: the attack does not work even with plain pickle; the test proves nothing"


def test_only_reconstruct_functions_are_allowed():
    names = {f"{m}.{n}" for m, n in data._SAFE_GLOBALS}
    assert names == {"numpy.ndarray", "numpy.dtype", "_codecs.encode", "numpy.core.multiarray._reconstruct",
                     "numpy._core.multiarray._reconstruct", "numpy.core.numeric._frombuffer",
                     "numpy._core.numeric._frombuffer"}
    # _codecs.encode is allowed only as latin-1 encode (how Python 3 writes bytes at protocol <= 2)
    evil = (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(data.DataError, match="x: refused to unpickle _codecs.encode with encoding 'rot13'"):
        data.safe_unpickle(evil, "x")


def test_official_order_copy_still_loads(cifar_full):
    assert cifar_full.folder == data.data_root() / "cifar-100-python"
    assert cifar_full.verdict == data.OFFICIAL_CONTENT and cifar_full.x_train.shape == (50000, 32, 32, 3)
    assert cifar_full.class_names[:2] == ["apple", "aquarium_fish"]


@pytest.mark.parametrize("style", ["python 2 official (protocol 2, numpy.core)", "python 3, bytes keys, protocol 2",
                                   "python 3, str keys, protocol 5"])
def test_official_pickle_formats_load(tmp_path, style):
    blobs = _tiny_blobs()
    if style.startswith("python 2"):
        files = {n: _py2_pickle(b) for n, b in blobs.items()}
        assert b"cnumpy.core.multiarray\n_reconstruct" in files["train"]
    elif "bytes keys" in style:
        files = {n: pickle.dumps(_bytes_keys(b), protocol=2) for n, b in blobs.items()}
        assert pickle.loads(files["train"])[b"data"].dtype == np.uint8  # really bytes keys
    else:
        files = {n: pickle.dumps(b, protocol=5) for n, b in blobs.items()}
    _write_folder(tmp_path, files)
    ds = data.load_cifar(data_dir=str(tmp_path), download_missing=False)
    assert ds.verdict == data.NOT_OFFICIAL  # made-up images, of course
    tr, te = blobs["train"], blobs["test"]
    assert np.array_equal(ds.x_train, tr["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert np.array_equal(ds.x_test, te["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert ds.y_train.tolist() == tr["fine_labels"] and ds.coarse_test.tolist() == te["coarse_labels"]
    assert ds.class_names == blobs["meta"]["fine_label_names"]  # str, also from bytes


def test_py2_writer_matches_plain_pickle():
    """The hand-written Python 2 file is what plain pickle reads as the official layout (the helper is right)."""
    blob = _tiny_blobs()["train"]
    got = pickle.loads(_py2_pickle(blob), encoding="latin1")
    assert got.keys() == blob.keys() and np.array_equal(got["data"], blob["data"])
    assert got["fine_labels"] == blob["fine_labels"] and got["filenames"] == blob["filenames"]


def test_a_pickle_of_something_else_is_refused(tmp_path):
    with pytest.raises(data.DataError, match="x/train: not a CIFAR pickle .holds a list"):
        data.safe_unpickle(pickle.dumps([1, 2]), "x/train")


# ---------------------------------------------------------------------------------------------------------------
# Every other loader


def _np_load_calls():
    for path in sorted((ROOT / "lib").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")):
                yield path.name, node


def test_every_np_load_in_lib_refuses_pickles():
    calls = list(_np_load_calls())
    assert len(calls) >= 5
    bad = [f"{name}:{node.lineno}" for name, node in calls
           if not any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                      for k in node.keywords)]
    assert not bad, f"np.load without allow_pickle=False: {bad}"


def test_an_npz_with_pickled_objects_is_refused(tmp_path):
    from lib import fz_format

    marker = tmp_path / "pwned"
    evil = np.array([_Reduce(os.system, f"touch {shlex.quote(str(marker))}")], dtype=object)
    np.savez(tmp_path / "m.npz", tr_mem=evil, tr_labels=np.zeros(1, np.int64), tt_labels=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        fz_format.read_infl_matrix(tmp_path / "m.npz")
    assert not marker.exists()


def test_params_yaml_constructs_no_objects(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.yaml"
    f.write_text(f"seed: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(f)
    assert not marker.exists()


def test_review_csv_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    f = tmp_path / "duplicates.csv"
    f.write_text(f'train_idx,test_idx,decision\n1,2,"{code}"\n')
    with pytest.raises(review.ReviewError, match="line 2: decision"):
        review.read_decisions(f, keys=["train_idx", "test_idx"])
    f.write_text(f'train_idx,test_idx,decision\n"{code}",2,confirm\n')
    with pytest.raises(review.ReviewError, match="line 2: train_idx .* is not an integer"):
        review.read_decisions(f, keys=["train_idx", "test_idx"])
    assert not marker.exists()


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return path


def test_a_download_with_a_wrong_md5_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    blobs = _tiny_blobs()
    archive = _tar_gz(tmp_path / "archive.tar.gz",
                      {f"cifar-100-python/{n}": pickle.dumps(b, protocol=2) for n, b in blobs.items()})
    src = {**data.SOURCES["cifar100"], "url": archive.as_uri()}
    monkeypatch.setitem(data.SOURCES, "cifar100", src)  # official md5: a made-up archive cannot match
    root = tmp_path / "root"
    with pytest.raises(data.DataError, match=r"md5 [0-9a-f]{32}, expected .*; not extracted"):
        data.load_cifar(data_dir=str(root), download_missing=True)
    assert list(root.iterdir()) == []  # no folder, no archive, no temporary directory
    # the same archive with its md5 published is downloaded and read (the file:// download works)
    monkeypatch.setitem(data.SOURCES, "cifar100", {**src, "tar_md5": data.md5(archive)})
    assert data.load_cifar(data_dir=str(root), download_missing=True).y_train.tolist() == blobs["train"]["fine_labels"]
    assert [p.name for p in root.iterdir()] == ["cifar-100-python"]


def test_a_reference_file_with_a_wrong_sha256_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    published = tmp_path / "published.csv"
    published.write_text("test_idx,train_idx\n1,2\n")
    good = hashlib.sha256(published.read_bytes()).hexdigest()
    monkeypatch.delenv("MEMAUDIT_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(reference, "ROOT", tmp_path / "repo")  # the download cache is <ROOT>/data/reference
    cache = tmp_path / "repo" / "data" / "reference"
    monkeypatch.setitem(reference.FILES, "evil", reference.RefFile("ref.csv", published.as_uri(), "0" * 64))
    with pytest.raises(reference.ReferenceError, match="sha256 .* is not the published ref.csv"):
        reference.fetch("evil")
    assert list(cache.iterdir()) == []  # neither ref.csv nor ref.csv.part
    # a local copy with a wrong hash is refused too
    (cache / "ref.csv").write_text("test_idx,train_idx\n1,3\n")
    with pytest.raises(reference.ReferenceError, match="is not the published ref.csv"):
        reference.fetch("evil", download=False)
    (cache / "ref.csv").unlink()
    # with the right hash the same URL is fetched (the file:// download works)
    monkeypatch.setitem(reference.FILES, "evil", reference.RefFile("ref.csv", published.as_uri(), good))
    assert reference.fetch("evil").read_bytes() == published.read_bytes()
    assert [p.name for p in cache.iterdir()] == ["ref.csv"]


# ---------------------------------------------------------------------------------------------------------------
# The notebook server

CONFIG = ROOT / "jupyter" / "jupyter_server_config.py"


def _load_config(monkeypatch, **env):
    from traitlets.config import Config

    for k in ("MEMAUDIT_LAB_IP", "MEMAUDIT_LAB_PASSWORD_HASH"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    c = Config()
    exec(compile(CONFIG.read_text(), str(CONFIG), "exec"), {"get_config": lambda: c, "__file__": str(CONFIG)})
    return c


def test_server_config_defaults_to_loopback_and_refuses_remote_without_password(monkeypatch):
    c = _load_config(monkeypatch)
    assert c.ServerApp.ip == "127.0.0.1" and c.ServerApp.allow_remote_access is False
    assert c.ServerApp.root_dir == str(ROOT) and c.ServerApp.allow_unauthenticated_access is False
    assert "token" not in c.IdentityProvider  # jupyter's random token, printed in the URL
    for ip in ("0.0.0.0", "*", "192.0.2.7", "::"):
        with pytest.raises(SystemExit, match="MEMAUDIT_LAB_PASSWORD_HASH"):
            _load_config(monkeypatch, MEMAUDIT_LAB_IP=ip)
    c = _load_config(monkeypatch, MEMAUDIT_LAB_IP="0.0.0.0", MEMAUDIT_LAB_PASSWORD_HASH="argon2:$hash")
    assert c.ServerApp.ip == "0.0.0.0" and c.PasswordIdentityProvider.password_required is True
    assert c.PasswordIdentityProvider.hashed_password == "argon2:$hash"


def _make_lab_command(tmp_path) -> list[str]:
    """The command `make lab` runs (make -n), so the test starts the server exactly as make does."""
    out = subprocess.run(["make", "-s", "-n", "lab", f"DEPS_MK={tmp_path / 'deps.mk'}", "ENV_STAMP="], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if " -m jupyter lab" in ln]
    assert len(lines) == 1, out.stdout + out.stderr
    cmd = shlex.split(lines[0])
    assert f"--config={CONFIG}" in cmd
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)  # only as root
    assert not any(a.startswith(("--ip", "--ServerApp.ip", "--notebook-dir", "--ServerApp.token")) for a in cmd)
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    out.append(local.rsplit(":", 1)[0])
    return out


def _non_loopback_addresses() -> list[str]:
    try:
        import psutil
        addrs = [a.address for nic in psutil.net_if_addrs().values() for a in nic if a.family == socket.AF_INET]
    except ImportError:
        addrs = [ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    return sorted({a for a in addrs if not a.startswith("127.")})


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_make_lab_server_is_local_and_needs_its_token(tmp_path):
    import json

    port = _free_port()
    cmd = _make_lab_command(tmp_path) + ["--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
                                         "--ServerApp.open_browser=False"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "MEMAUDIT_LAB_IP", "MEMAUDIT_LAB_PASSWORD_HASH")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")  # its server-info files go here, not ~/.local
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log, found = [], threading.Event()
    url_re = re.compile(r"(http://\S+?:%d)/lab\?token=([0-9a-f]{32,})" % port)

    def read():
        for line in proc.stdout:
            log.append(line)
            if url_re.search(line):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not found.wait(0.2) and proc.poll() is None and time.monotonic() < deadline:
            pass
        assert found.is_set(), f"the server did not print its URL (exit code {proc.poll()}):\n" + "".join(log)
        base, token = url_re.search("".join(log)).groups()
        while not _listeners(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # it prints the URL a moment before it listens
        assert base == f"http://127.0.0.1:{port}", base  # the server reports loopback as its address
        assert f"Serving notebooks from local directory: {ROOT}\n" in "".join(log)  # the repository root
        # the API without a token, or with a wrong one, is refused; with the token it answers
        assert _get(f"{base}/api/status")[0] in (401, 403)
        assert _get(f"{base}/api/status", "0" * 48)[0] in (401, 403)
        assert _get(f"{base}/api/contents")[0] in (401, 403)
        status, body = _get(f"{base}/api/status", token)
        assert status == 200 and "started" in json.loads(body)
        status, body = _get(f"{base}/api/contents", token)
        assert status == 200 and {"lib", "notebooks", "Makefile"} <= {x["name"] for x in json.loads(body)["content"]}
        # it listens on 127.0.0.1 only: the kernel's socket table, and a connection to another address of this host
        listening = _listeners(port)
        assert listening == ["0100007F"], listening  # 127.0.0.1; not 00000000 (0.0.0.0) nor any IPv6 address
        for addr in _non_loopback_addresses():
            with socket.socket() as s:
                s.settimeout(3)
                with pytest.raises(OSError):
                    s.connect((addr, port))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
    assert not _listeners(port)


# ---------------------------------------------------------------------------------------------------------------
# Reports load nothing remote

_LOADING_ATTRS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",),
                  "frame": ("src",), "embed": ("src",), "object": ("data",), "source": ("src", "srcset"),
                  "audio": ("src",), "video": ("src", "poster"), "track": ("src",), "input": ("src",),
                  "image": ("href", "xlink:href"), "use": ("href", "xlink:href")}
_REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
_REMOTE_IN_CSS = [re.compile(r"@import\s+(url\()?\s*['\"]?\s*(https?:)?//"   # @import
                             r"|url\(\s*['\"]?\s*(https?:)?//", re.I)]           # url(...): fonts, images
_REMOTE_IN_JS = [re.compile(r"\bimport\(\s*['\"`]\s*(https?:)?//"              # dynamic import (mermaid)
                            r"|['\"`]\s*https?://", re.I)]                      # any URL literal it may load


class _RemoteLoads(html.parser.HTMLParser):
    """Tags and code in an HTML page that would load something from another host when it is opened.

    Links (<a href>) and URLs in text or CSS comments load nothing and are not reported.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found, self._in = [], None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if not value:
                continue
            if name == "style" and any(p.search(value) for p in _REMOTE_IN_CSS) or (
                    name in _LOADING_ATTRS.get(tag, ()) and _REMOTE.match(value)):
                self.found.append(f"<{tag} {name}={value[:100]!r}>")
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, text):
        if self._in:
            for p in _REMOTE_IN_CSS if self._in == "style" else _REMOTE_IN_JS:
                for m in p.finditer(text):
                    self.found.append(f"<{self._in}>...{text[m.start():m.start() + 100]!r}")


def remote_loads(page: str) -> list[str]:
    parser = _RemoteLoads()
    parser.feed(page)
    parser.close()
    return parser.found


def test_the_scanner_finds_remote_loads_and_spares_links():
    page = ('<html><head><script src="https://cdn.x/require.js"></script><link rel="stylesheet" href="//cdn.x/a.css">'
            '<style>@import url("https://fonts.x/f.css"); b {color: red}</style></head><body>'
            '<a href="https://arxiv.org/abs/2008.03703">paper</a><img src="data:image/png;base64,AAAA">'
            '<img src="HTTP://x/y.png"><script>const m = await import("https://cdn.x/mermaid.mjs");</script>'
            '<p>see https://example.org/ in text</p></body></html>')
    assert len(remote_loads(page)) == 5, remote_loads(page)


@pytest.fixture(scope="module")
def executed_notebook():
    """A small notebook executed by a kernel: a figure, a table, HTML, math, a mermaid diagram, widget state."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\nInline math $x^2$, a [paper](https://arxiv.org/abs/2008.03703)\n\n"
                                      "```mermaid\ngraph LR\n  A --> B\n```"),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                                  "from IPython.display import display, HTML\nimport pandas as pd\n"
                                  "fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1]); display(fig)\n"
                                  "display(pd.DataFrame({'a': [1, 2]}))\ndisplay(HTML('<b>bold</b>'))\nprint('done')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                           "version_minor": 0}}
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in nb.cells[1].outputs)
    return nb


def test_a_fresh_export_loads_nothing_remote(executed_notebook, tmp_path):
    from nbconvert import HTMLExporter

    page = pipeline.export_html(executed_notebook, tmp_path / "x.html").read_text()
    assert remote_loads(page) == []
    assert "data:image/png;base64," in page and "<b>bold</b>" in page  # still the whole notebook
    assert 'href="https://arxiv.org/abs/2008.03703"' in page           # links in text stay
    # nbconvert's default export of the same notebook does load remote scripts (so the check above means something)
    default, _ = HTMLExporter().from_notebook_node(executed_notebook)
    found = "\n".join(remote_loads(default))
    assert "require" in found and "mathjax" in found and "mermaid" in found and "unpkg" in found, found


def _committed_reports() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "figures"], cwd=ROOT, capture_output=True, text=True, check=True)
        return sorted(ROOT / f for f in out.stdout.split() if f.endswith(".html"))
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every HTML file under figures/
        return sorted((ROOT / "figures").glob("**/*.html"))


def test_committed_reports_load_nothing_remote():
    pages = _committed_reports()
    assert pages
    bad = {str(p.relative_to(ROOT)): found[:2] for p in pages if p.is_file() and (found := remote_loads(p.read_text()))}
    assert not bad, (f"{len(bad)} committed report page(s) load remote resources (regenerate them with "
                     f"`make all PARAMS=<name>`): {bad}")
