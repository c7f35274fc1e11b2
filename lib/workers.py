"""Train models side by side in child processes; progress is read back from the stores.

Children are fresh `python -m <module> --worker` interpreters (no fork of torch state, no
re-import of the caller's script). Each gets its payload pickled on stdin and writes its
own store rows; the kernel kills them when the parent dies (kill -9 included), so a
resume never races an orphan. On CPU each child trains on one thread.

On a node with several GPUs each child gets one of them as its only visible device
(CUDA_VISIBLE_DEVICES=<that GPU>, so its "cuda" is that GPU): one worker per GPU by default.
The GPUs are those this process may use, numbered as the user's CUDA_VISIBLE_DEVICES names
them when it is set (a shell that set CUDA_VISIBLE_DEVICES=2,3 gets workers on 2 and 3).
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


def default_workers(device: str, *, n_jobs: int, n_gpus: int = 0) -> int:
    """Processes to train side by side: one per GPU handed out (n_gpus), else one per core on CPU (each
    model on one thread) and one on cuda. Never more than there are jobs, never fewer than one.
    """
    from .train import default_threads

    return max(1, min(n_gpus or (default_threads() if device == "cpu" else 1), n_jobs))


def plan(device: str, *, n_jobs: int, workers: int | None = None, gpus: list[str] | None = None
         ) -> tuple[int, list[str] | None]:
    """(processes, gpus) for n_jobs models. gpus default to every GPU this process sees on cuda (cuda_gpus),
    none on CPU; processes to `workers`, else default_workers; never more than the jobs, never fewer than one."""
    if gpus is None and device == "cuda":
        gpus = cuda_gpus()
    n = workers or default_workers(device, n_jobs=n_jobs, n_gpus=len(gpus or []))
    return max(1, min(n, n_jobs)), gpus


def visible_gpus(*, cuda_visible_devices: str | None, n_cuda: int) -> list[str]:
    """The GPUs a process may use, as CUDA_VISIBLE_DEVICES entries (an index, or a GPU-/MIG- UUID).

    cuda_visible_devices: the variable as this process got it (None: unset, every GPU is visible);
    n_cuda: the devices CUDA enumerates under it (torch.cuda.device_count()). CUDA stops at the first
    entry it cannot use, so only the first n_cuda entries name GPUs this process can reach.
    """
    if cuda_visible_devices is None:
        return [str(k) for k in range(n_cuda)]
    return [e.strip() for e in cuda_visible_devices.split(",") if e.strip()][:n_cuda]


def cuda_gpus() -> list[str]:
    """visible_gpus of this process (its CUDA_VISIBLE_DEVICES and what torch enumerates)."""
    import torch

    return visible_gpus(cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                        n_cuda=torch.cuda.device_count())


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies, so no orphan keeps training."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphan finishes its current model and writes the same bits


def run(*, module: str, payloads: list, total: int, n_left: Callable[[], int], desc: str, progress: bool,
        gpus: list[str] | None = None) -> None:
    """One child of `module` per payload; a tqdm bar over `total` models fed by `n_left()`.

    gpus: CUDA_VISIBLE_DEVICES entries; child w sees only gpus[w % len(gpus)] (None or []: the children
    inherit this process's environment unchanged, as on CPU).
    Raises if any child failed; completed models stay in the stores, so a rerun resumes.
    """
    from tqdm.auto import tqdm

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for w, payload in enumerate(payloads):
        gpu = gpus[w % len(gpus)] if gpus else None
        proc = subprocess.Popen([sys.executable, "-m", module, "--worker"], stdin=subprocess.PIPE, cwd=ROOT,
                                env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu},
                                preexec_fn=die_with_parent)
        # Trusted: this project's own parent pickles the payload to the child it just started, over a private
        # stdin pipe; never a file or the network (README: Security).
        proc.stdin.write(pickle.dumps((gpu, payload)))
        proc.stdin.close()
        procs.append(proc)
    on = f" on GPUs {','.join(gpus)}" if gpus else ""
    bar = tqdm(total=total, initial=total - n_left(), desc=f"{desc}, {len(procs)} workers{on}", disable=not progress)
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
    """In a child: the payload its parent sent. A child given a GPU says which one it sees (one line, stderr)."""
    gpu, payload = pickle.load(sys.stdin.buffer)
    if gpu is not None:
        # one write() per line: print() writes the text and its newline separately to the unbuffered stderr,
        # and two siblings' lines then interleave ("...=GPU-5f1cworker pid ...")
        sys.stderr.write(f"worker pid {os.getpid()}: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}\n")
        sys.stderr.flush()
    return payload
