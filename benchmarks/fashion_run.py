"""A short real training run on a long-tailed Fashion-MNIST step split, without DVC.

Usage (from the repo root): python benchmarks/fashion_run.py [DIR] [--epochs 10] [--loss LOSS]
  [--sampler S] [--mixup M] [--alpha A] [--seed N] [--study]
``--study`` trains with the Fashion-MNIST step study's recipe (studies/fashion_step.params.yaml:
nesterov, weight decay 5e-4, 2 warm-up epochs ramped per step, then cosine), as the
sampler_mixup measurements in studies/fashion_step.md did.
DIR holds the four IDX .gz files (default: benchmarks/data/fashion-mnist if present, else
/usr/share/datasets/fashion-mnist). The split: class 0 keeps n_max, classes 1-9 keep 600, 100 per
class held out for validation (val_policy reserve, so class 0 keeps 6000 - 100 = 5900).
The last line is ``FASHION accuracy=.. macro_f1=.. s_per_epoch=.. img_s=.. device=..``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltcifar.config.catalog import MIXUP_ALIASES, SPLIT, defaults  # noqa: E402
from ltcifar.config.records import SplitConfig  # noqa: E402
from ltcifar.config.rules import check  # noqa: E402
from ltcifar.config.runs import expand_aliases, run_record  # noqa: E402
from ltcifar.config.schema import validate  # noqa: E402
from ltcifar.data.datasets import DATASETS  # noqa: E402
from ltcifar.data.lt_index import build_index  # noqa: E402
from ltcifar.data.split_data import SplitData  # noqa: E402
from ltcifar.device import device_name, select_device  # noqa: E402
from ltcifar.evaluation.inference import Scoring, predict  # noqa: E402
from ltcifar.evaluation.metrics import confusion, summarize  # noqa: E402
from ltcifar.methods.losses import LOSSES  # noqa: E402
from ltcifar.methods.mixup import MIXUPS  # noqa: E402
from ltcifar.methods.models import MODELS, build_model, model_options  # noqa: E402
from ltcifar.methods.samplers import SAMPLERS  # noqa: E402
from ltcifar.training.engine import train  # noqa: E402

CARRIED = ROOT / "benchmarks" / "data" / "fashion-mnist"
SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", type=Path, default=CARRIED if CARRIED.exists() else SYSTEM)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--loss", choices=sorted(LOSSES), default="cross_entropy")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="instance")
    p.add_argument("--mixup", choices=sorted([*MIXUPS, *MIXUP_ALIASES]), default="none")
    p.add_argument("--alpha", type=float, help="mixup_alpha (default: the recipe's, 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study", action="store_true", help="the Fashion-MNIST step study's recipe")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = select_device(args.device)
    arrays = DATASETS["fashion_mnist"].read(args.data)
    classes = [str(c) for c in arrays["classes"]]
    spec = SplitConfig(
        **validate(
            {
                "dataset": "fashion_mnist",
                "shape": "step",
                "n_max": 6000,
                "n_min": 600,
                "k": 1,
                "val_per_class": 100,
                "val_policy": "reserve",
            },
            SPLIT,
        )
    )
    index = build_index("fashion_step", spec, arrays["y_train"], classes)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, device=device)  # a copy: the IDX arrays are read-only

    def rows(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(i, np.int64) for i in index[key]])

    x, y = arrays["x_train"], arrays["y_train"]
    tr, va = rows("train_indices"), rows("val_indices")
    flat = x.reshape(-1, x.shape[-1])
    data = SplitData(
        x=dev(x[tr]),
        y=dev(y[tr]),
        x_val=dev(x[va]),
        y_val=dev(y[va]),
        counts=dev(np.asarray(index["counts"], np.int64)),
        mean=dev(flat.mean(0, dtype=np.float64).astype(np.float32)).view(1, -1, 1, 1),
        std=dev(flat.std(0, dtype=np.float64).astype(np.float32)).view(1, -1, 1, 1),
        classes=classes,
    )
    cfg = defaults()
    cfg.update(
        name="fashion",
        split="fashion_step",
        loss=args.loss,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch,
        schedule="cosine",
        warmup_epochs=0,
        sampler=args.sampler,
        mixup=args.mixup,
        checkpoint="last",
        compile="always" if args.compile else "never",
        head="cosine" if args.loss == "ldam" else "linear",
        transfer=False,  # trained from scratch: what methods.check asks of a run
    )
    if args.alpha is not None:
        cfg["mixup_alpha"] = args.alpha
    if args.study:
        cfg.update(nesterov=True, weight_decay=5e-4, warmup_epochs=2, warmup="step")
    resolved = expand_aliases(cfg, "fashion_run")
    check(resolved, "fashion_run")
    run = run_record(resolved)
    print(
        f"fashion_mnist step split: counts {index['counts']}, {index['total_val']} val; "
        f"{args.model} / {args.loss} / {run.sampler} sampler / {run.mixup} "
        f"(alpha {run.mixup_alpha}), {args.epochs} epochs, batch {args.batch}, seed "
        f"{args.seed}, device {device}"
    )

    t0 = time.perf_counter()
    result = train(run, data, args.seed, device)
    wall = time.perf_counter() - t0
    model = build_model(run.model, len(classes), data.in_channels, **model_options(run))
    model.load_state_dict(result.state_dict)
    model = model.to(device, memory_format=torch.channels_last)
    logits = predict(model, dev(arrays["x_test"]), data.mean, data.std, Scoring.of(run))
    conf = confusion(dev(arrays["y_test"]), logits.argmax(1), len(classes)).cpu().numpy()
    test = summarize(conf)

    steady = result.history[1:] or result.history  # the first epoch warms up (and compiles)
    img_s = float(np.mean([r["img_per_s"] for r in steady]))
    images = len(data.y) // min(args.batch, len(data.y)) * min(args.batch, len(data.y))
    print(f"{'epoch':>5} {'loss':>7} {'train_acc':>9} {'val_f1':>7} {'img/s':>8}")
    for e, r in enumerate(result.history):
        print(
            f"{e:>5} {r['train/loss']:>7.3f} {r['train/accuracy']:>9.3f} "
            f"{r['val/macro_f1']:>7.3f} {r['img_per_s']:>8.0f}"
        )
    recall = np.diag(conf) / conf.sum(1)
    print(f"test per-class recall: {' '.join(f'{v:.2f}' for v in recall)}")
    print(
        f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}, balanced "
        f"accuracy {test['balanced_accuracy']:.4f}; train() took {wall:.1f} s "
        f"({wall / args.epochs:.2f} s/epoch incl. validation and the first epoch)"
    )
    name = device_name(device)
    print(
        f"FASHION accuracy={test['accuracy']:.4f} macro_f1={test['macro_f1']:.4f} "
        f"s_per_epoch={images / img_s:.2f} img_s={img_s:.0f} device={name.replace(' ', '_')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
