"""DVC stage `second_stage@<name>`: re-balance the classifier of every seed of a finished run.

Usage: python -m stages.second_stage <name>   (a key of params.yaml `second_stages`)
Reads configs/second/<name>.json, the first run's models/<run>/seed<k>.pt and its split's
training and validation images (never the test set). Writes models/<name>/seed<k>.pt in the
train stage's format, so the evaluate stage scores it like any run. The first run is never
retrained: only its classifier changes (see ``ltcifar.training.second_stage``). A second stage
outside the active profile leaves a note in models/<name>/ before torch is imported.
"""

import argparse
from dataclasses import replace
from pathlib import Path

from ltcifar.config.records import Skipped, as_dict
from ltcifar.config.runconfig import read_second_config, write_skipped
from ltcifar.errors import run_stage, stage_parser


def main(name: str) -> None:
    cfg = read_second_config(name)
    if isinstance(cfg, Skipped):
        write_skipped(name, cfg.skipped, (Path("models") / name,))
        return
    from ltcifar.data.split_data import load_split
    from ltcifar.device import device_name, select_device
    from ltcifar.evaluation.inference import load_trained
    from ltcifar.training.checkpoints import save_atomic
    from ltcifar.training.second_stage import run_second_stage

    device = select_device()
    data = load_split(cfg.split, device)
    for seed in cfg.seeds:
        trained = load_trained(Path("models") / cfg.run / f"seed{seed}.pt", device)
        model = trained.model
        chosen = run_second_stage(model, data, cfg, seed)
        config = replace(trained.config, name=name, second_stage=cfg.method, **chosen)
        state = {
            "state_dict": model.state_dict(),
            "config": as_dict(config),
            "device": device_name(device),
        }
        save_atomic({**trained.saved, **state}, Path("models") / name / f"seed{seed}.pt")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in chosen.items())
        print(f"{name}: {cfg.method} on {cfg.run} seed {seed}" + (f" ({shown})" if shown else ""))


def parser() -> argparse.ArgumentParser:
    p = stage_parser("stages.second_stage", __doc__)
    p.add_argument("name", help="a key of params.yaml's second_stages")
    return p


if __name__ == "__main__":
    run_stage(main, parser())
