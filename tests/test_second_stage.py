"""The decoupled second stage: only the classifier changes, and each method's defining property
(cRT's frozen backbone, tau = 0 and unit LWS scales as the identity, MaxNorm's constraint)."""

import copy

import numpy as np
import pytest
import torch

from ltcifar import second_stage as ss
from ltcifar.models import build_model
from ltcifar.second_config import SECOND
from tests.conftest import make_split
from tests.params_edit import error_of, repo_params

CFG = {
    **{k: f.default for k, f in SECOND.items() if k not in ("run", "split")},
    "epochs": 2,
    "batch_size": 32,
    "augment": True,
    "pad_mode": "zeros",
    "channels_last": False,
    "eval_batch_size": 64,
}


@pytest.fixture(scope="module")
def data():
    """4 classes, 96 / 48 / 24 / 12 training images, 8 validation images each."""
    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat(np.arange(4), 8), np.repeat(np.arange(4), [96, 48, 24, 12])])
    x = (rng.integers(0, 60, (len(y), 16, 16, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return make_split(x, y, 32, 4)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", 4, 3)


def run(method: str, data, **over) -> tuple[torch.nn.Module, dict, dict]:
    """A fresh model, its state before, and what the method chose."""
    net = model()
    before = copy.deepcopy(net.state_dict())
    chosen = ss.run_second_stage(net, data, {**CFG, "method": method, **over}, seed=0)
    return net, before, chosen


@pytest.mark.parametrize("method", ["crt", "lws", "tau_norm", "maxnorm"])
def test_only_the_classifier_changes(data, method):
    """Every backbone tensor, BatchNorm's running statistics and counters included, stays bit
    for bit what the first stage left; the classifier does change."""
    over = {"tau_grid": [1.0]} if method == "tau_norm" else {}  # a tau that changes the head
    net, before, _ = run(method, data, **over)
    after = net.state_dict()
    for k, v in before.items():
        if not k.startswith("fc."):
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_tau_norm_at_tau_0_is_the_original_classifier(data):
    net, before, chosen = run("tau_norm", data, tau_grid=[0.0])
    assert chosen == {"tau": 0.0}
    assert torch.equal(net.state_dict()["fc.weight"], before["fc.weight"])
    w = before["fc.weight"]
    torch.testing.assert_close(ss.tau_normalised(w, 1.0).norm(dim=1), torch.ones(4))


def test_tau_norm_picks_the_best_tau_on_validation(data):
    """The chosen tau scores the best balanced recall over the grid on validation features."""
    grid = [0.0, 0.5, 1.0, 1.5]
    net, before, chosen = run("tau_norm", data, tau_grid=grid)
    reference = model()
    feats = ss.features(reference, data.x_val, data, CFG)

    def score(tau: float) -> float:
        w = ss.tau_normalised(before["fc.weight"], tau)
        return ss.balanced_recall((feats @ w.T + before["fc.bias"]).argmax(1), data.y_val)

    assert score(chosen["tau"]) == max(score(t) for t in grid)


def test_lws_with_unit_scales_is_the_original_classifier(data):
    """lr 0 keeps every scale at 1: folding them into the head changes nothing."""
    net, before, chosen = run("lws", data, lr=0.0)
    assert chosen == {"lws_scale_min": 1.0, "lws_scale_max": 1.0}
    for k in ("fc.weight", "fc.bias"):
        assert torch.equal(net.state_dict()[k], before[k])


def test_lws_folds_its_scales_into_the_head(data):
    net, before, chosen = run("lws", data, lr=0.5)
    ratio = net.state_dict()["fc.bias"] / before["fc.bias"]
    torch.testing.assert_close(
        net.state_dict()["fc.weight"], before["fc.weight"] * ratio[:, None], rtol=1e-5, atol=1e-6
    )
    assert chosen["lws_scale_min"] < chosen["lws_scale_max"]  # it learnt per-class scales


def test_maxnorm_keeps_every_class_weight_under_the_limit_after_each_step(data, monkeypatch):
    norms, project = [], ss.project_max_norm

    def measured(weight, limit):
        project(weight, limit)
        norms.append((weight.norm(dim=1).max().item(), limit))

    monkeypatch.setattr(ss, "project_max_norm", measured)
    net, before, chosen = run("maxnorm", data, lr=0.5, weight_decay=0.0)
    steps = len(data.y) // CFG["batch_size"]
    assert len(norms) == 1 + CFG["epochs"] * steps  # once at the start, then every step
    assert all(n <= limit * (1 + 1e-6) for n, limit in norms)
    start = before["fc.weight"].norm(dim=1)
    want = start.min() + 0.1 * (start.max() - start.min())  # the authors' per-layer threshold
    assert chosen["max_norm_limit"] == pytest.approx(float(want))


@pytest.mark.parametrize(
    "entry, why",
    [
        ({"run": "nope", "split": "exp100"}, "run = 'nope' is not a run"),
        ({"run": "exp_ce", "split": "step"}, "must be run 'exp_ce''s split, 'exp100'"),
        ({"run": "exp_ce", "split": "nope"}, "must be run 'exp_ce''s split, 'exp100'"),  # no split
        ({"run": "exp_ldam_drw", "split": "exp100"}, "has a cosine head"),
        ({"run": "exp_balanced_softmax", "split": "exp100"}, "already corrects with loss"),
        ({"run": "step_cb_sampler", "split": "step"}, "already corrects with sampler"),
        ({"run": "exp_ce", "split": "exp100", "beta": 1.0}, "beta must be in"),
    ],
)
def test_second_stages_are_refused_with_a_reason(tmp_path, entry, why):
    def edit(d):
        d["second_stages"]["bad"] = {"method": "crt", **entry}

    msg = error_of(tmp_path, repo_params(), edit)
    assert msg.startswith("second_stages.bad") and why in msg, msg


def test_tau_norm_needs_validation_images(tmp_path):
    def edit(d):
        d["profiles"]["quick"]["splits"]["exp100"]["val_per_class"] = 0

    assert "tau_norm chooses tau on validation images" in error_of(tmp_path, repo_params(), edit)


def test_a_second_stage_cannot_take_a_runs_name(tmp_path):
    def edit(d):
        d["second_stages"]["exp_ce"] = d["second_stages"].pop("exp_ce_crt")

    assert "the name is a run's" in error_of(tmp_path, repo_params(), edit)
