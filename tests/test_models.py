"""CIFAR ResNets and PlainNets: sizes and cost from the architecture, shapes, no-skip twins."""

import pytest
import torch
from torch import nn

from ltcifar.models import MODELS, build_model


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # bias-free


def bn(c: int) -> int:
    return 2 * c  # weight and bias (running stats are buffers)


def expected_params(depth: int, num_classes: int, in_channels: int = 3, shortcut: str = "A") -> int:
    """He et al. 2016 Sec. 4.2: 3x3 stem, 3 stages of n basic blocks at 16/32/64 channels, FC."""
    n = (depth - 2) // 6
    total = conv(in_channels, 16, 3) + bn(16)
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if shortcut == "B" and cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 64 * num_classes + num_classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_expected_formula_matches_paper_numbers():
    assert expected_params(20, 10) == 269_722
    for depth, millions in ((20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)):
        assert expected_params(depth, 10) / 1e6 == pytest.approx(millions, abs=0.005)


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_resnet_param_counts(depth):
    model = build_model(f"resnet{depth}", 10)
    assert n_params(model) == expected_params(depth, 10)


def test_resnet20_is_027m():
    assert n_params(build_model("resnet20", 10)) == 269_722
    assert n_params(build_model("resnet20", 100)) == expected_params(20, 100)
    assert n_params(build_model("resnet20", 10, in_channels=1)) == expected_params(20, 10, 1)


@pytest.mark.parametrize("depth", [20, 56])
def test_plainnet_same_size_as_resnet_option_a(depth):
    plain = build_model(f"plainnet{depth}", 100)
    res = build_model(f"resnet{depth}", 100, shortcut="A")
    assert n_params(plain) == n_params(res) == expected_params(depth, 100)


def test_option_b_adds_projections():
    a = n_params(build_model("resnet20", 10, shortcut="A"))
    b = n_params(build_model("resnet20", 10, shortcut="B"))
    assert b > a
    assert b == expected_params(20, 10, shortcut="B")
    assert b - a == conv(16, 32, 1) + bn(32) + conv(32, 64, 1) + bn(64)


@pytest.mark.parametrize(
    "name,shape,in_channels,classes",
    [
        ("resnet20", (2, 1, 28, 28), 1, 10),
        ("resnet20", (2, 3, 32, 32), 3, 100),
        ("plainnet20", (2, 1, 28, 28), 1, 10),
        ("plainnet20", (2, 3, 32, 32), 3, 10),
        ("resnet20", (2, 3, 40, 40), 3, 10),
        ("resnet32", (2, 3, 32, 32), 3, 10),
    ],
)
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_forward_shapes(name, shape, in_channels, classes, shortcut):
    torch.manual_seed(0)
    model = build_model(name, classes, in_channels=in_channels, shortcut=shortcut).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (shape[0], classes)
    assert torch.isfinite(out).all()


def test_every_block_of_plainnet_lacks_residual():
    plain = build_model("plainnet20", 10)
    res = build_model("resnet20", 10)
    assert len(plain.blocks) == len(res.blocks) == 9
    assert all(b.residual is False for b in plain.blocks)
    assert all(b.residual is True for b in res.blocks)


@pytest.mark.parametrize("name", ["plainnet20", "resnet20"])
def test_skip_connection_effect(name):
    """bn2 zeroed makes the residual branch 0: a plain block gives 0, a residual one relu(x)."""
    torch.manual_seed(0)
    model = build_model(name, 10).eval()
    block = model.blocks[0]  # 16 -> 16, stride 1: identity shortcut
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        x = torch.randn(2, 16, 8, 8)
        out = block(x)
    if name == "plainnet20":
        assert torch.count_nonzero(out) == 0
    else:
        torch.testing.assert_close(out, torch.relu(x))


@pytest.mark.parametrize("depth", [19, 21, 18, 33, 110 + 1])
def test_bad_depth_raises(depth):
    from ltcifar.models import CifarNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarNet(depth, 10)


def test_bad_shortcut_raises():
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", 10, shortcut="C")


def test_registry_names():
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "plainnet20", "plainnet56"} <= set(
        MODELS
    )
    with pytest.raises(KeyError, match="resnet20"):
        MODELS["resnet18"]


def expected_macs_resnet20(hw: int = 32) -> int:
    total = hw * hw * conv(3, 16, 3)
    cin = 16
    for i, cout in enumerate((16, 32, 64)):
        for j in range(3):
            if i > 0 and j == 0:
                hw //= 2
            total += hw * hw * (conv(cin, cout, 3) + conv(cout, cout, 3))
            cin = cout
    return total + 64 * 10


def test_resnet20_multiply_adds():
    model = build_model("resnet20", 10).eval()
    macs = []

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs.append(out[0].numel() * k)
        else:
            macs.append(mod.in_features * mod.out_features)

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    total = sum(macs)
    assert len(macs) == 1 + 18 + 1
    assert total == expected_macs_resnet20()
    assert total == pytest.approx(41e6, rel=0.02)
