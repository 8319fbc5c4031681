"""BalPoE (Sanchez Aimar et al. 2023): the net of experts, its loss, the combination's
consistency for the balanced error, and its place among the refusals."""

import pytest
import torch
import torch.nn.functional as F

from ltcifar.methods.losses import LOSSES, log_prior
from ltcifar.methods.models import CifarNet, ExpertsNet, build_model
from ltcifar.training.engine import train
from tests.conftest import recipe
from tests.params_edit import error_of, load_modified, repo_params

COUNTS = torch.tensor([500, 120, 30])


def test_experts_share_the_first_stage_and_average_their_logits_in_evaluation():
    torch.manual_seed(0)
    net = build_model("resnet32", 10, 3, head="cosine", cosine_scale=30.0, experts=3)
    assert isinstance(net, ExpertsNet) and len(net.experts) == 3 and len(net.heads) == 3
    x = torch.randn(4, 3, 32, 32)
    net.train()
    z = net(x)
    assert z.shape == (4, 3, 10)
    net.eval()
    h = net.shared(net.stem(x))
    experts = [
        head(F.adaptive_avg_pool2d(e(h), 1).flatten(1))
        for e, head in zip(net.experts, net.heads, strict=True)
    ]
    torch.testing.assert_close(net(x), torch.stack(experts, 1).mean(1))
    assert isinstance(build_model("resnet32", 10, 3), CifarNet)  # one expert: the plain net


def test_loss_is_each_experts_logit_adjusted_ce_averaged():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 3, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    taus = [0.0, 1.0, 2.0]
    got = LOSSES["balpoe"](COUNTS, recipe(expert_taus=taus))(z, F.one_hot(y, 3).float())
    prior = log_prior(COUNTS)
    want = torch.stack(
        [F.cross_entropy(z[:, e] + tau * prior, y, reduction="none") for e, tau in enumerate(taus)]
    ).mean(0)
    torch.testing.assert_close(got, want)


def fitted_mean_logits(taus: list[float], p_x_given_y: torch.Tensor, prior: torch.Tensor):
    """Free logits f_e(x) per expert minimising the population BalPoE loss under the training
    prior: E_{x, y ~ p(x|y) prior} mean_e CE(f_e(x) + tau_e log prior, y)."""
    joint = p_x_given_y * prior[:, None]  # (C, X)
    f = torch.zeros(
        len(taus), p_x_given_y.shape[1], len(prior), dtype=torch.float64, requires_grad=True
    )
    loss_fn = LOSSES["balpoe"](prior * 1000, recipe(expert_taus=taus))
    targets = torch.eye(len(prior), dtype=torch.float64)
    opt = torch.optim.LBFGS([f], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        per = [
            loss_fn(f.permute(1, 0, 2), targets[c].expand(f.shape[1], -1))
            for c in range(len(prior))
        ]
        loss = sum((joint[c] * per[c]).sum() for c in range(len(prior)))
        loss.backward()
        return loss

    opt.step(closure)
    return f.detach().mean(0)  # (X, C): the experts' mean logits


def test_the_mean_of_experts_is_the_balanced_posterior_when_the_taus_average_to_1():
    """On a known problem the combined experts' softmax is p_bal(y|x) = p(x|y) / sum_y' p(x|y')
    (the balanced error's Bayes classifier) for taus averaging 1, and leans to the head if not."""
    torch.manual_seed(0)
    p_x_given_y = torch.distributions.Dirichlet(torch.ones(6)).sample((3,)).double()  # (C, X)
    prior = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    balanced = (p_x_given_y / p_x_given_y.sum(0)).T  # (X, C)
    mean_1 = fitted_mean_logits([0.0, 1.0, 2.0], p_x_given_y, prior).softmax(1)
    torch.testing.assert_close(mean_1, balanced, atol=1e-3, rtol=0)  # the fit converges to 2e-4
    mean_half = fitted_mean_logits([0.0, 0.5, 1.0], p_x_given_y, prior).softmax(1)
    assert (mean_half - balanced).abs().max() > 0.05
    assert (mean_half[:, 0] > balanced[:, 0]).all()  # under-adjusted: the head class favoured


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(loss="balpoe"), "balpoe trains one tau per expert"),
        (lambda d: d.update(experts=3), "balpoe trains one tau per expert"),
        (lambda d: d.update(loss="balpoe", experts=2), "experts 2, 3 taus"),
        (
            lambda d: d.update(loss="balpoe", experts=3, sampler="class_balanced"),
            "one prior correction",
        ),
    ],
)
def test_balpoe_is_refused_without_its_experts_and_beside_another_correction(
    tmp_path, edit, message
):
    assert message in error_of(tmp_path, repo_params(), edit)


def test_balpoe_run_takes_the_cosine_head_and_reads_its_experts(tmp_path):
    from ltcifar.config.runs import run_config

    params = load_modified(tmp_path, repo_params(), lambda d: d.update(loss="balpoe", experts=3))
    cfg = run_config(params, "candidate")
    assert cfg["head"] == "cosine" and cfg["experts"] == 3 and cfg["expert_taus"] == [0.0, 1.0, 2.0]
    assert "experts" not in run_config(params, "step_ce")  # off: the plain net's config unchanged


def test_a_net_of_experts_trains_through_the_engine(tiny):
    cfg = recipe(loss="balpoe", experts=3, head="cosine", epochs=1, mixup="mixup")
    result = train(cfg, tiny, 0, torch.device("cpu"))
    assert any(k.startswith("experts.2.") for k in result.state_dict)
    assert result.history[0]["train/loss"] > 0 and "val/macro_f1" in result.history[0]
