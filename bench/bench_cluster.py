"""The SLURM path's overhead against the local path, measured side by side in one run on smoke params.

  local      lib.subsets.run_subsets(executor="local"): one worker process per core, each model on one thread
  slurm      the same models as one job array through submitit (lib/cluster.py), one model per task
             (smoke's slurm_models_per_task); the node runs as many tasks at once as it has CPUs
  slurm x k  the same with k models per task, one task per CPU: what is left of the overhead when each task
             pays its start-up (interpreter, torch import, data load) once

Each path trains the same models into a fresh store; the stores must agree bit for bit (checked, not timed).
The ratio is wall time over the local path's, which runs first and last (its mean is the baseline; the two
show how much the machine's load moved in between). The watcher polls squeue every 0.5 s here (the default, 5 s,
adds up to 5 s at the end of an array: nothing at cluster scale, most of a smoke run).
Needs a running SLURM (ci/slurm/start.sh as root starts a single-host one); without one it says so and
stops. Run: `make bench` or `python bench/bench_cluster.py [params]`. Numbers vary with machine load.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MEMAUDIT_SLURM_POLL_S", "0.5")  # read by lib.cluster at import
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from lib import params, subsets  # noqa: E402
from lib.train import default_threads  # noqa: E402

ARRAYS = ["masks", "train_correct", "test_correct", "train_margin", "test_margin", "test_acc", "train_acc", "curve",
          "completed"]  # not seconds (wall time) nor row_crc (which covers it)


def slurm_unreachable() -> str:
    """Why no SLURM can take jobs from here ('' when one can)."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or ["sinfo failed"])[-1]
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in r.stdout.split()):
        return f"no node up (sinfo: {' '.join(r.stdout.split()) or 'none'})"
    return ""


def contention(n_cpus: int) -> str:
    """A warning when other work competes for the CPUs under autogroup scheduling ('' otherwise)."""
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    load = os.getloadavg()[0]
    if load <= n_cpus or not autogroup.is_file() or autogroup.read_text().strip() != "1":
        return ""
    return (f"note: load {load:.1f} on {n_cpus} CPUs with autogroup scheduling on: each SLURM task runs in its own "
            "session and gets its own CPU share against the other work, the local workers share one; under such "
            "load SLURM looks faster than it is (compare the ratios on an idle machine)")


def timed(P, *, folder: Path, executor: str) -> tuple[float, object]:
    t = time.perf_counter()
    store = subsets.run_subsets(P, path=folder, progress=False, executor=executor)
    return time.perf_counter() - t, store


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, n).view(np.uint8), getattr(b, n).view(np.uint8)) for n in ARRAYS)


def main() -> None:
    why = slurm_unreachable()
    if why:
        print(f"bench_cluster: skipped, no SLURM reachable ({why}); ci/slurm/start.sh starts a single-host one as root")
        return
    P = params.load(sys.argv[1] if len(sys.argv) > 1 else "smoke")
    n_cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    per_cpu = -(-P.n_subset_models // n_cpus)  # models per task for one task per CPU
    load = os.getloadavg()
    print(f"{P.name}: {P.n_subset_models} subset models ({P.model} width {P.width}, {P.epochs} epochs); "
          f"local: {min(default_threads(), P.n_subset_models)} workers; SLURM node: {n_cpus} CPUs; "
          f"load average {load[0]:.2f} before")
    rows = []
    (params.ROOT / "runs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_cluster_", dir=params.ROOT / "runs") as tmp:  # the nodes see it
        tmp = Path(tmp)
        t_first, ref = timed(P, folder=tmp / "local", executor="local")
        rows.append(("local (first)", t_first, True))
        for k in dict.fromkeys([P.slurm_models_per_task, per_cpu]):
            Q = dataclasses.replace(P, slurm_models_per_task=k)
            t, st = timed(Q, folder=tmp / f"slurm{k}", executor="slurm")
            n_tasks = -(-P.n_subset_models // k)
            rows.append((f"slurm, {k} model(s) per task ({n_tasks} tasks)", t, same(ref, st)))
        t_last, st = timed(P, folder=tmp / "local_again", executor="local")
        rows.append(("local (last)", t_last, same(ref, st)))
    t_local = (t_first + t_last) / 2
    for what, t, ok in rows:
        print(f"  {what:<42} {t:6.1f} s   ratio {t / t_local:4.2f}x   store identical to local: "
              f"{'yes' if ok else 'NO'}")
    t_slurm = rows[1][1]
    print(f"SLURM overhead on {P.name}: {t_slurm / t_local:.2f}x the local wall time "
          f"({(t_slurm - t_local) / P.n_subset_models:+.1f} s per model); load average {os.getloadavg()[0]:.2f} after")
    if busy_note := contention(n_cpus):
        print(busy_note)
    if not all(ok for _, _, ok in rows):
        raise SystemExit("bench_cluster: a SLURM store differs from the local one")


if __name__ == "__main__":
    main()
