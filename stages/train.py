"""DVC stage `train@<run>`: train every seed of one run, resumably.

Usage: python -m stages.train <run>   (`candidate`, or a key of params.yaml `runs`/`transfer_runs`)
Reads configs/runs/<run>.json (and, for a transfer run, models/backbone/backbone.pt). Writes
models/<run>/seed<k>.pt and DVCLive logs under logs/<run>/seed<k>/. A killed stage resumes
from checkpoints/<run>/seed<k>.pt when re-run with the same config. A run with ``processes: N``
relaunches this stage as N DDP ranks with torchrun (``ltcifar.ddp``); rank 0 writes the files.
"""

import sys
from pathlib import Path

import torch

from ltcifar import ddp, stacked
from ltcifar.data import SplitData, load_split
from ltcifar.device import device_name, out_of_memory_hint, select_device
from ltcifar.engine import TrainResult, save_atomic, train, train_stacked
from ltcifar.errors import PipelineError, run_stage
from ltcifar.gpus import pin_worker
from ltcifar.logs import dvclive_logger
from ltcifar.runconfig import read_run_config
from ltcifar.transfer import load_backbone


def train_seeds(
    run: str,
    cfg: dict,
    data: SplitData,
    device: torch.device,
    backbone: dict | None,
    ckpts: list[Path],
    logging: bool = True,
) -> tuple[list, list[TrainResult]]:
    """Every seed's DVCLive logger and training result: stacked into one model when the run
    asks for it (``stack_seeds``), one after the other otherwise. Without ``logging`` (DDP
    ranks but 0) no logger is made, so only rank 0 touches logs/."""
    seeds = cfg["seeds"]
    if cfg["stack_seeds"] and len(seeds) > 1:
        reason = stacked.refusal(cfg, data)  # before any logger writes logs/
        if reason:
            raise PipelineError(f"run {run!r}: stack_seeds cannot be used: {reason}")
        lives, logs = zip(*(dvclive_logger(run, seed) for seed in seeds), strict=True)
        results = train_stacked(cfg, data, seeds, device, ckpts, list(logs))
    else:
        lives, results = [], []
        for seed, ckpt in zip(seeds, ckpts, strict=True):
            live, log = dvclive_logger(run, seed) if logging else (None, None)
            lives.append(live)
            results.append(train(cfg, data, seed, device, ckpt, log=log, backbone=backbone))
    return list(lives), results


def main() -> None:
    run = sys.argv[1] if len(sys.argv) > 1 else "candidate"
    cfg = read_run_config(run)
    if cfg["processes"] > 1 and not ddp.under_torchrun():  # one rank per process, via torchrun
        code = ddp.relaunch(cfg["processes"], ["stages.train", run])
        if code:
            raise PipelineError(f"run {run!r}: torchrun exited with status {code} (see above)")
        return
    if ddp.under_torchrun():  # rank LOCAL_RANK takes GPU LOCAL_RANK; torchrun sets 1 thread
        world, device = ddp.join(select_device())
    else:  # one GPU per queued worker; CPU threads shared among workers
        world, device = ddp.World(), pin_worker()
    data = load_split(cfg["split"], device)
    backbone = load_backbone() if cfg["finetune"] != "scratch" else None
    ranks = f" x {world.size} DDP ranks" if world.size > 1 else ""
    if world.main:
        print(
            f"{run}: {cfg['model']} / {cfg['loss']} / {cfg['sampler']} / {cfg['mixup']} on split "
            f"{cfg['split']} ({len(data.y)} train, {len(data.y_val)} val), "
            f"{cfg['epochs']} epochs, device {device}{ranks}"
        )
    seeds = cfg["seeds"]
    ckpts = [Path("checkpoints") / run / f"seed{seed}.pt" for seed in seeds]
    with out_of_memory_hint(f"run {run!r}"):
        lives, results = train_seeds(run, cfg, data, device, backbone, ckpts, world.main)
    if not world.main:  # rank 0 writes the models
        return
    for seed, ckpt, live, result in zip(seeds, ckpts, lives, results, strict=True):
        live.end()
        save_atomic(
            {
                "state_dict": result.state_dict,
                "config": {**cfg, "posthoc_tau": result.posthoc_tau},
                "seed": seed,
                "classes": data.classes,
                "in_channels": data.in_channels,
                "selected_epoch": result.selected_epoch,
                "device": device_name(device),
            },
            Path("models") / run / f"seed{seed}.pt",
        )
        ckpt.unlink(missing_ok=True)


if __name__ == "__main__":
    run_stage(main)
