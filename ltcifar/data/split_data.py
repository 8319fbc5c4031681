"""A split's training and validation images as device tensors, read from the prepared arrays.
Training code gets a ``SplitData`` and nothing else: the test images are never loaded here, so
no checkpoint selection or early stop can look at them."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltcifar.data.datasets import load_prepared
from ltcifar.data.lt_index import check_fits, read_index


@dataclass
class SplitData:
    x: torch.Tensor  # uint8 (N, H, W, C)
    y: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    counts: torch.Tensor  # training images per class
    mean: torch.Tensor  # (1, C, 1, 1), on the 0..255 scale
    std: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.x.shape[-1]


def channel_stats(prepared: np.lib.npyio.NpzFile, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Channel mean and std as ``to_input`` normalises uint8 batches: 0..255 scale, (1, C, 1, 1)."""
    return tuple(
        torch.from_numpy(np.asarray(prepared[k], np.float32) * 255).to(device).view(1, -1, 1, 1)
        for k in ("mean", "std")
    )


def load_split(
    split: str, device: torch.device, root: Path = Path("data"), draw: int | None = None
) -> SplitData:
    """The split written by the lt_index stage (its draw ``draw``, if it has draws), as device
    tensors."""
    path = root / "splits" / f"{split}.json"
    return split_data(read_index(path, draw), device, root, path)


def split_data(
    index: dict, device: torch.device, root: Path = Path("data"), path: Path | None = None
) -> SplitData:
    """A split index's images as device tensors; ``path``, if given, is named in the errors."""
    data = load_prepared(index["dataset"], root / "prepared")
    y_all = data["y_train"]
    check_fits(index, path or Path(f"split {index['split']}"), y_all, data["classes"].tolist())
    x_all = data["x_train"]
    train = np.concatenate([np.asarray(i, dtype=np.int64) for i in index["train_indices"]])
    val = np.concatenate([np.asarray(i, dtype=np.int64) for i in index["val_indices"]])

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    mean, std = channel_stats(data, device)
    return SplitData(
        x=dev(x_all[train]),
        y=dev(y_all[train]),
        x_val=dev(x_all[val]),
        y_val=dev(y_all[val]),
        counts=dev(np.asarray(index["counts"], np.int64)),
        mean=mean,
        std=std,
        classes=index["classes"],
    )
