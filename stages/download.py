"""DVC stage ``download``: fetch and verify the raw files of the active profile's datasets.

A stage of its own so that the network is touched once: DVC caches ``data/raw`` and later stages
rerun from it offline. It reads configs/download.json (the active profile's datasets with their
sources and MD5s); folders of other datasets are removed, so the output holds exactly those.
"""

from pathlib import Path

from ltcifar.download import fetch
from ltcifar.errors import run_stage
from ltcifar.files import remove_unused
from ltcifar.runconfig import read_config

RAW = Path("data/raw")


def main() -> None:
    datasets = read_config("download.json")
    for name, spec in datasets.items():
        paths = fetch(name, spec["sources"], spec["md5"], RAW / name)
        print(f"{name}: {len(paths)} verified file(s) in {RAW / name}")
    remove_unused(RAW.iterdir(), set(datasets), "not a dataset of the active profile")


if __name__ == "__main__":
    run_stage(main)
