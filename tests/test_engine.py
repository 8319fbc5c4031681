"""The engine: a resumed run equals an uninterrupted one, seeds reproduce, and it learns."""

import math
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltcifar.config.records import RunConfig
from ltcifar.data.datasets import DATASETS
from ltcifar.data.split_data import SplitData
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import Scoring, predict
from ltcifar.evaluation.metrics import confusion, summarize
from ltcifar.methods.losses import build_loss
from ltcifar.methods.models import build_model
from ltcifar.training import engine, optim
from ltcifar.training.checkpoints import fingerprint, seed_config
from ltcifar.training.engine import train
from ltcifar.training.optim import Schedule, lr_factor
from tests.archives import RunsCode
from tests.conftest import FASHION, make_split, recipe, strip_speed


def test_same_seed_same_result(tiny):
    a = train(recipe(), tiny, 0, torch.device("cpu"))
    b = train(recipe(), tiny, 0, torch.device("cpu"))
    c = train(recipe(), tiny, 1, torch.device("cpu"))
    assert strip_speed(a.history) == strip_speed(b.history)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert strip_speed(a.history) != strip_speed(c.history)


def test_resumed_run_equals_uninterrupted(tiny, tmp_path):
    cfg = recipe(epochs=4, checkpoint="best_val")
    full = train(cfg, tiny, 0, torch.device("cpu"))

    class Killed(Exception):
        pass

    def kill_after_two(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        train(cfg, tiny, 0, torch.device("cpu"), ckpt_path=ckpt, log=kill_after_two)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    logged = []
    resumed = train(
        cfg, tiny, 0, torch.device("cpu"), ckpt_path=ckpt, log=lambda e, row: logged.append(e)
    )
    assert logged == [0, 1, 2, 3]  # the killed epochs' logs are replayed, none is missing
    assert strip_speed(resumed.history) == strip_speed(full.history)
    assert resumed.selected_epoch == full.selected_epoch
    assert all(torch.equal(resumed.state_dict[k], full.state_dict[k]) for k in full.state_dict)


def test_checkpoint_of_another_config_is_not_resumed(tiny, tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    train(recipe(epochs=1), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    capsys.readouterr()
    run = train(recipe(epochs=2, lr=0.05), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    old = fingerprint(seed_config(recipe(epochs=1), 0))
    new = fingerprint(seed_config(recipe(epochs=2, lr=0.05), 0))
    assert old != new
    assert capsys.readouterr().out.splitlines() == [
        f"not resuming t seed 0 from {ckpt}: its config fingerprint {old} differs from this "
        f"run's {new} (changed: epochs, lr); starting from epoch 0"
    ]
    assert len(run.history) == 2
    fresh = train(recipe(epochs=2, lr=0.05), tiny, 0, torch.device("cpu"))
    assert strip_speed(run.history) == strip_speed(fresh.history)


def test_unreadable_checkpoint_names_the_file(tiny, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"half a checkpoint")
    with pytest.raises(PipelineError, match=f"^{re.escape(str(ckpt))} is not a readable checkp"):
        train(recipe(epochs=1), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)


def test_best_val_needs_validation(tiny):
    no_val = make_split(tiny.x.numpy(), tiny.y.numpy(), 0, 4)
    with pytest.raises(Exception, match="best_val needs a validation set"):
        train(recipe(checkpoint="best_val"), no_val, 0, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="needs the dataset-fashion-mnist package")
def test_learns_fashion_mnist_subset():
    arrays = DATASETS["fashion_mnist"].read(FASHION)
    rng = np.random.default_rng(0)
    pick = rng.permutation(60000)[:2200]
    data = make_split(arrays["x_train"][pick], arrays["y_train"][pick], 200, 10)
    result = train(
        recipe(epochs=3, batch_size=64, schedule="cosine", milestones=[]),
        data,
        0,
        torch.device("cpu"),
    )
    model = build_model("resnet20", 10, 1)
    model.load_state_dict(result.state_dict)
    x_test = torch.from_numpy(arrays["x_test"][:2000].copy())
    y_test = torch.from_numpy(arrays["y_test"][:2000].copy())
    logits = predict(model, x_test, data.mean, data.std, Scoring.of(recipe()))
    scores = summarize(confusion(y_test, logits.argmax(1), 10).numpy())
    # chance is 0.1; observed on an AMD EPYC with 1 and 2 threads: test 0.70, validation
    # 0.67-0.68, so 0.6 leaves a margin of 0.07 or more on any CPU's rounding
    assert scores["accuracy"] > 0.6, scores
    assert result.history[-1]["val/accuracy"] > 0.6


def host_reads(cfg: RunConfig, data: SplitData) -> int:
    """How many times a run reads a tensor's value on the host (``.item()``, ``int(t)``, ...):
    on CUDA each is a device sync that stalls the launch queue."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    with Reads() as reads:
        train(cfg, data, 0, torch.device("cpu"))
    return reads.n


@pytest.mark.slow
@pytest.mark.parametrize("mixup", ["none", "mixup", "balanced_mixup", "cutmix"])
def test_the_hot_loop_reads_nothing_on_the_host_per_step(tiny, mixup):
    """Twice the steps per epoch, the same host reads: only per-epoch work reads values."""
    small = make_split(tiny.x[:64].numpy(), tiny.y[:64].numpy(), 0, 4)
    cfg = recipe(epochs=2, warmup_epochs=0, mixup=mixup, batch_size=8, sampler="class_balanced")
    assert host_reads(cfg, small) == host_reads(replace(cfg, batch_size=4), small)


def test_non_finite_loss_gives_the_lr_of_that_step_and_what_to_change(tiny):
    cfg = recipe(lr=1e6, warmup_epochs=1, warmup="step")
    with pytest.raises(
        PipelineError, match=r"run 't' seed 3: the training loss is not finite"
    ) as err:
        train(cfg, tiny, 3, torch.device("cpu"))
    epoch, step = map(int, re.search(r"at epoch (\d+), step (\d+)", str(err.value)).groups())
    lr = 1e6 * lr_factor(Schedule.of(cfg), len(tiny.y) // 32)(epoch * (len(tiny.y) // 32) + step)
    assert f"the lr at that step was {lr:.6g} (base lr 1000000.0)" in str(err.value)
    assert "lower lr, set grad_clip, or precision: fp32" in str(err.value)


def test_grad_clip_bounds_the_gradient_norm_of_every_step(tiny, monkeypatch):
    norms, clip = [], engine.clip_grad_norm_  # (norm before, norm after) of each clipped step

    def clip_and_measure(params, max_norm):
        params = [p for p in params if p.grad is not None]
        before = clip(params, max_norm)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        norms.append((before.item(), after.item()))
        return before

    monkeypatch.setattr(engine, "clip_grad_norm_", clip_and_measure)
    train(recipe(epochs=1, grad_clip=0.05), tiny, 0, torch.device("cpu"))
    assert len(norms) == len(tiny.y) // 32  # every step
    assert all(after <= 0.05 * (1 + 1e-4) for _, after in norms)
    assert any(before > 0.05 for before, _ in norms)  # it did clip
    norms.clear()
    train(recipe(epochs=1), tiny, 0, torch.device("cpu"))  # grad_clip: 0 is off
    assert norms == []


def test_nan_loss_names_run_seed_epoch_step_and_last_finite_loss(tiny, tmp_path, monkeypatch):
    losses = []

    def nan_from_step_seven(cfg, counts):
        loss_fn = build_loss(cfg, counts)

        def patched(logits, targets, epoch):
            loss = loss_fn(logits, targets, epoch)
            losses.append(loss.item())
            return loss * math.nan if len(losses) > 7 else loss

        return patched

    monkeypatch.setattr(engine, "build_loss", nan_from_step_seven)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(PipelineError) as err:
        train(recipe(), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    steps = len(tiny.y) // 32  # 5: the 8th loss is epoch 1, step 2
    assert f"run 't' seed 0: the training loss is not finite at epoch 1, step 2 of {steps}" in str(
        err.value
    )
    assert f"the last finite loss was {losses[6]:.6g}" in str(err.value)
    assert len(losses) == 2 * steps  # found at the end of the epoch, which then stops
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # epoch 1 was not checkpointed


def ldam_drw_lr(epoch: int, lr: float = 0.1) -> float:
    """kaidic/LDAM-DRW cifar_train.py's adjust_learning_rate, set once per (0-based) epoch."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


LDAM_DRW_SCHEDULE = dict(
    epochs=200,
    lr=0.1,
    schedule="multistep",
    milestones=[160, 180],
    gamma=0.01,
    warmup_epochs=5,
    warmup="epoch",
)


def test_multistep_schedule_reproduces_ldam_drw_lr_at_every_step():
    """The lr the optimiser uses at each step of an epoch (LambdaLR, stepped per batch as in the
    engine) equals LDAM-DRW's for that epoch."""
    cfg, steps = recipe(**LDAM_DRW_SCHEDULE), 7
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(Schedule.of(cfg), steps))
    used = []
    for _ in range(cfg.epochs * steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for epoch in (0, 4, 5, 159, 160, 161, 180, 199):
        assert used[epoch * steps : (epoch + 1) * steps] == pytest.approx(
            [ldam_drw_lr(epoch)] * steps, rel=1e-9
        ), epoch


def test_step_warmup_is_linear_per_step():
    cfg, steps = recipe(**{**LDAM_DRW_SCHEDULE, "warmup": "step"}), 7
    factor = lr_factor(Schedule.of(cfg), steps)
    assert [factor(s) for s in range(35)] == pytest.approx([(s + 1) / 35 for s in range(35)])
    assert factor(35) == 1.0 and factor(160 * 7 - 1) == 1.0 and factor(160 * 7) == 0.01


def test_checkpoint_that_would_run_code_is_refused_unrun(tiny, tmp_path):
    ckpt, marker = tmp_path / "ckpt.pt", tmp_path / "ran"
    train(recipe(epochs=2), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    ck = torch.load(ckpt, weights_only=True)  # what the engine writes is plain data
    ck["history"].append(RunsCode(marker))
    torch.save(ck, ckpt)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(ckpt))} is not a readable checkp"):
        train(recipe(epochs=2), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    assert not marker.exists()


def test_checkpoint_from_another_device_type_is_not_resumed(tiny, tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    train(recipe(epochs=2), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    ck = torch.load(ckpt, weights_only=True)
    assert ck["device"] == "cpu"
    torch.save({**ck, "device": "cuda"}, ckpt)
    capsys.readouterr()
    run = train(recipe(epochs=2), tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    assert capsys.readouterr().out.splitlines() == [
        f"not resuming t seed 0 from {ckpt}: it was written on cuda and this run is on cpu, "
        "whose random-number streams differ; starting from epoch 0"
    ]
    fresh = train(recipe(epochs=2), tiny, 0, torch.device("cpu"))
    assert strip_speed(run.history) == strip_speed(fresh.history)


def test_deterministic_sets_the_cublas_workspace_before_any_cuda_work(tiny, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # unset now, and unset again afterwards
    train(recipe(epochs=1), tiny, 0, torch.device("cpu"))
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    try:
        train(recipe(epochs=1, deterministic=True), tiny, 0, torch.device("cpu"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


# The paths CUDA takes by default (bf16 autocast, fused SGD, torch.compile), run on the CPU.


def test_bf16_autocast_step_feeds_the_loss_fp32_logits(tiny, monkeypatch):
    """``precision: bf16`` runs bf16 autocast on the CPU too: the same path as on CUDA."""
    dtypes = []

    def recording(cfg, counts):
        loss_fn = build_loss(cfg, counts)

        def loss(logits, targets, epoch):
            dtypes.append(logits.dtype)
            return loss_fn(logits, targets, epoch)

        return loss

    monkeypatch.setattr(engine, "build_loss", recording)
    bf16 = train(recipe(epochs=1, precision="bf16"), tiny, 0, torch.device("cpu"))
    assert dtypes == [torch.float32] * (len(tiny.y) // 32)
    assert math.isfinite(bf16.history[0]["train/loss"])
    fp32 = train(recipe(epochs=1, precision="auto"), tiny, 0, torch.device("cpu"))
    assert bf16.history[0]["train/loss"] != fp32.history[0]["train/loss"]  # bf16 really ran
    assert bf16.history[0]["train/loss"] == pytest.approx(fp32.history[0]["train/loss"], rel=0.05)


def one_step(tiny: SplitData) -> RunConfig:
    """A one-step run: these tiny runs are chaotic, so rounding differences grow within
    a few steps, and kernels that should agree are compared after one."""
    return recipe(epochs=1, batch_size=len(tiny.y), warmup_epochs=0)


def assert_same_step(a: engine.TrainResult, b: engine.TrainResult, atol: float) -> None:
    """The same loss, and weights within ``atol``: a convolution in another memory layout or
    compiled sums its weight gradient over ~40k positions in another order (~2e-4 apart here),
    while one step moves every weight tensor by at least 3e-3 (a wrong kernel's error)."""
    assert a.history[0]["train/loss"] == pytest.approx(b.history[0]["train/loss"], rel=1e-5)
    for k, v in b.state_dict.items():
        torch.testing.assert_close(
            a.state_dict[k], v, rtol=1e-2, atol=atol, msg=lambda m, k=k: f"{k}: {m}"
        )


def test_fused_sgd_equals_foreach(tiny, monkeypatch):
    foreach = train(one_step(tiny), tiny, 0, torch.device("cpu"))
    monkeypatch.setattr(optim, "sgd_kernel", lambda device_type: {"fused": True})
    fused = train(one_step(tiny), tiny, 0, torch.device("cpu"))
    assert_same_step(fused, foreach, atol=1e-5)


def test_channels_last_equals_contiguous(tiny):
    last = train(replace(one_step(tiny), channels_last=True), tiny, 0, torch.device("cpu"))
    plain = train(replace(one_step(tiny), channels_last=False), tiny, 0, torch.device("cpu"))
    assert last.state_dict["stem.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert_same_step(last, plain, atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="inductor needs a C compiler")
def test_compiled_model_trains_like_eager(tiny):
    eager = train(one_step(tiny), tiny, 0, torch.device("cpu"))
    compiled = train(replace(one_step(tiny), compile="always"), tiny, 0, torch.device("cpu"))
    assert_same_step(compiled, eager, atol=1e-3)


# Early stopping (``patience``) and the checkpoint of the lowest validation loss.


def test_early_stopping_keeps_the_lowest_validation_loss(tiny):
    """The seed study's rule, on validation images: stop ``patience`` epochs after the lowest
    loss the run's own criterion gives on them, and keep that epoch's model."""
    cfg = recipe(epochs=30, checkpoint="best_val_loss", patience=2, loss="balanced_softmax")
    result = train(cfg, tiny, 0, torch.device("cpu"))
    watched = [row["val/training_loss"] for row in result.history]
    best = watched.index(min(watched))  # the first of equal minima, as a strict < keeps
    assert result.selected_epoch == best
    assert len(result.history) == best + 1 + 2 < 30  # stopped after two epochs without a gain
    assert all(w > watched[best] for w in watched[best + 1 :])


def test_validation_watches_the_runs_own_loss(tiny):
    """``val/training_loss`` is the training criterion (here Balanced Softmax: CE on logits plus
    the log prior) on the validation logits; ``val/loss`` stays plain cross-entropy."""
    cfg = recipe()
    model = build_model("resnet20", tiny.num_classes, tiny.in_channels)
    loss_fn = build_loss(replace(cfg, loss="balanced_softmax"), tiny.counts)
    row = engine.validate(model, tiny, cfg, lambda z, y: loss_fn(z, F.one_hot(y, 4).float(), 0))
    logits = predict(model, tiny.x_val, tiny.mean, tiny.std, Scoring.of(cfg))
    prior = tiny.counts.float() / tiny.counts.sum()
    expected = F.cross_entropy(logits + prior.log(), tiny.y_val).item()
    assert row["val/training_loss"] == pytest.approx(expected, rel=1e-5)
    plain = F.cross_entropy(logits, tiny.y_val).item()
    assert row["val/loss"] == pytest.approx(plain, rel=1e-5)
    assert "val/training_loss" not in engine.validate(model, tiny, cfg)


def test_a_stopped_run_resumes_stopped(tiny, tmp_path):
    """The checkpoint written when a run stops early holds it stopped: a rerun from it (a
    stage killed before writing its model) trains no further epoch and keeps the same model."""
    cfg = recipe(epochs=30, checkpoint="best_val_loss", patience=1)
    ckpt = tmp_path / "ckpt.pt"
    first = train(cfg, tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == len(first.history) < 30
    again = train(cfg, tiny, 0, torch.device("cpu"), ckpt_path=ckpt)
    assert strip_speed(again.history) == strip_speed(first.history)
    assert again.selected_epoch == first.selected_epoch
    assert all(torch.equal(again.state_dict[k], v) for k, v in first.state_dict.items())
