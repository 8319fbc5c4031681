"""DVC stage `train@<run>`: train every seed of one run, resumably.

Usage: python -m stages.train <run>   (`candidate`, or a key of params.yaml `runs`/`transfer_runs`)
Reads configs/runs/<run>.json, its split (and, for a transfer run, models/backbone/backbone.pt).
Writes models/<run>/seed<k>.pt and DVCLive logs under logs/<run>/seed<k>/; on a split with
draws, each draw d x each seed k: models/<run>/draw<d>_seed<k>.pt, logs/<run>/draw<d>_seed<k>/.
A killed stage resumes from checkpoints/<run>/<model>.pt when re-run with the same config. A
run with ``processes: N`` relaunches this stage as N DDP ranks with torchrun
(``ltcifar.training.ddp``); rank 0 writes the files. A run outside the active profile leaves a
note in each folder and returns before torch is imported.
"""

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ltcifar.config.records import RunConfig, Skipped, as_dict
from ltcifar.config.runconfig import read_run_config, write_skipped
from ltcifar.errors import PipelineError, run_stage, stage_parser

if TYPE_CHECKING:  # imported where used: a skipped run never imports torch
    import torch

    from ltcifar.data.split_data import SplitData
    from ltcifar.training.ddp import World
    from ltcifar.training.engine import TrainResult


def train_seeds(
    run: str,
    cfg: RunConfig,
    data: "SplitData",
    device: "torch.device",
    backbone: dict | None,
    ckpts: list[Path],
    logging: bool = True,
    draw: int | None = None,
) -> tuple[list, list["TrainResult"]]:
    """Every seed's DVCLive logger and training result on ``data`` (the split's draw ``draw``,
    if it has draws): stacked into one model when the run asks for it (``stack_seeds``), one
    after the other otherwise. Without ``logging`` (DDP ranks but 0) no logger is made, so only
    rank 0 touches logs/."""
    from ltcifar.training.engine import train, train_stacked
    from ltcifar.training.logs import dvclive_logger

    seeds = cfg.seeds
    if cfg.stack_seeds and len(seeds) > 1:
        lives, logs = zip(*(dvclive_logger(run, s, draw=draw) for s in seeds), strict=True)
        return list(lives), train_stacked(cfg, data, seeds, device, ckpts, list(logs))
    each, results = [], []
    for seed, ckpt in zip(seeds, ckpts, strict=True):
        live, log = dvclive_logger(run, seed, draw=draw) if logging else (None, None)
        each.append(live)
        results.append(train(cfg, data, seed, device, ckpt, log=log, backbone=backbone))
    return each, results


def main(run: str = "candidate") -> None:
    cfg = read_run_config(run)
    if isinstance(cfg, Skipped):
        write_skipped(run, cfg.skipped, (Path("models") / run, Path("logs") / run))
        return
    from ltcifar.data.lt_index import split_draws
    from ltcifar.device import select_device
    from ltcifar.methods.transfer import load_backbone
    from ltcifar.training import ddp
    from ltcifar.training.gpus import pin_worker

    if cfg.processes > 1 and not ddp.under_torchrun():  # one rank per process, via torchrun
        code = ddp.relaunch(cfg.processes, ["stages.train", run])
        if code:
            raise PipelineError(f"run {run!r}: torchrun exited with status {code} (see above)")
        return
    if ddp.under_torchrun():  # rank LOCAL_RANK takes GPU LOCAL_RANK; torchrun sets 1 thread
        world, device = ddp.join(select_device())
    else:  # one GPU per queued worker; CPU threads shared among workers
        world, device = ddp.World(), pin_worker()
    backbone = load_backbone() if cfg.finetune != "scratch" else None
    for draw in split_draws(Path("data/splits") / f"{cfg.split}.json"):
        train_draw(run, cfg, device, world, backbone, draw)


def train_draw(
    run: str,
    cfg: RunConfig,
    device: "torch.device",
    world: "World",
    backbone: dict | None,
    draw: int | None,
) -> None:
    """Train and save every seed of ``run`` on one draw of its split (``None``: its only one)."""
    from ltcifar.data.lt_index import member
    from ltcifar.data.split_data import load_split
    from ltcifar.device import device_name, out_of_memory_hint
    from ltcifar.training.checkpoints import save_atomic

    data = load_split(cfg.split, device, draw=draw)
    ranks = f" x {world.size} DDP ranks" if world.size > 1 else ""
    if world.main:
        print(
            f"{run}: {cfg.model} / {cfg.loss} / {cfg.sampler} / {cfg.mixup} on split "
            f"{cfg.split}{'' if draw is None else f' draw {draw}'} ({len(data.y)} train, "
            f"{len(data.y_val)} val), {cfg.epochs} epochs, device {device}{ranks}"
        )
    seeds = cfg.seeds
    names = [member(seed, draw) for seed in seeds]
    ckpts = [Path("checkpoints") / run / f"{name}.pt" for name in names]
    with out_of_memory_hint(f"run {run!r}"):
        lives, results = train_seeds(run, cfg, data, device, backbone, ckpts, world.main, draw)
    if not world.main:  # rank 0 writes the models
        return
    for seed, name, ckpt, live, result in zip(seeds, names, ckpts, lives, results, strict=True):
        if live is not None:  # None: DVCLive is not installed
            live.end()
        save_atomic(
            {
                "state_dict": result.state_dict,
                "config": as_dict(replace(cfg, posthoc_tau=result.posthoc_tau)),
                "seed": seed,
                "classes": data.classes,
                "in_channels": data.in_channels,
                "selected_epoch": result.selected_epoch,
                "device": device_name(device),
            },
            Path("models") / run / f"{name}.pt",
        )
        ckpt.unlink(missing_ok=True)


def parser() -> argparse.ArgumentParser:
    p = stage_parser("stages.train", __doc__)
    p.add_argument("run", nargs="?", default="candidate", help="the run (default: candidate)")
    return p


if __name__ == "__main__":
    run_stage(main, parser())
