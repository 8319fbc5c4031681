"""The training engine every training stage uses: one run, one seed, data resident on the device.

The hot loop slices a per-epoch index tensor, augments with one gather, and accumulates loss and
the confusion matrix on the device; the host reads them once per epoch. Checkpoints hold
everything a bit-exact resume needs (model, optimiser, schedule, RNG streams, history).
"""

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ltcifar.augment import crop_flip, to_input
from ltcifar.config import RECIPE
from ltcifar.data import SplitData
from ltcifar.errors import PipelineError
from ltcifar.losses import build_loss, log_prior
from ltcifar.methods import sampler_for
from ltcifar.metrics import confusion, summarize
from ltcifar.mixup import MIXUPS
from ltcifar.models import build_model, model_options
from ltcifar.samplers import SAMPLERS, class_weighted_draw
from ltcifar.transfer import apply_mode, load_pretrained, param_groups, train_mode

LogFn = Callable[[int, dict[str, float]], None]


def select_device(name: str = "auto") -> torch.device:
    return torch.device(
        "cuda"
        if name == "auto" and torch.cuda.is_available()
        else "cpu"
        if name == "auto"
        else name
    )


def device_name(device: torch.device) -> str:
    """The card's or CPU's model name, so every reported number says which machine made it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        if cpuinfo.exists()
        else []
    )
    return f"cpu: {models[0] if models else 'unknown'} ({torch.get_num_threads()} threads)"


def lr_factor(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the base lr: linear warm-up, then multi-step or cosine decay.

    ``warmup: step`` ramps every step; ``warmup: epoch`` holds (e + 1) / warmup_epochs through
    epoch e, as LDAM-DRW's ``adjust_learning_rate``, which sets the lr once per epoch. The
    multi-step decay is gamma^(milestones passed), changing only at epoch boundaries.
    """
    warm, total = cfg["warmup_epochs"] * steps_per_epoch, cfg["epochs"] * steps_per_epoch
    milestones = [m * steps_per_epoch for m in cfg["milestones"]]

    def factor(step: int) -> float:
        if step < warm:
            if cfg["warmup"] == "epoch":
                return (step // steps_per_epoch + 1) / cfg["warmup_epochs"]
            return (step + 1) / warm
        if cfg["schedule"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
        return cfg["gamma"] ** sum(step >= m for m in milestones)

    return factor


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: dict,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (fp32) of uint8 images, in large batches under inference_mode.

    With ``counts`` and ``posthoc_tau > 0``, returns post-hoc logit-adjusted scores
    z - tau log pi (Menon et al. 2021), whose argmax is the balanced-error prediction.
    """
    model.eval()
    bs = cfg["eval_batch_size"]
    with torch.inference_mode(), autocast_for(x.device, cfg):
        logits = torch.cat(
            [
                model(to_input(x[i : i + bs], mean, std, cfg["channels_last"])).float()
                for i in range(0, len(x), bs)
            ]
        )
    if counts is not None and cfg["posthoc_tau"] > 0:
        logits = logits - cfg["posthoc_tau"] * log_prior(counts.to(logits.device))
    return logits


def autocast_for(device: torch.device, cfg: dict):
    """bf16 autocast on CUDA unless ``precision: fp32``; the CPU always runs fp32."""
    if device.type == "cuda" and cfg["precision"] == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def fingerprint(cfg: dict) -> str:
    """Hash of everything that shapes the result, so a checkpoint never resumes a different run."""
    keep = {k: v for k, v in cfg.items() if k not in ("checkpoint_every", "name")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    state_dict: dict
    history: list[dict[str, float]]
    selected_epoch: int


def _validate(model, data: SplitData, cfg: dict) -> dict[str, float]:
    if len(data.y_val) == 0:
        return {}
    logits = predict(model, data.x_val, data.mean, data.std, cfg, data.counts)
    conf = confusion(data.y_val, logits.argmax(1), data.num_classes).cpu().numpy()
    loss = F.cross_entropy(logits, data.y_val).item()
    return {"val/loss": loss, **{f"val/{k}": v for k, v in summarize(conf).items()}}


def train(
    cfg: dict,
    data: SplitData,
    seed: int,
    device: torch.device,
    ckpt_path: Path | None = None,
    log: LogFn | None = None,
) -> TrainResult:
    """Train one run for one seed; resume from ``ckpt_path`` if it holds this very run."""
    if cfg["checkpoint"] == "best_val" and len(data.y_val) == 0:
        raise PipelineError(
            f"run {cfg['name']!r}: checkpoint: best_val needs a validation set, "
            f"but split {cfg['split']!r} has none; set checkpoint: last or val_per_class"
        )
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.use_deterministic_algorithms(cfg["deterministic"])
    gen = torch.Generator(device).manual_seed(seed)
    C, n, bs = data.num_classes, len(data.y), min(cfg["batch_size"], len(data.y))
    steps = n // bs
    model = build_model(cfg["model"], C, data.in_channels, **model_options(cfg))
    if cfg["init"] == "pretrained":
        load_pretrained(model, cfg, seed)
    apply_mode(model, cfg["finetune"])
    model = model.to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if cfg["compile"] else model
    opt = torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nesterov"],
        weight_decay=cfg["weight_decay"],
        **({"fused": True} if device.type == "cuda" else {"foreach": True}),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps))
    loss_fn = build_loss(cfg, data.counts)
    mix = MIXUPS[cfg["mixup"]](cfg)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised images and one-hot targets of the given indices."""
        xb = data.x[idx]
        if cfg["augment"]:
            xb = crop_flip(xb, gen, 4, cfg["pad_mode"])
        x = to_input(xb, data.mean, data.std, cfg["channels_last"])
        return x, F.one_hot(data.y[idx], C).float()

    def balanced_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return batch(class_weighted_draw(data.y, data.counts, torch.ones_like(data.counts), n, gen))

    history: list[dict[str, float]] = []
    best = {"score": -1.0, "epoch": -1, "state": None}
    start, fp = 0, fingerprint({**cfg, "seed": seed})
    if ckpt_path is not None and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck["fingerprint"] == fp:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            gen.set_state(ck["gen"].cpu())
            torch.set_rng_state(ck["rng"].cpu())
            start, history, best = ck["epoch"], ck["history"], ck["best"]
            print(f"resuming {cfg['name']} seed {seed} from epoch {start} ({ckpt_path})")
    if log is not None:  # replay what a killed run had logged, so the logs stay whole
        for epoch, row in enumerate(history):
            log(epoch, row)

    bar = tqdm(
        total=cfg["epochs"] * steps * bs,
        initial=start * steps * bs,
        unit="img",
        unit_scale=True,
        desc=f"{cfg['name']} s{seed}",
        dynamic_ncols=True,
    )
    for epoch in range(start, cfg["epochs"]):
        train_mode(model, cfg["finetune"])
        t0 = time.perf_counter()
        order = SAMPLERS[sampler_for(cfg, epoch)](data.y, data.counts, epoch, cfg["epochs"], gen)
        loss_sum = torch.zeros((), device=device)
        conf = torch.zeros(C, C, dtype=torch.long, device=device)
        for s in range(steps):
            idx = order[s * bs : (s + 1) * bs]
            xb, targets = mix(*batch(idx), gen, balanced_batch)
            with autocast_for(device, cfg):
                logits = fwd(xb)
            loss = loss_fn(logits, targets, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            conf += confusion(data.y[idx], logits.detach().argmax(1), C)
            bar.update(bs)
        train_loss = loss_sum.item() / steps  # the epoch's one host-device sync
        img_per_s = steps * bs / (time.perf_counter() - t0)
        row = {
            "train/loss": train_loss,
            **{f"train/{k}": v for k, v in summarize(conf.cpu().numpy()).items()},
            **_validate(model, data, cfg),
            "lr": opt.param_groups[-1]["lr"],
            "img_per_s": img_per_s,
        }
        history.append(row)
        if log is not None:
            log(epoch, row)
        if cfg["checkpoint"] == "best_val" and row["val/macro_f1"] > best["score"]:
            best = {
                "score": row["val/macro_f1"],
                "epoch": epoch,
                "state": copy.deepcopy(model.state_dict()),
            }
        bar.set_postfix(
            {
                k.split("/")[-1] if k != "val/macro_f1" else "val_f1": f"{v:.3g}"
                for k, v in row.items()
                if k in ("train/loss", "val/macro_f1")
            }
        )
        done = epoch + 1
        if ckpt_path is not None and (done % cfg["checkpoint_every"] == 0 or done == cfg["epochs"]):
            save_atomic(
                {
                    "fingerprint": fp,
                    "epoch": done,
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "gen": gen.get_state(),
                    "rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                },
                ckpt_path,
            )
    bar.close()
    if cfg["checkpoint"] == "best_val":
        return TrainResult(best["state"], history, best["epoch"])
    return TrainResult(model.state_dict(), history, cfg["epochs"] - 1)


def load_trained(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model saved by the train stage, rebuilt from the config saved beside its weights."""
    if not path.exists():
        raise PipelineError(f"{path} not found; run `dvc repro` on the train stage of this run")
    saved = torch.load(path, map_location=device, weights_only=False)
    # recipe keys added since the checkpoint was written take their defaults
    cfg = saved["config"] = {**{k: f.default for k, f in RECIPE.items()}, **saved["config"]}
    model = build_model(
        cfg["model"], len(saved["classes"]), saved["in_channels"], **model_options(cfg)
    )
    model.load_state_dict(saved["state_dict"])
    model = model.to(
        device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format
    )
    return model, saved


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
