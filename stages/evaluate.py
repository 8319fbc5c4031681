"""DVC stage `evaluate` / `evaluate_runs@<run>`: score every seed (x every draw, on a split with
draws) of a run on the test set.

Usage: python -m stages.evaluate <run>
Reads configs/runs/<run>.json, configs/evaluate.json, the run's models and the test set (a
second stage's models too: `evaluate_second@<name>`). Writes metrics/<run>.json (the means over
seeds; the report gathers every run's macro-F1 for `dvc metrics diff`),
metrics/<run>/details.json (spread, every seed, the run's description: what the report reads),
per_class.csv and confusion.csv (for `dvc plots`). This is the only stage that reads test
images, and it only scores finished models. A run outside the active profile gets placeholders
(no score; details.json says why, and the report leaves the run out) before torch is imported.
"""

import argparse
import json
from pathlib import Path

from ltcifar.config.records import Skipped
from ltcifar.config.runconfig import SKIPPED, read_evaluate, read_run_config, write_skipped
from ltcifar.errors import run_stage, stage_parser

# The placeholders' plot files: the headers of the real ones, no rows.
PLOT_HEADERS = {
    "per_class.csv": "class,train_count,precision,recall,f1",
    "confusion.csv": "actual,predicted",
}


def write_placeholders(run: str, why: str) -> None:
    out = Path("metrics") / run
    files = {Path("metrics", f"{run}.json"): "{}\n"}
    files[out / "details.json"] = json.dumps({"run": {"name": run}, SKIPPED: why}, indent=2) + "\n"
    files.update({out / name: header + "\n" for name, header in PLOT_HEADERS.items()})
    write_skipped(run, why, files=files)


def main(run: str = "candidate") -> None:
    cfg, settings = read_run_config(run), read_evaluate()
    if isinstance(cfg, Skipped):
        write_placeholders(run, cfg.skipped)
        return
    import torch

    from ltcifar.data.datasets import load_prepared
    from ltcifar.data.lt_index import read_index, split_draws
    from ltcifar.device import select_device
    from ltcifar.evaluation.scoring import TestSet, score_run, write_metrics

    path = Path("data/splits") / f"{cfg.split}.json"
    indexes = {draw: read_index(path, draw) for draw in split_draws(path)}
    prepared = load_prepared(next(iter(indexes.values()))["dataset"])
    device = select_device()
    x, y = (torch.from_numpy(prepared[k]).to(device) for k in ("x_test", "y_test"))
    tests = {draw: TestSet(x, y, prepared, index) for draw, index in indexes.items()}
    scored = {draw: score_run(run, cfg, test, settings, draw) for draw, test in tests.items()}
    mean = write_metrics(run, cfg, tests, settings, scored)
    draws = "" if list(indexes) == [None] else f" x {len(indexes)} draws"
    print(
        f"{run}: accuracy {mean['accuracy']:.4f}, macro-F1 {mean['macro_f1']:.4f}, "
        f"balanced accuracy {mean['balanced_accuracy']:.4f} over {len(cfg.seeds)} seed(s)" + draws
    )


def parser() -> argparse.ArgumentParser:
    p = stage_parser("stages.evaluate", __doc__)
    p.add_argument("run", nargs="?", default="candidate", help="the run (default: candidate)")
    return p


if __name__ == "__main__":
    run_stage(main, parser())
