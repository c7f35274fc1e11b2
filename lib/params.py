"""Parameter sets: one block of documented defaults, YAML files that override it.

`load("quick")` reads params/quick.yaml, checks every key against `Params`,
and returns one frozen object. Anything wrong stops here, before any work,
with one line naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]  # the project checkout
PARAMS_DIR = ROOT / "params"

N_CLASSES = {"cifar100": 100, "cifar10": 10}


class ParamsError(ValueError):
    """A parameter file is wrong; the message names the key and the file."""


class MachineError(RuntimeError):
    """The parameter set cannot run on this machine (e.g. a GPU set without a GPU)."""


@dataclass(frozen=True)
class Params:
    # --- identity and machine ---
    name: str = ""                  # set from the file name; names runs/<name>/ and figures/<name>/
    seed: int = 0                   # every random choice derives from this
    requires_gpu: bool = False      # refuse to start without CUDA (override: MEMAUDIT_ALLOW_CPU=1)
    device: str = "auto"            # auto | cpu | cuda
    mode: str = "train"             # train: estimate memorization ourselves; reference: FZ's released files

    # --- data ---
    dataset: str = "cifar100"       # cifar100 | cifar10
    data_dir: str = ""              # folder holding cifar-100-python/; "" -> $CIFAR_DATA_DIR, else <root>/data
    download: bool = True           # fetch (with checksum) when missing
    classes: list[int] | None = None  # fine-class subset (original label ids); None = all
    n_train_per_class: int | None = None  # cap per class, chosen by seed; None = all
    n_test_per_class: int | None = None   # cap per class, chosen by seed; None = all

    # --- training (one model) ---
    model: str = "resnet50"         # tiny_cnn | resnet18 | resnet50
    width: int = 64                 # base channels of the model
    epochs: int = 160
    batch_size: int = 512
    lr_peak: float = 0.4            # per batch of batch_size, at the top of the triangle
    lr_peak_epoch: float = 15.0     # epoch where the triangular schedule peaks
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4      # the paper's convergence fix; FZ's "Original" uses 0
    label_smoothing: float = 0.0
    loader: str = "tensor"          # tensor (uint8 on device, batched augmentation) | ffcv
    eval_batch_size: int = 1024
    compile: bool = False           # torch.compile the training forward on CUDA (off until measured: bench/bench_gpu.py)

    # --- subset runs: FZ's estimator (notebook 01) ---
    subset_ratio: float = 0.7       # r: fraction of the training set each subset model sees
    n_subset_models: int = 4000     # k
    subset_weight_decay: float | None = None  # None -> weight_decay
    subset_curve_every: int = 10    # subset models: test accuracy every this many epochs + the last; 0: last only
    n_dynamics_models: int = 0      # full-set models recording per-epoch per-example loss and margin (lib/estimators.py)

    # --- memorization and influence (notebook 02) ---
    mem_threshold: float = 0.25     # memorized: mem >= this
    infl_threshold: float = 0.15    # high-influence pair: infl >= this
    top_k_influencers: int = 10     # kept per test example
    influence_block: int = 4096     # train examples per block of the blocked influence computation

    # --- leakage (notebook 03) ---
    dup_exact_only_hash: bool = False  # True: skip near-duplicate search (exact hashing only)
    dup_near_threshold: float = 0.90   # finder score (calibrated to this operating point) >= this -> "near", confirm
    dup_review_threshold: float = 0.70 # finder score >= this (and below near) -> "review", listed for a person
    dup_top_k: int = 6                 # candidates kept per query image by the retrieval stage

    # --- sub-populations (notebook 04) ---
    subpop_min_train: int = 2       # memorized train points sharing a test point to form a group

    # --- marginal utility retraining (notebook 05) ---
    retrain: bool = True            # False: notebooks 05-06 report buckets only (no retraining)
    n_retrain_models: int = 100     # models per condition
    retrain_epochs: int | None = None  # None -> epochs

    # --- executor: where subset and retraining models train (README: On a cluster) ---
    executor: str = "local"         # local: this machine's processes | slurm: one SLURM job array (lib/cluster.py)
    slurm_partition: str = ""       # "" -> the cluster's default partition
    slurm_account: str = ""         # "" -> your default account
    slurm_qos: str = ""             # "" -> none asked for
    slurm_gpus_per_task: int = 0    # GPUs per array task (each task trains its models one after another)
    slurm_cpus_per_task: int = 1
    slurm_mem_gb: int = 8           # memory per array task
    slurm_time_min: int = 60        # time limit per array task; a task killed at it loses at most its current model
    slurm_models_per_task: int = 1  # consecutive models per array task
    slurm_max_parallel: int = 0     # array tasks running at once (sbatch --array=...%N); 0: no limit
    slurm_extra: list[str] | None = None  # more sbatch flags, each "--name=value" or "--flag" (e.g. --constraint=a100)

    def __post_init__(self) -> None:
        _validate(self, source="<Params>")

    # ---- derived paths (no hidden state: all from name and ROOT) ----
    @property
    def run_dir(self) -> Path:
        return ROOT / "runs" / self.name

    @property
    def fig_dir(self) -> Path:
        """figures/<name>/: the report. A notebook run by hand in a kernel (JupyterLab) writes to
        figures/lab/<name>/ instead (ignored by git), so exploring never overwrites a committed report;
        the pipeline's papermill runs set MEMAUDIT_HEADLESS=1 and write the report itself."""
        interactive = "ipykernel" in sys.modules and os.environ.get("MEMAUDIT_HEADLESS", "") != "1"
        return ROOT / "figures" / "lab" / self.name if interactive else ROOT / "figures" / self.name

    @property
    def n_classes_dataset(self) -> int:
        return N_CLASSES[self.dataset]

    @property
    def full_dataset(self) -> bool:
        """Every image of the dataset (no class subset, no per-class cap): rows are the on-disk indices."""
        return self.classes is None and self.n_train_per_class is None and self.n_test_per_class is None

    @property
    def paper_scale(self) -> bool:
        """Trained at the paper's scale: ResNet50 on the full CIFAR-100 for 160 epochs.

        What a report's numbers may be compared with the paper's on. Reference mode with
        retraining off trains nothing, so it is not a scale at all (its counts come from
        the released files and are the paper's own inputs).
        """
        return (self.dataset == "cifar100" and self.full_dataset and self.model == "resnet50"
                and self.epochs >= 160 and (self.retrain_epochs or self.epochs) >= 160)

    @property
    def gpu_cost(self) -> bool:
        """Training that would take days or weeks on a CPU: a ResNet on the full dataset, whatever the set's name.

        (An empty parameter file is exactly this: the defaults are the paper's setup.)
        """
        return self.trains and self.model != "tiny_cnn" and self.full_dataset

    @property
    def trains(self) -> bool:
        """Whether any model is trained: subset models (train mode) or retraining (notebook 05)."""
        return self.mode == "train" or self.retrain

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def data_identity(self) -> dict:
        """The keys that choose the training and test rows (DATA_KEYS): part of every store's signature."""
        d = self.to_dict()
        return {k: d[k] for k in DATA_KEYS}


# The keys that decide which images and labels a model sees (with the seed that picks capped rows).
# A store's signature is these plus the training hyper-parameters it used (lib/train.py HParams).
DATA_KEYS = ("dataset", "classes", "n_train_per_class", "n_test_per_class", "seed")

CHOICES = {
    "device": {"auto", "cpu", "cuda"},
    "mode": {"train", "reference"},
    "dataset": set(N_CLASSES),
    "model": {"tiny_cnn", "resnet18", "resnet50"},
    "loader": {"tensor", "ffcv"},
    "executor": {"local", "slurm"},
}
POSITIVE = {"width", "epochs", "batch_size", "eval_batch_size", "n_subset_models", "top_k_influencers",
            "influence_block", "dup_top_k", "subpop_min_train", "n_retrain_models", "retrain_epochs",
            "n_train_per_class", "n_test_per_class", "slurm_cpus_per_task", "slurm_mem_gb", "slurm_time_min",
            "slurm_models_per_task"}
NON_NEGATIVE = {"lr_peak", "lr_peak_epoch", "momentum", "weight_decay", "label_smoothing", "seed",
                "subset_weight_decay"}
NON_NEGATIVE |= {"subset_curve_every", "slurm_gpus_per_task", "slurm_max_parallel"}  # 0: the last epoch only
NON_NEGATIVE |= {"n_dynamics_models"}
UNIT_OPEN = {"subset_ratio"}  # strictly inside (0, 1)
UNIT_CLOSED = {"mem_threshold", "infl_threshold", "dup_near_threshold", "dup_review_threshold", "momentum",
               "label_smoothing"}


def _check_type(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_check_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if hint is float:  # NaN and infinities are never a valid setting (NaN compares False with every bound)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _validate(p: Params, source: str) -> None:
    hints = typing.get_type_hints(Params)
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ParamsError(f"{source}: key '{f.name}' must be a finite number, got {v!r}")
        if not _check_type(v, hints[f.name]):
            raise ParamsError(f"{source}: key '{f.name}' must be {_type_name(hints[f.name])}, got {v!r}")
        if f.name in CHOICES and v not in CHOICES[f.name]:
            raise ParamsError(f"{source}: key '{f.name}' must be one of {sorted(CHOICES[f.name])}, got {v!r}")
        if v is None:
            continue
        if f.name in POSITIVE and v <= 0:
            raise ParamsError(f"{source}: key '{f.name}' must be > 0, got {v!r}")
        if f.name in NON_NEGATIVE and v < 0:
            raise ParamsError(f"{source}: key '{f.name}' must be >= 0, got {v!r}")
        if f.name in UNIT_OPEN and not 0 < v < 1:
            raise ParamsError(f"{source}: key '{f.name}' must be inside (0, 1), got {v!r}")
        if f.name in UNIT_CLOSED and not 0 <= v <= 1:
            raise ParamsError(f"{source}: key '{f.name}' must be in [0, 1], got {v!r}")
    if p.classes is not None:
        n = N_CLASSES[p.dataset]
        bad = [c for c in p.classes if not 0 <= c < n]
        if bad:
            raise ParamsError(f"{source}: key 'classes' has {bad} outside the {n} classes of {p.dataset}")
        if len(set(p.classes)) != len(p.classes) or len(p.classes) < 2:
            raise ParamsError(f"{source}: key 'classes' must list at least 2 distinct classes, got {p.classes!r}")
    if p.lr_peak_epoch > p.epochs:
        raise ParamsError(f"{source}: key 'lr_peak_epoch' ({p.lr_peak_epoch}) is after the last epoch ({p.epochs})")
    if p.retrain_epochs is not None and p.lr_peak_epoch > p.retrain_epochs:
        raise ParamsError(f"{source}: key 'retrain_epochs' ({p.retrain_epochs}) is before lr_peak_epoch "
                          f"({p.lr_peak_epoch}): the retraining schedule would never reach its peak")
    if p.mode == "reference" and (p.dataset != "cifar100" or p.classes is not None or p.n_train_per_class
                                  or p.n_test_per_class):
        raise ParamsError(f"{source}: key 'mode': reference needs the full cifar100 (FZ's files use its indices)")
    if p.mode == "train" and p.n_subset_models < 2:
        raise ParamsError(f"{source}: key 'n_subset_models' must be >= 2 in train mode (memorization compares models "
                          "that saw a point with models that did not)")
    for flag in p.slurm_extra or []:
        if not re.fullmatch(r"--[a-z][a-z0-9-]*(=\S.*)?", flag):
            raise ParamsError(f"{source}: key 'slurm_extra' entries must look like --name=value or --flag, got {flag!r}")
        if flag.split("=", 1)[0] in ("--array", "--output", "--error", "--job-name", "--wrap"):
            raise ParamsError(f"{source}: key 'slurm_extra' must not set {flag.split('=', 1)[0]} (lib/cluster.py sets it)")
    for key in ("slurm_partition", "slurm_account", "slurm_qos"):
        if re.search(r"\s", getattr(p, key)):
            raise ParamsError(f"{source}: key '{key}' must not contain spaces, got {getattr(p, key)!r}")
    if p.dup_review_threshold > p.dup_near_threshold:
        raise ParamsError(f"{source}: key 'dup_review_threshold' must be <= dup_near_threshold")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice is an error and 1e-1 is a float (YAML 1.1 reads it as text)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(  # floats with an exponent but no dot (1e-1, 5E4), as YAML 1.2 reads them
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load(name_or_path: str | Path, **overrides) -> Params:
    """Load params/<name>.yaml (or a path) over the defaults; validate; check the machine."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PARAMS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ParamsError(f"{path}: no such parameter file (known: {', '.join(known)})")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader) or {}
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of key: value")
    raw = {**raw, **overrides}
    known = {f.name for f in dataclasses.fields(Params)}
    for key in raw:
        if key not in known:
            raise ParamsError(f"{path}: unknown key '{key}'")
    if "name" in raw:
        raise ParamsError(f"{path}: key 'name' is set from the file name, remove it")
    values = {**raw, "name": path.stem}
    p = object.__new__(Params)
    for f in dataclasses.fields(Params):
        v = values.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        object.__setattr__(p, f.name, v)
    _validate(p, source=str(path))
    return p


def resolve_device(p: Params) -> str:
    """'cuda' or 'cpu'. A GPU parameter set without a GPU stops (unless forced)."""
    import torch

    from .cost import cuda_diagnosis

    has_cuda = torch.cuda.is_available()
    forced = os.environ.get("MEMAUDIT_ALLOW_CPU", "") not in ("", "0")
    if (p.requires_gpu or p.gpu_cost) and not has_cuda and not forced:
        why = "requires_gpu: true" if p.requires_gpu else f"{p.model} on the full {p.dataset}"
        raise MachineError(
            f"parameter set '{p.name}' is meant for GPUs ({why}) and no CUDA device is present; "
            "it would run for weeks on CPU. Use a CPU set (quick, smoke) or force it with MEMAUDIT_ALLOW_CPU=1. "
            f"Why CUDA is unavailable: {cuda_diagnosis()}"
        )
    if p.device == "cuda" and not has_cuda:
        raise MachineError(f"parameter set '{p.name}' asks for device: cuda and no CUDA device is present. "
                           f"Why CUDA is unavailable: {cuda_diagnosis()}")
    if p.device == "auto":
        return "cuda" if has_cuda else "cpu"
    return p.device
