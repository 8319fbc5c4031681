"""Operators the engine dispatches per training step, by mixup and sampler: a launch count.

Usage (from the repo root): python benchmarks/step_ops.py [--steps N] [--batch B]

On a GPU each dispatched operator is (about) one kernel launch, and small nets are launch-bound,
so the count per step is what the hot loop costs beyond the maths; it is the same on any machine,
so it is measured on the CPU. Each row trains one epoch of ResNet20 (fp32, eager) on random
CIFAR-shaped data under ``TorchDispatchMode``: a 2-epoch run's operators less a 1-epoch run's
(so the run's setup cancels out; the per-epoch draws and confusion matrix stay in), divided by
the steps. ``bare`` is forward + backward + optimiser step alone. The last line is
``RESULT bare=.. none=.. mixup=.. balanced_mixup=.. cutmix=.. class_balanced=..``.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_speed import bench_cfg, random_split  # noqa: E402

from ltcifar.data.augment import to_input  # noqa: E402
from ltcifar.methods.models import build_model, model_options  # noqa: E402
from ltcifar.training.engine import train  # noqa: E402
from ltcifar.training.optim import make_optimizer  # noqa: E402


class Count(TorchDispatchMode):
    """Counts every operator dispatched while active (autograd's backward ones included)."""

    n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def per_step(fn, steps: int) -> float:
    with Count() as c:
        fn()
    return c.n / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    cpu = torch.device("cpu")
    cfg = bench_cfg(argparse.Namespace(model="resnet20", batch=args.batch, compile=False,
                                       precision="fp32"))  # fmt: skip
    cfg = replace(cfg, channels_last=False)
    n = args.steps * args.batch
    rng = np.random.default_rng(0)
    data = random_split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                        rng.integers(0, 10, n).astype(np.int64), cpu)  # fmt: skip
    model = build_model("resnet20", 10, 3, **model_options(cfg))
    opt = make_optimizer(model, cfg, cpu)
    x = to_input(data.x[: args.batch], data.mean, data.std, False)
    y = data.y[: args.batch]

    def bare() -> None:
        for _ in range(args.steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    rows = {"bare": per_step(bare, args.steps)}
    for name, over in (
        ("none", {}),
        ("mixup", {"mixup": "mixup"}),
        ("balanced_mixup", {"mixup": "balanced_mixup"}),
        ("cutmix", {"mixup": "cutmix"}),
        ("class_balanced", {"sampler": "class_balanced"}),
    ):
        one, two = (replace(cfg, **over, epochs=e) for e in (1, 2))
        setup_and_one = per_step(lambda c=one: train(c, data, 0, cpu), args.steps)
        rows[name] = per_step(lambda c=two: train(c, data, 0, cpu), args.steps) - setup_and_one
    print(f"operators per step, {args.steps} steps of batch {args.batch} (epoch 2 of 2, fp32):")
    for name, ops in rows.items():
        print(f"  {name:<15} {ops:8.1f}  (+{ops - rows['bare']:.1f} over bare)")
    print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in rows.items()))


if __name__ == "__main__":
    main()
