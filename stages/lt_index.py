"""DVC stage `lt_index`: write data/splits/<split>.json for every split of the active profile.

Reads configs/splits.json and only the training labels, so no split can contain a test image.
"""

from pathlib import Path

from ltcifar.datasets import load_prepared
from ltcifar.errors import run_stage
from ltcifar.files import remove_unused
from ltcifar.lt_index import build_index, write_index
from ltcifar.runconfig import read_config

OUT = Path("data/splits")


def main() -> None:
    splits = read_config("splits.json")
    remove_unused(OUT.glob("*.json"), set(splits), "not a split of the active profile")
    for name, spec in splits.items():
        data = load_prepared(spec["dataset"])
        index = build_index(name, spec, data["y_train"], data["classes"].tolist())
        write_index(index, OUT / f"{name}.json")
        none = [c for c, n in zip(index["classes"], index["val_counts"], strict=True) if not n]
        print(
            f"{name}: {spec['dataset']} {spec['shape']}, {index['total_train']} train / "
            f"{index['total_val']} val, counts {index['counts'][0]}..{index['counts'][-1]}"
            + (f"; no validation image left for {', '.join(none)}" if none else "")
        )


if __name__ == "__main__":
    run_stage(main)
