"""Shared test fixtures: the data copies on this machine, found as `make` finds them."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
if not os.environ.get("CIFAR_DATA_DIR") and (_SHARED / "cifar100-resplit" / "cifar-100-python" / "train").is_file():
    os.environ["CIFAR_DATA_DIR"] = str(_SHARED / "cifar100-resplit")
if not os.environ.get("MEMAUDIT_REFERENCE_DIR") and (_SHARED / "reference").is_dir():
    os.environ["MEMAUDIT_REFERENCE_DIR"] = str(_SHARED / "reference")


@pytest.fixture(scope="session")
def smoke():
    from lib import params
    return params.load("smoke")


@pytest.fixture(scope="session")
def smoke_data(smoke):
    """The smoke parameter set's dataset (real CIFAR-100 images, 10 classes)."""
    from lib import data
    return data.load(smoke)
