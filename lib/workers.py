"""Train models side by side in child processes; progress is read back from the stores.

Children are fresh `python -m <module> --worker` interpreters (no fork of torch state, no
re-import of the caller's script). Each gets its payload pickled on stdin and writes its
own store rows; the kernel kills them when the parent dies (kill -9 included), so a
resume never races an orphan. On CPU each child trains on one thread.
"""
from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import time
from typing import Callable

from .params import ROOT


def default_workers(device: str, *, n_jobs: int) -> int:
    """Processes to train side by side: one per core on CPU (each model on one thread), one on a GPU.

    Never more than there are jobs, never fewer than one.
    """
    from .train import default_threads

    return max(1, min(default_threads() if device == "cpu" else 1, n_jobs))


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies, so no orphan keeps training."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphan finishes its current model and writes the same bits


def run(*, module: str, payloads: list, total: int, n_left: Callable[[], int], desc: str, progress: bool) -> None:
    """One child of `module` per payload; a tqdm bar over `total` models fed by `n_left()`.

    Raises if any child failed; completed models stay in the stores, so a rerun resumes.
    """
    from tqdm.auto import tqdm

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for payload in payloads:
        proc = subprocess.Popen([sys.executable, "-m", module, "--worker"], stdin=subprocess.PIPE, cwd=ROOT, env=env,
                                preexec_fn=die_with_parent)
        # Trusted: this project's own parent pickles the payload to the child it just started, over a private
        # stdin pipe; never a file or the network (README: Security).
        proc.stdin.write(pickle.dumps(payload))
        proc.stdin.close()
        procs.append(proc)
    bar = tqdm(total=total, initial=total - n_left(), desc=f"{desc}, {len(procs)} workers", disable=not progress)
    try:
        while any(proc.poll() is None for proc in procs):
            time.sleep(0.5)
            if (n_done := total - n_left()) > bar.n:  # redraw only on progress (logs stay short)
                bar.update(n_done - bar.n)
        bar.update(total - n_left() - bar.n)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        bar.close()
    failed = [proc.returncode for proc in procs if proc.returncode != 0]
    if -signal.SIGBUS in failed:  # a write into a memory-mapped store failed: no traceback exists to show
        raise OSError(errno.ENOSPC, f"{module} worker(s) were killed by SIGBUS while writing their store rows: the "
                      "disk is most likely full (check `df -h runs/`). Completed models are kept: free space and "
                      "rerun the same command to resume.")
    if failed:
        raise RuntimeError(f"{len(failed)} {module} worker(s) failed (exit codes {failed}); see their tracebacks "
                           "above. Completed models are kept: rerun the same command to resume.")


def read_payload():
    """In a child: the payload its parent sent."""
    return pickle.load(sys.stdin.buffer)
