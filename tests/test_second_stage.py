"""The decoupled second stage: only the classifier changes, and each method's defining property
(cRT's frozen backbone, tau = 0 and unit LWS scales as the identity, MaxNorm's constraint)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltcifar.config.catalog import SECOND, SECOND_STAGES
from ltcifar.config.records import SecondConfig, as_dict, parse
from ltcifar.config.runs import settings_read
from ltcifar.config.schema import validate
from ltcifar.config.second import second_config
from ltcifar.evaluation.inference import Scoring, choose_posthoc_tau, predict
from ltcifar.methods.losses import log_prior
from ltcifar.methods.models import build_model
from ltcifar.training import second_stage as ss
from tests.conftest import make_split, recipe
from tests.params_edit import error_of, repo_params


def second(**over) -> SecondConfig:
    """A second stage's config carrying every method's settings (the catalogue's defaults), in
    two short epochs."""
    settings = {k: f.default for k, f in SECOND.items() if k not in ("run", "split", "method")}
    fed = {"seeds": [0], "augment": True, "pad_mode": "zeros", "channels_last": False}
    short = {"epochs": 2, "batch_size": 32, "eval_batch_size": 64}
    given = {"method": "crt", **settings, **fed, **short, **over}
    return SecondConfig(name="s", run="r", split="sp", **given)


CFG = second()


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
    chosen = ss.run_second_stage(net, data, second(method=method, **over), seed=0)
    return net, before, chosen


@pytest.mark.parametrize("method", list(SECOND_STAGES))
def test_each_method_runs_from_the_config_the_configs_stage_writes(data, method):
    """A method reading a setting its catalogue entry does not list finds None (``need``
    raises): each runs from a config carrying only what its entry lists."""
    entry = validate({"run": "r", "split": "sp", "method": method, "epochs": 1}, SECOND)
    run = as_dict(recipe(split="sp", augment=False))
    written = second_config("s", entry, {k: run[k] for k in settings_read(run)})
    assert "pad_mode" not in written
    chosen = ss.run_second_stage(model(), data, parse(SecondConfig, written, "s"), seed=0)
    assert set(chosen) <= {"tau", "lws_scale_min", "lws_scale_max", "max_norm_limit"}


@pytest.mark.parametrize("method", ["crt", "lws", "tau_norm", "maxnorm", "posthoc_la"])
@pytest.mark.parametrize("bn_stats", ["frozen", "update"])
def test_only_the_classifier_changes(data, method, bn_stats):
    """Every backbone weight stays bit for bit what the first stage left, and so do BatchNorm's
    running statistics under ``bn_stats: frozen``; under ``update`` (the reference codes' train
    mode) a method that trains re-estimates them on its batches. The classifier does change."""
    over = {"tau_grid": [1.0]} if method in ("tau_norm", "posthoc_la") else {}  # tau 1: a change
    net, before, _ = run(method, data, bn_stats=bn_stats, **over)
    after = net.state_dict()
    buffers = {k for k in before if k.endswith(("running_mean", "running_var", "_tracked"))}
    for k, v in before.items():
        if not k.startswith("fc.") and (k not in buffers or bn_stats == "frozen"):
            assert torch.equal(after[k], v), k
    moved = {k for k in buffers if not torch.equal(after[k], before[k])}
    assert moved == (buffers if bn_stats == "update" and method in ss.METHOD_LOSSES else set())
    assert not torch.equal(after["fc.weight"], before["fc.weight"]) or method == "posthoc_la"
    assert not torch.equal(after["fc.bias"], before["fc.bias"])


def test_tau_norm_keeps_the_weights_at_tau_0_and_drops_the_bias(data):
    """Kang et al.'s tau_norm.py scores f . w_c / ||w_c||^tau and never adds the bias."""
    net, before, chosen = run("tau_norm", data, tau_grid=[0.0])
    assert chosen == {"tau": 0.0}
    assert torch.equal(net.state_dict()["fc.weight"], before["fc.weight"])
    assert not before["fc.bias"].eq(0).all() and net.state_dict()["fc.bias"].eq(0).all()
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
        return ss.balanced_recall((feats @ w.T).argmax(1), data.y_val)

    assert score(chosen["tau"]) == max(score(t) for t in grid)
    logits = ss.features(net, data.x_val, data, CFG) @ net.state_dict()["fc.weight"].T
    w = ss.tau_normalised(before["fc.weight"], chosen["tau"])
    torch.testing.assert_close(logits, feats @ w.T)  # what evaluation scores


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


def test_maxnorm_projects_every_class_weight_under_the_limit_after_each_epoch(data, monkeypatch):
    """As the authors' pgdFunc.PGD(model): once per epoch, after its steps."""
    norms, project = [], ss.project_max_norm

    def measured(weight, limit):
        project(weight, limit)
        norms.append((weight.norm(dim=1).max().item(), limit))

    monkeypatch.setattr(ss, "project_max_norm", measured)
    net, before, chosen = run("maxnorm", data, lr=0.5, weight_decay=0.0)
    assert len(norms) == CFG.epochs
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
        ({"run": "exp_ce", "split": "exp100", "beta": 1.0}, "beta = 1.0 must be within (0, 1)"),
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


def test_maxnorm_loss_is_the_weight_balancing_codes_cb_loss():
    """CB_loss(loss_type='softmax'): BCE of softmax probabilities against one-hot labels, the
    true class's effective-number weight (summing to C over classes) on every column, mean over
    batch x classes."""
    counts = torch.tensor([500, 100, 20, 5])
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 4, generator=g) * 2, torch.randint(0, 4, (16,), generator=g)
    got = ss.cb_softmax_bce(second(beta=0.9999), counts)(logits, F.one_hot(y, 4).float(), 0)
    eff = (1 - 0.9999) / (1 - 0.9999 ** counts.double())
    w = (eff / eff.sum() * 4)[y].float()
    p = logits.softmax(1)
    onehot = F.one_hot(y, 4).float()
    bce = -(onehot * p.log() + (1 - onehot) * (1 - p).log())
    torch.testing.assert_close(got, (w[:, None] * bce).mean())


def test_posthoc_la_folds_the_chosen_adjustment_into_the_bias(data):
    """The adjusted model predicts z - tau log pi of the original, tau the grid's best balanced
    recall on validation images (what a run's posthoc_tau_grid chooses, without retraining)."""
    grid = [0.0, 0.5, 1.0, 1.5, 2.0]
    net, before, chosen = run("posthoc_la", data, tau_grid=grid)
    original = model()
    fp32 = Scoring(CFG.eval_batch_size, CFG.channels_last, "fp32")
    raw = predict(original, data.x_val, data.mean, data.std, fp32)
    prior = log_prior(data.counts)
    assert chosen["tau"] == choose_posthoc_tau(raw, data.y_val, data.counts, grid)
    adjusted = predict(net, data.x_val, data.mean, data.std, fp32)
    torch.testing.assert_close(adjusted, raw - chosen["tau"] * prior, rtol=1e-5, atol=1e-5)
    assert torch.equal(net.state_dict()["fc.weight"], before["fc.weight"])
