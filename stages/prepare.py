"""DVC stage ``prepare``: turn each downloaded dataset into one ``.npz`` of uint8 arrays.

Decoding tarballs and IDX files once, here, lets every training run load plain arrays. The
datasets are the folders of ``data/raw`` (the download stage keeps exactly the active profile's),
so this stage reads no params. Archives that pass the MD5 check but cannot be read fail with one
line (see ``ltcifar.datasets.prepare``); ``.npz`` files of other datasets are removed.
"""

from pathlib import Path

from ltcifar.datasets import DATASETS, prepare
from ltcifar.errors import PipelineError, run_stage
from ltcifar.files import remove_unused

RAW = Path("data/raw")
PREPARED = Path("data/prepared")


def main() -> None:
    datasets = sorted(p.name for p in RAW.iterdir() if p.is_dir()) if RAW.is_dir() else []
    if not datasets:
        raise PipelineError(f"{RAW} holds no dataset; run `dvc repro download` first")
    for name in datasets:
        missing = [f for f in DATASETS[name].files if not (RAW / name / f).is_file()]
        if missing:
            lacks = ", ".join(missing)
            raise PipelineError(f"{RAW / name} lacks {lacks}; run `dvc repro download`")
    for name in datasets:
        out = PREPARED / f"{name}.npz"
        a = prepare(name, RAW / name, out)
        print(
            f"{name}: train {a['x_train'].shape}, test {a['x_test'].shape}, "
            f"{len(a['classes'])} classes -> {out}"
        )
    remove_unused(PREPARED.glob("*.npz"), set(datasets), "not a downloaded dataset")


if __name__ == "__main__":
    run_stage(main)
