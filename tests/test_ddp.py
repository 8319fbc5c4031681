"""DDP (ltcifar.training.ddp): ranks shard one global draw; 2 gloo processes train what 1 process
trains with the same global batch, re-weighted losses included; BatchNorm is synchronised on
CUDA only; a killed 2-rank run resumes to the uninterrupted run's exact weights."""

import copy
import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from scipy import stats
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from ltcifar.config.records import as_dict
from ltcifar.device import syncs_batchnorm
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import load_trained
from ltcifar.methods.losses import LOSSES, build_loss, class_weights
from ltcifar.methods.models import build_model
from ltcifar.methods.samplers import SAMPLERS, class_weighted_draw
from ltcifar.training import ddp, engine
from ltcifar.training.checkpoints import save_atomic
from ltcifar.training.engine import train
from ltcifar.training.optim import scaled_lr
from tests.conftest import make_split, recipe, strip_speed
from tests.dvcrepo import copy_project, init_repo, ran, sh

COUNTS = torch.tensor([300, 120, 60, 30, 12, 6])
LABELS = torch.repeat_interleave(torch.arange(6), COUNTS)


def test_ranks_shard_one_draw_and_keep_the_class_balance():
    """Pooled over 2 ranks, 30 epochs of the class-balanced sampler pass a chi-square test
    against uniform classes, each rank's shard too, and the shards are the global draw."""
    gen, pooled = torch.Generator().manual_seed(0), torch.zeros(2, 6)
    for epoch in range(30):
        order = SAMPLERS["class_balanced"](LABELS, COUNTS, epoch, 30, gen)
        shards = [ddp.shard(order, ddp.World(r, 2)) for r in range(2)]
        assert torch.equal(torch.stack(shards, 1).flatten(), order)  # interleaved back: all of it
        for r, shard in enumerate(shards):
            pooled[r] += torch.bincount(LABELS[shard], minlength=6)
    assert stats.chisquare(pooled.sum(0).numpy()).pvalue > 1e-3
    for r in range(2):
        assert stats.chisquare(pooled[r].numpy()).pvalue > 1e-3


def test_each_rank_draws_its_own_balanced_partner_batch():
    """Balanced-MixUp's partners: rank r's shard of one draw for all ranks, so the ranks'
    partner batches differ while every rank's generator stays in step."""
    draws = []
    for rank in range(2):
        gen = torch.Generator().manual_seed(0)
        full = class_weighted_draw(LABELS, COUNTS, torch.ones(6), 2 * 64, gen)
        draws.append(ddp.shard(full, ddp.World(rank, 2)))
    assert not torch.equal(draws[0], draws[1])
    assert len(draws[0]) == len(draws[1]) == 64


def test_a_run_is_refused_in_a_world_it_was_not_configured_for():
    with pytest.raises(PipelineError, match="asks for processes: 2 but runs in 1"):
        ddp.check(recipe(processes=2), ddp.World())
    with pytest.raises(PipelineError, match="must be a multiple of processes: 2"):
        ddp.check(recipe(processes=2, batch_size=33), ddp.World(0, 2))


@pytest.mark.parametrize(
    "rule, lr", [("none", 0.1), ("linear", 0.4), ("sqrt", 0.2)]
)  # batch 512 over a base of 128
def test_lr_scaling_rules(rule, lr):
    cfg = recipe(lr=0.1, batch_size=512, lr_scaling=rule, lr_base_batch=128)
    assert scaled_lr(cfg) == pytest.approx(lr)


def tiny_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 160)
    x = (rng.integers(0, 60, (160, 16, 16, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return make_split(x, y, 32, 4)


# 2 epochs of 4 steps at global batch 32 (128 training images), no augmentation, so the ranks'
# batches of a step are together exactly the one-process batch. Fine-tuning bn_fc keeps every
# BatchNorm on its running statistics while gradients reach every BatchNorm's affine weights
# and the head: what is left to differ is the order of float sums. (From scratch, each rank
# would normalise its 16 images by their own batch statistics: observed after 8 steps, train
# loss 0.54 against 0.39 in one process, which no tolerance can tell from a bug.)
CFG = {
    "epochs": 2, "batch_size": 32, "augment": False, "warmup_epochs": 0, "lr": 0.05,
    "finetune": "bn_fc", "checkpoint_every": 1,
}  # fmt: skip


def backbone() -> dict:
    torch.manual_seed(123)
    return build_model("resnet20", 4, 3).state_dict()


def lt_data():
    """Long-tailed: 8 validation images per class, then 80, 30, 12 and 6 training images, so
    the class weights (inverse frequency: 0.17 to 2.25) differ between the ranks' shards."""
    rng = np.random.default_rng(0)
    train = rng.permutation(np.repeat(np.arange(4), [80, 30, 12, 6]))
    y = np.concatenate([np.repeat(np.arange(4), 8), train])
    x = (rng.integers(0, 60, (len(y), 16, 16, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return make_split(x, y, 32, 4)


DATA = {"tiny": tiny_data, "lt": lt_data}


def lt_backbone() -> dict:
    """``backbone()`` with BatchNorm's running statistics those of ``lt_data``'s training
    images (one pass, cumulative average), so that a frozen BatchNorm normalises."""
    model, data = build_model("resnet20", 4, 3), lt_data()
    model.load_state_dict(backbone())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model((data.x.permute(0, 3, 1, 2).float() - data.mean) / data.std)
    return model.state_dict()


BACKBONES = {"tiny": backbone, "lt": lt_backbone}


def _killing(build_loss, at_epoch: int, at_step: int):
    """``build_loss`` whose loss SIGKILLs its process as step ``at_step`` of ``at_epoch`` starts
    (no ``finally``, no checkpoint of that epoch): the whole job killed mid-epoch."""

    def build(cfg: dict, counts: torch.Tensor):
        loss_fn, calls = build_loss(cfg, counts), [0]

        def loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> torch.Tensor:
            if epoch == at_epoch:
                calls[0] += 1
                if calls[0] > at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
            return loss_fn(logits, targets, epoch)

        return loss

    return build


def _watch(seen: dict, kill_at: tuple[int, int] | None) -> None:
    """In a rank's process: record the BatchNorm classes and the wrapper ``engine.build`` gives
    and the epoch ``engine.resume`` starts from; kill at ``kill_at`` (epoch, step) if given."""
    build, resume = engine.build, engine.resume

    def built(*args):
        run = build(*args)
        bns = [m for m in run.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        seen.update(batchnorms=sorted({type(m).__name__ for m in bns}))
        seen.update(wrapped=type(run.fwd).__name__)
        return run

    def resumed(run, paths):
        seen["start"] = resume(run, paths)
        return seen["start"]

    engine.build, engine.resume = built, resumed
    if kill_at is not None:
        engine.build_loss = _killing(engine.build_loss, *kill_at)


def _cpu_syncbatchnorm() -> str:
    """What a training forward of SyncBatchNorm does on CPU tensors in a gloo group."""
    bn = nn.SyncBatchNorm(3)
    try:
        bn(torch.randn(4, 3, 2, 2))
    except ValueError as e:
        return str(e)
    return "ran"


def _rank(
    rank: int,
    port: int,
    out: str,
    over: dict | None = None,
    data: str = "tiny",
    kill_at: tuple[int, int] | None = None,
) -> None:
    """One of 2 gloo ranks training ``recipe(**CFG, **over)``; rank 0 saves its result, the
    BatchNorm classes and wrapper it trained with, and the epoch it started from."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        seen = {"cpu_syncbatchnorm": _cpu_syncbatchnorm()}
        _watch(seen, kill_at)
        cfg = recipe(**{**CFG, **(over or {})}, processes=2)
        ckpt = Path(out).with_suffix(".ckpt")
        bb = BACKBONES[data]() if cfg.finetune != "scratch" else None
        result = train(cfg, DATA[data](), 0, torch.device("cpu"), ckpt, backbone=bb)
        if rank == 0:
            torch.save({"state": result.state_dict, "history": result.history, **seen}, out)
    finally:
        dist.destroy_process_group()


def two_ranks(out: Path, *args) -> dict:
    """Rank 0's record of a 2-rank gloo run (``_rank``'s arguments after ``out``)."""
    mp.spawn(_rank, args=(free_port(), str(out), *args), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in b)


@pytest.fixture
def one_thread():
    """The one-process reference on one thread, as each rank runs; torch's count restored after,
    so the tests that follow keep theirs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_gloo_ranks_train_what_one_process_trains(tmp_path: Path, one_thread):
    """Observed (AMD EPYC, 1 thread a process), after 8 steps, 2 ranks against 1 process:
    largest weight difference 1.3e-5, train loss 2.4e-7 apart, train accuracy equal. A bug
    moves them far more: one process at twice the lr (gradients summed over the 2 ranks, not
    averaged) differs by 9.4 in some weight, another seed's order by 6.3; tolerance 1e-4."""
    out = tmp_path / "rank0.pt"
    t0 = time.perf_counter()
    two = two_ranks(out)
    two_s = time.perf_counter() - t0
    data, bb = tiny_data(), backbone()
    t0 = time.perf_counter()
    one = train(recipe(**CFG), data, 0, torch.device("cpu"), backbone=bb)
    one_s = time.perf_counter() - t0
    summed = train(recipe(**{**CFG, "lr": 0.1}), data, 0, torch.device("cpu"), backbone=bb)
    reseeded = train(recipe(**CFG), data, 1, torch.device("cpu"), backbone=bb)
    worst = max_diff(two["state"], one.state_dict)
    print(json.dumps({
        "two_ranks_s": round(two_s, 2), "one_process_s": round(one_s, 2),
        "max_weight_diff": worst, "twice_lr": max_diff(summed.state_dict, one.state_dict),
        "other_seed": max_diff(reseeded.state_dict, one.state_dict),
        "loss_diff": abs(two["history"][-1]["train/loss"] - one.history[-1]["train/loss"]),
    }))  # fmt: skip
    got, want = two["history"][-1], one.history[-1]
    assert set(got) == set(want)  # rank 0 validated, like the one process
    assert got["train/loss"] == pytest.approx(want["train/loss"], abs=1e-4), (got, want)
    assert got["train/accuracy"] == want["train/accuracy"]
    assert worst < 1e-4
    assert max_diff(summed.state_dict, one.state_dict) > 1e-3  # the tolerance tells a bug
    assert len(torch.load(out.with_suffix(".ckpt"), weights_only=True)["rank_gens"]) == 2
    # on the CPU BatchNorm stays per rank: PyTorch's SyncBatchNorm refuses CPU tensors
    assert two["batchnorms"] == ["BatchNorm2d"] and two["wrapped"] == "DistributedDataParallel"
    assert "expected input tensor to be on GPU" in two["cpu_syncbatchnorm"]


@pytest.mark.slow
def test_the_train_stage_launches_torchrun_for_a_run_with_processes(tmp_path: Path):
    """`dvc repro` of a run with processes: 2 on a tiny Fashion-MNIST split: the train stage
    relaunches itself as 2 gloo ranks, rank 0 alone writes the model and the logs, and the
    evaluate stage scores that model."""
    copy_project(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    quick = params["profiles"]["quick"]
    quick["splits"] = {"step": {**quick["splits"]["step"], "n_max": 100, "n_min": 10}}
    quick["budget"].update(epochs=1)
    params["profiles"]["full"]["splits"] = {"step": params["profiles"]["full"]["splits"]["step"]}
    params["runs"] = {"ddp": {"split": "step", "processes": 2, "batch_size": 32}}
    params["transfer_runs"] = {}
    params["second_stages"] = {}
    init_repo(tmp_path, params)
    out = sh("dvc", "repro", "evaluate_runs@ddp", cwd=tmp_path)
    assert {"train_runs@ddp", "evaluate_runs@ddp"} <= ran(out)
    assert "x 2 DDP ranks" in out
    assert (tmp_path / "models/ddp/seed0.pt").is_file()
    assert json.loads((tmp_path / "metrics/ddp.json").read_text())["macro_f1"] > 0
    log = tmp_path / "logs/ddp/seed0/plots/metrics"
    assert len((log / "train/loss.tsv").read_text().splitlines()) == 2  # header + 1 epoch
    assert (log / "val/macro_f1.tsv").is_file()  # rank 0's row: only it validates


def bn_kinds(model: nn.Module) -> list[str]:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [type(m).__name__ for m in bns]


def test_only_cuda_ranks_synchronise_batchnorm():
    """The selection, called directly (no GPU needed to convert): N > 1 ranks on CUDA get
    SyncBatchNorm in place of every BatchNorm, sharing its parameters (the optimiser's); ranks
    on the CPU (gloo) and one process keep BatchNorm2d."""
    cuda, cpu, two = torch.device("cuda"), torch.device("cpu"), ddp.World(0, 2)
    assert syncs_batchnorm("cuda", 2)
    assert not syncs_batchnorm("cpu", 2)
    assert not syncs_batchnorm("cuda", 1)
    model = build_model("resnet20", 4, 3)
    params, n = list(model.parameters()), len(bn_kinds(model))
    assert ddp.sync_batchnorm(model, cpu, two) is model
    assert ddp.sync_batchnorm(model, cuda, ddp.World()) is model
    assert set(bn_kinds(model)) == {"BatchNorm2d"}
    assert ddp.sync_batchnorm(model, cuda, two) is model  # in place: models[0] is the model
    assert bn_kinds(model) == ["SyncBatchNorm"] * n
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))


def test_a_synchronised_model_saves_and_loads_as_the_plain_model(tmp_path: Path):
    """SyncBatchNorm keeps BatchNorm2d's state_dict keys: a model file of a CUDA DDP run loads
    into the plain model the evaluate stage builds (``load_trained``), and a plain checkpoint
    into a synchronised model (a resume), with the same outputs."""
    torch.manual_seed(0)
    plain = build_model("resnet20", 4, 3)
    plain(torch.randn(8, 3, 16, 16))  # training mode: running statistics away from 0 and 1
    synced = ddp.sync_batchnorm(copy.deepcopy(plain), torch.device("cuda"), ddp.World(0, 2))
    assert "SyncBatchNorm" in bn_kinds(synced)
    assert list(synced.state_dict()) == list(plain.state_dict())
    config = recipe(channels_last=False)  # the same kernels as ``plain``: equal bits
    saved = {"state_dict": synced.state_dict(), "config": as_dict(config), "classes": list("abcd")}
    save_atomic({**saved, "in_channels": 3}, tmp_path / "seed0.pt")
    loaded = load_trained(tmp_path / "seed0.pt", torch.device("cpu")).model
    assert bn_kinds(loaded) == bn_kinds(plain)
    x = torch.randn(4, 3, 16, 16)
    want = plain.eval()(x)
    assert torch.equal(loaded.eval()(x), want)
    resumed = build_model("resnet20", 4, 3)
    ddp.sync_batchnorm(resumed, torch.device("cuda"), ddp.World(0, 2))
    resumed.load_state_dict(plain.state_dict())  # strict
    assert torch.equal(resumed.eval()(x), want)  # eval: running statistics, no collective


# Re-weighted losses: the weighted CE and LDAM-DRW's deferred re-weighting (from epoch 1 of 2).
REWEIGHTED = {
    "weighted_ce": {"loss": "weighted_ce", "weighting": "inverse"},
    "ldam_drw": {"loss": "ldam", "head": "cosine", "drw_from": 0.5},
}


def logits_and_targets(soft: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """64 logits of a long-tailed batch (classes drawn from COUNTS) and their targets, one-hot
    or mixed 0.7 / 0.3 with another image's (mixup)."""
    g = torch.Generator().manual_seed(0)
    y = LABELS[torch.randperm(len(LABELS), generator=g)[:64]]
    t = torch.nn.functional.one_hot(y, 6).float()
    if soft:
        t = 0.7 * t + 0.3 * t[torch.randperm(64, generator=g)]
    return torch.randn(64, 6, generator=g) * 3, t


def reweighted_loss(name: str):
    return build_loss(recipe(**REWEIGHTED[name], epochs=2), COUNTS)


def test_one_process_reweighted_losses_are_computed_as_before():
    """Outside a process group the re-weighted losses are the one-process expressions,
    mean(ce w / mean(w)) and sum(w l) / sum(w), to the bit."""
    for soft in (False, True):
        z, t = logits_and_targets(soft)
        ce = -(t * torch.log_softmax(z, 1)).sum(1)
        w_ce = t @ class_weights(COUNTS, "inverse", 0.0)
        assert torch.equal(
            reweighted_loss("weighted_ce")(z, t, 0), (ce * w_ce / w_ce.mean()).mean()
        )
        per = LOSSES["ldam"](COUNTS, recipe(**REWEIGHTED["ldam_drw"]))(z, t)
        w = t @ class_weights(COUNTS, "effective", recipe().beta)
        assert torch.equal(reweighted_loss("ldam_drw")(z, t, 1), (w * per).sum() / w.sum())


def _loss_grads(rank: int, port: int, out: str) -> None:
    """Rank r takes its strided shard of the logits; the gradient DDP leaves on every rank is
    the ranks' gradients averaged (all_reduce / 2). Rank 0 saves it and the mean loss."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        got = {}
        for name in REWEIGHTED:
            for soft in (False, True):
                z, t = logits_and_targets(soft)
                z.requires_grad_(True)
                loss = reweighted_loss(name)(z[rank::2], t[rank::2], 1)
                loss.backward()
                grad, mean = z.grad.clone(), loss.detach().clone()
                for x in (grad, mean):
                    dist.all_reduce(x)
                    x /= 2
                got[f"{name}/{soft}"] = {"grad": grad, "loss": mean}
        if rank == 0:
            torch.save(got, out)
    finally:
        dist.destroy_process_group()


def one_process_grad(name: str, soft: bool, shards: int = 1) -> tuple[torch.Tensor, float]:
    """The gradient and loss in one process over the whole batch; with ``shards`` > 1, what
    DDP averages if each rank normalises by its own shard's weights (no global sum)."""
    z, t = logits_and_targets(soft)
    z.requires_grad_(True)
    losses = [reweighted_loss(name)(z[r::shards], t[r::shards], 1) for r in range(shards)]
    loss = torch.stack(losses).mean()
    loss.backward()
    return z.grad, loss.item()


@pytest.mark.slow
def test_two_ranks_take_one_process_gradient_of_reweighted_losses(tmp_path: Path):
    """Fixed logits, no model: the DDP-averaged gradient of each re-weighted loss over 2 gloo
    ranks equals one process's over the global batch of 64, one-hot and mixed targets (observed:
    at most 3e-8 apart, float32 rounding), and so does the mean of the ranks' losses. Each rank
    dividing by its own shard's weight sum gives another gradient (observed: 0.006 to 0.009
    apart in some entry, gradients of order 0.01), far outside the tolerance."""
    out = tmp_path / "grads.pt"
    mp.spawn(_loss_grads, args=(free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    for name in REWEIGHTED:
        for soft in (False, True):
            grad, loss = one_process_grad(name, soft)
            per_rank, _ = one_process_grad(name, soft, shards=2)
            two = got[f"{name}/{soft}"]
            diffs = [(g - grad).abs().max().item() for g in (two["grad"], per_rank)]
            print(name, soft, "two ranks, per-rank sums:", diffs)
            torch.testing.assert_close(two["grad"], grad, rtol=0, atol=1e-6)
            assert two["loss"].item() == pytest.approx(loss, rel=1e-6)
            assert (per_rank - grad).abs().max() > 1e-3  # the tolerance tells the old way


# Fine-tuning the head alone on frozen features (convolutions and BatchNorm's running statistics
# fixed): per-rank BatchNorm cannot differ from one process, and the head's problem is smooth,
# so float rounding stays rounding. (With bn_fc on these class weights the run is chaotic:
# observed, one process against itself with BatchNorm's affine weights perturbed by 1e-7
# relative, 0.1 apart after 8 steps at lr 0.05, which no tolerance can tell from a bug.)
HEAD_ONLY = {"finetune": "linear", "lr": 0.01}


@pytest.mark.slow
@pytest.mark.parametrize("name", REWEIGHTED)
def test_two_gloo_ranks_train_reweighted_losses_as_one_process(
    tmp_path: Path, name: str, one_thread
):
    """The engine end to end on long-tailed data (``lt_data``): 2 gloo ranks against 1 process,
    8 steps at global batch 32, the head trained on frozen features (``HEAD_ONLY``), LDAM-DRW
    re-weighting from epoch 1. Observed (AMD EPYC, 1 thread a process): largest weight
    difference 6e-8 for both, train loss equal to the printed digits. With each rank dividing
    by its own shard's weight sum (no global sum in losses.py): 0.015 (weighted_ce) and
    0.011 (ldam_drw), train loss 2.62 against 3.04 and 13.13 against 13.53."""
    over = {**REWEIGHTED[name], **HEAD_ONLY}
    two = two_ranks(tmp_path / "rank0.pt", over, "lt")
    one = train(
        recipe(**{**CFG, **over}), lt_data(), 0, torch.device("cpu"), backbone=lt_backbone()
    )
    worst = max_diff(two["state"], one.state_dict)
    got, want = two["history"][-1], one.history[-1]
    print(json.dumps({"max_weight_diff": worst, "loss": [got["train/loss"], want["train/loss"]]}))
    assert worst < 1e-5
    assert got["train/loss"] == pytest.approx(want["train/loss"], rel=1e-5), (got, want)
    assert got["train/accuracy"] == want["train/accuracy"]


# A 2-rank run from scratch that uses every stream a checkpoint must carry: augmentation (each
# rank's own generator), mixup (the shared generator and torch's CPU one), a collective in the
# loss. 3 epochs of 4 steps, a checkpoint after each epoch.
RESUMED = {
    "finetune": "scratch", "augment": True, "mixup": "mixup", "loss": "weighted_ce",
    "weighting": "inverse", "epochs": 3,
}  # fmt: skip


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_weights(tmp_path: Path):
    """Both ranks SIGKILLed at step 2 of epoch 1 (after rank 0 wrote the checkpoint of epoch
    1); rerun, both ranks resume from rank 0's checkpoint at epoch 1, each with its own
    generator, and end bit-identical to an uninterrupted 2-rank run: every weight and buffer,
    every history value but the throughput. (Observed to fail when rank 1 restarts its own
    generator instead of taking its saved state.)"""
    whole = two_ranks(tmp_path / "whole.pt", RESUMED, "lt")
    assert whole["start"] == 0
    killed = tmp_path / "killed.pt"
    with pytest.raises(ProcessException):
        two_ranks(killed, RESUMED, "lt", (1, 2))
    assert not killed.exists()
    ckpt = torch.load(killed.with_suffix(".ckpt"), weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["rank_gens"]) == 2
    assert not torch.equal(ckpt["rank_gens"][0], ckpt["rank_gens"][1])
    resumed = two_ranks(killed, RESUMED, "lt")
    assert resumed["start"] == 1
    assert list(resumed["state"]) == list(whole["state"])
    for k in whole["state"]:
        assert torch.equal(resumed["state"][k], whole["state"][k]), k
    assert strip_speed(resumed["history"]) == strip_speed(whole["history"])
