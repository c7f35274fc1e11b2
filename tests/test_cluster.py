"""SLURM as an executor (lib/cluster.py) on a real single-host SLURM (ci/slurm/start.sh), overlapping writers,
and one local worker per GPU (lib/workers.py).

No mock of SLURM or submitit: the tests submit real job arrays. Without `sbatch` they skip, unless
MEMAUDIT_REQUIRE_SLURM=1 (set by .ci/run), where that is a failure.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib import cluster, data, params, subsets, train, workers

ROOT = params.ROOT
ARRAYS = ["masks", "train_correct", "test_correct", "train_margin", "test_margin", "test_acc", "train_acc",
          "curve", "completed"]  # not seconds (wall time), nor row_crc (which covers seconds)


def _params(tmp_path, name="tiny", **over):
    raw = yaml.safe_load((params.PARAMS_DIR / "smoke.yaml").read_text())
    raw.update(dict(width=4, epochs=2, batch_size=100, n_subset_models=4, lr_peak_epoch=1), **over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _trained(store_path: Path) -> list[int]:
    log = store_path / "trained.log"
    return [int(line.split("\t")[0]) for line in log.read_text().splitlines()] if log.is_file() else []


def _trained_by(store_path: Path) -> dict[int, int]:
    """model id -> pid of the process that trained it (trained.log)"""
    rows = [line.split("\t") for line in (store_path / "trained.log").read_text().splitlines()]
    return {int(i): int(pid) for i, _, pid, _ in rows}


def _same(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), name


def test_params_validate_the_slurm_block(tmp_path):
    P = params.load(_params(tmp_path, executor="slurm", slurm_extra=["--constraint=a100", "--exclusive"]))
    ex = cluster.executor_parameters(P)
    assert ex["additional_parameters"] == {"requeue": True, "constraint": "a100", "exclusive": True}
    assert ex["mem"] == "8G"
    no = params.load(_params(tmp_path, executor="slurm", slurm_extra=["--no-requeue"]))
    assert cluster.executor_parameters(no)["additional_parameters"] == {"no_requeue": True}
    assert params.load("paper").executor == "slurm" and params.load("smoke").executor == "local"
    for bad, match in [(dict(executor="pbs"), "executor"), (dict(slurm_extra=["-p gpu"]), "slurm_extra"),
                       (dict(slurm_extra=["--array=0-3"]), "slurm_extra"), (dict(slurm_time_min=0), "slurm_time_min"),
                       (dict(slurm_models_per_task=0), "slurm_models_per_task"),
                       (dict(slurm_partition="a b"), "slurm_partition"), (dict(slurm_gpus_per_task=-1), "gpus")]:
        with pytest.raises(params.ParamsError, match=match):
            params.load(_params(tmp_path, **bad))


@pytest.mark.slow
def test_overlapping_writers_never_train_a_row_twice(tmp_path):
    """Two processes on overlapping ranges of one store: every row trained exactly once, all complete and sound."""
    path = _params(tmp_path, n_subset_models=6)
    store = tmp_path / "store"
    cmds = [[sys.executable, "-m", "lib.subsets", "--params", str(path), "--store", str(store), "--models", m,
             "--workers", "1", "--no-progress", "--executor", "local"] for m in ("0:5", "1:6")]
    procs = [subprocess.Popen(c, cwd=ROOT, env=os.environ.copy()) for c in cmds]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert sorted(_trained(store)) == list(range(6))
    P = params.load(path)
    st = subsets.open_subset_store(P, ds=data.load(P), path=store)
    assert st.completed.all() and len(st.damaged) == 0


# ---------------------------------------------------------------- one worker per GPU (local executor)

def test_the_gpus_are_those_cuda_visible_devices_leaves_this_process():
    """Unset: every GPU CUDA enumerates; set by the user: their entries, in their order, as far as CUDA reaches."""
    assert workers.visible_gpus(cuda_visible_devices=None, n_cuda=3) == ["0", "1", "2"]
    assert workers.visible_gpus(cuda_visible_devices="2,3", n_cuda=2) == ["2", "3"]
    assert workers.visible_gpus(cuda_visible_devices="3, 1", n_cuda=2) == ["3", "1"]
    assert workers.visible_gpus(cuda_visible_devices="GPU-8f2a,MIG-77c1", n_cuda=2) == ["GPU-8f2a", "MIG-77c1"]
    assert workers.visible_gpus(cuda_visible_devices="1,9", n_cuda=1) == ["1"]  # CUDA stops at 9, not on this node
    assert workers.visible_gpus(cuda_visible_devices="", n_cuda=0) == []
    assert workers.visible_gpus(cuda_visible_devices=None, n_cuda=0) == []
    assert workers.default_workers("cuda", n_jobs=10, n_gpus=4) == 4
    assert workers.default_workers("cuda", n_jobs=3, n_gpus=4) == 3
    assert workers.default_workers("cuda", n_jobs=10, n_gpus=0) == 1
    assert workers.default_workers("cpu", n_jobs=100) == train.default_threads()  # CPU: one per core, as before


def test_a_child_says_its_gpu_in_one_write(monkeypatch):
    """Sibling children share stderr: a line written in two pieces (print's text, then its newline) interleaves with
    a sibling's ("...=GPU-5f1cworker pid ..."), so the whole line goes out in one write."""
    import io
    import pickle

    writes = []

    class Recorder(io.StringIO):
        def write(self, text):
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pickle.dumps(("GPU-5f1c", {"n": 1})))))
    monkeypatch.setattr(sys, "stderr", Recorder())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f1c")
    assert workers.read_payload() == {"n": 1}
    assert writes == [f"worker pid {os.getpid()}: CUDA_VISIBLE_DEVICES=GPU-5f1c\n"]


@pytest.mark.slow
def test_one_worker_per_gpu_each_child_sees_only_its_own(tmp_path, capfd):
    """Real children, given a GPU list: one worker per entry, each sees only its entry, and trains its share.

    There is no GPU here, so the children train on CPU; what they saw is their own CUDA_VISIBLE_DEVICES, which
    each prints with its pid, and trained.log says which pid trained which model.
    """
    gpus = ["3", "GPU-5f1c"]
    P = params.load(_params(tmp_path, n_subset_models=3, epochs=1))
    st = subsets.run_subsets(P, path=tmp_path / "s", progress=False, gpus=gpus)  # workers: one per GPU by default
    saw = {int(pid): seen for pid, seen in re.findall(r"worker pid (\d+): CUDA_VISIBLE_DEVICES=(\S+)",
                                                        capfd.readouterr().err)}
    assert sorted(saw.values()) == sorted(gpus) and os.getpid() not in saw  # two children, one GPU each
    by = _trained_by(st.path)
    assert {i: saw[by[i]] for i in range(3)} == {0: "3", 1: "GPU-5f1c", 2: "3"}
    assert st.completed.all()
    # on CPU nothing changes: no GPU is handed out, the children inherit the environment and print nothing
    subsets.run_subsets(params.load(_params(tmp_path, name="cpu", n_subset_models=2, epochs=1)), path=tmp_path / "c",
                        progress=False, workers=2)
    assert "CUDA_VISIBLE_DEVICES" not in capfd.readouterr().err


# ---------------------------------------------------------------- real SLURM

@pytest.fixture(scope="session")
def slurm():
    """A running single-host SLURM: started from ci/slurm/start.sh when absent (as root), stopped afterwards."""
    required = os.environ.get("MEMAUDIT_REQUIRE_SLURM", "") not in ("", "0")
    if shutil.which("sbatch") is None:
        if required:
            pytest.fail("MEMAUDIT_REQUIRE_SLURM=1 but sbatch is not installed (apt-get install -y slurm-wlm munge)")
        pytest.skip("SLURM is not installed here (no sbatch); .ci/run installs and starts it")
    started = False
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        if os.geteuid() != 0:
            (pytest.fail if required else pytest.skip)("SLURM is installed but not running, and starting it needs root")
        subprocess.run([str(ROOT / "ci" / "slurm" / "start.sh")], check=True)
        started = True
    yield
    if started:
        subprocess.run([str(ROOT / "ci" / "slurm" / "stop.sh")])


def _run_cmd(path, store, *extra):
    return [sys.executable, "-m", "lib.subsets", "--params", str(path), "--store", str(store), "--no-progress",
            "--executor", "slurm", *extra]


def _env():
    return {**os.environ, "MEMAUDIT_SLURM_POLL_S": "0.5"}


def _wait_for(cond, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_slurm_array_fills_the_store_bit_identical_to_a_local_run_and_reattaches(slurm, tmp_path):
    path = _params(tmp_path, executor="slurm", slurm_models_per_task=2)
    P = params.load(path)
    local = subsets.run_subsets(P, path=tmp_path / "local", progress=False, workers=1, executor="local")
    store = tmp_path / "slurm"
    first = subprocess.Popen(_run_cmd(path, store), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    _wait_for(lambda: (store / cluster.STATE_FILE).is_file(), what="the submission")
    # a second run while the array is queued or running attaches to it instead of submitting again
    second = subprocess.run(_run_cmd(path, store), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "submitted SLURM array" in out1 and "2 task(s)" in out1
    assert "attached to SLURM array" in second.stdout and "submitted SLURM array" not in second.stdout
    record = json.loads((store / cluster.STATE_FILE).read_text())
    assert len(record["arrays"]) == 1 and record["arrays"][0]["tasks"] == [[0, 1], [2, 3]]
    assert sorted(_trained(store)) == [0, 1, 2, 3]
    _same(local, subsets.open_subset_store(P, ds=data.load(P), path=store, mode="r"))
    # once complete, a rerun submits nothing
    again = subprocess.run(_run_cmd(path, store), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "submitted SLURM array" not in again.stdout
    assert len(json.loads((store / cluster.STATE_FILE).read_text())["arrays"]) == 1


@pytest.mark.slow
def test_cancelled_and_preempted_tasks_lose_at_most_the_model_in_flight(slurm, tmp_path):
    """Two tasks of four models, each killed mid-model as soon as it has finished one: task 1 by `scancel` (as at a
    time limit), task 0 by `scontrol requeue` (as at a preemption with PreemptMode=REQUEUE, or a node failure).

    The requeued task runs again under the watcher and finishes its own rows, skipping those it had completed;
    the cancelled one's missing rows go out again on the rerun, and only they. No model is trained twice.
    """
    task0, task1 = {0, 1, 2, 3}, {4, 5, 6, 7}
    path = _params(tmp_path, executor="slurm", n_subset_models=8, slurm_models_per_task=4, epochs=24)
    P = params.load(path)
    store = tmp_path / "slurm"
    run = subprocess.Popen(_run_cmd(path, store), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (store / cluster.STATE_FILE).is_file(), timeout=60, what="the array's submission")
    requeued, cancelled = json.loads((store / cluster.STATE_FILE).read_text())["arrays"][0]["job_ids"]
    # Each task is killed the moment its first model is in trained.log (tasks start at different times, so
    # waiting for both would let the earlier one finish). SLURM sends SIGTERM (which submitit's tasks sit out),
    # then SIGKILL KillWait (2 s in ci/slurm) later; each task still has three models to go, so it dies mid-model.
    kills = {requeued: (task0, ["scontrol", "requeue", requeued]), cancelled: (task1, ["scancel", cancelled])}
    deadline = time.time() + 180
    while kills and time.time() < deadline:
        done = set(_trained(store))
        for job, (rows, cmd) in list(kills.items()):
            if rows & done:
                subprocess.run(cmd, check=True)
                del kills[job]
        time.sleep(0.05)
    assert not kills, f"timed out waiting for a first model of tasks {sorted(kills)}"
    _wait_for(lambda: _squeue_state(requeued) == "PENDING", timeout=60, what="the requeued task to be pending")
    _wait_for(lambda: _squeue_state(cancelled) in ("", "CANCELLED"), timeout=60, what="the cancelled task to end")
    first = _trained_by(store)  # the rows completed before the kills (a row's flag is written last)
    # SLURM holds a requeued job for two minutes (BeginTime); a preempted task waits for its turn anyway: release it
    subprocess.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"], check=True)
    out, err = run.communicate(timeout=300)
    by = _trained_by(store)
    kept = sorted(by)
    assert run.returncode != 0 and "did not finish" in err and "slurm_logs" in err, (out, err)
    assert f"task {cancelled} (killed before finishing)" in err and f"task {requeued} " not in err
    assert task0 <= set(kept) and 1 <= len(task1 & set(kept)) < len(task1)  # task 0 finished; task 1 did not
    again = {by[i] for i in task0 - set(first)}  # task 0's rows left at the requeue: its second run's
    assert 1 <= len(task0 & set(first)) < len(task0) and len(again) == 1 and again.isdisjoint(first.values())
    assert all(by[i] == pid for i, pid in first.items())  # nothing completed before the kills was trained again
    seconds_before = np.load(store / "seconds.npy")[kept].copy()

    rerun = subprocess.run(_run_cmd(path, store), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((store / cluster.STATE_FILE).read_text())
    assert len(record["arrays"]) == 2
    resubmitted = sorted(i for t in record["arrays"][1]["tasks"] for i in t)
    assert resubmitted == sorted(set(range(8)) - set(kept))  # only the missing rows went out again
    assert sorted(_trained(store)) == list(range(8))  # none twice
    st = subsets.open_subset_store(P, ds=data.load(P), path=store, mode="r")
    assert st.completed.all() and np.array_equal(st.seconds[kept], seconds_before)
    # a model that survived the scancel and one retrained after it equal a local run's, bit for bit
    pick = [min(set(kept) & task1), resubmitted[0]]
    local = subsets.run_subsets(P, models=pick, path=tmp_path / "local", progress=False, workers=1, executor="local")
    for name in ARRAYS:
        assert np.array_equal(getattr(local, name)[pick].view(np.uint8), getattr(st, name)[pick].view(np.uint8)), name


def _squeue_state(task: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", task, "-o", "%T"], capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_a_failed_task_is_reported_with_its_log(slurm, tmp_path):
    """Tasks whose node sees no data (a bad data_dir there) fail; the error names each log and its last lines."""
    P = params.load(_params(tmp_path, executor="slurm", n_subset_models=2))
    store = subsets.open_subset_store(P, ds=data.load(P), path=tmp_path / "s")
    bad = params.load(_params(tmp_path, name="bad", executor="slurm", n_subset_models=2,
                              data_dir=str(tmp_path / "no-data"), download=False, slurm_models_per_task=2))
    with pytest.raises(cluster.ClusterError) as e:
        cluster.run(P=bad, folder=store.path, items=[0, 1], n_left=lambda: store.todo([0, 1]),
                    task_fn=subsets.slurm_task, task_args=(bad, str(store.path)), desc="subset models (bad)",
                    progress=False, poll_s=0.5)
    msg = str(e.value)
    assert "raised an error" in msg and "2 model(s) are still missing" in msg
    logs = [Path(line.split("log ", 1)[1]) for line in msg.splitlines() if "raised an error" in line]
    assert len(logs) == 1 and logs[0].is_file() and str(store.path / cluster.LOG_DIR) in str(logs[0])
    assert "no-data" in msg  # the task's own error, from the tail of its log
    assert "no-data" in cluster.status(store.path) or "error" in cluster.status(store.path)


@pytest.fixture
def retrain_set(tmp_path):
    """A tiny retraining parameter set with notebook 04's buckets in its run folder (removed afterwards)."""
    from lib.buckets import Buckets
    from lib.run_folder import RunFolder

    name = f"clustertest{os.getpid()}"
    path = _params(tmp_path, name=name, retrain_epochs=1, lr_peak_epoch=0.5, n_retrain_models=2, width=8,
                   batch_size=32, classes=[0, 1, 2], n_train_per_class=20, n_test_per_class=10)
    P = params.load(path)
    mem = np.array([0, 5, 9, 30])
    RunFolder.of(P).write_buckets(Buckets(
        memorized_idx=mem, leakage_shift_idx=np.array([5]), memorized_bucket_idx=np.array([0, 9, 30]),
        cause=np.array(["exact"]), duplicate_test_idx=np.array([2]), influenced_test_idx_leakage=np.array([2]),
        influenced_test_idx_memorized=np.array([3])))
    yield path, P
    shutil.rmtree(P.run_dir, ignore_errors=True)


def _retrain_cmd(path, *extra):
    return [sys.executable, "-m", "lib.retrain", "--params", str(path), "--no-progress", *extra]


@pytest.mark.slow
def test_retrain_cli_trains_a_condition_range_locally_and_on_slurm(retrain_set, request):
    path, P = retrain_set
    cond = ["--condition", "full_wd", "--condition", "random_for_minus_memorized_wd"]
    r = subprocess.run(_retrain_cmd(path, *cond, "--models", "0:1", "--executor", "local"), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    utility = P.run_dir / "utility"
    for c in ("full_wd", "random_for_minus_memorized_wd"):
        assert np.load(utility / c / "completed.npy").tolist() == [True, False]
    bad = subprocess.run(_retrain_cmd(path, "--condition", "nope"), cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "not planned" in bad.stderr and "Traceback" not in bad.stderr
    if shutil.which("sbatch") is None and os.environ.get("MEMAUDIT_REQUIRE_SLURM", "") in ("", "0"):
        pytest.skip("SLURM is not installed here (no sbatch): the local half passed")
    request.getfixturevalue("slurm")
    r = subprocess.run(_retrain_cmd(path, *cond, "--executor", "slurm"), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    record = json.loads((utility / cluster.STATE_FILE).read_text())
    assert sorted(map(tuple, (x for t in record["arrays"][0]["tasks"] for x in t))) == [
        ("full_wd", 1), ("random_for_minus_memorized_wd", 1)]  # only the rows the local run left
    for c in ("full_wd", "random_for_minus_memorized_wd"):
        assert np.load(utility / c / "completed.npy").all()
        assert sorted(_trained(utility / c)) == [0, 1]


# ---------------------------------------------------------------- notebooks 01 and 05 with executor: slurm

NOTEBOOK_DRIVER = '''
import sys, time
import numpy as np
from lib import params, pipeline
from lib.buckets import Buckets
from lib.run_folder import RunFolder

path, root = sys.argv[1], params.ROOT
assert str(root) == sys.argv[2], root  # this copy's lib, not the checkout's
t = time.perf_counter()
pipeline.execute(path, root / "notebooks" / "01_train_subsets.ipynb")
print(f"01: {time.perf_counter() - t:.1f} s")
RunFolder.of(params.load(path)).write_buckets(Buckets(  # what notebook 04 would hand to 05
    memorized_idx=np.array([0, 5, 9, 30]), leakage_shift_idx=np.array([5]), memorized_bucket_idx=np.array([0, 9, 30]),
    cause=np.array(["exact"]), duplicate_test_idx=np.array([2]), influenced_test_idx_leakage=np.array([2]),
    influenced_test_idx_memorized=np.array([3])))
t = time.perf_counter()
pipeline.execute(path, root / "notebooks" / "05_marginal_utility.ipynb")
print(f"05: {time.perf_counter() - t:.1f} s")
'''


@pytest.mark.slow
def test_notebooks_01_and_05_run_with_executor_slurm(slurm, tmp_path):
    """Both training notebooks, executed by papermill as `make` runs them, submit their models as job arrays.

    They run in a copy of the checkout (lib, notebooks, params, kernel) so that their runs/ and figures/ land in
    tmp_path; the copy's own kernel imports the copy's lib (jupyter/kernels/memaudit/launch.py).
    """
    root = tmp_path / "checkout"
    for part in ("lib", "notebooks", "params", "jupyter"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    raw = yaml.safe_load((params.PARAMS_DIR / "smoke.yaml").read_text())
    raw.update(executor="slurm", slurm_models_per_task=5, data_dir=str(data.data_root(raw.get("data_dir", ""))),
               classes=[0, 1, 2], n_train_per_class=20, n_test_per_class=10, width=4, epochs=2, batch_size=32,
               lr_peak_epoch=1, n_subset_models=4, n_retrain_models=1, retrain_epochs=1)
    path = root / "params" / "nbslurm.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-c", NOTEBOOK_DRIVER, str(path), str(root)], cwd=root, capture_output=True,
                       text=True, timeout=600, env={**_env(), "PYTHONPATH": str(root)})
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    print(r.stdout[-200:])  # the two notebooks' wall times (pytest -s)
    run = root / "runs" / "nbslurm"
    nb01, nb05 = (run / "01_train_subsets.ipynb").read_text(), (run / "05_marginal_utility.ipynb").read_text()
    assert "SLURM job array" in nb01 and "submitted SLURM array" in nb01 and "1 task(s), 4 model(s)" in nb01
    assert "submitted SLURM array" in nb05 and "all conditions done" in nb05 and "a SLURM job array" in nb05
    assert np.load(run / "subsets" / "completed.npy").all() and sorted(_trained(run / "subsets")) == [0, 1, 2, 3]
    conditions = [d for d in (run / "utility").iterdir() if (d / "completed.npy").is_file()]
    assert len(conditions) >= 2 and all(np.load(d / "completed.npy").all() for d in conditions)
    tasks = json.loads((run / "utility" / cluster.STATE_FILE).read_text())["arrays"][0]["tasks"]
    assert sorted(tuple(x) for t in tasks for x in t) == sorted((d.name, 0) for d in conditions)
    assert (root / "figures" / "nbslurm" / "01_accuracy.png").is_file()
    assert not (ROOT / "runs" / "nbslurm").exists() and not (ROOT / "figures" / "nbslurm").exists()
