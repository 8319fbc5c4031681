"""Losses pinned to their formulas: cross-entropy, label smoothing, Balanced Softmax.

``LOSSES[name](counts, cfg)`` returns per-sample losses (B,); the reduction happens elsewhere,
so each is compared with ``F.cross_entropy(..., reduction="none")`` or its explicit formula.
"""

import pytest
import torch
import torch.nn.functional as F

from ltcifar.methods.losses import LOSSES
from tests.conftest import recipe

CFG = recipe(label_smoothing=0.0)
C = 10


def counts() -> torch.Tensor:
    return torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def batch(seed: int = 0, b: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, C, generator=g, dtype=torch.float64).float() * 3
    labels = torch.randint(0, C, (b,), generator=g)
    return logits, labels


def soft_targets(b: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, C, generator=g) * 2, dim=1)


def test_cross_entropy_one_hot_equals_torch():
    logits, labels = batch()
    loss = LOSSES["cross_entropy"](counts(), CFG)
    got = loss(logits, F.one_hot(labels, C).float())
    torch.testing.assert_close(got, F.cross_entropy(logits, labels, reduction="none"))


def test_cross_entropy_soft_targets():
    logits, _ = batch()
    t = soft_targets(len(logits))
    loss = LOSSES["cross_entropy"](counts(), CFG)
    expected = -(t * F.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(loss(logits, t), expected)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_equals_torch(eps):
    logits, labels = batch(2)
    loss = LOSSES["cross_entropy"](counts(), recipe(label_smoothing=eps))
    got = loss(logits, F.one_hot(labels, C).float())
    torch.testing.assert_close(
        got, F.cross_entropy(logits, labels, label_smoothing=eps, reduction="none")
    )
    assert not torch.allclose(got, F.cross_entropy(logits, labels, reduction="none"))


def test_balanced_softmax_hard_labels():
    logits, labels = batch(3)
    n = counts()
    loss = LOSSES["balanced_softmax"](n, CFG)
    prior = torch.log(n.float() / n.sum())
    got = loss(logits, F.one_hot(labels, C).float())
    torch.testing.assert_close(got, F.cross_entropy(logits + prior, labels, reduction="none"))
    # and it is not plain CE on a long-tailed prior
    assert not torch.allclose(got, F.cross_entropy(logits, labels, reduction="none"))


def test_balanced_softmax_soft_targets():
    logits, _ = batch(4)
    t = soft_targets(len(logits), 5)
    n = counts()
    loss = LOSSES["balanced_softmax"](n, CFG)
    prior = torch.log(n.float() / n.sum())
    expected = -(t * F.log_softmax(logits + prior, 1)).sum(1)
    torch.testing.assert_close(loss(logits, t), expected)


def test_balanced_softmax_uniform_counts_is_ce():
    logits, labels = batch(6)
    t = F.one_hot(labels, C).float()
    bs = LOSSES["balanced_softmax"](torch.full((C,), 123), CFG)
    ce = LOSSES["cross_entropy"](torch.full((C,), 123), CFG)
    torch.testing.assert_close(bs(logits, t), ce(logits, t))
    torch.testing.assert_close(bs(logits, t), F.cross_entropy(logits, labels, reduction="none"))


@pytest.mark.parametrize("soft", [False, True])
def test_balanced_softmax_gradient(soft):
    logits, labels = batch(7, b=16)
    t = soft_targets(16, 8) if soft else F.one_hot(labels, C).float()
    n = counts()
    prior = torch.log(n.float() / n.sum())
    z = logits.clone().requires_grad_(True)
    LOSSES["balanced_softmax"](n, CFG)(z, t).mean().backward()
    expected = (torch.softmax(logits + prior, 1) - t) / len(logits)
    torch.testing.assert_close(z.grad, expected)


def test_bf16_logits_computed_in_fp32():
    logits, labels = batch(9)
    t = F.one_hot(labels, C).float()
    n = counts()
    got = LOSSES["balanced_softmax"](n, CFG)(logits.bfloat16(), t)
    assert got.dtype == torch.float32
    prior = torch.log(n.float() / n.sum())
    expected = F.cross_entropy(logits.bfloat16().float() + prior, labels, reduction="none")
    torch.testing.assert_close(got, expected)


def test_build_loss_mean_reduces_balanced_softmax():
    """The engine's loss(logits, targets, epoch) is the batch mean; without DRW its gradient is
    (softmax(z + log prior) - t) / B."""
    from ltcifar.methods.losses import build_loss

    cfg = recipe(loss="balanced_softmax", drw_from=1.0, epochs=10, weighting="inverse")
    logits, labels = batch(10, b=24)
    n = counts()
    prior = torch.log(n.float() / n.sum())
    z = logits.clone().requires_grad_(True)
    out = build_loss(cfg, n)(z, F.one_hot(labels, C).float(), 9)
    assert out.dim() == 0
    torch.testing.assert_close(out, F.cross_entropy(logits + prior, labels))
    out.backward()
    expected = (torch.softmax(logits + prior, 1) - F.one_hot(labels, C)) / len(logits)
    torch.testing.assert_close(z.grad, expected)
