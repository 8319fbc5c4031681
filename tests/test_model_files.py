"""Files a stage reads back are data: the train stage's model files load with
``weights_only=True``, one whose pickle would run code is refused unrun, and ImageNet weights
without BatchNorm's ``num_batches_tracked`` (older torchvision files) still load."""

import re
from pathlib import Path

import pytest
import torch
import torchvision

from ltcifar.config.records import RunConfig, as_dict
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import load_trained
from ltcifar.methods.models import build_model, model_options
from ltcifar.methods.transfer import init_from_backbone
from ltcifar.training.checkpoints import save_atomic
from tests.archives import RunsCode
from tests.conftest import recipe

CPU = torch.device("cpu")


def save_model_file(path: Path, cfg: RunConfig, **extra) -> dict:
    """A model file exactly as ``stages/train.py`` writes it."""
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, 3, **model_options(cfg))
    saved = {
        "state_dict": model.state_dict(),
        "config": as_dict(cfg),
        "seed": 0,
        "classes": ["a", "b", "c", "d"],
        "in_channels": 3,
        "selected_epoch": cfg.epochs - 1,
        "device": "cpu: some model (1 threads)",
        **extra,
    }
    save_atomic(saved, path)
    return saved


def test_train_stage_model_file_loads_as_data(tmp_path):
    saved = save_model_file(tmp_path / "seed0.pt", recipe())
    got = load_trained(tmp_path / "seed0.pt", CPU)
    assert got.saved["classes"] == saved["classes"] and got.saved["config"] == saved["config"]
    assert as_dict(got.config) == as_dict(recipe())
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in got.model.state_dict().items())


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: c.pop("head"), "lacks the key 'head'"),
        (lambda c: c.update(width=2), "has the unknown key 'width'"),
    ],
)
def test_a_model_file_of_older_code_says_to_retrain(tmp_path, edit, problem):
    """Only the off values of optional features are filled in from today's code."""
    path = tmp_path / "seed0.pt"
    saved = save_model_file(path, recipe())
    edit(saved["config"])
    save_atomic(saved, path)
    with pytest.raises(PipelineError, match=f"{problem}; it was saved by older code") as e:
        load_trained(path, CPU)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_model_file_that_would_run_code_is_refused_unrun(tmp_path):
    path, marker = tmp_path / "seed0.pt", tmp_path / "ran"
    save_model_file(path, recipe(), note=RunsCode(marker))
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))} is not a readable model"):
        load_trained(path, CPU)
    assert not marker.exists()


def test_imagenet_weights_without_num_batches_tracked_load():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).state_dict()
    old = {f"net.{k}": v for k, v in tv.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(tv)
    model = build_model("tv_resnet18", 10, 3, **model_options(recipe(model="tv_resnet18")))
    init_from_backbone(model, old)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in old.items() if not k.startswith("net.fc."))
    assert got["net.bn1.num_batches_tracked"] == 0  # the model's own counter is kept
    del old["net.bn1.running_mean"]  # any other missing key is still an error
    with pytest.raises(PipelineError, match="no matching net.bn1.running_mean"):
        init_from_backbone(model, old)
