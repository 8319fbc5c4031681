"""load_split refuses an index that does not fit the prepared training images."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcifar.data.datasets import prepare
from ltcifar.data.lt_index import build_index, write_index
from ltcifar.data.split_data import load_split
from ltcifar.errors import PipelineError
from tests.archives import CIFAR10_CLASSES, write_cifar10
from tests.conftest import split_spec

N_TRAIN = 80  # 10 classes x 8 training images; the test images are a separate array


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_cifar10(tmp_path / "raw", 8, 2)
    prepare("cifar10", tmp_path / "raw", tmp_path / "prepared" / "cifar10.npz")
    return tmp_path


def write_split(root: Path, edit=None) -> Path:
    with np.load(root / "prepared" / "cifar10.npz") as data:
        labels = data["y_train"]
    spec = split_spec(dataset="cifar10", shape="none", n_max=5, val_per_class=2)
    index = build_index("s", spec, labels, CIFAR10_CLASSES)
    if edit is not None:
        edit(index)
    path = root / "splits" / "s.json"
    write_index(index, path)
    return path


def _past_the_training_images(index: dict) -> None:
    index["val_indices"][9][-1] = N_TRAIN  # the first test image, were the arrays one


def _swap_classes(index: dict) -> None:
    a, b = index["train_indices"][0], index["train_indices"][1]
    a[0], b[0] = b[0], a[0]


def _rename_class(index: dict) -> None:
    index["classes"][0] = "plane"


CASES = {
    "past": (_past_the_training_images, rf"val_indices\[9\] holds image {N_TRAIN}, but cifar10 "),
    "label": (_swap_classes, r"train_indices\[0\] holds image \d+, whose label is 1"),
    "classes": (_rename_class, "its classes differ from cifar10's prepared class names"),
}


def test_fitting_split_loads(root: Path) -> None:
    write_split(root)
    data = load_split("s", torch.device("cpu"), root)
    assert len(data.y) == 50 and len(data.y_val) == 20
    assert data.counts.tolist() == [5] * 10


@pytest.mark.parametrize("case", sorted(CASES))
def test_split_that_does_not_fit_names_file(root: Path, case: str) -> None:
    edit, problem = CASES[case]
    path = write_split(root, edit)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))}: {problem}"):
        load_split("s", torch.device("cpu"), root)
