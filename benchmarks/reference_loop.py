"""A minimal training loop written apart from the engine, to check the engine against on real data.

Usage (repo root, after `dvc repro lt_index` made the split):
  python benchmarks/reference_loop.py data/prepared/<dataset>.npz data/splits/<split>.json \
      [--loop reference|engine] [--sampler instance|class_balanced] [--alpha A] \
      [--schedule onecycle|cosine] [--epochs 15] [--batch 128] [--seed 0] [--threads N]

``--loop reference`` trains with plain PyTorch and nothing of ``ltcifar.training``: a fresh draw
of the batch's indices every step (uniform over images, or over classes then images), crop
(pad 4) and flip per image, mixup of the batch with a permutation of itself with one
lam ~ Beta(a, a) per step, soft-target cross-entropy, SGD (lr 0.1, nesterov momentum 0.9,
weight decay 5e-4) under a one-cycle or a warm-up (2 epochs) + cosine schedule, the last
epoch's model. ``--loop engine`` trains the same setting through ``ltcifar.training.engine``
(``sampler`` and ``mixup`` as params.yaml names them). Both use the project's ResNet20 and
print one line: ``LOOP ... macro_f1=... balanced_accuracy=...`` on the test set.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltcifar.config.catalog import defaults  # noqa: E402
from ltcifar.config.records import RunConfig  # noqa: E402
from ltcifar.data.split_data import split_data  # noqa: E402
from ltcifar.evaluation.inference import Scoring, predict  # noqa: E402
from ltcifar.evaluation.metrics import confusion, summarize  # noqa: E402
from ltcifar.methods.models import build_model  # noqa: E402
from ltcifar.training.engine import train  # noqa: E402


def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image: a 32x32 window of the zero-padded (4) image, flipped with probability 1/2."""
    n, h, w, _ = x.shape
    padded = F.pad(x.permute(0, 3, 1, 2), (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (n, 2), generator=gen).tolist()
    flips = (torch.rand(n, generator=gen) < 0.5).tolist()
    out = torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offsets)])
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flips, strict=True)])


def reference(args, data) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model("resnet20", data.num_classes, 3)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    steps = len(data.y) // args.batch
    total = steps * args.epochs
    if args.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)
    else:
        warm = 2 * steps

        def factor(k: int) -> float:
            if k < warm:
                return (k + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    image_weight = (1.0 / data.counts.double())[data.y]
    beta = torch.distributions.Beta(args.alpha, args.alpha) if args.alpha > 0 else None
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(data.y), generator=gen)
        for s in range(steps):
            if args.sampler == "class_balanced":
                idx = torch.multinomial(image_weight, args.batch, replacement=True, generator=gen)
            else:
                idx = order[s * args.batch : (s + 1) * args.batch]
            x = (crop_flip(data.x[idx], gen).float() - data.mean) / data.std
            t = F.one_hot(data.y[idx], data.num_classes).float()
            if beta is not None:
                lam, perm = float(beta.sample()), torch.randperm(len(idx), generator=gen)
                x, t = lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]
            loss = -(t * F.log_softmax(model(x), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch} loss {loss.item():.3f} lr {sched.get_last_lr()[0]:.4f}", flush=True)
    return model


def engine(args, data) -> torch.nn.Module:
    """The same setting through the engine (warm-up + cosine only; sampler_mixup is
    class_balanced + mixup)."""
    cfg = {
        **defaults(),
        "name": "engine",
        "split": "s",
        "model": "resnet20",
        "head": "linear",
        "epochs": args.epochs,
        "batch_size": args.batch,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 2,
        "warmup": "step",
        "sampler": args.sampler,
        "mixup": "mixup" if args.alpha > 0 else "none",
        "mixup_alpha": args.alpha or 1.0,
        "compile": "never",
        "eval_batch_size": 256,
    }
    result = train(RunConfig(**cfg), data, args.seed, torch.device("cpu"))
    model = build_model("resnet20", data.num_classes, 3)
    model.load_state_dict(result.state_dict)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prepared", type=Path)
    p.add_argument("split", type=Path)
    p.add_argument("--loop", choices=("reference", "engine"), default="reference")
    p.add_argument("--sampler", choices=("instance", "class_balanced"), default="instance")
    p.add_argument("--alpha", type=float, default=0.0, help="mixup's Beta(a, a); 0: no mixup")
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    index = json.loads(args.split.read_text())
    data = split_data(index, torch.device("cpu"), args.prepared.parents[1])
    t0 = time.perf_counter()
    model = (reference if args.loop == "reference" else engine)(args, data)
    took = time.perf_counter() - t0
    with np.load(args.prepared) as npz:
        x, y = torch.from_numpy(npz["x_test"]), torch.from_numpy(npz["y_test"])
    how = Scoring(batch_size=256, channels_last=False, precision="fp32")
    logits = predict(model, x, data.mean, data.std, how)
    scores = summarize(confusion(y, logits.argmax(1), data.num_classes).numpy())
    settings = f"sampler={args.sampler} alpha={args.alpha} schedule={args.schedule}"
    print(
        f"LOOP {args.loop} {settings} epochs={args.epochs} seed={args.seed} "
        f"macro_f1={scores['macro_f1']:.4f} balanced_accuracy={scores['balanced_accuracy']:.4f} "
        f"minutes={took / 60:.1f}"
    )


if __name__ == "__main__":
    main()
