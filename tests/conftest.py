"""Shared test fixtures: the data copies on this machine, found as `make` finds them.

On the project's shared machines CIFAR-100 in its official order is built into <repo>/data (the
default data folder) by ../shared/data/cifar100/build.py when missing, as `make test` does;
elsewhere lib/data.py downloads the official archive. Reference files come from ../shared/data/reference.
"""
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
if (not os.environ.get("CIFAR_DATA_DIR") and (_SHARED / "cifar100" / "build.py").is_file()
        and not (ROOT / "data" / "cifar-100-python" / "train").is_file()):
    subprocess.run([sys.executable, str(_SHARED / "cifar100" / "build.py"), str(ROOT / "data")], check=True)
if not os.environ.get("MEMAUDIT_REFERENCE_DIR") and (_SHARED / "reference").is_dir():
    os.environ["MEMAUDIT_REFERENCE_DIR"] = str(_SHARED / "reference")

SWAPPED_TRAIN_ROWS = (0, 1)  # non_official_dir: these two train rows (of different classes) trade places


@pytest.fixture(scope="session")
def smoke():
    from lib import params
    return params.load("smoke")


@pytest.fixture(scope="session")
def smoke_data(smoke):
    """The smoke parameter set's dataset (real CIFAR-100 images, 10 classes)."""
    from lib import data
    return data.load(smoke)


@pytest.fixture(scope="session")
def cifar_full():
    """The whole CIFAR-100 copy the project reads (official order here), loaded once per session."""
    from lib import data
    return data.load_cifar(dataset="cifar100")


@pytest.fixture(scope="session")
def non_official_dir(tmp_path_factory):
    """A data root whose cifar-100-python/ is the project's copy with two train rows swapped.

    Images and their labels move together, so every image keeps its label: only the order differs
    from the official one, which is exactly what joining by official indices must notice.
    """
    from lib import data
    src = data.data_root() / "cifar-100-python"
    root = tmp_path_factory.mktemp("non_official")
    (root / "cifar-100-python").mkdir()
    with open(src / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")
    a, b = SWAPPED_TRAIN_ROWS
    assert train["fine_labels"][a] != train["fine_labels"][b], "pick two rows of different classes"
    train["data"][[a, b]] = train["data"][[b, a]]
    for key in ("fine_labels", "coarse_labels", "filenames"):
        train[key][a], train[key][b] = train[key][b], train[key][a]
    with open(root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump(train, f, protocol=4)
    for name in ("test", "meta"):
        shutil.copyfile(src / name, root / "cifar-100-python" / name)
    return root


@pytest.fixture(scope="session")
def non_official_data(non_official_dir):
    """`non_official_dir` loaded (whole CIFAR-100, verdict "not official"), once per session."""
    from lib import data
    return data.load_cifar(dataset="cifar100", data_dir=str(non_official_dir), download_missing=False)
