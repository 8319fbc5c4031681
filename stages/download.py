"""DVC stage ``download``: fetch and verify the raw files of the active profile's datasets.

A stage of its own so that the network is touched once: DVC caches ``data/raw`` and later stages
rerun from it offline. It reads configs/download.json (the active profile's datasets with their
sources and MD5s, or for an image folder its size and optional sha256); an image folder is
copied with a manifest of its hashes (``ltcifar.data.image_folder``). Folders of other datasets are
removed, so the output holds exactly those.
"""

from pathlib import Path

from ltcifar.config.records import ImageFolderSource
from ltcifar.config.runconfig import read_download
from ltcifar.data.download import fetch
from ltcifar.data.image_folder import fetch_folder
from ltcifar.errors import run_stage, stage_parser
from ltcifar.files import remove_unused

RAW = Path("data/raw")


def copy_folder(name: str, spec: ImageFolderSource) -> None:
    manifest = fetch_folder(name, spec.sources, spec.image_size, spec.sha256, RAW / name)
    pin = "" if spec.sha256 else f"; set download.{name}.sha256 to it to pin these images"
    print(
        f"{name}: {len(manifest['files'])} images in {RAW / name}, sha256 {manifest['sha256']}{pin}"
    )


def main() -> None:
    datasets = read_download()
    for name, spec in datasets.items():
        if isinstance(spec, ImageFolderSource):
            copy_folder(name, spec)
            continue
        paths = fetch(name, spec.sources, spec.md5, RAW / name)
        print(f"{name}: {len(paths)} verified file(s) in {RAW / name}")
    remove_unused(RAW.iterdir(), set(datasets), "not a dataset of the active profile")


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.download", __doc__))
