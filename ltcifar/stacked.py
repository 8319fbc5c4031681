"""Several seeds of one run trained as one stacked model, so one step does the work of S.

A stacked CIFAR net is the ordinary net with every layer widened S times and split into S
independent groups: convolutions with ``groups=S`` over S x channels, BatchNorm over S x C
channels (its per-channel statistics are then per seed), the option-A shortcut padding each
seed's channels, and a grouped head giving (B, S, classes) logits. Seed s sees its own batch in
channel slice s; no value ever crosses seeds. Every stacked tensor is the concatenation of the
S seeds' tensors along dim 0 under the ordinary names, so stacking is ``cat`` and splitting is
``chunk``: each seed's state_dict, and so its model file, is exactly what ``engine.train`` gives.

Training sums the S per-seed mean losses: seed s's parameters get the gradient of its own loss
only, undivided, and SGD (momentum, weight decay) is elementwise, so one stacked step is S
separate steps. Each seed keeps its own generator and CPU RNG stream, as in ``engine.train``.
The point is small nets on a large card, where one run leaves it idle; a busy CPU gains nothing.
"""

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ltcifar.augment import batch_of
from ltcifar.data import SplitData
from ltcifar.device import autocast_for, compiled
from ltcifar.engine import (
    LogFn,
    TrainResult,
    fingerprint,
    load_checkpoint,
    lr_factor,
    make_optimizer,
    non_finite_message,
    save_atomic,
    scaled_lr,
    validate,
)
from ltcifar.errors import PipelineError
from ltcifar.inference import choose_posthoc_tau, predict
from ltcifar.losses import build_loss
from ltcifar.metrics import confusion, summarize
from ltcifar.mixup import MIXUPS, Epoch, StepMix
from ltcifar.models import CifarNet, CosineHead, LinearHead, PadShortcut, build_model, model_options
from ltcifar.samplers import SAMPLERS, balanced_draw, sampler_for


class StackedPad(nn.Module):
    """Option-A shortcut of S seeds: subsample, then zero-pad each seed's channels alone."""

    def __init__(self, seeds: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.seeds, self.out_channels, self.stride = seeds, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        b, _, h, w = x.shape
        x = x.reshape(b, self.seeds, -1, h, w)
        extra = self.out_channels - x.shape[2]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)).reshape(b, -1, h, w)


class StackedLinearHead(nn.Module):
    """S linear heads, weight (S*K, F) and bias (S*K,), in fp32: (B, S*F) -> (B, S, K)."""

    def __init__(self, seeds: int, features: int, num_classes: int) -> None:
        super().__init__()
        self.seeds = seeds
        self.weight = nn.Parameter(torch.empty(seeds * num_classes, features))
        self.bias = nn.Parameter(torch.empty(seeds * num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.seeds
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().reshape(len(x), s, -1)
            w, b = self.weight.reshape(s, -1, x.shape[2]), self.bias.reshape(s, -1)
            return torch.einsum("bsf,skf->bsk", x, w) + b


class StackedCosineHead(nn.Module):
    """S cosine heads, weight (S*F, K), each seed's features and weights normalised alone."""

    def __init__(self, seeds: int, features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.seeds, self.scale = seeds, scale
        self.weight = nn.Parameter(torch.empty(seeds * features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.seeds
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float().reshape(len(x), s, -1), dim=2)
            w = F.normalize(self.weight.reshape(s, -1, self.weight.shape[1]), dim=1)
            return self.scale * torch.einsum("bsf,sfk->bsk", x, w)


def _stacked_module(m: nn.Module, s: int) -> nn.Module | None:
    """The S-seed twin of one leaf layer (uninitialised: the state_dict fills it), else None."""
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(
            s * m.in_channels,
            s * m.out_channels,
            m.kernel_size,
            m.stride,
            m.padding,
            groups=s * m.groups,
            bias=m.bias is not None,
        )
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(s * m.num_features, m.eps, m.momentum)
    if isinstance(m, PadShortcut):
        return StackedPad(s, m.out_channels, m.stride)
    if isinstance(m, LinearHead):
        return StackedLinearHead(s, m.in_features, m.out_features)
    if isinstance(m, CosineHead):
        return StackedCosineHead(s, *m.weight.shape, m.scale)
    return None


def _swap_layers(module: nn.Module, s: int) -> None:
    for name, child in module.named_children():
        twin = _stacked_module(child, s)
        if twin is None:
            _swap_layers(child, s)
        else:
            setattr(module, name, twin)


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One stacked CifarNet holding the S given CifarNets (same architecture), on their device."""
    if not all(isinstance(m, CifarNet) for m in models):
        raise PipelineError("stacked seeds support the CIFAR nets only (CifarNet)")
    stacked = copy.deepcopy(models[0])
    _swap_layers(stacked, len(models))
    stacked.load_state_dict(_cat([m.state_dict() for m in models]))
    return stacked


def _cat(states: list[dict]) -> dict:
    """Seed dicts of tensors -> stacked dict. 0-dim tensors (BatchNorm's num_batches_tracked)
    and non-tensors are shared: every seed counts the same steps."""
    return {
        k: torch.cat([st[k] for st in states]) if torch.is_tensor(v) and v.dim() else v
        for k, v in states[0].items()
    }


def _chunk(state: dict, seeds: int) -> list[dict]:
    """The inverse of ``_cat``, as copies rather than views of the stacked storage."""
    out: list[dict] = [{} for _ in range(seeds)]
    for k, v in state.items():
        parts = v.chunk(seeds) if torch.is_tensor(v) and v.dim() else [v] * seeds
        for d, part in zip(out, parts, strict=True):
            d[k] = part.clone() if torch.is_tensor(part) else part
    return out


def split_state(stacked: nn.Module, seeds: int) -> list[dict]:
    """The S ordinary state_dicts of a stacked model."""
    return _chunk(stacked.state_dict(), seeds)


def _split_opt(state: dict, seeds: int) -> list[dict]:
    """Per-seed SGD state_dicts: the momentum buffers are stacked like their parameters."""
    per_param = {i: _chunk(st, seeds) for i, st in state["state"].items()}
    return [
        {"state": {i: st[s] for i, st in per_param.items()}, "param_groups": state["param_groups"]}
        for s in range(seeds)
    ]


def _cat_opt(states: list[dict]) -> dict:
    first = states[0]
    stacked = {i: _cat([st["state"][i] for st in states]) for i in first["state"]}
    return {"state": stacked, "param_groups": first["param_groups"]}


def refusal(cfg: dict, data: SplitData) -> str | None:
    """Why ``train_stacked`` cannot reproduce ``engine.train`` for this run, or None."""
    with torch.device("meta"):  # only the class matters: build nothing
        net = build_model(cfg["model"], data.num_classes, data.in_channels, **model_options(cfg))
    if not isinstance(net, CifarNet):
        return f"model {cfg['model']!r} is not a CIFAR net; only those are stacked"
    if cfg["finetune"] != "scratch":
        return f"finetune {cfg['finetune']!r} starts from a backbone; stacking trains from scratch"
    if cfg["processes"] > 1:
        return f"processes: {cfg['processes']} trains over ranks; stacking trains in one process"
    if (cfg["posthoc_tau_grid"] or cfg["checkpoint"] == "best_val") and len(data.y_val) == 0:
        return (
            "posthoc_tau_grid and checkpoint: best_val need a validation set; this split has none"
        )
    return None


@contextmanager
def _cpu_rng(states: list[torch.Tensor], s: int) -> Iterator[None]:
    """Run a block on seed s's stream of torch's CPU generator (mixup draws its lambda there)."""
    outer = torch.get_rng_state()
    torch.set_rng_state(states[s])
    try:
        yield
    finally:
        states[s] = torch.get_rng_state()
        torch.set_rng_state(outer)


def train_stacked(
    cfg: dict,
    data: SplitData,
    seeds: list[int],
    device: torch.device,
    ckpt_paths: list[Path] | None = None,
    logs: list[LogFn] | None = None,
) -> list[TrainResult]:
    """Train one run for every seed of ``seeds`` at once; per seed, what ``engine.train`` gives.

    Results match separate runs to float rounding (sums in another order), not bit for bit.
    ``ckpt_paths[i]`` and ``logs[i]`` are seed i's: its checkpoint is ``engine.train``'s own
    format (so either function resumes it), and the call resumes when every seed's checkpoint
    holds this run at one epoch. A row's ``img_per_s`` counts the images of all seeds.
    """
    why = refusal(cfg, data)
    if why is not None:
        raise PipelineError(f"run {cfg['name']!r} cannot train seeds stacked: {why}")
    S, C = len(seeds), data.num_classes
    n, bs = len(data.y), min(cfg["batch_size"], len(data.y))
    steps = n // bs
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.use_deterministic_algorithms(cfg["deterministic"])
    models, gens, rngs = [], [], []
    for seed in seeds:  # each seed's streams start exactly as engine.train starts them
        torch.manual_seed(seed)
        gens.append(torch.Generator(device).manual_seed(seed))
        models.append(build_model(cfg["model"], C, data.in_channels, **model_options(cfg)))
        rngs.append(torch.get_rng_state())
    model = stack_models(models).to(device)
    models = [m.to(device) for m in models]  # kept to validate each seed with the engine's code
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        models = [m.to(memory_format=torch.channels_last) for m in models]
    fwd = compiled(model, device, cfg)
    opt = make_optimizer(model, cfg, device)
    factor = lr_factor(cfg, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = build_loss(cfg, data.counts)
    mix = MIXUPS[cfg["mixup"]](cfg)

    batches = [batch_of(data, cfg, gen) for gen in gens]  # each seed augments with its own

    def seed_epoch(s: int) -> StepMix:
        """Seed s's mixing for one epoch, drawn from its own generator and CPU stream."""
        gen = gens[s]
        with _cpu_rng(rngs, s):
            balanced = lambda k: balanced_draw(data.y, data.counts, k, gen)  # noqa: E731
            return mix(Epoch(steps, bs, gen, balanced, batches[s]))

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
        model.load_state_dict(_cat([ck["model"] for ck in found]))
        opt.load_state_dict(_cat_opt([ck["opt"] for ck in found]))
        sched.load_state_dict(found[0]["sched"])
        for gen, ck in zip(gens, found, strict=True):
            gen.set_state(ck["gen"].cpu())
        rngs = [ck["rng"].cpu() for ck in found]
        start = found[0]["epoch"]
        histories, best = [ck["history"] for ck in found], [ck["best"] for ck in found]
        print(f"resuming {cfg['name']} seeds {seeds} from epoch {start} (stacked)")
    elif any(found):
        print(
            f"not resuming {cfg['name']} seeds {seeds}: their checkpoints are at epochs "
            f"{[ck and ck['epoch'] for ck in found]} (None: none of this run); starting from 0"
        )
    if logs is not None:  # replay what a killed run had logged, so the logs stay whole
        for log, history in zip(logs, histories, strict=True):
            for epoch, row in enumerate(history):
                log(epoch, row)
    last_ok = torch.full((S,), math.nan, device=device)
    for epoch in range(start, cfg["epochs"]):
        model.train()
        t0 = time.perf_counter()
        sampler = SAMPLERS[sampler_for(cfg, epoch)]
        orders = torch.stack([sampler(data.y, data.counts, epoch, cfg["epochs"], g) for g in gens])
        mixes = [seed_epoch(s) for s in range(S)]
        loss_sum = torch.zeros(S, device=device)
        ok = torch.ones(S, dtype=torch.bool, device=device)
        n_ok = torch.zeros(S, device=device)
        preds = torch.empty(S, steps * bs, dtype=torch.long, device=device)
        for step in range(steps):
            idx = orders[:, step * bs : (step + 1) * bs]
            xs, ts = zip(*(mixes[s](step, *batches[s](idx[s])) for s in range(S)), strict=True)
            x = torch.cat(xs, 1)
            if cfg["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, cfg):
                logits = fwd(x)
            losses = torch.stack([loss_fn(logits[:, s], ts[s], epoch) for s in range(S)])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # a sum, not a mean: each seed's gradient stays undivided
            opt.step()
            sched.step()
            losses = losses.detach()
            loss_sum += losses
            ok &= torch.isfinite(losses)
            n_ok += ok
            last_ok = torch.where(ok, losses.float(), last_ok)
            preds[:, step * bs : (step + 1) * bs] = logits.detach().argmax(2).T
        totals, good, lasts = torch.stack([loss_sum.float(), n_ok, last_ok]).tolist()
        for s, seed in enumerate(seeds):
            if good[s] < steps:
                lr = scaled_lr(cfg) * factor(epoch * steps + int(good[s]))  # the head group's
                raise PipelineError(
                    non_finite_message(cfg, seed, epoch, int(good[s]), steps, lasts[s], lr)
                )
        conf = [confusion(data.y[orders[s, : steps * bs]], preds[s], C) for s in range(S)]
        img_per_s = S * steps * bs / (time.perf_counter() - t0)
        states = split_state(model, S)
        for s, state in enumerate(states):
            models[s].load_state_dict(state)
            row = {
                "train/loss": totals[s] / steps,
                **{f"train/{k}": v for k, v in summarize(conf[s].cpu().numpy()).items()},
                **validate(models[s], data, cfg),
                "lr": opt.param_groups[-1]["lr"],
                "img_per_s": img_per_s,
            }
            histories[s].append(row)
            if logs is not None:
                logs[s](epoch, row)
            if cfg["checkpoint"] == "best_val" and row["val/macro_f1"] > best[s]["score"]:
                best[s] = {"score": row["val/macro_f1"], "epoch": epoch, "state": state}
        done = epoch + 1
        if ckpt_paths is not None and (
            done % cfg["checkpoint_every"] == 0 or done == cfg["epochs"]
        ):
            for s, opt_state in enumerate(_split_opt(opt.state_dict(), S)):
                save_atomic(
                    {
                        "fingerprint": fps[s],
                        "device": device.type,
                        "config": run_cfgs[s],
                        "epoch": done,
                        "model": states[s],
                        "opt": opt_state,
                        "sched": sched.state_dict(),
                        "gen": gens[s].get_state(),
                        "rng": rngs[s],
                        "history": histories[s],
                        "best": best[s],
                    },
                    ckpt_paths[s],
                )
    results = []
    for s, state in enumerate(split_state(model, S)):
        selected = cfg["epochs"] - 1
        if cfg["checkpoint"] == "best_val":
            state, selected = best[s]["state"], best[s]["epoch"]
        tau = cfg["posthoc_tau"]
        if cfg["posthoc_tau_grid"]:  # chosen on the validation images, never the test set
            models[s].load_state_dict(state)
            raw = predict(models[s], data.x_val, data.mean, data.std, {**cfg, "posthoc_tau": 0.0})
            tau = choose_posthoc_tau(raw, data.y_val, data.counts, cfg["posthoc_tau_grid"])
        results.append(TrainResult(state, histories[s], selected, tau))
    return results
