"""DVC stage ``prepare``: turn each downloaded dataset into one ``.npz`` of uint8 arrays.

Decoding tarballs, IDX files and images once, here, lets every training run load plain arrays.
The datasets are the folders of ``data/raw`` (the download stage keeps exactly the active
profile's), so this stage reads no params: a folder named after a catalogued dataset holds its
archives, any other one an image folder with its manifest (image size and hashes). Files that
pass the download's checks but cannot be read fail with one line (see
``ltcifar.data.datasets.prepare``); ``.npz`` files of other datasets are removed.
"""

from collections.abc import Callable
from pathlib import Path

from ltcifar.data import image_folder
from ltcifar.data.datasets import DATASETS, Arrays, prepare
from ltcifar.errors import PipelineError, run_stage, stage_parser
from ltcifar.files import remove_unused

RAW = Path("data/raw")
PREPARED = Path("data/prepared")


def reader(name: str) -> Callable[[Path], Arrays]:
    """How to read ``data/raw/<name>``, once its files are known to be there."""
    needs = DATASETS[name].files if name in DATASETS else (image_folder.MANIFEST,)
    missing = [f for f in needs if not (RAW / name / f).is_file()]
    if missing:
        raise PipelineError(f"{RAW / name} lacks {', '.join(missing)}; run `dvc repro download`")
    return DATASETS[name].read if name in DATASETS else image_folder.read


def main() -> None:
    datasets = sorted(p.name for p in RAW.iterdir() if p.is_dir()) if RAW.is_dir() else []
    if not datasets:
        raise PipelineError(f"{RAW} holds no dataset; run `dvc repro download` first")
    readers = {name: reader(name) for name in datasets}
    for name in datasets:
        out = PREPARED / f"{name}.npz"
        a = prepare(name, RAW / name, out, readers[name])
        print(
            f"{name}: train {a['x_train'].shape}, test {a['x_test'].shape}, "
            f"{len(a['classes'])} classes -> {out}"
        )
    remove_unused(PREPARED.glob("*.npz"), set(datasets), "not a downloaded dataset")


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.prepare", __doc__))
