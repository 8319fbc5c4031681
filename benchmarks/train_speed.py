"""Training throughput of the engine against the seed notebook's loop and against a bare step.

Usage (from the repo root): python benchmarks/train_speed.py [--images N] [--batch B] [--compile]
    [--device auto|cpu|cuda] [--precision bf16|fp32] [--skip-reference] [--reference-images N]
    python benchmarks/train_speed.py --estimate [--img-s X] [--params params.yaml] [--profile P]

Three loops, one process, one device, one model and batch, on random CIFAR-shaped uint8 data:
  engine     ltcifar.training.engine.train, 2 epochs; the last epoch's img_per_s (the first
             warms up)
  reference  the seed notebook's loop: PIL + torchvision transforms + DataLoader(num_workers=2),
             NCHW, fp32, plain SGD, loss.item() every step
  bare       forward + backward + optimiser step on one batch already on the device
The last line is ``RESULT engine_vs_reference=.. engine_vs_bare=.. engine_img_s=.. device=..``.
``--estimate`` turns a throughput into minutes for every run of params.yaml (last line
``ESTIMATE total_images=.. total_minutes=..``; ``ltcifar.training.estimate``, which
``ltcifar estimate`` prints too). Needs torch, torchvision, numpy, PyYAML, tqdm;
never DVC.
"""

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltcifar.config.catalog import defaults  # noqa: E402
from ltcifar.config.records import RunConfig  # noqa: E402
from ltcifar.data.augment import to_input  # noqa: E402
from ltcifar.data.split_data import SplitData  # noqa: E402
from ltcifar.device import autocast_for, compiled, device_name, select_device  # noqa: E402
from ltcifar.methods.losses import build_loss  # noqa: E402
from ltcifar.methods.models import MODELS, build_model, model_options  # noqa: E402
from ltcifar.training.engine import train  # noqa: E402
from ltcifar.training.estimate import estimate  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
Row = tuple[str, float, float, float]  # loop, img/s, ms/step, peak MB


def bench_cfg(args: argparse.Namespace) -> RunConfig:
    cfg = defaults()
    cfg.update(
        name="bench",
        split="random",
        model=args.model,
        head="linear",
        batch_size=args.batch,
        epochs=2,
        warmup_epochs=0,
        checkpoint="last",
        compile="always" if args.compile else "never",
        precision=args.precision,
    )
    return RunConfig(**cfg)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_mb(device: torch.device, out: list[float]) -> Iterator[None]:
    """Peak memory of the block: CUDA allocations, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        out.append(torch.cuda.max_memory_allocated(device) / 2**20)
    else:
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def random_split(x: np.ndarray, y: np.ndarray, device: torch.device) -> SplitData:
    """A 10-class split of the given random images on the device, with no validation set."""

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    flat = x[:1000].reshape(-1, x.shape[-1])  # random data: a sample gives the statistics
    return SplitData(
        x=t(x),
        y=t(y),
        x_val=t(x[:0]),
        y_val=t(y[:0]),
        counts=t(np.bincount(y, minlength=10)),
        mean=t(flat.mean(0, dtype=np.float32)).view(1, -1, 1, 1),
        std=t(flat.std(0, dtype=np.float32)).view(1, -1, 1, 1),
        classes=[str(c) for c in range(10)],
    )


def engine_loop(cfg: RunConfig, x: np.ndarray, y: np.ndarray, device: torch.device) -> float:
    return train(cfg, random_split(x, y, device), 0, device).history[-1]["img_per_s"]


def bare_loop(cfg: RunConfig, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step of forward, backward and optimiser step, the engine's settings."""
    model = build_model(cfg.model, 10, 3, **model_options(cfg)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = compiled(model, cfg.compile)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        **({"fused": True} if device.type == "cuda" else {"foreach": True}),
    )
    bs = cfg.batch_size
    xb = torch.randint(0, 256, (bs, 32, 32, 3), dtype=torch.uint8, device=device)
    stat = torch.full((1, 3, 1, 1), 128.0, device=device)
    x = to_input(xb, stat, stat / 2, cfg.channels_last)
    y = torch.randint(0, 10, (bs,), device=device)
    targets = F.one_hot(y, 10).float()
    loss_fn = build_loss(cfg, torch.bincount(y, minlength=10))
    model.train()

    def step() -> None:
        with autocast_for(device, cfg.precision):
            logits = fwd(x)
        loss = loss_fn(logits, targets, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def reference_loop(
    cfg: RunConfig, x: np.ndarray, y: np.ndarray, device: torch.device, workers: int
) -> tuple[float, float]:
    """The seed notebook's loop; returns (img/s, s/step) over an epoch minus its first batches."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )

    class Images(Dataset):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return tf(Image.fromarray(x[i])), int(y[i])

    bs = cfg.batch_size
    loader = DataLoader(Images(), batch_size=bs, shuffle=True, num_workers=workers)
    skip = min(5, max(1, len(loader) // 4))
    model = build_model(cfg.model, 10, 3, **model_options(cfg)).to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    model.train()
    t0, images, steps = time.perf_counter(), 0, 0
    for i, (xb, yb) in enumerate(loader):
        if i == skip:
            sync(device)
            t0, images, steps = time.perf_counter(), 0, 0
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        images, steps = images + len(yb), steps + 1
    sync(device)
    dt = time.perf_counter() - t0
    return images / dt, dt / max(steps, 1)


def done(rows: list[Row], row: Row) -> None:
    rows.append(row)
    print(f"  {row[0]}: {row[1]:.0f} img/s, {row[2]:.2f} ms/step, peak {row[3]:.0f} MB", flush=True)


def measure(args: argparse.Namespace) -> float:
    device = select_device(args.device)
    cfg = bench_cfg(args)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype(np.int64)
    rows: list[Row] = []
    mem: list[float] = []
    bs = args.batch
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, model {args.model}, "
        f"batch {bs}, images {args.images}, compile {args.compile}, "
        f"{torch.get_num_threads()} CPU threads, "
        f"precision {args.precision if device.type == 'cuda' else 'fp32 (CPU)'}",
        flush=True,
    )
    with peak_mb(device, mem):
        eng = engine_loop(cfg, x, y, device)
    done(rows, ("engine", eng, 1000 * bs / eng, mem[-1]))
    ref = math.nan
    if not args.skip_reference:
        n = args.reference_images or args.images
        with peak_mb(device, mem):
            ref, s = reference_loop(cfg, x[:n], y[:n], device, args.workers)
        done(rows, (f"reference ({n} img, {args.workers} workers)", ref, 1000 * s, mem[-1]))
    with peak_mb(device, mem):
        s = bare_loop(cfg, device, args.bare_warmup, args.bare_steps)
    done(rows, (f"bare step ({args.bare_steps} steps)", bs / s, 1000 * s, mem[-1]))

    mem_kind = "CUDA max allocated" if device.type == "cuda" else "process peak RSS, cumulative"
    print(f"\n{'loop':<34} {'img/s':>10} {'ms/step':>9} {'peak MB':>9}   ({mem_kind})")
    for name, ips, ms, mb in rows:
        print(f"{name:<34} {ips:>10.0f} {ms:>9.2f} {mb:>9.0f}")
    print(
        f"RESULT engine_vs_reference={eng / ref:.2f} engine_vs_bare={eng * s / bs:.2f} "
        f"engine_img_s={eng:.0f} device={device_name(device).replace(' ', '_')}",
        flush=True,
    )
    return eng


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add: Callable = p.add_argument
    add("--images", type=int, default=50000, help="random training images (default 50000)")
    add("--batch", type=int, default=128)
    add("--model", choices=sorted(MODELS), default="resnet20")
    add("--compile", action="store_true", help="torch.compile the model (engine and bare step)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--precision", choices=("bf16", "fp32"), default="bf16", help="bf16 autocast on CUDA")
    add("--skip-reference", action="store_true", help="skip the notebook-style loop")
    add("--reference-images", type=int, default=0, help="reference loop on the first N images")
    add("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    add("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    add("--bare-warmup", type=int, default=5)
    add("--bare-steps", type=int, default=30)
    add("--estimate", action="store_true", help="estimate the minutes of every params.yaml run")
    add("--img-s", type=float, default=0.0, help="engine img/s for --estimate (else measured)")
    add("--params", default="params.yaml")
    add("--profile", default=None, help="profile of --estimate (default: full)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.estimate:
        img_s = args.img_s or measure(args)
        note = f" at batch {args.batch}" + ("" if args.img_s else ", measured")
        lines = estimate(args.params, args.profile or "full", img_s, args.model, note)
        print("\n" + "\n".join(lines), flush=True)
    else:
        measure(args)


if __name__ == "__main__":
    main()
