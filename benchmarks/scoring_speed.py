"""Scoring throughput: what one evaluate stage spends on its test set, the quick profile's
largest cost after per-stage start-up.

Usage (from the repo root): python benchmarks/scoring_speed.py [--images N] [--batch B]
    [--threads T] [--repeats R]

``ltcifar.evaluation.inference.predict`` on random uint8 images of two shapes, fp32, in the
evaluate stage's batches: the quick profile's (ResNet20 on 28x28x1, Fashion-MNIST's test set is
10,000 images) and the CIFAR one (ResNet32 on 32x32x3). Each timing is the median of
``--repeats`` passes after one warm-up pass. Run it at two commits to price a change of the
model's forward. The last line is ``RESULT fashion_img_s=.. cifar_img_s=.. threads=..``.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltcifar.evaluation.inference import Scoring, predict  # noqa: E402
from ltcifar.methods.models import build_model  # noqa: E402

SHAPES = {"fashion": ("resnet20", 28, 1), "cifar": ("resnet32", 32, 3)}


def img_per_s(model_name: str, size: int, channels: int, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = build_model(model_name, 10, in_channels=channels)
    x = torch.randint(0, 256, (args.images, size, size, channels), dtype=torch.uint8)
    mean, std = torch.full((1, channels, 1, 1), 128.0), torch.full((1, channels, 1, 1), 64.0)
    how = Scoring(args.batch, channels_last=False, precision="fp32")
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        predict(model, x, mean, std, how)
        times.append(time.perf_counter() - start)
    return args.images / statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=128, help="the quick profile's eval_batch_size")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rates = {name: img_per_s(*shape, args) for name, shape in SHAPES.items()}
    for name, rate in rates.items():
        print(f"{name:8s} {SHAPES[name][0]}: {rate:,.0f} img/s")
    print(
        f"RESULT fashion_img_s={rates['fashion']:.0f} cifar_img_s={rates['cifar']:.0f} "
        f"threads={args.threads}"
    )


if __name__ == "__main__":
    main()
