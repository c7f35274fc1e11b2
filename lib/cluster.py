"""SLURM as an executor: the models still to train go out as one job array (submitit), progress comes back
from the store (rows completed) and from the job states (squeue).

    python -m lib.subsets --params paper                      # from a login node: submit, then watch
    python -m lib.retrain --params paper                      # every retraining condition, likewise

Each array task trains a disjoint chunk of models (P.slurm_models_per_task consecutive ids) one after
another into the shared store, exactly as `lib.subsets --models a:b` would on one machine, so a store
filled through SLURM is bit-identical to a local one. What was submitted is recorded next to the store
in slurm.json (array job id, the models of every task). Running the same command again:

* re-attaches to the tasks that are still queued or running (their models are never submitted twice);
* submits only the rows that are neither completed nor in flight (after a failure, a scancel, a time
  limit or a preemption: a killed task loses at most the model it was training; its row stays
  incomplete, lib/store.py writes the flag last);
* a task SLURM requeues (preemption with PreemptMode=REQUEUE, a node failure, `scontrol requeue`; tasks are
  submitted with --requeue) stays in flight: when it runs again it skips the rows it completed before and
  retrains only the one it was killed in, so the watcher needs no second submission;
* reports every task of the watched arrays that failed, with the path of its log and its last lines.

Two writers (a re-submitted task and a straggler, or a local run on an overlapping range) never train
the same row twice: lib/store.py takes a per-row lock and re-checks `completed` under it.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .params import ROOT

STATE_FILE = "slurm.json"
LOG_DIR = "slurm_logs"
POLL_S = float(os.environ.get("MEMAUDIT_SLURM_POLL_S", "5"))


class ClusterError(RuntimeError):
    """SLURM is missing, refused a submission, or array tasks failed; the message says what to do."""


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue") if shutil.which(c) is None]
    if missing:
        raise ClusterError(f"executor: slurm needs SLURM's {' and '.join(missing)} on PATH (run from a login node "
                           "of the cluster), or set executor: local")


def executor_parameters(P) -> dict:
    """submitit.SlurmExecutor parameters of P's slurm_* keys (one array task = one model chunk on one node)."""
    extra = {"requeue": True}  # a preempted (or node-failed) task is queued again, whatever the site's JobRequeue
    for flag in P.slurm_extra or []:
        name, _, value = flag[2:].partition("=")
        extra[name.replace("-", "_")] = value if value else True  # True: a bare "#SBATCH --flag"
    if "no_requeue" in extra:
        del extra["requeue"]
    out = dict(time=P.slurm_time_min, nodes=1, ntasks_per_node=1, cpus_per_task=P.slurm_cpus_per_task,
               mem=f"{P.slurm_mem_gb}G", array_parallelism=P.slurm_max_parallel or 100_000, signal_delay_s=60,
               setup=[f"cd {ROOT}", f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
               additional_parameters=extra, stderr_to_stdout=False)
    if P.slurm_gpus_per_task:
        out["gpus_per_task"] = P.slurm_gpus_per_task
    for key in ("partition", "account", "qos"):
        if getattr(P, f"slurm_{key}"):
            out[key] = getattr(P, f"slurm_{key}")
    return out


def chunks(items: list, per_task: int) -> list[list]:
    """items in order, cut into lists of at most per_task."""
    return [items[k:k + per_task] for k in range(0, len(items), per_task)]


def _squeue(array_ids: list[str]) -> dict[str, str]:
    """'<array>_<index>' -> state of every task of these arrays that SLURM still lists (pending ones expanded).

    A task SLURM lists without an index (a one-task array once it runs shows as plain '<array>') comes back
    as '<array>_*': every task of that array counts as listed (see _state).
    """
    if not array_ids:
        return {}
    for attempt in range(5):
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%F %K %T", "-j", ",".join(array_ids)], capture_output=True,
                           text=True)
        if r.returncode == 0:
            break
        if "Invalid job id" in r.stderr:  # every listed job has left the queue (squeue refuses unknown ids)
            return {}
        time.sleep(1 + attempt)
    else:
        raise ClusterError(f"squeue failed: {r.stderr.strip()}")
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        base, index, state = parts
        if not index.replace("-", "").replace(",", "").replace("%", "").isdigit():
            out[f"{base}_*"] = state
            continue
        for part in index.split("%")[0].split(","):  # a not-yet-expanded pending range, e.g. 3-5%2
            a, _, b = part.partition("-")
            for k in range(int(a), int(b or a) + 1):
                out[f"{base}_{k}"] = state
    return out


def _state(task: str, states: dict[str, str]) -> str | None:
    """The squeue state of task 'A_k' (or 'A'), None when SLURM no longer lists it."""
    return states.get(task) or states.get(f"{task.split('_')[0]}_*")


class _Record:
    """slurm.json: every array submitted for a store (or a set of stores), with each task's models."""

    def __init__(self, folder: Path):
        self.path = folder / STATE_FILE
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"arrays": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def tasks(self):
        """(SLURM job id of the task: 'A_k', or 'A' for a one-task submission; its items; log folder) of every task."""
        for arr in self.data["arrays"]:
            for k, items in enumerate(arr["tasks"]):
                yield arr["job_ids"][k], [_item(x) for x in items], Path(arr["log_dir"])


def _item(x):
    return tuple(x) if isinstance(x, list) else x


@contextlib.contextmanager
def _locked(folder: Path):
    """One submitter at a time per folder (two notebooks or shells started together submit once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{STATE_FILE}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def log_paths(log_dir: Path, task: str) -> tuple[Path, Path]:
    """(stdout, stderr) of task 'A_k' (or 'A') (submitit's file names)."""
    return log_dir / f"{task}_0_log.out", log_dir / f"{task}_0_log.err"


def _tail(path: Path, n: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written: the task never started or its node lost it)"
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("submitit INFO")]
    return "\n".join("    " + ln for ln in lines[-n:]) or "    (empty)"


def _outcome(log_dir: Path, task: str) -> str:
    """'ok', 'error' (the function raised) or 'killed' (no result: scancel, time limit, node failure)."""
    import pickle

    res = log_dir / f"{task}_0_result.pkl"
    if not res.is_file():
        return "killed"
    try:
        with open(res, "rb") as f:
            status = pickle.load(f)[0]  # written by submitit in our own job (README: Security)
    except Exception:  # noqa: BLE001  (a truncated pickle: the task died while writing it)
        return "killed"
    return "ok" if status == "success" else "error"


def run(*, P, folder: Path, items: list, n_left: Callable[[], list], task_fn: Callable, task_args: tuple,
        desc: str, progress: bool = True, poll_s: float | None = None) -> None:
    """Train `items` (model ids or (condition, id) pairs) through one SLURM array; watch until none is in flight.

    n_left(): those of `items` whose rows are not completed yet (read from the stores).
    task_fn(*task_args, chunk): what one array task runs (a module-level function: submitit pickles it).
    folder: where slurm.json and the task logs live (the store folder, or the stores' parent).
    Raises ClusterError naming every failed task's log when rows are still missing at the end.
    """
    import submitit
    from tqdm.auto import tqdm

    require_slurm()
    folder = Path(folder)
    poll_s = POLL_S if poll_s is None else poll_s
    wanted = set(items)
    with _locked(folder):
        record = _Record(folder)
        live = _squeue(sorted({a["array_id"] for a in record.data["arrays"]}))
        in_flight = {it for task, its, _ in record.tasks() if _state(task, live) for it in its}
        attached = sorted({t.split("_")[0] for t, its, _ in record.tasks() if _state(t, live) and wanted & set(its)})
        missing = [it for it in n_left() if it not in in_flight]
        watch = {t for t, its, _ in record.tasks() if _state(t, live) and wanted & set(its)}
        if missing:
            log_dir = folder / LOG_DIR
            ex = submitit.SlurmExecutor(folder=log_dir, max_num_timeout=0)
            ex.update_parameters(job_name=f"memaudit-{P.name}-{desc.split()[0]}"[:60], **executor_parameters(P))
            parts = chunks(missing, P.slurm_models_per_task)
            try:
                jobs = ex.map_array(task_fn, *[[a] * len(parts) for a in task_args], parts)
            except Exception as e:  # noqa: BLE001  (sbatch's own message says what is wrong)
                raise ClusterError(f"sbatch refused the array for {desc}: {str(e).strip().splitlines()[-1]}") from None
            array_id = jobs[0].job_id.split("_")[0]
            record.data["arrays"].append({
                "array_id": array_id, "job_ids": [j.job_id for j in jobs], "submitted": datetime.datetime.now().isoformat(timespec="seconds"),
                "log_dir": str(log_dir), "tasks": [[list(x) if isinstance(x, tuple) else x for x in c] for c in parts]})
            record.save()
            watch |= {j.job_id for j in jobs}
            print(f"{desc}: submitted SLURM array {array_id} ({len(parts)} task(s), {len(missing)} model(s)); "
                  f"logs in {log_dir}", flush=True)
        if attached:
            print(f"{desc}: attached to SLURM array(s) {', '.join(attached)} ({len(in_flight & wanted)} model(s) "
                  "queued or running; not submitted again)", flush=True)
    logs = {t: d for t, _, d in record.tasks()}
    total = len(items)
    bar = tqdm(total=total, initial=total - len(n_left()), desc=f"{desc} (SLURM)", disable=not progress)
    try:
        while True:
            states = _squeue(sorted({t.split("_")[0] for t in watch}))
            left = {t: _state(t, states) for t in watch if _state(t, states)}
            done = total - len(n_left())
            if done > bar.n:
                bar.update(done - bar.n)
            counts = {}
            for state in left.values():
                counts[state] = counts.get(state, 0) + 1
            bar.set_postfix_str(", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())) or "no task queued")
            if not left:
                break
            time.sleep(poll_s)
    finally:
        bar.close()
    failed = [(t, _outcome(logs[t], t)) for t in sorted(watch)]
    failed = [(t, how) for t, how in failed if how != "ok"]
    still = n_left()
    if failed:
        lines = []
        for t, how in failed:
            out, err = log_paths(logs[t], t)
            lines.append(f"  task {t} ({'raised an error' if how == 'error' else 'killed before finishing'}): "
                         f"log {err}\n{_tail(err)}")
        msg = f"{len(failed)} SLURM task(s) of {desc} did not finish:\n" + "\n".join(lines)
        if still:
            raise ClusterError(msg + f"\n{len(still)} model(s) are still missing; completed ones are kept. Fix the "
                               "cause and rerun the same command: only the missing models are submitted.")
        print(msg + "\n(every model is complete nonetheless: another task or run finished them)", file=sys.stderr)
    elif still:
        raise ClusterError(f"{desc}: {len(still)} model(s) still missing after the array ended; rerun to submit them")


def status(folder: Path) -> str:
    """One line per recorded array task: its models and its state (queued/running, ok, error, killed)."""
    record = _Record(Path(folder))
    live = _squeue(sorted({a["array_id"] for a in record.data["arrays"]})) if record.data["arrays"] else {}
    rows = []
    for t, its, d in record.tasks():
        state = _state(t, live) or _outcome(d, t)
        rows.append(f"{t}\t{state.lower()}\t{its[0]}..{its[-1]} ({len(its)})\t{log_paths(d, t)[1]}")
    return "\n".join(rows) or "no SLURM array recorded here"
