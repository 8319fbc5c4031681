"""The training engine every training stage uses: one run, data resident on the device.

One loop trains one seed, or S seeds of a run stacked into one model (``ltcifar.stacked``). A
step launches only what it needs: it slices a per-epoch index tensor, augments with one gather,
mixes with what the mixup drew for the whole epoch (``mixup.Epoch``), and keeps the loss and its
predictions on the device. The host reads loss and training confusion matrix (each image against
its own label; under mixup, the unmixed one) once per epoch; the steps before a non-finite loss
are counted on the device, so that read names the exact step. Checkpoints hold everything an
exact resume needs (model, optimiser, schedule, RNG streams, history): on the CPU a resumed run
is bit-exact; on CUDA only with ``deterministic: true`` (cuDNN's autotuner and atomic adds
otherwise vary). They hold plain data and tensors, read with ``weights_only=True``: never code.
"""

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from ltcifar.mixup import MIXUPS, Epoch, StepMix
from ltcifar.models import build_model, model_options
from ltcifar.samplers import SAMPLERS, balanced_draw, sampler_for
from ltcifar.stacked import cat_states, refusal, split_state, split_states, stack_models
from ltcifar.transfer import apply_mode, init_from_backbone, param_groups, train_mode

LogFn = Callable[[int, dict[str, float]], None]


def lr_factor(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the base lr: linear warm-up, then multi-step or cosine decay.

    ``warmup: step`` ramps every step; ``warmup: epoch`` holds (e + 1) / warmup_epochs through
    epoch e, as LDAM-DRW's ``adjust_learning_rate``. Multi-step: gamma^(milestones passed)."""
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
    """The keys that shape the result: not the name, group, checkpoint interval or evaluation
    batch size (which changes no prediction: lowering it after running out of memory resumes)."""
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
    """The checkpoint at ``path`` if it holds this very run on this kind of device (a CUDA
    generator's state does not fit a CPU one); else None, after saying why in one line."""
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


def _non_finite(cfg: dict, seed: int, epoch: int, good: int, steps: int, last: float) -> str:
    before = "no finite loss seen before it"
    if math.isfinite(last):
        before = f"the last finite loss was {last:.6g}"
    lr = scaled_lr(cfg) * lr_factor(cfg, steps)(epoch * steps + good)  # the head group's
    return (
        f"run {cfg['name']!r} seed {seed}: the training loss is not finite at epoch {epoch}, "
        f"step {good} of {steps} (counting from 0; {before}); training stopped and this epoch "
        f"is not checkpointed; the lr at that step was {lr:.6g} (base lr {cfg['lr']}): "
        f"lower lr, set grad_clip, or precision: fp32 (or check the loss {cfg['loss']!r})"
    )


@contextmanager
def _cpu_rng(states: list[torch.Tensor], s: int) -> Iterator[None]:
    """Run a block on seed s's stream of torch's CPU generator (mixup draws there), so that
    stacked seeds draw what each would draw alone."""
    outer = torch.get_rng_state()
    torch.set_rng_state(states[s])
    try:
        yield
    finally:
        states[s] = torch.get_rng_state()
        torch.set_rng_state(outer)


def train(
    cfg: dict,
    data: SplitData,
    seed: int,
    device: torch.device,
    ckpt_path: Path | None = None,
    log: LogFn | None = None,
    backbone: dict | None = None,
) -> TrainResult:
    """Train one run for one seed, resuming from ``ckpt_path`` if it holds this very run;
    ``backbone``: the state_dict a transfer run starts from. Under DDP (``ltcifar.ddp``) every
    rank calls this; only rank 0 validates, logs and checkpoints, and its result is the one."""
    paths = None if ckpt_path is None else [ckpt_path]
    return _train(cfg, data, [seed], device, paths, None if log is None else [log], backbone)[0]


def train_stacked(
    cfg: dict,
    data: SplitData,
    seeds: list[int],
    device: torch.device,
    ckpt_paths: list[Path] | None = None,
    logs: list[LogFn] | None = None,
) -> list[TrainResult]:
    """Every seed at once, stacked into one model (``ltcifar.stacked``): per seed, what ``train``
    gives, to rounding (sums in another order). Seed i's checkpoint ``ckpt_paths[i]`` has
    ``train``'s format (either resumes it); all resume when all hold this run at one epoch."""
    why = refusal(cfg, data)
    if why is not None:
        raise PipelineError(f"run {cfg['name']!r} cannot train seeds stacked: {why}")
    return _train(cfg, data, seeds, device, ckpt_paths, logs)


def _train(
    cfg: dict,
    data: SplitData,
    seeds: list[int],
    device: torch.device,
    ckpt_paths: list[Path] | None,
    logs: list[LogFn] | None,
    backbone: dict | None = None,
) -> list[TrainResult]:
    """The one training loop, for one seed or for S seeds stacked into one model with (B, S,
    classes) logits. A step sums the seeds' mean losses: each seed's parameters get the gradient
    of its own loss, undivided, and SGD is elementwise, so one stacked step is S separate ones."""
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
    if cfg["deterministic"]:  # cuBLAS reads it when CUDA first calls it; unset, CUDA raises
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.use_deterministic_algorithms(cfg["deterministic"])
    world, S, C, n = ddp.current(), len(seeds), data.num_classes, len(data.y)
    bs = min(ddp.check(cfg, world), n // world.size)  # this rank's share of the batch
    steps, images = n // (bs * world.size), bs * world.size * S  # images: of a step, all ranks
    models, gens, owns, rngs = [], [], [], []
    for seed in seeds:  # each seed's streams start as they would for that seed alone
        torch.manual_seed(seed)
        gens.append(torch.Generator(device).manual_seed(seed))  # the same draws on every rank
        owns.append(ddp.rank_generator(gens[-1], seed, world))  # this rank's own (augmenting)
        net = build_model(cfg["model"], C, data.in_channels, **model_options(cfg))
        if backbone is not None:
            init_from_backbone(net, backbone)
        apply_mode(net, cfg["finetune"])
        models.append(net.to(device))  # a stacked run keeps them to validate each seed
        rngs.append(torch.get_rng_state())
    model = models[0] if S == 1 else stack_models(models).to(device)
    if cfg["channels_last"]:  # in place: models[0] may be the model itself
        for m in [model, *models]:
            m.to(memory_format=torch.channels_last)
    fwd = compiled(ddp.wrap(model, device, world), device, cfg)
    opt = make_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps))
    loss_fn = build_loss(cfg, data.counts)
    mix = MIXUPS[cfg["mixup"]](cfg)
    batches = [batch_of(data, cfg, own) for own in owns]  # augmented with this rank's own draws

    def epoch_mix(s: int) -> StepMix:
        """Seed s's mixing for one epoch, drawn from its own generators."""

        def balanced(k: int) -> torch.Tensor:  # this rank's shard of a draw for every rank
            return ddp.shard(balanced_draw(data.y, data.counts, k * world.size, gens[s]), world)

        with _cpu_rng(rngs, s):
            return mix(Epoch(steps, bs, gens[s], balanced, batches[s]))

    histories: list[list[dict[str, float]]] = [[] for _ in seeds]
    best = [{"score": -1.0, "epoch": -1, "state": None} for _ in seeds]
    run_cfgs = [{**cfg, "seed": seed} for seed in seeds]
    fps = [fingerprint(c) for c in run_cfgs]
    start, found = 0, []
    if ckpt_paths is not None:
        found = [
            load_checkpoint(path, device, fp, rc) if path.exists() else None
            for path, fp, rc in zip(ckpt_paths, fps, run_cfgs, strict=True)
        ]
    if found and all(found) and len({ck["epoch"] for ck in found}) == 1:
        model.load_state_dict(cat_states([ck["model"] for ck in found]))
        opt.load_state_dict(cat_states([ck["opt"] for ck in found]))
        sched.load_state_dict(found[0]["sched"])
        for gen, ck in zip(gens, found, strict=True):
            gen.set_state(ck["gen"].cpu())
        if world.size > 1:
            owns[0].set_state(found[0]["rank_gens"][world.rank].cpu())
        rngs = [ck["rng"].cpu() for ck in found]
        start = found[0]["epoch"]
        histories, best = [ck["history"] for ck in found], [ck["best"] for ck in found]
        at = f"seed {seeds[0]} from epoch {start} ({ckpt_paths[0]})"
        if S > 1:
            at = f"seeds {seeds} from epoch {start} (stacked)"
        print(f"resuming {cfg['name']} {at}")
    elif any(found):
        print(
            f"not resuming {cfg['name']} seeds {seeds}: their checkpoints are at epochs "
            f"{[ck and ck['epoch'] for ck in found]} (None: none of this run); starting from 0"
        )
    logs = logs if world.main else None
    if logs is not None:  # replay what a killed run had logged, so the logs stay whole
        for log, history in zip(logs, histories, strict=True):
            for epoch, row in enumerate(history):
                log(epoch, row)

    last_ok = torch.full((S,), math.nan, device=device)  # each seed's last finite loss
    bar = tqdm(
        total=cfg["epochs"] * steps * images,
        initial=start * steps * images,
        unit="img",
        unit_scale=True,
        desc=f"{cfg['name']} s{','.join(map(str, seeds))}",
        dynamic_ncols=True,
        **({} if world.main else {"disable": True}),  # given, disable would beat TQDM_DISABLE
    )
    for epoch in range(start, cfg["epochs"]):
        train_mode(model, cfg["finetune"])
        t0 = time.perf_counter()
        sampler = SAMPLERS[sampler_for(cfg, epoch)]
        orders = torch.stack(
            [ddp.shard(sampler(data.y, data.counts, epoch, cfg["epochs"], g), world) for g in gens]
        )
        mixes = [epoch_mix(s) for s in range(S)]
        loss_sum = torch.zeros(S, device=device)
        ok = torch.ones(S, dtype=torch.bool, device=device)  # every loss so far finite
        n_ok = torch.zeros(S, device=device)  # steps before the first non-finite loss
        preds = torch.empty(S, steps * bs, dtype=torch.long, device=device)
        for step in range(steps):
            idx = orders[:, step * bs : (step + 1) * bs]
            xs, ts = zip(*(mixes[s](step, *batches[s](idx[s])) for s in range(S)), strict=True)
            x = torch.cat(xs, 1)
            if cfg["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, cfg):
                logits = fwd(x).view(len(x), S, C)
            losses = torch.stack([loss_fn(logits[:, s], ts[s], epoch) for s in range(S)])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if cfg["grad_clip"] > 0:
                clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            sched.step()
            losses = losses.detach()
            loss_sum += losses
            ok &= torch.isfinite(losses)
            n_ok += ok
            last_ok = torch.where(ok, losses.float(), last_ok)
            preds[:, step * bs : (step + 1) * bs] = logits.detach().argmax(2).T
            bar.update(images)
        conf = [confusion(data.y[orders[s, : steps * bs]], preds[s], C) for s in range(S)]
        if world.size > 1:
            ddp.reduce_epoch(loss_sum, n_ok, conf[0], world)
        # the epoch's one host-device sync
        totals, good, lasts = torch.stack([loss_sum.float(), n_ok, last_ok]).tolist()
        for s, seed in enumerate(seeds):
            if good[s] < steps:
                bar.close()
                raise PipelineError(_non_finite(cfg, seed, epoch, int(good[s]), steps, lasts[s]))
        img_per_s = steps * images / (time.perf_counter() - t0)
        states = [model.state_dict()] if S == 1 else split_state(model, S)
        for s, state in enumerate(states):
            if S > 1:
                models[s].load_state_dict(state)
            row = {
                "train/loss": totals[s] / steps,
                **{f"train/{k}": v for k, v in summarize(conf[s].cpu().numpy()).items()},
                **(validate(models[s], data, cfg) if world.main else {}),
                "lr": opt.param_groups[-1]["lr"],
                "img_per_s": img_per_s,
            }
            histories[s].append(row)
            if logs is not None:
                logs[s](epoch, row)
            score = row.get("val/macro_f1", -1.0)  # ranks but 0 do not validate
            if cfg["checkpoint"] == "best_val" and score > best[s]["score"]:
                best[s] = {"score": score, "epoch": epoch, "state": copy.deepcopy(state)}
        row = histories[0][-1]
        shown = {"loss": row["train/loss"], "val_f1": row.get("val/macro_f1", math.nan)}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if not math.isnan(v)})
        done = epoch + 1
        due = done % cfg["checkpoint_every"] == 0 or done == cfg["epochs"]
        if ckpt_paths is not None and due:
            ranks = {"rank_gens": ddp.gather_state(owns[0], world)} if world.size > 1 else {}
            opt_states = [opt.state_dict()] if S == 1 else split_states(opt.state_dict(), S)
            for s in range(S if world.main else 0):  # rank 0 writes them
                checkpoint = {
                    "fingerprint": fps[s],
                    "device": device.type,  # a generator's state fits only its own device type
                    "config": run_cfgs[s],  # so a mismatch can name the keys that changed
                    "epoch": done,
                    "model": states[s],
                    "opt": opt_states[s],
                    "sched": sched.state_dict(),
                    "gen": gens[s].get_state(),
                    "rng": rngs[s],
                    "history": histories[s],
                    "best": best[s],
                }
                save_atomic({**checkpoint, **ranks}, ckpt_paths[s])
    bar.close()
    results = []
    for s, state in enumerate([model.state_dict()] if S == 1 else split_state(model, S)):
        selected = cfg["epochs"] - 1
        if cfg["checkpoint"] == "best_val":
            state, selected = best[s]["state"], best[s]["epoch"]
        tau = cfg["posthoc_tau"]
        if cfg["posthoc_tau_grid"] and world.main:  # chosen on validation images, never test
            models[s].load_state_dict(state)
            raw = predict(models[s], data.x_val, data.mean, data.std, {**cfg, "posthoc_tau": 0.0})
            tau = choose_posthoc_tau(raw, data.y_val, data.counts, cfg["posthoc_tau_grid"])
        results.append(TrainResult(state, histories[s], selected, tau))
    return results


def scaled_lr(cfg: dict) -> float:
    """The base lr for the global batch: ``lr_scaling: linear`` scales ``lr`` by batch_size /
    lr_base_batch (Goyal et al. 2017), ``sqrt`` by its square root (Hoffer et al. 2017)."""
    if cfg["lr_scaling"] == "none":
        return cfg["lr"]
    ratio = cfg["batch_size"] / cfg["lr_base_batch"]
    return cfg["lr"] * (ratio if cfg["lr_scaling"] == "linear" else ratio**0.5)


def make_optimizer(model: torch.nn.Module, cfg: dict, device: torch.device) -> torch.optim.SGD:
    """The run's SGD over its trainable parameters (``transfer.param_groups``) at ``scaled_lr``."""
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
