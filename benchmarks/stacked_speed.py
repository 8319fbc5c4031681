"""Throughput of S seeds trained stacked (ltcifar.methods.stacked) against the same seeds run
one by one.

Usage (from the repo root): python benchmarks/stacked_speed.py [--stacks 2 3] [--steps N]
    [--batch B] [--model M] [--device auto|cpu|cuda] [--precision bf16|fp32] [--compile]

Random CIFAR-shaped uint8 data, ``--steps`` steps per epoch, 2 epochs; each row is the last
epoch's rate (the first warms up), in seed-images per second: a stack of S counts S images per
batch row. ``separate`` is ``engine.train``, one seed: S separate runs take S times as long, so
its rate is theirs at any S. Stacking pays where one small run leaves a card idle (kernel
launches, unfilled SMs); a CPU that one run already keeps busy gains nothing.
The last line is ``RESULT separate_img_s=.. stacked<S>_vs_separate=.. ... device=..``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_speed import bench_cfg, random_split  # noqa: E402

from ltcifar.device import device_name, select_device  # noqa: E402
from ltcifar.methods.models import MODELS  # noqa: E402
from ltcifar.training.engine import train, train_stacked  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stacks", type=int, nargs="+", default=[2, 3], help="seeds per stack")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (default 20)")
    p.add_argument("--batch", type=int, default=128, help="batch per seed")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the (stacked) model")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    device = select_device(args.device)
    cfg = bench_cfg(args)
    n = args.steps * args.batch
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = random_split(x, rng.integers(0, 10, n).astype(np.int64), device)
    print(
        f"{device_name(device)}, torch {torch.__version__}, {args.model}, batch {args.batch} "
        f"per seed, {args.steps} steps/epoch, compile {args.compile}, "
        f"precision {args.precision if device.type == 'cuda' else 'fp32 (CPU)'}",
        flush=True,
    )
    separate = train(cfg, data, 0, device).history[-1]["img_per_s"]
    rows = [("separate (engine.train)", separate)]
    for s in args.stacks:
        results = train_stacked(cfg, data, list(range(s)), device)
        rows.append((f"stacked x{s}", results[0].history[-1]["img_per_s"]))
        print(f"  {rows[-1][0]}: {rows[-1][1]:.0f} seed-img/s", flush=True)
    print(f"\n{'loop':<26} {'seed-img/s':>11} {'vs separate':>12}")
    for name, rate in rows:
        print(f"{name:<26} {rate:>11.0f} {rate / separate:>12.2f}")
    ratios = " ".join(
        f"stacked{s}_vs_separate={r / separate:.2f}"
        for s, (_, r) in zip(args.stacks, rows[1:], strict=True)
    )
    print(
        f"RESULT separate_img_s={separate:.0f} {ratios} "
        f"device={device_name(device).replace(' ', '_')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
