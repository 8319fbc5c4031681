"""DVC stage `download_weights`: fetch the active profile's pretrained backbone, hash-verified.

Weights are data: a DVC output, fetched once, verified against params.yaml's sha256, so every
transfer run starts from the same bytes and an offline machine can point `sources` at a local
copy. Profiles whose backbone is a checkpoint of this pipeline fetch nothing; the stage then
records that in models/pretrained/manifest.json.
"""

import json

import torch

from ltcifar.config import active_profile, load
from ltcifar.download import fetch_file
from ltcifar.errors import PipelineError, run_stage
from ltcifar.files import remove_unused
from ltcifar.transfer import WEIGHTS_DIR, weights_file


def main() -> None:
    params = load()
    backbone = active_profile(params)["backbone"]
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    manifest = dict(backbone)
    if backbone["source"] == "imagenet":
        arch, spec = backbone["arch"], params["pretrained"][backbone["arch"]]
        name = weights_file(spec["sources"]).name
        path = fetch_file(
            name, spec["sources"], spec["sha256"], WEIGHTS_DIR, f"pretrained.{arch}", "sha256"
        )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PipelineError(f"{path} is not a PyTorch state_dict ({e})") from e
        manifest |= {"file": name, "tensors": len(state)}
    keep = {"manifest.json", manifest.get("file", "manifest.json")}
    remove_unused(WEIGHTS_DIR.iterdir(), keep, "not the active profile's backbone")
    (WEIGHTS_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"backbone: {manifest}")


if __name__ == "__main__":
    run_stage(main)
