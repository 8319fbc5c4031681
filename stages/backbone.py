"""DVC stage ``backbone``: the pretrained weights every transfer run starts from.

Weights are data: one file, ``models/backbone/backbone.pt``, in this project's key space, made
once per profile. It reads configs/backbone.json, which says where they come from:

- ``weights: imagenet``: torchvision's ImageNet file, fetched from the backbone's ``sources``
  and verified against its ``sha256`` (point ``sources`` at a local copy offline);
- ``weights: pretrain``: a network this stage trains on another split of the profile (built in
  memory from the spec in the config, so the stage needs no split file), which lets the whole
  transfer path run offline with real learned weights.

When the active profile trains no transfer run, the config says ``skipped``: the stage leaves a
note in models/backbone/ and returns before torch is imported.
"""

import shutil
from pathlib import Path

from ltcifar.config.records import ImagenetBackbone, PretrainBackbone, Skipped
from ltcifar.config.runconfig import read_backbone, write_skipped
from ltcifar.errors import PipelineError, run_stage, stage_parser


def imagenet_weights(cfg: ImagenetBackbone) -> dict:
    """torchvision's verified state_dict, its keys under ``net.`` as in ``TorchvisionNet``."""
    import torch

    from ltcifar.data.download import fetch_file
    from ltcifar.methods.transfer import BACKBONE_FILE

    tmp = BACKBONE_FILE.parent / ".download"
    name = cfg.sources[0].rstrip("/").rsplit("/", 1)[-1]
    try:
        sha256 = [h.lower() for h in cfg.sha256]
        where = "profiles.<profile>.backbone"
        path = fetch_file(name, cfg.sources, sha256, tmp, where, "sha256")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PipelineError(f"{name} is not a PyTorch state_dict ({first})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {f"net.{k}": v for k, v in state.items()}


def pretrained_here(cfg: PretrainBackbone) -> dict:
    from ltcifar.data.datasets import load_prepared
    from ltcifar.data.lt_index import build_index
    from ltcifar.data.split_data import split_data
    from ltcifar.device import select_device
    from ltcifar.training.engine import train

    spec, run = cfg.split_spec, cfg.run
    labels = load_prepared(spec.dataset)
    index = build_index(cfg.split, spec, labels["y_train"], labels["classes"].tolist())
    device = select_device()
    data = split_data(index, device)
    print(f"pretraining {run.model} on split {cfg.split} ({len(data.y)} images), {device}")
    ckpt = Path("checkpoints/backbone/seed0.pt")
    result = train(run, data, run.seeds[0], device, ckpt_path=ckpt)
    ckpt.unlink(missing_ok=True)
    return {k: v.cpu() for k, v in result.state_dict.items()}


def main() -> None:
    cfg = read_backbone()
    if isinstance(cfg, Skipped):
        write_skipped("backbone", cfg.skipped, (Path("models/backbone"),))
        return
    from ltcifar.methods.transfer import BACKBONE_FILE
    from ltcifar.training.checkpoints import save_atomic

    state = imagenet_weights(cfg) if isinstance(cfg, ImagenetBackbone) else pretrained_here(cfg)
    save_atomic(state, BACKBONE_FILE)
    print(f"backbone: {cfg.model} ({cfg.weights}), {len(state)} tensors -> {BACKBONE_FILE}")


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.backbone", __doc__))
