"""The training engine every training stage uses: one run, one seed, data resident on the device.

The hot loop launches only what a step needs: it slices a per-epoch index tensor, augments with
one gather, mixes with what the mixup drew for the whole epoch (``mixup.Epoch``), and keeps the
loss and each step's predictions on the device. The training confusion matrix is built once per
epoch from those predictions against each image's own label (under mixup, the unmixed one), and
the host reads loss and matrix once per epoch. That read also reveals a
non-finite loss: the steps before the first one are counted on the device, so the error names
the exact step, found at the end of its epoch rather than at a per-step sync. Checkpoints hold
everything an exact resume needs (model, optimiser, schedule, RNG streams, history): on the CPU
a resumed run is bit-exact; on CUDA only with ``deterministic: true``, since cuDNN's autotuner
and atomic-add kernels otherwise pick differently from run to run. Checkpoints hold plain data
and tensors only, and are read with ``weights_only=True``: a file is never code.
"""

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from ltcifar import ddp
from ltcifar.augment import batch_of
from ltcifar.data import SplitData
from ltcifar.device import autocast_for, compiled
from ltcifar.errors import PipelineError
from ltcifar.files import atomic_path
from ltcifar.inference import choose_posthoc_tau, predict
from ltcifar.losses import build_loss
from ltcifar.metrics import confusion, summarize
from ltcifar.mixup import MIXUPS, Epoch
from ltcifar.models import build_model, model_options
from ltcifar.samplers import SAMPLERS, balanced_draw, sampler_for
from ltcifar.transfer import apply_mode, init_from_backbone, param_groups, train_mode

LogFn = Callable[[int, dict[str, float]], None]


def lr_factor(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the base lr: linear warm-up, then multi-step or cosine decay.

    ``warmup: step`` ramps every step; ``warmup: epoch`` holds (e + 1) / warmup_epochs through
    epoch e, as LDAM-DRW's ``adjust_learning_rate``, which sets the lr once per epoch. The
    multi-step decay is gamma^(milestones passed), changing only at epoch boundaries.
    """
    warm, total = cfg["warmup_epochs"] * steps_per_epoch, cfg["epochs"] * steps_per_epoch
    multistep = cfg["schedule"] == "multistep"
    milestones = [m * steps_per_epoch for m in cfg["milestones"]] if multistep else []

    def factor(step: int) -> float:
        if step < warm:
            if cfg["warmup"] == "epoch":
                return (step // steps_per_epoch + 1) / cfg["warmup_epochs"]
            return (step + 1) / warm
        if not multistep:
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
        return cfg["gamma"] ** sum(step >= m for m in milestones)

    return factor


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _shaping(cfg: dict) -> dict:
    """The config keys that shape the result (not the run's name or report group, its
    checkpoint interval, or the evaluation batch size, which changes no prediction: lowering it
    after running out of memory resumes the run)."""
    unshaping = ("checkpoint_every", "name", "group", "eval_batch_size")
    return {k: v for k, v in cfg.items() if k not in unshaping}


def fingerprint(cfg: dict) -> str:
    """Hash of everything that shapes the result, so a checkpoint never resumes a different run."""
    return hashlib.sha256(_canonical(_shaping(cfg)).encode()).hexdigest()[:16]


def _config_diff(old: dict, new: dict) -> list[str]:
    """The result-shaping keys whose values differ between two configs (or exist in one only)."""
    a, b = _shaping(old), _shaping(new)
    return sorted(
        k
        for k in a.keys() | b.keys()
        if k not in a or k not in b or _canonical(a[k]) != _canonical(b[k])
    )


def load_checkpoint(path: Path, device: torch.device, fp: str, run_cfg: dict) -> dict | None:
    """The checkpoint at ``path`` if it holds this very run on this kind of device; else None,
    after saying why in one line, so a changed config never silently restarts (or resumes) a
    different run. A CUDA generator's state does not fit a CPU one (nor back), hence the device."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torn by a disk fault, or not a checkpoint at all
        why = (str(e).splitlines() or [""])[0]
        raise PipelineError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {why}); "
            "delete it to start this run afresh"
        ) from e
    head = f"not resuming {run_cfg['name']} seed {run_cfg['seed']} from {path}"
    if ck["fingerprint"] != fp:
        saved = ck.get("config")  # absent in checkpoints written before configs were stored
        changed = ", ".join(_config_diff(saved, run_cfg)) if saved is not None else "unknown"
        print(
            f"{head}: its config fingerprint {ck['fingerprint']} differs from this run's {fp} "
            f"(changed: {changed}); starting from epoch 0"
        )
        return None
    written_on = ck.get("device", "an unrecorded device")  # absent in older checkpoints
    if written_on != device.type:
        print(
            f"{head}: it was written on {written_on} and this run is on {device.type}, whose "
            "random-number streams differ; starting from epoch 0"
        )
        return None
    return ck


@dataclass
class TrainResult:
    state_dict: dict
    history: list[dict[str, float]]
    selected_epoch: int
    posthoc_tau: float = 0.0  # the post-hoc adjustment the model is scored with


def validate(model, data: SplitData, cfg: dict) -> dict[str, float]:
    if len(data.y_val) == 0:
        return {}
    logits = predict(model, data.x_val, data.mean, data.std, cfg, data.counts)
    conf = confusion(data.y_val, logits.argmax(1), data.num_classes).cpu().numpy()
    loss = F.cross_entropy(logits, data.y_val).item()
    return {"val/loss": loss, **{f"val/{k}": v for k, v in summarize(conf).items()}}


def non_finite_message(
    cfg: dict, seed: int, epoch: int, step: int, steps: int, last: float, lr: float
) -> str:
    before = (
        f"the last finite loss was {last:.6g}"
        if math.isfinite(last)
        else "no finite loss seen before it"
    )
    return (
        f"run {cfg['name']!r} seed {seed}: the training loss is not finite at epoch {epoch}, "
        f"step {step} of {steps} (counting from 0; {before}); training stopped and this epoch "
        f"is not checkpointed; the lr at that step was {lr:.6g} (base lr {cfg['lr']}): "
        f"lower lr, set grad_clip, or precision: fp32 (or check the loss {cfg['loss']!r})"
    )


def train(
    cfg: dict,
    data: SplitData,
    seed: int,
    device: torch.device,
    ckpt_path: Path | None = None,
    log: LogFn | None = None,
    backbone: dict | None = None,
) -> TrainResult:
    """Train one run for one seed; resume from ``ckpt_path`` if it holds this very run.

    ``backbone`` is the state_dict a transfer run starts from (all but the new head). In a
    process group (``processes: N``, see ``ltcifar.ddp``) every rank calls this; only rank 0
    validates, logs and checkpoints, and only its result is meant to be saved."""
    if cfg["posthoc_tau_grid"] and len(data.y_val) == 0:
        raise PipelineError(
            f"run {cfg['name']!r}: posthoc_tau_grid chooses tau on a validation set, but split "
            f"{cfg['split']!r} has none; set val_per_class on the split"
        )
    if cfg["checkpoint"] == "best_val" and len(data.y_val) == 0:
        raise PipelineError(
            f"run {cfg['name']!r}: checkpoint: best_val needs a validation set, "
            f"but split {cfg['split']!r} has none; set checkpoint: last or val_per_class"
        )
    torch.manual_seed(seed)
    if cfg["deterministic"]:  # cuBLAS reads it when CUDA first calls it; unset, CUDA raises
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.use_deterministic_algorithms(cfg["deterministic"])
    world = ddp.current()
    gen = torch.Generator(device).manual_seed(seed)  # the same draws on every rank
    own = ddp.rank_generator(gen, seed, world)  # this rank's own draws (augmentation)
    C, n = data.num_classes, len(data.y)
    bs = min(ddp.check(cfg, world), n // world.size)  # this rank's share of the batch
    steps, images = n // (bs * world.size), bs * world.size  # images: of a step, all ranks
    model = build_model(cfg["model"], C, data.in_channels, **model_options(cfg))
    if backbone is not None:
        init_from_backbone(model, backbone)
    apply_mode(model, cfg["finetune"])
    model = model.to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    fwd = compiled(ddp.wrap(model, device, world), device, cfg)
    opt = make_optimizer(model, cfg, device)
    factor = lr_factor(cfg, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = build_loss(cfg, data.counts)
    mix = MIXUPS[cfg["mixup"]](cfg)

    batch = batch_of(data, cfg, own)  # augmented with this rank's own draws

    def balanced_indices(n: int) -> torch.Tensor:
        """n class-balanced indices for this rank: its shard of a draw for every rank."""
        return ddp.shard(balanced_draw(data.y, data.counts, n * world.size, gen), world)

    history: list[dict[str, float]] = []
    best = {"score": -1.0, "epoch": -1, "state": None}
    run_cfg = {**cfg, "seed": seed}
    start, fp = 0, fingerprint(run_cfg)
    if ckpt_path is not None and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, device, fp, run_cfg)
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            gen.set_state(ck["gen"].cpu())
            if world.size > 1:
                own.set_state(ck["rank_gens"][world.rank].cpu())
            torch.set_rng_state(ck["rng"].cpu())
            start, history, best = ck["epoch"], ck["history"], ck["best"]
            print(f"resuming {cfg['name']} seed {seed} from epoch {start} ({ckpt_path})")
    log = log if world.main else None
    if log is not None:  # replay what a killed run had logged, so the logs stay whole
        for epoch, row in enumerate(history):
            log(epoch, row)

    last_ok = torch.full((), math.nan, device=device)  # the last finite training loss
    bar = tqdm(
        total=cfg["epochs"] * steps * images,
        initial=start * steps * images,
        unit="img",
        unit_scale=True,
        desc=f"{cfg['name']} s{seed}",
        dynamic_ncols=True,
        **({} if world.main else {"disable": True}),  # given, disable would beat TQDM_DISABLE
    )
    for epoch in range(start, cfg["epochs"]):
        train_mode(model, cfg["finetune"])
        t0 = time.perf_counter()
        sampler = SAMPLERS[sampler_for(cfg, epoch)]
        order = ddp.shard(sampler(data.y, data.counts, epoch, cfg["epochs"], gen), world)
        step_mix = mix(Epoch(steps, bs, gen, balanced_indices, batch))
        loss_sum = torch.zeros((), device=device)
        ok = torch.ones((), dtype=torch.bool, device=device)  # every loss so far finite
        n_ok = torch.zeros((), device=device)  # steps before the first non-finite loss
        preds = torch.empty(steps * bs, dtype=torch.long, device=device)
        for s in range(steps):
            idx = order[s * bs : (s + 1) * bs]
            xb, targets = step_mix(s, *batch(idx))
            with autocast_for(device, cfg):
                logits = fwd(xb)
            loss = loss_fn(logits, targets, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"] > 0:
                clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            ok &= torch.isfinite(loss.detach())
            n_ok += ok
            last_ok = torch.where(ok, loss.detach().float(), last_ok)
            preds[s * bs : (s + 1) * bs] = logits.detach().argmax(1)
            bar.update(images)
        conf = confusion(data.y[order[: steps * bs]], preds, C)  # each image's own label
        ddp.reduce_epoch(loss_sum, n_ok, conf, world)
        # the epoch's one host-device sync
        total, good_steps, last = torch.stack([loss_sum.float(), n_ok, last_ok]).tolist()
        if good_steps < steps:
            bar.close()
            lr = scaled_lr(cfg) * factor(epoch * steps + int(good_steps))  # the head group's
            raise PipelineError(
                non_finite_message(cfg, seed, epoch, int(good_steps), steps, last, lr)
            )
        train_loss = total / steps
        img_per_s = steps * images / (time.perf_counter() - t0)
        row = {
            "train/loss": train_loss,
            **{f"train/{k}": v for k, v in summarize(conf.cpu().numpy()).items()},
            **(validate(model, data, cfg) if world.main else {}),
            "lr": opt.param_groups[-1]["lr"],
            "img_per_s": img_per_s,
        }
        history.append(row)
        if log is not None:
            log(epoch, row)
        if world.main and cfg["checkpoint"] == "best_val" and row["val/macro_f1"] > best["score"]:
            best = {
                "score": row["val/macro_f1"],
                "epoch": epoch,
                "state": copy.deepcopy(model.state_dict()),
            }
        shown = {"loss": row["train/loss"], "val_f1": row.get("val/macro_f1", math.nan)}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if not math.isnan(v)})
        done = epoch + 1
        if ckpt_path is not None and (done % cfg["checkpoint_every"] == 0 or done == cfg["epochs"]):
            ranks = {"rank_gens": ddp.gather_state(own, world)} if world.size > 1 else {}
            if world.main:
                save_atomic(
                    {
                        "fingerprint": fp,
                        "device": device.type,  # a generator's state fits only its own device type
                        "config": run_cfg,  # so a mismatch can name the keys that changed
                        "epoch": done,
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "gen": gen.get_state(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                        "best": best,
                        **ranks,
                    },
                    ckpt_path,
                )
    bar.close()
    if cfg["checkpoint"] == "best_val":
        state, selected = best["state"], best["epoch"]
    else:
        state, selected = model.state_dict(), cfg["epochs"] - 1
    tau = cfg["posthoc_tau"]
    if cfg["posthoc_tau_grid"] and world.main:  # chosen on validation images, never the test set
        model.load_state_dict(state)
        raw = predict(model, data.x_val, data.mean, data.std, {**cfg, "posthoc_tau": 0.0})
        tau = choose_posthoc_tau(raw, data.y_val, data.counts, cfg["posthoc_tau_grid"])
    return TrainResult(state, history, selected, tau)


def scaled_lr(cfg: dict) -> float:
    """The base lr for the run's global batch: ``lr_scaling: linear`` multiplies ``lr`` by
    batch_size / lr_base_batch (Goyal et al. 2017), ``sqrt`` by its square root (Hoffer et
    al. 2017), ``none`` keeps it; so a run moved to more GPUs with a larger batch says how."""
    if cfg["lr_scaling"] == "none":
        return cfg["lr"]
    ratio = cfg["batch_size"] / cfg["lr_base_batch"]
    return cfg["lr"] * (ratio if cfg["lr_scaling"] == "linear" else ratio**0.5)


def make_optimizer(model: torch.nn.Module, cfg: dict, device: torch.device) -> torch.optim.SGD:
    """The run's SGD over its trainable parameters (backbone and head groups, see
    ``transfer.param_groups``) at ``scaled_lr``, shared by separate and stacked training."""
    cfg = {**cfg, "lr": scaled_lr(cfg)}
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nesterov"],
        weight_decay=cfg["weight_decay"],
        **sgd_kernel(device),
    )


def sgd_kernel(device: torch.device) -> dict[str, bool]:
    """SGD's fused kernel on CUDA (one launch per step), the foreach one on the CPU."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through ``atomic_path``: a kill never leaves a torn checkpoint or model."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)  # a file object: torch.save names the zip's records after a path
