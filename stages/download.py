"""DVC stage ``download``: fetch and verify the raw files of the active profile's datasets.

A stage of its own so that the network is touched once: DVC caches ``data/raw`` and later stages
rerun from it offline. Folders of datasets the profile does not use are removed afterwards, so the
cached output holds exactly what params.yaml asks for.
"""

from pathlib import Path

from ltcifar.config import active_profile, load
from ltcifar.download import fetch
from ltcifar.errors import run_stage
from ltcifar.files import remove_unused

RAW = Path("data/raw")


def main() -> None:
    params = load()
    datasets = active_profile(params)["datasets"]
    for name in datasets:
        spec = params["download"][name]
        paths = fetch(name, spec["sources"], spec["md5"], RAW / name)
        print(f"{name}: {len(paths)} verified file(s) in {RAW / name}")
    remove_unused(RAW.iterdir(), set(datasets), f"not used by profile {params['profile']!r}")


if __name__ == "__main__":
    run_stage(main)
