"""DVC stage `train@<run>`: train every seed of one run, resumably.

Usage: python -m stages.train <run>   (`candidate`, or a key of params.yaml `runs`/`transfer_runs`)
Reads configs/runs/<run>.json (and, for a transfer run, models/backbone/backbone.pt). Writes
models/<run>/seed<k>.pt and DVCLive logs under logs/<run>/seed<k>/. A killed stage resumes
from checkpoints/<run>/seed<k>.pt when re-run with the same config.
"""

import sys
from pathlib import Path

from ltcifar.data import load_split
from ltcifar.device import device_name, select_device
from ltcifar.engine import save_atomic, train
from ltcifar.errors import run_stage
from ltcifar.logs import dvclive_logger
from ltcifar.runconfig import read_run_config
from ltcifar.transfer import load_backbone


def main() -> None:
    run = sys.argv[1] if len(sys.argv) > 1 else "candidate"
    cfg = read_run_config(run)
    device = select_device()
    data = load_split(cfg["split"], device)
    backbone = load_backbone() if cfg["finetune"] != "scratch" else None
    print(
        f"{run}: {cfg['model']} / {cfg['loss']} / {cfg['sampler']} / {cfg['mixup']} on split "
        f"{cfg['split']} ({len(data.y)} train, {len(data.y_val)} val), "
        f"{cfg['epochs']} epochs, device {device}"
    )
    for seed in cfg["seeds"]:
        ckpt = Path("checkpoints") / run / f"seed{seed}.pt"
        live, log = dvclive_logger(run, seed)
        result = train(cfg, data, seed, device, ckpt_path=ckpt, log=log, backbone=backbone)
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
