"""DVC stage ``prepare``: turn each raw dataset of the active profile into one ``.npz``.

Decoding tarballs and IDX files once, here, lets every training run load plain arrays. Archives
that pass the MD5 check but cannot be read (a custom MD5 for the wrong format) fail with one line
instead of a traceback (see ``ltcifar.datasets.prepare``); ``.npz`` files of datasets the profile
does not use are removed.
"""

from pathlib import Path

from ltcifar.config import active_profile, load
from ltcifar.datasets import DATASETS, prepare
from ltcifar.errors import PipelineError, run_stage
from ltcifar.files import remove_unused

RAW = Path("data/raw")
PREPARED = Path("data/prepared")


def main() -> None:
    params = load()
    datasets = active_profile(params)["datasets"]
    for name in datasets:
        raw = RAW / name
        missing = [f for f in DATASETS[name].files if not (raw / f).is_file()]
        if not raw.is_dir() or missing:
            what = "not found" if not raw.is_dir() else f"lacks {', '.join(missing)}"
            raise PipelineError(f"{raw} {what}; run `dvc repro download` first")
    for name in datasets:
        out = PREPARED / f"{name}.npz"
        a = prepare(name, RAW / name, out)
        print(
            f"{name}: train {a['x_train'].shape}, test {a['x_test'].shape}, "
            f"{len(a['classes'])} classes -> {out}"
        )
    remove_unused(
        PREPARED.glob("*.npz"), set(datasets), f"not used by profile {params['profile']!r}"
    )


if __name__ == "__main__":
    run_stage(main)
