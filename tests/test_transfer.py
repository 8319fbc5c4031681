"""Transfer learning: which parameters each fine-tuning mode trains, that frozen weights and
BatchNorm statistics stay put, that pretrained weights are fetched and loaded offline with a hash
check, and that a checkpoint of this pipeline transfers (Fashion-MNIST, CPU)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from torch import nn

from ltcifar import config
from ltcifar.download import fetch_file
from ltcifar.engine import predict, save_atomic, train
from ltcifar.errors import PipelineError
from ltcifar.metrics import confusion, summarize
from ltcifar.models import build_model, model_options
from ltcifar.params import ParamsError
from ltcifar.transfer import (
    TorchvisionNet,
    apply_mode,
    load_pretrained,
    param_groups,
    train_mode,
)
from tests.test_engine import FASHION, make_split, recipe

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MODES = ("linear", "bn_fc", "full")


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine, torch's spinning OpenMP workers made this
    file ~9x slower (375 s instead of 41 s); alone, 2 threads gain little on these tiny nets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def bn_affine(model: nn.Module) -> set[str]:
    """Every BatchNorm2d's weight and bias, found by walking the modules (independent of
    ltcifar.transfer.bn_names)."""
    out = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            out |= {f"{name}.weight", f"{name}.bias"}
    return out


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{b}": getattr(mod, b).clone()
        for name, mod in model.named_modules()
        if isinstance(mod, nn.BatchNorm2d)
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }


def n_params(model: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def transfer_cfg(**over) -> dict:
    return recipe(**{"init": "pretrained", "lr_backbone_factor": 1.0, **over})


def tv_state_file(tmp_path: Path, seed: int = 0) -> tuple[Path, dict, str]:
    """A torchvision resnet18 state_dict (random init) saved under torchvision's naming scheme:
    resnet18-<first 8 hex digits of its sha256>.pth."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = tmp_path / f"resnet18-{digest[:8]}.pth"
    raw.rename(path)
    return path, state, digest


def imagenet_backbone(path: Path) -> dict:
    return {"source": "imagenet", "arch": "resnet18", "run": "", "sources": [str(path)]}


def save_run(root: Path, run: str, state_dict: dict, cfg: dict, classes, in_channels) -> Path:
    """A checkpoint in the train stage's format at <root>/models/<run>/seed0.pt."""
    path = root / "models" / run / "seed0.pt"
    save_atomic(
        {
            "state_dict": state_dict,
            "config": cfg,
            "seed": 0,
            "classes": list(classes),
            "in_channels": in_channels,
            "selected_epoch": cfg["epochs"] - 1,
            "device": "cpu",
        },
        path,
    )
    return path


# ---------------------------------------------------------------------------------------------
# 1. trainable parameters per mode


@pytest.fixture(params=["tv_resnet18", "resnet20"])
def model_and_head(request):
    model = build_model(request.param, 10)
    prefix = "net." if request.param == "tv_resnet18" else ""
    return model, {f"{prefix}fc.weight", f"{prefix}fc.bias"}


@pytest.mark.parametrize("mode", MODES)
def test_trainable_parameters_per_mode(model_and_head, mode):
    model, head = model_and_head
    everything = {n for n, _ in model.named_parameters()}
    bn = bn_affine(model)
    assert bn and head <= everything and not (bn & head)
    apply_mode(model, mode)
    expected = {"linear": head, "bn_fc": head | bn, "full": everything}[mode]
    assert trainable(model) == expected


def test_resnet18_parameter_counts():
    model = build_model("tv_resnet18", 10)
    assert isinstance(model, TorchvisionNet)
    apply_mode(model, "linear")
    assert n_params(model, trainable(model)) == 512 * 10 + 10 == 5130
    apply_mode(model, "bn_fc")
    assert n_params(model, bn_affine(model)) == 9600
    assert n_params(model, trainable(model)) == 5130 + 9600
    apply_mode(model, "full")
    assert n_params(model, trainable(model)) == sum(p.numel() for p in model.parameters())
    # a mode switch also unfreezes: back to linear freezes BatchNorm again
    apply_mode(model, "linear")
    assert trainable(model) == {"net.fc.weight", "net.fc.bias"}


@pytest.mark.parametrize("mode", ["linear", "bn_fc"])
def test_cifar_stem_is_new_and_trainable(mode):
    model = build_model("tv_resnet18", 10, stem="cifar")
    assert model.net.conv1.kernel_size == (3, 3) and isinstance(model.net.maxpool, nn.Identity)
    apply_mode(model, mode)
    head = {"net.fc.weight", "net.fc.bias", "net.conv1.weight"}
    assert trainable(model) == (head if mode == "linear" else head | bn_affine(model))
    # the imagenet stem is pretrained, hence frozen
    plain = build_model("tv_resnet18", 10)
    apply_mode(plain, mode)
    assert "net.conv1.weight" not in trainable(plain)


# ---------------------------------------------------------------------------------------------
# 2. frozen weights stay frozen


@pytest.mark.parametrize("arch", ["tv_resnet18", "resnet20"])
@pytest.mark.parametrize("mode", MODES)
def test_one_step_moves_only_trainable_weights(arch, mode):
    torch.manual_seed(0)
    model = build_model(arch, 10)
    apply_mode(model, mode)
    cfg = transfer_cfg(finetune=mode, lr=0.1, lr_backbone_factor=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = bn_buffers(model)
    opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg["lr"], momentum=0.9, weight_decay=0.1)
    train_mode(model, mode)
    bn_modules = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training == (mode == "full") for m in bn_modules)
    assert model.training
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    keep = trainable(model)
    for name, p in model.named_parameters():
        if name in keep:
            assert not torch.equal(p.detach(), before[name]), f"{name} did not train ({mode})"
        else:
            assert torch.equal(p.detach(), before[name]), f"frozen {name} changed ({mode})"
            assert p.grad is None
    after = bn_buffers(model)
    moved = [k for k in stats if not torch.equal(stats[k], after[k])]
    if mode == "full":
        assert len(moved) == len(stats)  # every running mean, var and counter moved
    else:
        assert moved == []


def test_param_groups_split_backbone_and_head():
    model = build_model("tv_resnet18", 10)
    head = {"net.fc.weight", "net.fc.bias"}
    ids = {id(p): n for n, p in model.named_parameters()}
    for mode, backbone in (("linear", set()), ("bn_fc", bn_affine(model)), ("full", None)):
        apply_mode(model, mode)
        groups = param_groups(model, transfer_cfg(lr=0.2, lr_backbone_factor=0.1))
        names = [{ids[id(p)] for p in g["params"]} for g in groups]
        if backbone is None:
            backbone = {n for n, _ in model.named_parameters()} - head
        expected = ([(backbone, pytest.approx(0.02))] if backbone else []) + [(head, 0.2)]
        assert [(n, g["lr"]) for n, g in zip(names, groups, strict=True)] == expected, mode
    # from scratch there is no head: one group at the base lr
    groups = param_groups(model, transfer_cfg(init="scratch", lr=0.2, lr_backbone_factor=0.1))
    assert len(groups) == 1 and groups[0]["lr"] == 0.2
    assert len(groups[0]["params"]) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def tiny3():
    """Learnable random data: 4 classes, 3 channels, 16 px."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 160)
    x = (rng.integers(0, 60, (160, 16, 16, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    return make_split(x, y, 32, 4)


@pytest.fixture(scope="module")
def source_run(tiny3, tmp_path_factory):
    """A resnet20 trained one epoch and saved by the train stage's rules as models/src/seed0.pt.

    Small learning rates: after four steps BatchNorm's running statistics are rough, so frozen
    (eval-mode) BatchNorm amplifies and a large lr would make the transferred runs diverge."""
    root = tmp_path_factory.mktemp("src_run")
    cfg = recipe(epochs=1, warmup_epochs=0, milestones=[], lr=0.02)
    result = train(cfg, tiny3, 0, CPU)
    save_run(root, "src", result.state_dict, cfg, tiny3.classes, tiny3.in_channels)
    return root, result.state_dict


@pytest.mark.parametrize("mode", MODES)
def test_train_from_run_checkpoint_keeps_frozen_weights(tiny3, source_run, mode, monkeypatch):
    root, source = source_run
    monkeypatch.chdir(root)
    cfg = recipe(
        epochs=1,
        warmup_epochs=0,
        milestones=[],
        lr=0.01,
        init="pretrained",
        finetune=mode,
        backbone={"source": "run", "run": "src"},
        backbone_model="resnet20",
    )
    out = train(cfg, tiny3, 0, CPU).state_dict
    assert set(out) == set(source)
    assert all(torch.isfinite(v).all() for v in out.values() if v.is_floating_point())
    conv = [k for k in source if "conv" in k and k.endswith("weight")]
    bn_stat = [k for k in source if k.endswith(("running_mean", "running_var", "tracked"))]
    bn_aff = sorted(bn_affine(build_model("resnet20", 4)))
    same = {k for k in source if not k.startswith("fc.") and torch.equal(out[k], source[k])}
    if mode == "full":
        assert not same & set(conv)
        assert not same & set(bn_stat)
    else:
        assert set(conv) | set(bn_stat) <= same  # backbone and its statistics untouched
        assert (set(bn_aff) <= same) == (mode == "linear")
    assert not torch.equal(out["fc.weight"], source["fc.weight"])


def test_train_from_imagenet_file_linear_keeps_backbone(tiny3, tmp_path, monkeypatch):
    path, state, _ = tv_state_file(tmp_path)
    monkeypatch.setattr("ltcifar.transfer.WEIGHTS_DIR", tmp_path)
    cfg = recipe(
        model="tv_resnet18",
        epochs=1,
        warmup_epochs=0,
        milestones=[],
        init="pretrained",
        finetune="linear",
        backbone=imagenet_backbone(path),
        backbone_model="tv_resnet18",
    )
    out = train(cfg, tiny3, 0, CPU).state_dict
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(out[f"net.{k}"], v), k
    assert out["net.fc.weight"].shape == (4, 512)


# ---------------------------------------------------------------------------------------------
# 3. pretrained weights, offline


def test_fetch_weights_verifies_and_copies(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    out = tmp_path / "out"
    got = fetch_file(path.name, [str(path)], [digest[:8]], out, "pretrained.resnet18", "sha256")
    assert got == out / path.name
    assert got.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [path.name]
    # a second call keeps the verified copy
    assert fetch_file(path.name, [], [digest[:8]], out, "pretrained.resnet18", "sha256") == got


def test_fetch_weights_wrong_hash_leaves_nothing(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    out = tmp_path / "out"
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    with pytest.raises(PipelineError, match=r"pretrained\.resnet18\.sha256") as err:
        fetch_file(path.name, [str(path)], [wrong], out, "pretrained.resnet18", "sha256")
    assert digest in str(err.value)  # says which hash it got
    assert list(out.iterdir()) == []


def test_fetch_weights_missing_source(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18-12345678.pth"
    with pytest.raises(PipelineError) as err:
        fetch_file(
            missing.name,
            [str(missing)],
            ["12345678"],
            tmp_path / "out",
            "pretrained.resnet18",
            "sha256",
        )
    msg = str(err.value)
    assert str(missing) in msg and "pretrained.resnet18.sources" in msg
    assert not (tmp_path / "out" / missing.name).exists()


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_load_pretrained_imagenet_file(tmp_path, monkeypatch, stem):
    path, state, digest = tv_state_file(tmp_path)
    out = tmp_path / "models" / "pretrained"
    fetch_file(path.name, [str(path)], [digest[:8]], out, "pretrained.resnet18", "sha256")
    monkeypatch.chdir(tmp_path)  # WEIGHTS_DIR is relative: models/pretrained
    cfg = transfer_cfg(model="tv_resnet18", backbone=imagenet_backbone(path), stem=stem)
    torch.manual_seed(123)
    model = build_model("tv_resnet18", 10, **model_options(cfg))
    fresh_fc = model.net.fc.weight.detach().clone()
    load_pretrained(model, cfg, seed=0)
    got = model.state_dict()
    new = {"fc.weight", "fc.bias"} | ({"conv1.weight"} if stem == "cifar" else set())
    for k, v in state.items():
        if k not in new:
            assert torch.equal(got[f"net.{k}"], v), k
    assert torch.equal(model.net.fc.weight, fresh_fc)  # the new head is kept, not loaded
    assert model.net.fc.weight.shape == (10, 512)
    if stem == "cifar":
        assert model.net.conv1.weight.shape == (64, 3, 3, 3)


def test_load_pretrained_missing_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    cfg = transfer_cfg(
        model="tv_resnet18",
        backbone={"source": "imagenet", "arch": "resnet18", "run": "", "sources": [url]},
    )
    with pytest.raises(PipelineError) as err:
        load_pretrained(build_model("tv_resnet18", 10), cfg, seed=0)
    msg = str(err.value)
    for part in (
        "models/pretrained/resnet18-f37072fd.pth",
        url,
        "pretrained.resnet18.sources",
        "dvc repro download_weights",
    ):
        assert part in msg, (part, msg)


def test_load_pretrained_wrong_architecture(tmp_path, monkeypatch):
    """A resnet50 file under a resnet18 model is refused with the key that does not fit."""
    monkeypatch.setattr("ltcifar.transfer.WEIGHTS_DIR", tmp_path)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "w.pth")
    cfg = transfer_cfg(
        model="tv_resnet18",
        backbone={"source": "imagenet", "arch": "resnet18", "run": "", "sources": ["w.pth"]},
    )
    with pytest.raises(PipelineError, match="does not fit model tv_resnet18"):
        load_pretrained(build_model("tv_resnet18", 10), cfg, seed=0)


def test_load_pretrained_missing_run_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = transfer_cfg(backbone={"source": "run", "run": "step_ce"})
    with pytest.raises(PipelineError, match=r"models/step_ce/seed0\.pt not found.*step_ce"):
        load_pretrained(build_model("resnet20", 10), cfg, seed=3)


def _download_weights_stage(tmp_path: Path, source: Path, sha: str):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "full"
    params["pretrained"]["resnet18"] = {"sources": [str(source)], "sha256": [sha]}
    work = tmp_path / "repo"
    work.mkdir(exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.download_weights"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return work, proc


def test_download_weights_stage(tmp_path):
    path, state, digest = tv_state_file(tmp_path)
    work, proc = _download_weights_stage(tmp_path, path, digest[:8])
    assert proc.returncode == 0, proc.stderr
    out = work / "models" / "pretrained"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["file"] == path.name and manifest["source"] == "imagenet"
    assert manifest["tensors"] == len(state)
    assert (out / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", path.name])


def test_download_weights_stage_wrong_hash(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    work, proc = _download_weights_stage(tmp_path, path, wrong)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    # tqdm's byte counter may share stderr; the error itself is one line, the last, no traceback
    assert "Traceback" not in proc.stderr
    assert errors[-1].startswith("error: ") and "pretrained.resnet18.sha256" in errors[-1]
    assert sum(ln.startswith("error") for ln in errors) == 1
    assert not (work / "models" / "pretrained" / path.name).exists()


# ---------------------------------------------------------------------------------------------
# 4. checkpoint transfer end to end (Fashion-MNIST)


def _evaluate(cfg: dict, state: dict, data, x_test, y_test) -> float:
    model = build_model(cfg["model"], data.num_classes, data.in_channels, **model_options(cfg))
    model.load_state_dict(state)
    logits = predict(model, x_test, data.mean, data.std, cfg)
    return summarize(confusion(y_test, logits.argmax(1), data.num_classes).numpy())["accuracy"]


@pytest.mark.skipif(not FASHION.exists(), reason="needs the dataset-fashion-mnist package")
def test_checkpoint_transfer_fashion_mnist(tmp_path, monkeypatch):
    """A resnet20 trained on 1000 images is the backbone for 400 other images of the same
    classes. With the same small budget (2 epochs), every transfer mode clearly beats training
    from scratch (about 0.6 against 0.35 on 1 CPU thread, data seeds 0-2: margin >= 0.2)."""
    from ltcifar.datasets import DATASETS

    arrays = DATASETS["fashion_mnist"].read(FASHION)
    perm = np.random.default_rng(0).permutation(len(arrays["y_train"]))
    src_idx, tgt_idx = perm[:1000], perm[1000:1500]  # disjoint images, same ten classes
    source = make_split(arrays["x_train"][src_idx], arrays["y_train"][src_idx], 0, 10)
    target = make_split(arrays["x_train"][tgt_idx], arrays["y_train"][tgt_idx], 100, 10)
    x_test = torch.from_numpy(arrays["x_test"][:500].copy())
    y_test = torch.from_numpy(arrays["y_test"][:500].copy())
    base = dict(epochs=2, batch_size=32, schedule="cosine", milestones=[], warmup_epochs=0, lr=0.05)

    src_cfg = recipe(**base)
    src = train(src_cfg, source, 0, CPU)
    save_run(tmp_path, "src", src.state_dict, src_cfg, source.classes, source.in_channels)
    monkeypatch.chdir(tmp_path)
    acc = {"source (1000 imgs)": _evaluate(src_cfg, src.state_dict, source, x_test, y_test)}

    runs = {"scratch": recipe(**base)}
    for mode in MODES:
        runs[mode] = recipe(
            **base,
            init="pretrained",
            finetune=mode,
            backbone={"source": "run", "run": "src"},
            backbone_model="resnet20",
            lr_backbone_factor=0.1 if mode == "full" else 1.0,
        )
    for name, cfg in runs.items():
        state = train(cfg, target, 0, CPU).state_dict
        acc[name] = _evaluate(cfg, state, target, x_test, y_test)

    print("\ntest accuracy, 500 Fashion-MNIST test images (target: 400 train images, 2 epochs)")
    for name, a in acc.items():
        print(f"  {name:<20} {a:.3f}")
    for mode in MODES:
        assert acc[mode] > 0.45, acc  # chance is 0.1
        assert acc[mode] > acc["scratch"] + 0.1, acc


# ---------------------------------------------------------------------------------------------
# 5. config: `model: backbone` and the refusals


def test_model_backbone_resolves_per_profile():
    params = config.load(REPO / "params.yaml")
    full = config.resolve_run(params, "transfer_linear", "full")
    assert full["model"] == "tv_resnet18" and full["backbone"]["source"] == "imagenet"
    assert full["backbone"]["sources"] == params["pretrained"]["resnet18"]["sources"]
    quick = config.resolve_run(params, "transfer_linear", "quick")
    step_ce = config.resolve_run(params, "step_ce", "quick")
    assert quick["model"] == step_ce["model"] == "resnet20"
    assert quick["backbone"] == {"source": "run", "arch": "resnet18", "run": "step_ce"}
    assert config.resolve_run(params, "transfer_scratch", "quick")["model"] == "resnet20"


def _load_modified(tmp_path: Path, edit) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return config.load(path)


def test_pretrained_needs_model_backbone(tmp_path):
    def edit(p):
        p["transfer_runs"]["transfer_linear"]["model"] = "plainnet20"

    with pytest.raises(ParamsError, match="set model: backbone") as err:
        _load_modified(tmp_path, edit)
    assert "transfer_runs.transfer_linear" in str(err.value)


def test_frozen_modes_need_pretrained_init(tmp_path):
    def edit(p):
        p["transfer_runs"]["transfer_scratch"]["finetune"] = "linear"

    with pytest.raises(ParamsError, match="freeze random weights") as err:
        _load_modified(tmp_path, edit)
    assert "transfer_runs.transfer_scratch" in str(err.value)
    # the unedited file loads (the test above fails for the edit, not for the file)
    _load_modified(tmp_path, lambda p: None)
