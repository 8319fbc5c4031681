"""Stacked seeds: splitting undoes stacking, and a stacked run trains what separate runs train."""

import pytest
import torch

from ltcifar.errors import PipelineError
from ltcifar.methods.models import build_model
from ltcifar.methods.stacked import split_state, stack_models
from ltcifar.training.engine import train, train_stacked
from tests.conftest import recipe, strip_speed

CPU = torch.device("cpu")
# Stacked and separate runs sum in different orders (grouped convolutions, a batched head), so
# they agree to rounding, not bit for bit, and training amplifies rounding: engine.train alone,
# with 1 and with 2 CPU threads, differs by 0.9 in some weight after 10 steps at lr 0.1. Hence
# 4 steps (batch 64 of 160 images, 2 epochs) at lr 0.01. Observed (CPU, fp32, 1 thread), over
# the three recipes below: max |stacked - separate| 3.4e-4 in a weight, 1.5e-3 in a history
# value, and |w_stacked - w_separate| / |w_separate - w_init| at most 9.4e-5. That ratio is what
# tells a bug from rounding: a run at half the lr (as if the gradient were divided by S = 2)
# gives 1.7e-2 to 0.8, and another seed's stream changes everything.
WEIGHT_TOL, HISTORY_TOL, DRIFT_TOL = 1e-3, 5e-3, 1e-3


def seed_models(seeds: list[int], **options) -> list[torch.nn.Module]:
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model("resnet20", 4, 3, **options))
    return models


@pytest.mark.parametrize("options", [{}, {"head": "cosine", "shortcut": "B", "cosine_scale": 30.0}])
def test_split_undoes_stack_and_forward_is_per_seed(options):
    models = seed_models([0, 1, 2], **options)
    stacked = stack_models(models)
    for model, state in zip(models, split_state(stacked, 3), strict=True):
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    xs = [torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for m in (stacked, *models):
        m.eval()
    separate = torch.stack([m(x) for m, x in zip(models, xs, strict=True)], 1)
    # observed max |difference| 1.1e-5 (linear head) and 2.9e-6 (cosine)
    torch.testing.assert_close(stacked(torch.cat(xs, 1)), separate, rtol=1e-4, atol=1e-4)


def drift(got: dict, want: dict, init: dict) -> float:
    """|got - want| / |want - init| over all float tensors: the error relative to training."""
    keys = [k for k, v in want.items() if v.is_floating_point()]
    err = sum(((got[k] - want[k]) ** 2).sum() for k in keys)
    moved = sum(((want[k] - init[k]) ** 2).sum() for k in keys)
    return float((err / moved).sqrt())


@pytest.mark.slow
@pytest.mark.parametrize(
    "over",
    [
        {},  # cross-entropy, instance sampler, no mixup, linear head, option-A shortcut
        {"loss": "ldam", "head": "cosine", "sampler": "class_balanced", "drw_from": 0.5},
        {"mixup": "mixup", "checkpoint": "best_val", "posthoc_tau_grid": [0.0, 1.0]},
        {"mixup": "balanced_mixup"},  # a class-balanced partner batch drawn per epoch
    ],
)
def test_stacked_equals_separate_runs(tiny, over):
    cfg = recipe(epochs=2, milestones=[1], batch_size=64, lr=0.01, **over)
    stacked = train_stacked(cfg, tiny, [0, 1], CPU)
    for seed, got in zip([0, 1], stacked, strict=True):
        want = train(cfg, tiny, seed, CPU)
        (init,) = seed_models([seed], head=cfg.head)
        assert got.state_dict.keys() == want.state_dict.keys()
        for k, v in want.state_dict.items():
            torch.testing.assert_close(
                got.state_dict[k], v, rtol=WEIGHT_TOL, atol=WEIGHT_TOL, msg=k
            )
        assert drift(got.state_dict, want.state_dict, init.state_dict()) < DRIFT_TOL
        for g, w in zip(strip_speed(got.history), strip_speed(want.history), strict=True):
            assert g.keys() == w.keys()
            assert all(g[k] == pytest.approx(w[k], abs=HISTORY_TOL) for k in w), (g, w)
        assert (got.selected_epoch, got.posthoc_tau) == (want.selected_epoch, want.posthoc_tau)


@pytest.mark.parametrize(
    "over, why",
    [
        ({"model": "tv_resnet18"}, "not a CIFAR net"),
        ({"finetune": "linear"}, "from a backbone"),
        ({"grad_clip": 1.0}, "the seeds would share it"),  # one norm over all seeds' parameters
    ],
)
def test_unsupported_runs_are_refused(tiny, over, why):
    with pytest.raises(PipelineError, match=why):
        train_stacked(recipe(**over), tiny, [0, 1], CPU)


@pytest.mark.slow
def test_stacked_resume_equals_uninterrupted_and_engine_resumes_its_checkpoint(
    tiny, tmp_path, capsys
):
    cfg = recipe(epochs=3, milestones=[2], batch_size=64, lr=0.01, mixup="mixup")
    full = train_stacked(cfg, tiny, [0, 1], CPU)

    class Killed(Exception):
        pass

    def kill_after_one(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Killed

    ckpts = [tmp_path / "seed0.pt", tmp_path / "seed1.pt"]
    with pytest.raises(Killed):
        train_stacked(cfg, tiny, [0, 1], CPU, ckpts, [lambda e, r: None, kill_after_one])
    alone = tmp_path / "alone.pt"
    alone.write_bytes(ckpts[1].read_bytes())
    resumed = train_stacked(cfg, tiny, [0, 1], CPU, ckpts)
    for a, b in zip(full, resumed, strict=True):  # re-stacking the split states is exact
        assert strip_speed(a.history) == strip_speed(b.history)
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    capsys.readouterr()
    finished = train(cfg, tiny, 1, CPU, ckpt_path=alone)  # seed 1 alone, from the stacked epoch 1
    assert f"resuming t seed 1 from epoch 1 ({alone})" in capsys.readouterr().out
    (init,) = seed_models([1])
    assert drift(finished.state_dict, full[1].state_dict, init.state_dict()) < DRIFT_TOL


def test_stacked_non_finite_loss_names_the_seed_and_the_lr(tiny):
    with pytest.raises(PipelineError, match=r"seed 0: the training loss is not finite.*the lr at"):
        train_stacked(recipe(lr=1e6, warmup_epochs=0), tiny, [0, 1], CPU)
