"""CIFAR ResNets and PlainNets: sizes and cost, shapes, no-skip twins, and the fp32 heads."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltcifar.methods.models import MODELS, build_model


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


def out_of_place(block, x: torch.Tensor) -> torch.Tensor:
    """A basic block as He et al. write it, relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x),
    every op allocating its result."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    return F.relu(out + block.shortcut(x) if block.residual else out)


@pytest.mark.parametrize("name,index", [("resnet20", 0), ("resnet20", 3), ("plainnet20", 3)])
def test_in_place_block_gives_the_same_values_and_gradients(name, index):
    """The blocks write their ReLUs and sum in place: the output and every gradient are the
    out-of-place formula's, to the bit, in training (batch statistics) as in evaluation. Block 3
    is a stride-2 block with a zero-padding shortcut."""
    for train in (True, False):
        grads, outs = [], []
        for forward in (out_of_place, lambda b, x: b(x)):
            torch.manual_seed(0)
            block = build_model(name, 10).blocks[index].train(train)
            x = torch.randn(4, block.conv1.in_channels, 8, 8, requires_grad=True)
            out = forward(block, x)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append([x.grad, *(p.grad for p in block.parameters())])
        assert torch.equal(*outs)
        assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("depth", [19, 21, 18, 33, 110 + 1])
def test_bad_depth_raises(depth):
    from ltcifar.methods.models import CifarNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarNet(depth, True, 10)


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


def head_of(model: nn.Module) -> nn.Module:
    return model.net.fc if hasattr(model, "net") else model.fc


def run_capturing_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The model's output and the features its head received."""
    feats: list[torch.Tensor] = []
    handle = head_of(model).register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
    out = model(x)
    handle.remove()
    return out, feats


def cosines(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(feature_i, w_c), computed in float64 from the definition."""
    f, w = features.double(), weight.double()
    return (f @ w) / f.norm(dim=1, keepdim=True) / w.norm(dim=0, keepdim=True)


def test_cosine_head_probabilities_are_softmax_of_scaled_cosines_and_ldam_matches_reference():
    """predict()'s softmax (what ECE and the validation loss read) is softmax(s cos theta), and
    the LDAM loss on the model's logits is LDAM-DRW's CE(s (cos - m_y e_y))."""
    from ltcifar.evaluation.inference import Scoring, predict
    from ltcifar.methods.losses import LOSSES, ldam_margins
    from ltcifar.methods.models import model_options
    from tests.conftest import recipe

    s = 30.0
    cfg = recipe(head="cosine", ldam_scale=s)
    torch.manual_seed(0)
    model = build_model("resnet20", 6, **model_options(cfg)).eval()
    x = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    mean, std = torch.full((1, 3, 1, 1), 120.0), torch.full((1, 3, 1, 1), 60.0)
    feats: list[torch.Tensor] = []
    model.fc.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
    logits = predict(model, x, mean, std, Scoring.of(cfg))
    cos = cosines(feats[0], model.fc.weight)
    torch.testing.assert_close(logits.softmax(1).double(), (s * cos).softmax(1), atol=1e-5, rtol=0)
    assert (logits.abs().max() > 1).item()  # scaled, not raw cosines

    counts, y = torch.tensor([500, 300, 100, 50, 20, 10]), torch.arange(16) % 6
    m = ldam_margins(counts, 0.5).double()
    index = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, y[:, None], True)
    reference = F.cross_entropy(s * torch.where(index, cos - m[y][:, None], cos), y)
    loss = LOSSES["ldam"](counts, cfg)(logits, F.one_hot(y, 6).float()).mean()
    torch.testing.assert_close(loss.double(), reference, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "tv_resnet18"])
@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_head_is_fp32_under_bf16_autocast(name, head):
    """The body runs in bf16, the head on fp32 features: logits are fp32 and equal the fp32 head
    of the (bf16) features, so cosines are not quantised before the scale."""
    import ltcifar.methods.transfer  # noqa: F401  (registers the torchvision nets)

    torch.manual_seed(0)
    model = build_model(name, 10, head=head, cosine_scale=30.0).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = run_capturing_features(model, torch.randn(4, 3, 32, 32))
    assert feats[0].dtype == torch.bfloat16  # the body did run under autocast
    assert out.dtype == torch.float32
    fc, f = head_of(model), feats[0].float()
    if head == "cosine":
        torch.testing.assert_close(out, 30.0 * cosines(f, fc.weight).float())
    else:
        torch.testing.assert_close(out, F.linear(f, fc.weight, fc.bias))


def test_cosine_head_starts_with_unit_class_columns():
    """LDAM-DRW's NormedLinear: uniform(-1, 1), then each class column renormalised to 1, so
    its first angular steps are as large as the reference's (lr / ||w||^2)."""
    torch.manual_seed(0)
    net = build_model("resnet32", 10, 3, head="cosine", cosine_scale=30.0)
    torch.testing.assert_close(net.fc.weight.norm(dim=0), torch.ones(10))
