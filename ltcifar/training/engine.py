"""The training engine every training stage uses: one run, data resident on the device.

One loop trains one seed, or S seeds of a run stacked into one model
(``ltcifar.methods.stacked``), in named phases: ``build`` (models, optimiser, generators),
``resume``, ``train_one_epoch`` (the hot loop), ``end_of_epoch`` (validation, history, best
epoch), ``save_checkpoints`` and ``select`` (the returned model and its post-hoc tau).

A step launches only what it needs: it slices a per-epoch index tensor, augments with one
gather, mixes with what the mixup drew for the whole epoch (``mixup.Epoch``), and keeps the loss
and its predictions on the device. The host reads loss and training confusion matrix (each image
against its own label; under mixup, the unmixed one) once per epoch; the steps before a
non-finite loss are counted on the device, so that read names the exact step.
"""

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from ltcifar.config.records import RunConfig
from ltcifar.config.stacking import stacking_refusal
from ltcifar.data.augment import Augment, batch_of
from ltcifar.data.split_data import SplitData
from ltcifar.device import autocast_for, compiled, set_determinism
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import Scoring, choose_posthoc_tau, predict
from ltcifar.evaluation.metrics import confusion, summarize
from ltcifar.methods.losses import build_loss
from ltcifar.methods.mixup import MIXUPS, Epoch, StepMix
from ltcifar.methods.models import build_model, model_options
from ltcifar.methods.samplers import SAMPLERS, balanced_draw, sampler_for
from ltcifar.methods.stacked import cat_states, split_states, stack_models
from ltcifar.methods.transfer import apply_mode, init_from_backbone, train_mode
from ltcifar.training import ddp
from ltcifar.training.checkpoints import fingerprint, load_checkpoint, save_atomic, seed_config
from ltcifar.training.optim import Schedule, lr_factor, make_optimizer, scaled_lr

LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    state_dict: dict
    history: list[dict[str, float]]
    selected_epoch: int
    posthoc_tau: float = 0.0  # the post-hoc adjustment the model is scored with


@dataclass
class Run:
    """What the phases of one run share: S seeds (S = 1 unless stacked), one model on the device
    (``models[s]``: seed s's own network, the model itself when S = 1), and per seed its
    generators (``gens``: the same draws on every DDP rank; ``owns``: this rank's own), torch's
    CPU RNG state (``rngs``), history and best epoch so far."""

    cfg: RunConfig
    data: SplitData
    seeds: list[int]
    device: torch.device
    world: ddp.World
    bs: int  # this rank's share of a step's batch
    steps: int  # per epoch
    models: list[nn.Module]
    model: nn.Module
    fwd: nn.Module  # the model as the step calls it: DDP-wrapped, compiled
    opt: torch.optim.SGD
    sched: torch.optim.lr_scheduler.LambdaLR
    loss_fn: Callable
    mix: Callable[[Epoch], StepMix]
    batches: list[Callable]
    gens: list[torch.Generator]
    owns: list[torch.Generator]
    rngs: list[torch.Tensor]
    last_ok: torch.Tensor  # each seed's last finite loss, for the error message
    histories: list[list[dict[str, float]]] = field(default_factory=list)
    best: list[dict] = field(default_factory=list)

    @property
    def images(self) -> int:
        """Images of one step, over every rank and seed."""
        return self.bs * self.world.size * len(self.seeds)

    @property
    def run_cfgs(self) -> list[dict]:
        """Each seed's ``seed_config``: what its checkpoint records and fingerprints."""
        return [seed_config(self.cfg, seed) for seed in self.seeds]

    def states(self) -> list[dict]:
        """Each seed's model state_dict (a stacked model's split into the seeds')."""
        state = self.model.state_dict()
        return [state] if len(self.seeds) == 1 else split_states(state, len(self.seeds))


def train(
    cfg: RunConfig,
    data: SplitData,
    seed: int,
    device: torch.device,
    ckpt_path: Path | None = None,
    log: LogFn | None = None,
    backbone: dict | None = None,
) -> TrainResult:
    """Train one run for one seed, resuming from ``ckpt_path`` if it holds this very run;
    ``backbone``: the state_dict a transfer run starts from. Under DDP (``ltcifar.training.ddp``)
    every rank calls this; only rank 0 validates, logs and checkpoints, and its result is the one.
    """
    paths = None if ckpt_path is None else [ckpt_path]
    return _train(cfg, data, [seed], device, paths, None if log is None else [log], backbone)[0]


def train_stacked(
    cfg: RunConfig,
    data: SplitData,
    seeds: list[int],
    device: torch.device,
    ckpt_paths: list[Path] | None = None,
    logs: list[LogFn] | None = None,
) -> list[TrainResult]:
    """Every seed at once, stacked into one model: per seed, what ``train`` gives, to rounding
    (sums in another order). Seed i's checkpoint ``ckpt_paths[i]`` has ``train``'s format
    (either resumes it); all resume when all hold this run at one epoch."""
    why = stacking_refusal(cfg)
    if why is not None:
        raise PipelineError(f"run {cfg.name!r} cannot train seeds stacked: {why}")
    return _train(cfg, data, seeds, device, ckpt_paths, logs)


def _train(
    cfg: RunConfig,
    data: SplitData,
    seeds: list[int],
    device: torch.device,
    ckpt_paths: list[Path] | None,
    logs: list[LogFn] | None,
    backbone: dict | None = None,
) -> list[TrainResult]:
    """The one training loop, for one seed or for S seeds stacked into one model."""
    _refuse(cfg, data)
    set_determinism(device.type, cfg.deterministic)
    run = build(cfg, data, seeds, device, backbone)
    start = resume(run, ckpt_paths) if ckpt_paths is not None else 0
    logs = logs if run.world.main else None
    _replay(logs, run.histories)
    with _progress(run, start) as bar:
        for epoch in range(start, cfg.epochs):
            if stopped_early(run):  # a resumed run that had stopped
                break
            loss, conf, img_per_s = train_one_epoch(run, epoch, bar)
            end_of_epoch(run, epoch, loss, conf, img_per_s, logs)
            row = run.histories[0][-1]
            shown = {"loss": row["train/loss"], "val_f1": row.get("val/macro_f1", math.nan)}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if not math.isnan(v)})
            done = epoch + 1
            stop = stopped_early(run)
            if ckpt_paths is not None and (
                done % cfg.checkpoint_every == 0 or done == cfg.epochs or stop
            ):
                save_checkpoints(run, done, ckpt_paths)
            if stop:
                break
    return select(run)


def _refuse(cfg: RunConfig, data: SplitData) -> None:
    """What the configs stage refuses too, checked again for callers that bypass it."""
    if cfg.posthoc_tau_grid and len(data.y_val) == 0:
        raise PipelineError(
            f"run {cfg.name!r}: posthoc_tau_grid chooses tau on a validation set, but split "
            f"{cfg.split!r} has none; set val_per_class on the split"
        )
    if cfg.checkpoint != "last" and len(data.y_val) == 0:
        raise PipelineError(
            f"run {cfg.name!r}: checkpoint: {cfg.checkpoint} needs a validation set, "
            f"but split {cfg.split!r} has none; set checkpoint: last or val_per_class"
        )


def build(
    cfg: RunConfig, data: SplitData, seeds: list[int], device: torch.device, backbone: dict | None
) -> Run:
    """Every seed's network and streams, each started as it would be for that seed alone, then
    stacked (S > 1), the optimiser, schedule, loss, mixup and augmented batches."""
    world, C = ddp.current(), data.num_classes
    bs = min(ddp.check(cfg, world), len(data.y) // world.size)
    steps = len(data.y) // (bs * world.size)
    models, gens, owns, rngs = [], [], [], []
    for seed in seeds:
        torch.manual_seed(seed)
        gens.append(torch.Generator(device).manual_seed(seed))
        owns.append(ddp.rank_generator(gens[-1], seed, world))
        net = build_model(cfg.model, C, data.in_channels, **model_options(cfg))
        if backbone is not None:
            init_from_backbone(net, backbone)
        apply_mode(net, cfg.finetune)
        models.append(net.to(device))
        rngs.append(torch.get_rng_state())
    model = models[0] if len(seeds) == 1 else stack_models(models).to(device)
    if cfg.channels_last:  # in place: models[0] may be the model itself
        for m in [model, *models]:
            m.to(memory_format=torch.channels_last)
    # under DDP on CUDA, wrap turns the model's BatchNorms into SyncBatchNorm, in place (the
    # parameters stay the optimiser's, models[0] stays the model); on the CPU they stay per rank
    fwd = compiled(ddp.wrap(model, device, world), cfg.compile)
    opt, aug = make_optimizer(model, cfg, device), Augment.of(cfg)
    return Run(
        cfg=cfg,
        data=data,
        seeds=seeds,
        device=device,
        world=world,
        bs=bs,
        steps=steps,
        models=models,
        model=model,
        fwd=fwd,
        opt=opt,
        sched=torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(Schedule.of(cfg), steps)),
        loss_fn=build_loss(cfg, data.counts),
        mix=MIXUPS[cfg.mixup](cfg),
        batches=[batch_of(data, aug, own) for own in owns],  # augmented with this rank's draws
        gens=gens,
        owns=owns,
        rngs=rngs,
        histories=[[] for _ in seeds],
        best=[{"score": -math.inf, "epoch": -1, "state": None} for _ in seeds],
        last_ok=torch.full((len(seeds),), math.nan, device=device),
    )


def resume(run: Run, ckpt_paths: list[Path]) -> int:
    """Load the seeds' checkpoints if all hold this run at one epoch; the epoch to start from."""
    fps = [fingerprint(c) for c in run.run_cfgs]
    whos = [f"{run.cfg.name} seed {seed}" for seed in run.seeds]
    found = [
        load_checkpoint(path, run.device, fp, rc, who) if path.exists() else None
        for path, fp, rc, who in zip(ckpt_paths, fps, run.run_cfgs, whos, strict=True)
    ]
    loaded = [ck for ck in found if ck is not None]
    if len(loaded) < len(found) or len({ck["epoch"] for ck in loaded}) != 1:
        if loaded:
            print(
                f"not resuming {run.cfg.name} seeds {run.seeds}: their checkpoints are at "
                f"epochs {[ck and ck['epoch'] for ck in found]} (None: none of this run); "
                "starting from 0"
            )
        return 0
    run.model.load_state_dict(cat_states([ck["model"] for ck in loaded]))
    run.opt.load_state_dict(cat_states([ck["opt"] for ck in loaded]))
    run.sched.load_state_dict(loaded[0]["sched"])
    for gen, ck in zip(run.gens, loaded, strict=True):
        gen.set_state(ck["gen"].cpu())
    if run.world.size > 1:
        run.owns[0].set_state(loaded[0]["rank_gens"][run.world.rank].cpu())
    run.rngs = [ck["rng"].cpu() for ck in loaded]
    run.histories, run.best = [ck["history"] for ck in loaded], [ck["best"] for ck in loaded]
    start = loaded[0]["epoch"]
    at = f"seed {run.seeds[0]} from epoch {start} ({ckpt_paths[0]})"
    if len(run.seeds) > 1:
        at = f"seeds {run.seeds} from epoch {start} (stacked)"
    print(f"resuming {run.cfg.name} {at}")
    return start


def _replay(logs: list[LogFn] | None, histories: list[list[dict[str, float]]]) -> None:
    """Log again what a killed run had logged, so the logs of a resumed run stay whole."""
    if logs is None:
        return
    for log, history in zip(logs, histories, strict=True):
        for epoch, row in enumerate(history):
            log(epoch, row)


def _progress(run: Run, start: int) -> tqdm:
    total = run.cfg.epochs * run.steps * run.images
    return tqdm(
        total=total,
        initial=start * run.steps * run.images,
        unit="img",
        unit_scale=True,
        desc=f"{run.cfg.name} s{','.join(map(str, run.seeds))}",
        dynamic_ncols=True,
        **({} if run.world.main else {"disable": True}),  # given, disable beats TQDM_DISABLE
    )


@contextmanager
def _cpu_rng(run: Run, s: int) -> Iterator[None]:
    """Run a block on seed s's stream of torch's CPU generator (mixup draws there), so that
    stacked seeds draw what each would draw alone."""
    outer = torch.get_rng_state()
    torch.set_rng_state(run.rngs[s])
    try:
        yield
    finally:
        run.rngs[s] = torch.get_rng_state()
        torch.set_rng_state(outer)


def _epoch_mix(run: Run, s: int) -> StepMix:
    """Seed s's mixing for one epoch, drawn from its own generators."""
    y, counts, world = run.data.y, run.data.counts, run.world

    def balanced(k: int) -> torch.Tensor:  # this rank's shard of a draw for every rank
        return ddp.shard(balanced_draw(y, counts, k * world.size, run.gens[s]), world)

    with _cpu_rng(run, s):
        return run.mix(Epoch(run.steps, run.bs, run.gens[s], balanced, run.batches[s]))


def train_one_epoch(
    run: Run, epoch: int, bar: tqdm
) -> tuple[list[float], list[torch.Tensor], float]:
    """One epoch of steps; each seed's mean loss and training confusion matrix, and img/s.

    A step sums the seeds' mean losses: each seed's parameters get the gradient of its own loss,
    undivided, and SGD is elementwise, so one stacked step is S separate ones."""
    cfg, data, S, C, bs = run.cfg, run.data, len(run.seeds), run.data.num_classes, run.bs
    train_mode(run.model, cfg.finetune)
    t0 = time.perf_counter()
    sampler = SAMPLERS[sampler_for(cfg, epoch)]
    draw = [sampler(data.y, data.counts, epoch, cfg.epochs, g) for g in run.gens]
    orders = torch.stack([ddp.shard(order, run.world) for order in draw])
    mixes = [_epoch_mix(run, s) for s in range(S)]
    loss_sum = torch.zeros(S, device=run.device)
    ok = torch.ones(S, dtype=torch.bool, device=run.device)  # every loss so far finite
    n_ok = torch.zeros(S, device=run.device)  # steps before the first non-finite loss
    preds = torch.empty(S, run.steps * bs, dtype=torch.long, device=run.device)
    for step in range(run.steps):
        idx = orders[:, step * bs : (step + 1) * bs]
        xs, ts = zip(*(mixes[s](step, *run.batches[s](idx[s])) for s in range(S)), strict=True)
        x = torch.cat(xs, 1)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(run.device, cfg.precision):
            logits = run.fwd(x).view(len(x), S, -1, C)  # (B, S, experts, C); 1 expert but BalPoE
        heads = [logits[:, s, 0] if logits.shape[2] == 1 else logits[:, s] for s in range(S)]
        losses = torch.stack([run.loss_fn(heads[s], ts[s], epoch) for s in range(S)])
        run.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        if cfg.grad_clip > 0:
            clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.opt.step()
        run.sched.step()
        losses = losses.detach()
        loss_sum += losses
        ok &= torch.isfinite(losses)
        n_ok += ok
        run.last_ok = torch.where(ok, losses.float(), run.last_ok)
        preds[:, step * bs : (step + 1) * bs] = logits.detach().mean(2).argmax(2).T
        bar.update(run.images)
    conf = [confusion(data.y[orders[s, : run.steps * bs]], preds[s], C) for s in range(S)]
    ddp.reduce_epoch(loss_sum, n_ok, conf[0], run.world)
    totals, good, lasts = torch.stack([loss_sum.float(), n_ok, run.last_ok]).tolist()  # one sync
    for s, seed in enumerate(run.seeds):
        if good[s] < run.steps:
            raise PipelineError(_non_finite(cfg, seed, epoch, int(good[s]), run.steps, lasts[s]))
    img_per_s = run.steps * run.images / (time.perf_counter() - t0)
    return [t / run.steps for t in totals], conf, img_per_s


def _non_finite(cfg: RunConfig, seed: int, epoch: int, good: int, steps: int, last: float) -> str:
    before = "no finite loss seen before it"
    if math.isfinite(last):
        before = f"the last finite loss was {last:.6g}"
    lr = scaled_lr(cfg) * lr_factor(Schedule.of(cfg), steps)(epoch * steps + good)  # the head's
    return (
        f"run {cfg.name!r} seed {seed}: the training loss is not finite at epoch {epoch}, "
        f"step {good} of {steps} (counting from 0; {before}); training stopped and this epoch "
        f"is not checkpointed; the lr at that step was {lr:.6g} (base lr {cfg.lr}): "
        f"lower lr, set grad_clip, or precision: fp32 (or check the loss {cfg.loss!r})"
    )


def validate(
    model: nn.Module, data: SplitData, cfg: RunConfig, training_loss: Callable | None = None
) -> dict[str, float]:
    """Scores on the validation images: cross-entropy, the summary metrics and, given the run's
    ``training_loss`` (logits, labels), that loss too: what ``checkpoint: best_val_loss`` and
    early stopping watch, as the seed study watched its criterion on held-out images."""
    if len(data.y_val) == 0:
        return {}
    logits = predict(model, data.x_val, data.mean, data.std, Scoring.of(cfg), data.counts)
    conf = confusion(data.y_val, logits.argmax(1), data.num_classes).cpu().numpy()
    loss = F.cross_entropy(logits, data.y_val).item()
    row = {"val/loss": loss, **{f"val/{k}": v for k, v in summarize(conf).items()}}
    if training_loss is not None:
        row["val/training_loss"] = training_loss(logits, data.y_val).item()
    return row


def validation_score(row: dict[str, float], checkpoint: str) -> float:
    """What ``checkpoint`` maximises over epochs: validation macro-F1 (``best_val``), or minus
    the run's training loss on validation images (``best_val_loss``); -inf on ranks that do
    not validate."""
    if checkpoint == "best_val_loss":
        return -row.get("val/training_loss", math.inf)
    return row.get("val/macro_f1", -math.inf)


def stopped_early(run: Run) -> bool:
    """Early stopping: ``patience`` epochs have passed without a better validation score (the
    one ``checkpoint`` selects on) for every seed; 0 never stops."""
    patience = run.cfg.patience
    return patience > 0 and all(
        len(history) - 1 - best["epoch"] >= patience
        for history, best in zip(run.histories, run.best, strict=True)
    )


def end_of_epoch(
    run: Run,
    epoch: int,
    loss: list[float],
    conf: list[torch.Tensor],
    img_per_s: float,
    logs: list[LogFn] | None,
) -> None:
    """Each seed's history row (training scores, validation on rank 0), its log line, and its
    best epoch so far under ``checkpoint: best_val`` or ``best_val_loss``."""
    checkpoint = run.cfg.checkpoint

    def training_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return run.loss_fn(logits, F.one_hot(y, logits.shape[1]).float(), epoch)

    watched = training_loss if checkpoint == "best_val_loss" else None
    for s, state in enumerate(run.states()):
        if len(run.seeds) > 1:
            run.models[s].load_state_dict(state)
        row = {
            "train/loss": loss[s],
            **{f"train/{k}": v for k, v in summarize(conf[s].cpu().numpy()).items()},
            **(validate(run.models[s], run.data, run.cfg, watched) if run.world.main else {}),
            "lr": run.opt.param_groups[-1]["lr"],
            "img_per_s": img_per_s,
        }
        run.histories[s].append(row)
        if logs is not None:
            logs[s](epoch, row)
        score = validation_score(row, checkpoint)
        if checkpoint != "last" and score > run.best[s]["score"]:
            run.best[s] = {"score": score, "epoch": epoch, "state": copy.deepcopy(state)}


def save_checkpoints(run: Run, done: int, ckpt_paths: list[Path]) -> None:
    """Each seed's resumable state after ``done`` epochs, written by rank 0 with every rank's
    own generator, so a resumed rank keeps its stream."""
    S = len(run.seeds)
    ranks = {"rank_gens": ddp.gather_state(run.owns[0], run.world)} if run.world.size > 1 else {}
    opt = run.opt.state_dict()
    opt_states = [opt] if S == 1 else split_states(opt, S)
    states = run.states()
    for s, rc in enumerate(run.run_cfgs if run.world.main else []):
        checkpoint = {
            "fingerprint": fingerprint(rc),
            "device": run.device.type,  # a generator's state fits only its own device type
            "config": rc,  # so a mismatch can name the keys that changed
            "epoch": done,
            "model": states[s],
            "opt": opt_states[s],
            "sched": run.sched.state_dict(),
            "gen": run.gens[s].get_state(),
            "rng": run.rngs[s],
            "history": run.histories[s],
            "best": run.best[s],
        }
        save_atomic({**checkpoint, **ranks}, ckpt_paths[s])


def select(run: Run) -> list[TrainResult]:
    """Each seed's model (the last epoch's, or the best on validation images) and the post-hoc
    tau it is scored with, chosen on validation images, never the test set."""
    cfg, results = run.cfg, []
    for s, state in enumerate(run.states()):
        selected = len(run.histories[s]) - 1
        if cfg.checkpoint != "last":
            state, selected = run.best[s]["state"], run.best[s]["epoch"]
        tau = cfg.posthoc_tau
        if cfg.posthoc_tau_grid and run.world.main:
            data, raw_cfg = run.data, replace(cfg, posthoc_tau=0.0)
            run.models[s].load_state_dict(state)
            raw = predict(run.models[s], data.x_val, data.mean, data.std, Scoring.of(raw_cfg))
            tau = choose_posthoc_tau(raw, data.y_val, data.counts, cfg.posthoc_tau_grid)
        results.append(TrainResult(state, run.histories[s], selected, tau))
    return results
