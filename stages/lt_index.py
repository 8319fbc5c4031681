"""DVC stage `lt_index`: write data/splits/<split>.json for every split of the active profile
(a split with ``draws``: every draw's index in that one file).

Reads configs/splits.json and only the training labels, so no split can contain a test image.
A split that runs outside the active profile name, and the profile does not define, gets a
placeholder (its name and why, no indices), which only the skipped stages of those runs read.
"""

import json
from pathlib import Path

from ltcifar.config.records import Skipped
from ltcifar.config.runconfig import SKIPPED, read_splits
from ltcifar.data.datasets import load_prepared
from ltcifar.data.lt_index import build_split, write_index
from ltcifar.errors import run_stage, stage_parser
from ltcifar.files import remove_unused, write_text_atomic

OUT = Path("data/splits")


def main() -> None:
    splits = read_splits()
    remove_unused(OUT.glob("*.json"), set(splits), "not a split of the active profile")
    for name, spec in splits.items():
        if isinstance(spec, Skipped):
            placeholder = {"split": name, SKIPPED: spec.skipped}
            write_text_atomic(OUT / f"{name}.json", json.dumps(placeholder, indent=2) + "\n")
            print(f"{name}: placeholder, {spec.skipped}")
            continue
        data = load_prepared(spec.dataset)
        split = build_split(name, spec, data["y_train"], data["classes"].tolist())
        write_index(split, OUT / f"{name}.json")
        draws = (
            {f" draw {d}": i for d, i in split["draws"].items()} if spec.draws is not None else {}
        )
        for label, index in (draws or {"": split}).items():
            none = [c for c, n in zip(index["classes"], index["val_counts"], strict=True) if not n]
            print(
                f"{name}{label}: {spec.dataset} {spec.shape}, {index['total_train']} train / "
                f"{index['total_val']} val, counts {index['counts'][0]}..{index['counts'][-1]}"
                + (f"; no validation image left for {', '.join(none)}" if none else "")
            )


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.lt_index", __doc__))
