"""Parameter sets: every file loads; bad input stops with one line naming the key and the file."""
import pytest
import yaml

from lib import params
from lib.params import ParamsError


@pytest.mark.parametrize("name", sorted(p.stem for p in params.PARAMS_DIR.glob("*.yaml")))
def test_every_shipped_set_loads(name):
    p = params.load(name)
    assert p.name == name and p.run_dir.name == name


def test_paper_set_is_the_papers_setup():
    p = params.load("paper")
    assert (p.model, p.epochs, p.batch_size, p.momentum, p.lr_peak) == ("resnet50", 160, 512, 0.9, 0.4)
    assert p.weight_decay > 0 and p.subset_ratio == 0.7 and p.n_subset_models >= 1000 and p.n_retrain_models == 100
    assert p.requires_gpu


def write(tmp_path, body: dict):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(body))
    return f


@pytest.mark.parametrize("body, key", [
    ({"epoch": 3}, "epoch"),                       # unknown key (typo)
    ({"epochs": "ten"}, "epochs"),                 # wrong type
    ({"epochs": -1}, "epochs"),                    # impossible value
    ({"epochs": True}, "epochs"),                  # bool is not an int here
    ({"subset_ratio": 1.0}, "subset_ratio"),       # r must be inside (0, 1)
    ({"subset_ratio": 0}, "subset_ratio"),
    ({"classes": [0, 100]}, "classes"),            # class outside CIFAR-100
    ({"dataset": "cifar10", "classes": [0, 10]}, "classes"),
    ({"model": "vgg"}, "model"),
    ({"mem_threshold": 1.5}, "mem_threshold"),
    ({"name": "x"}, "name"),
    ({"mode": "reference", "classes": [0, 1]}, "mode"),
])
def test_bad_values_name_key_and_file(tmp_path, body, key):
    f = write(tmp_path, body)
    with pytest.raises(ParamsError) as e:
        params.load(f)
    msg = str(e.value)
    assert f"'{key}'" in msg and str(f) in msg and "\n" not in msg


def test_overrides_only_and_defaults_documented(tmp_path):
    p = params.load(write(tmp_path, {"epochs": 30}))
    assert p.epochs == 30 and p.batch_size == params.Params.batch_size  # everything else from the defaults


def test_missing_file_lists_known_sets():
    with pytest.raises(ParamsError, match="no such parameter file.*smoke"):
        params.load("nope")


def test_resolved_params_saved_and_reloadable(tmp_path):
    p = params.load("smoke")
    from lib.run_folder import RunFolder
    path = RunFolder(tmp_path).write_params(p)
    assert path == RunFolder(tmp_path).path("params")
    assert yaml.safe_load(path.read_text()) == p.to_dict()


def test_gpu_set_without_gpu_stops_with_hint(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("MEMAUDIT_ALLOW_CPU", raising=False)
    with pytest.raises(RuntimeError, match="MEMAUDIT_ALLOW_CPU=1"):
        params.resolve_device(params.load("paper"))
    monkeypatch.setenv("MEMAUDIT_ALLOW_CPU", "1")
    assert params.resolve_device(params.load("paper")) == "cpu"
    assert params.resolve_device(params.load("smoke")) == "cpu"


def test_two_key_checks_run_at_load(tmp_path):
    """retrain_epochs before lr_peak_epoch used to fail only in notebook 05, after subset training."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 10\nlr_peak_epoch: 5\nretrain_epochs: 4\n")
    with pytest.raises(ParamsError, match="bad.yaml.*retrain_epochs"):
        params.load(bad)


def test_paper_scale_is_a_property_of_the_values_not_the_name(tmp_path):
    assert params.load("paper").paper_scale and not params.load("quick").paper_scale
    renamed = tmp_path / "my_cluster_run.yaml"
    renamed.write_text((params.PARAMS_DIR / "paper.yaml").read_text())
    assert params.load(renamed).paper_scale
    small = tmp_path / "paper_tiny.yaml"
    small.write_text("model: tiny_cnn\n")
    assert not params.load(small).paper_scale


def test_a_notebook_run_by_hand_does_not_write_the_committed_report():
    import subprocess
    import sys
    code = "import ipykernel, lib.params as p; print(p.load('quick').fig_dir)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "MEMAUDIT_HEADLESS"}
    by_hand = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=params.ROOT)
    headless = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, "MEMAUDIT_HEADLESS": "1"}, cwd=params.ROOT)
    assert by_hand.stdout.strip().endswith("figures/lab/quick"), by_hand.stderr
    assert headless.stdout.strip().endswith("figures/quick"), headless.stderr
