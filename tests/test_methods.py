"""Each imbalance method pinned to its formula, and the rules of how methods compose."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ltcifar.config.catalog import RECIPE, defaults
from ltcifar.config.params import load
from ltcifar.config.rules import check, refusal
from ltcifar.config.schema import ParamsError
from ltcifar.methods.losses import LOSSES, build_loss, class_weights, ldam_margins
from ltcifar.methods.mixup import MIXUPS, Epoch
from ltcifar.methods.samplers import SAMPLERS, balanced_draw, sampler_for
from tests.conftest import recipe

COUNTS = torch.tensor([5000, 2000, 800, 300, 120, 50])


def cfg(**over) -> dict:
    """A resolved plain (not transfer) run's config with the recipe's defaults."""
    return {**defaults(), "head": "linear", "transfer": False, **over}


def batch(n: int = 64, c: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return logits, y, F.one_hot(y, c).float()


def mean_loss(name: str, counts=COUNTS, **over) -> torch.Tensor:
    logits, _, t = batch()
    return LOSSES[name](counts, recipe(**over))(logits, t).mean()


def test_logit_adjusted_tau_1_equals_balanced_softmax_equals_ce_plus_log_prior():
    logits, y, _ = batch()
    reference = F.cross_entropy(logits + torch.log(COUNTS / COUNTS.sum()), y)
    torch.testing.assert_close(mean_loss("balanced_softmax"), reference)
    torch.testing.assert_close(mean_loss("logit_adjusted", la_tau=1.0), reference)
    assert not torch.allclose(mean_loss("logit_adjusted", la_tau=0.5), reference)


def test_weighted_ce_with_uniform_counts_is_ce():
    logits, y, _ = batch()
    flat = torch.full((6,), 100)
    for scheme in ("effective", "inverse"):
        torch.testing.assert_close(
            mean_loss("weighted_ce", flat, weighting=scheme), F.cross_entropy(logits, y)
        )


def test_weighted_ce_matches_torch_weighted_cross_entropy():
    logits, y, _ = batch()
    w = class_weights(COUNTS, "inverse", 0.0)
    torch.testing.assert_close(
        mean_loss("weighted_ce", weighting="inverse"), F.cross_entropy(logits, y, weight=w)
    )
    torch.testing.assert_close(w, (1 / COUNTS.float()) / (1 / COUNTS.float()).sum() * 6)


def test_effective_number_weights():
    beta = 0.999
    w = class_weights(COUNTS, "effective", beta)
    e = (1 - beta) / (1 - beta ** COUNTS.double())
    torch.testing.assert_close(w, (e / e.sum() * 6).float())


def test_focal_gamma_0_is_ce_and_gamma_down_weights_easy_examples():
    logits, y, _ = batch()
    torch.testing.assert_close(mean_loss("focal", focal_gamma=0.0), F.cross_entropy(logits, y))
    p = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    expected = (-((1 - p) ** 2) * torch.log(p)).mean()
    torch.testing.assert_close(mean_loss("focal", focal_gamma=2.0), expected)


def test_ldam_margins_and_loss():
    m = ldam_margins(COUNTS, 0.5)
    torch.testing.assert_close(
        m * COUNTS.float() ** 0.25, torch.full((6,), float(m[0] * 5000**0.25))
    )
    assert m.max().item() == pytest.approx(0.5) and m.argmax() == 5
    logits, y, t = batch()
    cos = torch.tanh(logits)  # cosines in [-1, 1]; the cosine head hands the loss 30 * cos
    index = F.one_hot(y, 6).bool()
    reference = F.cross_entropy(30 * torch.where(index, cos - m[y][:, None], cos), y)  # LDAMLoss
    loss = LOSSES["ldam"](COUNTS, recipe(ldam_max_margin=0.5, ldam_scale=30.0))
    torch.testing.assert_close(loss(30 * cos, t).mean(), reference)


def test_deferred_reweighting_switches_at_its_epoch():
    logits, y, t = batch()
    loss = build_loss(recipe(loss="ldam", head="cosine", drw_from=0.8, epochs=10), COUNTS)
    plain = build_loss(recipe(loss="ldam", head="cosine"), COUNTS)
    w = class_weights(COUNTS, "effective", 0.9999)
    torch.testing.assert_close(loss(logits, t, 7), plain(logits, t, 7))
    per = LOSSES["ldam"](COUNTS, recipe())(logits, t)
    torch.testing.assert_close(loss(logits, t, 8), (w[y] * per).sum() / w[y].sum())


def draw_class_freqs(name: str, labels: torch.Tensor, counts: torch.Tensor, epoch=0, epochs=1):
    gen = torch.Generator().manual_seed(0)
    idx = SAMPLERS[name](labels, counts, epoch, epochs, gen)
    assert len(idx) == len(labels)
    return torch.bincount(labels[idx], minlength=len(counts)).numpy()


LABELS = torch.repeat_interleave(torch.arange(6), COUNTS)


def test_class_balanced_sampler_is_uniform_within_chi2():
    freq = draw_class_freqs("class_balanced", LABELS, COUNTS)
    assert stats.chisquare(freq).pvalue > 1e-3


def test_sqrt_sampler_is_proportional_to_sqrt_n():
    freq = draw_class_freqs("sqrt", LABELS, COUNTS)
    expected = np.sqrt(COUNTS.numpy()) / np.sqrt(COUNTS.numpy()).sum() * freq.sum()
    assert stats.chisquare(freq, expected).pvalue > 1e-3


def test_progressive_sampler_moves_from_instance_to_balanced():
    start = draw_class_freqs("progressive", LABELS, COUNTS, 0, 11)
    middle = draw_class_freqs("progressive", LABELS, COUNTS, 5, 11)
    end = draw_class_freqs("progressive", LABELS, COUNTS, 10, 11)
    n = COUNTS.numpy() / COUNTS.sum().item()
    assert stats.chisquare(start, n * start.sum()).pvalue > 1e-3
    assert stats.chisquare(middle, (0.5 * n + 0.5 / 6) * middle.sum()).pvalue > 1e-3
    assert stats.chisquare(end).pvalue > 1e-3


def test_instance_sampler_is_a_permutation():
    gen = torch.Generator().manual_seed(0)
    idx = SAMPLERS["instance"](LABELS, COUNTS, 0, 1, gen)
    assert torch.equal(idx.sort().values, torch.arange(len(LABELS)))


def mix_epoch(name: str, steps: int, x: torch.Tensor, t: torch.Tensor, batch_fn, **over):
    """One epoch of mixup ``name`` over ``steps`` steps of the batch (x, t); ``batch_fn`` makes
    the balanced partner batch of given indices."""
    gen = torch.Generator().manual_seed(0)
    balanced = lambda n: torch.randint(len(x), (n,), generator=gen)  # noqa: E731
    return MIXUPS[name](recipe(**over))(Epoch(steps, len(x), gen, balanced, batch_fn))


@pytest.mark.parametrize("name", ["mixup", "balanced_mixup", "cutmix", "none"])
def test_mixed_targets_are_distributions(name):
    torch.manual_seed(0)
    x = torch.randn(32, 3, 8, 8)
    _, _, t = batch(32)
    balanced = lambda idx: (torch.randn(len(idx), 3, 8, 8), F.one_hot(idx % 6, 6).float())  # noqa: E731
    step = mix_epoch(name, 3, x, t, balanced)
    for s in range(3):
        xm, tm = step(s, x, t)
        assert xm.shape == x.shape
        torch.testing.assert_close(tm.sum(1), torch.ones(32))
        assert (tm >= 0).all()


@pytest.mark.parametrize("name", ["mixup", "balanced_mixup", "cutmix"])
def test_mixups_draw_once_per_epoch_and_nothing_per_step(name):
    """Every random number of an epoch's mixing is drawn up front: the per-step function leaves
    the CPU generator and the device generator untouched (the hot loop launches no draw)."""
    torch.manual_seed(0)
    x, t = torch.randn(8, 3, 8, 8), F.one_hot(torch.arange(8) % 6, 6).float()
    step = mix_epoch(name, 4, x, t, lambda idx: (x[idx], t[idx]))
    cpu = torch.get_rng_state()
    first = [step(s, x, t) for s in range(4)]
    assert torch.equal(torch.get_rng_state(), cpu)
    again = [step(s, x, t) for s in range(4)]  # the same step mixes the same way
    for (x1, t1), (x2, t2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert not all(torch.equal(first[0][1], f[1]) for f in first[1:])  # steps differ


def test_balanced_mixup_lambda_is_beta_alpha_1_and_weights_the_balanced_batch():
    torch.manual_seed(0)
    alpha, lams, steps = 0.2, [], 2000
    x, t = torch.zeros(4, 1, 2, 2), F.one_hot(torch.zeros(4, dtype=torch.long), 6).float()

    def balanced(idx):
        return torch.ones(len(idx), 1, 2, 2), F.one_hot(torch.full((len(idx),), 5), 6).float()

    step = mix_epoch("balanced_mixup", steps, x, t, balanced, balanced_mixup_alpha=alpha)
    for s in range(steps):
        xm, tm = step(s, x, t)
        lam = xm.flatten()[0].item()  # 0 * (1 - lam) + 1 * lam
        assert tm[0, 5].item() == pytest.approx(lam, abs=1e-6)
        lams.append(lam)
    assert stats.kstest(lams, stats.beta(alpha, 1).cdf).pvalue > 1e-3


def test_balanced_partner_draw_is_class_balanced():
    """What the engine draws Balanced-MixUp's partner batches with: every class equally often."""
    gen = torch.Generator().manual_seed(1)
    freqs = torch.zeros(6)
    for _ in range(50):
        freqs += torch.bincount(LABELS[balanced_draw(LABELS, COUNTS, 128, gen)], minlength=6)
    assert stats.chisquare(freqs.numpy()).pvalue > 1e-3


def test_sampler_for_epoch():
    drs = recipe(drs_from=0.5, epochs=10)
    assert [sampler_for(drs, e) for e in (0, 4, 5, 9)] == ["instance"] * 2 + ["class_balanced"] * 2


@pytest.mark.parametrize(
    "over, reason",
    [
        (
            {"loss": "balanced_softmax", "sampler": "class_balanced"},
            "loss balanced_softmax .* and ",
        ),
        ({"loss": "logit_adjusted", "drw_from": 0.8}, "and drw_from"),
        ({"loss": "balanced_softmax", "posthoc_tau": 1.0}, "and posthoc_tau"),
        ({"loss": "weighted_ce", "mixup": "balanced_mixup"}, "and mixup balanced_mixup"),
        ({"loss": "balanced_softmax", "mixup": "balanced_mixup", "posthoc_tau": 1.0}, "posthoc"),
        ({"finetune": "linear"}, "only transfer_runs have one"),
        ({"mixup": "balanced_mixup", "sampler": "sqrt"}, "sampler sqrt"),
        ({"loss": "weighted_ce", "drw_from": 0.5}, "weighted_ce .* and drw_from"),
        ({"loss": "ldam"}, "set head: cosine"),
        ({"loss": "focal", "label_smoothing": 0.1}, "only applies to cross_entropy"),
    ],
)
def test_invalid_combinations_are_refused_with_a_reason(over, reason):
    with pytest.raises(ParamsError, match=reason):
        check(cfg(**over), "runs.x")


# How many corrections of the class prior each setting makes: prior losses, re-weighting,
# re-sampling (balanced_mixup's class-balanced partner batch included) and post-hoc adjustment
# make one each; ldam's margins, focal, plain mixup and cutmix none. One per run is allowed.
CORRECTIONS = {
    "loss": {
        "cross_entropy": 0,
        "focal": 0,
        "ldam": 0,
        "weighted_ce": 1,
        "balanced_softmax": 1,
        "logit_adjusted": 1,
    },
    "sampler": {"instance": 0, "class_balanced": 1, "sqrt": 1, "progressive": 1},
    "mixup": {"none": 0, "mixup": 0, "cutmix": 0, "balanced_mixup": 1},
    "drw_from": {1.0: 0, 0.8: 1},
    "drs_from": {1.0: 0, 0.8: 1},
    "posthoc_tau": {0.0: 0, 1.0: 1},
    "head": {"linear": 0, "cosine": 0},
}


def test_the_table_covers_every_registered_method():
    # balpoe (one correction) needs a net of experts: its combinations are tests/test_balpoe.py's
    assert set(CORRECTIONS["loss"]) == set(LOSSES) - {"balpoe"}
    assert set(CORRECTIONS["sampler"]) == set(SAMPLERS)
    assert set(CORRECTIONS["mixup"]) == set(MIXUPS)
    assert set(CORRECTIONS["head"]) == set(RECIPE["head"].kind) - {"auto"}


def test_every_combination_is_refused_iff_it_corrects_the_prior_twice():
    """loss x sampler x mixup x drw x drs x posthoc x head: at most one prior correction, and
    ldam only on the cosine head (whose scale its margins assume)."""
    keys = list(CORRECTIONS)
    combos = list(itertools.product(*(CORRECTIONS[k] for k in keys)))
    assert len(combos) == 6 * 4 * 4 * 2 * 2 * 2 * 2
    for combo in combos:
        run = dict(zip(keys, combo, strict=True))
        twice = sum(CORRECTIONS[k][v] for k, v in run.items()) > 1
        exception = (
            run["loss"] in ("balanced_softmax", "logit_adjusted")
            and run["mixup"] == "balanced_mixup"
            and sum(CORRECTIONS[k][v] for k, v in run.items()) == 2
        )
        twice = twice and not exception
        linear_ldam = run["loss"] == "ldam" and run["head"] == "linear"
        reason = refusal(cfg(**run))
        assert (reason is not None) == (twice or linear_ldam), (run, reason)
        if twice:
            assert reason.startswith("one prior correction per run"), (run, reason)


@pytest.mark.slow
def test_every_report_run_composes_and_trains_one_step():
    """Each run of params.yaml builds its loss, sampler and mixup and takes a training step."""
    from ltcifar.config.records import RunConfig
    from ltcifar.config.runs import run_config
    from ltcifar.training.engine import train
    from tests.conftest import make_split

    params = load()
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [40, 20, 10, 10])
    x = rng.integers(0, 255, (80, 12, 12, 3)).astype(np.uint8)
    data = make_split(x[rng.permutation(80)], y[rng.permutation(80)], 8, 4)
    for name in params["runs"]:
        run = RunConfig(**{**run_config(params, name), "epochs": 1, "batch_size": 16})
        history = train(run, data, 0, torch.device("cpu")).history
        assert np.isfinite(history[0]["train/loss"]), name


def test_focal_loss_below_gamma_1_stays_finite_where_p_is_1():
    """(1 - p)^gamma has an infinite derivative at p = 1 for gamma < 1; the loss and its
    gradient stay finite, and the loss equals the formula elsewhere."""
    logits = torch.tensor([[120.0, 0.0, 0.0], [2.0, 1.0, 0.0]], requires_grad=True)
    t = F.one_hot(torch.tensor([0, 1]), 3).float()
    loss = LOSSES["focal"](COUNTS[:3], recipe(focal_gamma=0.5))(logits, t)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    p = logits[1].detach().softmax(0)[1]
    torch.testing.assert_close(loss[1].detach(), -((1 - p) ** 0.5) * p.log())
