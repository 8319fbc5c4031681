"""Transfer learning: which parameters each fine-tuning mode trains, that frozen weights and
BatchNorm statistics stay put, that the ``backbone`` stage fetches ImageNet weights offline with
a hash check (or pretrains its own), that a backbone transfers end to end (Fashion-MNIST, CPU),
and the config rules of transfer runs."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from ltcifar.config import params as config
from ltcifar.config import runs as resolution
from ltcifar.config.records import RunConfig, SplitConfig
from ltcifar.config.runconfig import dumps, read_run_config
from ltcifar.config.schema import ParamsError
from ltcifar.data.download import fetch_file
from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import Scoring, predict
from ltcifar.evaluation.metrics import confusion, summarize
from ltcifar.methods.models import TorchvisionNet, build_model, model_options
from ltcifar.methods.transfer import (
    BACKBONE_FILE,
    apply_mode,
    init_from_backbone,
    load_backbone,
    param_groups,
    train_mode,
)
from ltcifar.training.checkpoints import save_atomic
from ltcifar.training.engine import train
from tests.conftest import FASHION, make_split, recipe
from tests.params_edit import load_modified, repo_params

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MODES = ("linear", "bn_fc", "full")
ALL_MODES = ("scratch", *MODES)


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
    ltcifar.methods.transfer.bn_names)."""
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


def transfer_cfg(**over) -> RunConfig:
    return recipe(**{"finetune": "linear", "lr_backbone_factor": 1.0, **over})


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


def project_keys(tv_state: dict) -> dict:
    """A torchvision state_dict in this project's key space (``TorchvisionNet.net``)."""
    return {f"net.{k}": v for k, v in tv_state.items()}


def wrong_hash(digest: str) -> str:
    return "0" * 8 if not digest.startswith("0" * 8) else "f" * 8


# ---------------------------------------------------------------------------------------------
# 1. trainable parameters per mode


@pytest.fixture(params=["tv_resnet18", "resnet20"])
def model_and_head(request):
    model = build_model(request.param, 10)
    prefix = "net." if request.param == "tv_resnet18" else ""
    return model, {f"{prefix}fc.weight", f"{prefix}fc.bias"}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_trainable_parameters_per_mode(model_and_head, mode):
    model, head = model_and_head
    everything = {n for n, _ in model.named_parameters()}
    bn = bn_affine(model)
    assert bn and head <= everything and not (bn & head)
    apply_mode(model, mode)
    expected = {"linear": head, "bn_fc": head | bn, "full": everything, "scratch": everything}
    assert trainable(model) == expected[mode]


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
    apply_mode(model, "scratch")
    assert n_params(model, trainable(model)) == sum(p.numel() for p in model.parameters())


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
@pytest.mark.parametrize("mode", ALL_MODES)
def test_one_step_moves_only_trainable_weights(arch, mode):
    torch.manual_seed(0)
    model = build_model(arch, 10)
    apply_mode(model, mode)
    cfg = transfer_cfg(finetune=mode, lr=0.1, lr_backbone_factor=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = bn_buffers(model)
    opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=0.9, weight_decay=0.1)
    train_mode(model, mode)
    bn_modules = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training == (mode in ("full", "scratch")) for m in bn_modules)
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
    if mode in ("full", "scratch"):
        assert len(moved) == len(stats)  # every running mean, var and counter moved
    else:
        assert moved == []


def test_param_groups_split_backbone_and_head():
    model = build_model("tv_resnet18", 10)
    head = {"net.fc.weight", "net.fc.bias"}
    ids = {id(p): n for n, p in model.named_parameters()}
    for mode, backbone in (("linear", set()), ("bn_fc", bn_affine(model)), ("full", None)):
        apply_mode(model, mode)
        groups = param_groups(model, transfer_cfg(finetune=mode, lr=0.2, lr_backbone_factor=0.1))
        names = [{ids[id(p)] for p in g["params"]} for g in groups]
        if backbone is None:
            backbone = {n for n, _ in model.named_parameters()} - head
        expected = ([(backbone, pytest.approx(0.02))] if backbone else []) + [(head, 0.2)]
        assert [(n, g["lr"]) for n, g in zip(names, groups, strict=True)] == expected, mode
    # from scratch there is no pretrained backbone: one group at the base lr, factor ignored
    apply_mode(model, "scratch")
    groups = param_groups(model, transfer_cfg(finetune="scratch", lr=0.2, lr_backbone_factor=0.1))
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
def source_backbone(tiny3):
    """A resnet20 trained one epoch: a backbone state_dict as the backbone stage writes it
    (weights: pretrain), with its own 4-class head.

    Small learning rates: after four steps BatchNorm's running statistics are rough, so frozen
    (eval-mode) BatchNorm amplifies and a large lr would make the transferred runs diverge."""
    cfg = recipe(epochs=1, warmup_epochs=0, milestones=[], lr=0.02)
    return {k: v.clone() for k, v in train(cfg, tiny3, 0, CPU).state_dict.items()}


@pytest.mark.parametrize("mode", MODES)
def test_train_from_backbone_keeps_frozen_weights(tiny3, source_backbone, mode):
    source = source_backbone
    cfg = recipe(epochs=1, warmup_epochs=0, milestones=[], lr=0.01, finetune=mode)
    out = train(cfg, tiny3, 0, CPU, backbone=source).state_dict
    assert set(out) == set(source)
    assert all(torch.isfinite(v).all() for v in out.values() if v.is_floating_point())
    conv = {k for k in source if "conv" in k and k.endswith("weight")}
    bn_stat = {k for k in source if k.endswith(("running_mean", "running_var", "tracked"))}
    bn_aff = bn_affine(build_model("resnet20", 4))
    same = {k for k in source if not k.startswith("fc.") and torch.equal(out[k], source[k])}
    if mode == "full":
        assert not same & conv
        assert not same & bn_stat
        assert not same & bn_aff
    else:
        assert conv | bn_stat <= same  # backbone and its statistics bit-identical
        assert bn_aff <= same if mode == "linear" else not same & bn_aff
    assert not torch.equal(out["fc.weight"], source["fc.weight"])


def test_train_from_imagenet_backbone_linear_keeps_it(tiny3, tmp_path):
    _, state, _ = tv_state_file(tmp_path)
    cfg = recipe(model="tv_resnet18", epochs=1, warmup_epochs=0, milestones=[], finetune="linear")
    out = train(cfg, tiny3, 0, CPU, backbone=project_keys(state)).state_dict
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(out[f"net.{k}"], v), k
    assert out["net.fc.weight"].shape == (4, 512)


# ---------------------------------------------------------------------------------------------
# 3. backbone weights, offline: fetched and verified, loaded into the model, refused when wrong

STAGE_PARAM = "profiles.<profile>.backbone"  # what the backbone stage's errors name


def test_fetch_weights_verifies_and_copies(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    out = tmp_path / "out"
    got = fetch_file(path.name, [str(path)], [digest[:8]], out, STAGE_PARAM, "sha256")
    assert got == out / path.name
    assert got.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [path.name]
    # a second call keeps the verified copy
    assert fetch_file(path.name, [], [digest[:8]], out, STAGE_PARAM, "sha256") == got


def test_fetch_weights_wrong_hash_leaves_nothing(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=r"backbone\.sha256") as err:
        fetch_file(path.name, [str(path)], [wrong_hash(digest)], out, STAGE_PARAM, "sha256")
    assert digest in str(err.value)  # says which hash it got
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_init_from_imagenet_backbone(tmp_path, stem):
    _, state, _ = tv_state_file(tmp_path)
    cfg = transfer_cfg(model="tv_resnet18", stem=stem)
    torch.manual_seed(123)
    model = build_model("tv_resnet18", 10, **model_options(cfg))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    init_from_backbone(model, project_keys(state))
    got = model.state_dict()
    new = {"fc.weight", "fc.bias"} | ({"conv1.weight"} if stem == "cifar" else set())
    for k, v in state.items():
        if k not in new:
            assert torch.equal(got[f"net.{k}"], v), k
    for k in new:  # the new head (and CIFAR stem) are kept, not loaded
        assert torch.equal(got[f"net.{k}"], fresh[f"net.{k}"]), k
    assert model.net.fc.weight.shape == (10, 512)
    if stem == "cifar":
        assert model.net.conv1.weight.shape == (64, 3, 3, 3)


def test_init_from_backbone_of_another_head(source_backbone):
    """A resnet20 backbone (4 classes) into a 10-class resnet20 with a cosine head: all but the
    head is loaded, whatever the head's shape or kind."""
    model = build_model("resnet20", 10, head="cosine")
    init_from_backbone(model, source_backbone)
    got = model.state_dict()
    kept = {k: v for k, v in source_backbone.items() if not k.startswith("fc.")}
    assert all(torch.equal(got[k], v) for k, v in kept.items())
    assert got["fc.weight"].shape == (64, 10)


@pytest.mark.parametrize(
    "case", ["resnet50 into tv_resnet18", "torchvision keys", "resnet20 into tv_resnet18"]
)
def test_init_from_backbone_refuses_what_does_not_fit(case, source_backbone):
    state = {
        "resnet50 into tv_resnet18": project_keys(torchvision.models.resnet50().state_dict()),
        "torchvision keys": torchvision.models.resnet18().state_dict(),  # no net. prefix
        "resnet20 into tv_resnet18": source_backbone,
    }[case]
    model = build_model("tv_resnet18", 10)
    with pytest.raises(PipelineError, match=r"^w\.pt does not fit this model: no matching net\."):
        init_from_backbone(model, state, "w.pt")


def test_load_backbone_round_trip_and_missing_file(tmp_path, source_backbone):
    path = tmp_path / BACKBONE_FILE
    with pytest.raises(PipelineError) as err:
        load_backbone(path)
    assert str(path) in str(err.value) and "dvc repro backbone" in str(err.value)
    save_atomic(source_backbone, path)
    got = load_backbone(path)
    assert set(got) == set(source_backbone)
    assert all(torch.equal(got[k], v) for k, v in source_backbone.items())


def _backbone_stage(work: Path, backbone_json: dict) -> subprocess.CompletedProcess:
    """``python -m stages.backbone`` in ``work``, with ``configs/backbone.json`` as given."""
    (work / "configs").mkdir(parents=True, exist_ok=True)
    (work / "configs" / "backbone.json").write_text(dumps(backbone_json))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stages.backbone"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def imagenet_json(tmp_path: Path, source: str, sha: str) -> dict:
    """configs/backbone.json as the configs stage writes it for profile full, pointed at a
    local file."""

    def edit(p):
        p["profile"] = "full"
        p["profiles"]["full"]["backbone"].update(sources=[source], sha256=[sha])

    params = load_modified(tmp_path, repo_params(), edit)
    return resolution.stage_configs(params)["backbone.json"]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The stage's error: one line, the last on stderr (tqdm may share it), no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert sum(ln.startswith("error") for ln in lines) == 1
    assert lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.slow
def test_backbone_stage_imagenet_weights(tmp_path):
    path, state, digest = tv_state_file(tmp_path)
    work = tmp_path / "repo"
    cfg = imagenet_json(tmp_path, str(path), digest[:8])
    assert cfg == {
        "model": "tv_resnet18",
        "weights": "imagenet",
        "sources": [str(path)],
        "sha256": [digest[:8]],
    }
    proc = _backbone_stage(work, cfg)
    assert proc.returncode == 0, proc.stderr
    out = work / BACKBONE_FILE
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no download left over
    got = torch.load(out, weights_only=True)
    want = project_keys(state)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert f"{len(want)} tensors" in proc.stdout
    # what the train stage does with it: every tensor but the new head is the file's
    model = build_model("tv_resnet18", 100)
    init_from_backbone(model, load_backbone(out))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in want.items() if not k.startswith("net.fc."))


@pytest.mark.slow
def test_backbone_stage_wrong_hash(tmp_path):
    path, _, digest = tv_state_file(tmp_path)
    work = tmp_path / "repo"
    proc = _backbone_stage(work, imagenet_json(tmp_path, str(path), wrong_hash(digest)))
    line = one_error_line(proc)
    assert f"{STAGE_PARAM}.sha256" in line and digest in line
    assert not (work / "models" / "backbone").exists() or not any(
        (work / "models" / "backbone").iterdir()
    )


@pytest.mark.slow
def test_backbone_stage_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18-12345678.pth"
    work = tmp_path / "repo"
    proc = _backbone_stage(work, imagenet_json(tmp_path, str(missing), "12345678"))
    line = one_error_line(proc)
    assert str(missing) in line and f"{STAGE_PARAM}.sources" in line
    assert not (work / BACKBONE_FILE).exists()


def _junk_weights(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The stage run on a file whose hash is accepted but which is no state_dict."""
    junk = tmp_path / "resnet18-junk.pth"
    junk.write_bytes(b"not a pickle" * 100)
    digest = hashlib.sha256(junk.read_bytes()).hexdigest()
    work = tmp_path / "repo"
    return work, _backbone_stage(work, imagenet_json(tmp_path, str(junk), digest))


@pytest.mark.slow
def test_backbone_stage_not_a_state_dict(tmp_path):
    work, proc = _junk_weights(tmp_path)
    line = one_error_line(proc)
    assert "is not a PyTorch state_dict" in line and ".download" not in line
    assert not (work / BACKBONE_FILE).exists()
    assert not (work / BACKBONE_FILE.parent / ".download").exists()


# ---------------------------------------------------------------------------------------------
# 4. transfer from a backbone end to end (Fashion-MNIST)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="needs the dataset-fashion-mnist package")
def test_pretrained_backbone_stage_to_transfer_run(tmp_path):
    """Profile quick, shrunk: the backbone stage pretrains a resnet20 on the step split (in a
    subprocess, from configs/backbone.json), and transfer_linear, resolved from params.yaml,
    trains from its file with every backbone tensor bit-identical."""
    from ltcifar.data.datasets import prepare
    from ltcifar.data.lt_index import build_index
    from ltcifar.data.split_data import split_data

    def edit(p):
        quick = p["profiles"]["quick"]
        p["profile"] = "quick"
        quick["budget"].update(epochs=1, batch_size=64, seeds=[0])
        quick["splits"]["step"].update(n_max=200, n_min=20, val_per_class=0)
        del p["runs"]["step_logit_adjusted"]  # tunes tau on validation images; none here
        quick["splits"]["balanced"].update(n_max=40, val_per_class=0)

    params = load_modified(tmp_path, repo_params(), edit)
    files = resolution.stage_configs(params)
    bb = files["backbone.json"]
    assert (bb["model"], bb["weights"], bb["split"]) == ("resnet20", "pretrain", "step")
    assert bb["split_spec"] == params["profiles"]["quick"]["splits"]["step"]
    assert bb["run"]["name"] == "backbone" and bb["run"]["seeds"] == [0]
    work = tmp_path / "repo"
    arrays = prepare("fashion_mnist", FASHION, work / "data" / "prepared" / "fashion_mnist.npz")

    proc = _backbone_stage(work, bb)
    assert proc.returncode == 0, proc.stderr
    assert "pretraining resnet20 on split step (380 images)" in proc.stdout  # 200 + 9 x 20
    assert not any((work / "checkpoints").rglob("*.pt"))  # its checkpoint is removed
    state = load_backbone(work / BACKBONE_FILE)
    fresh = build_model("resnet20", 10, in_channels=1).state_dict()
    assert set(state) == set(fresh)
    tracked = [v.item() for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {380 // 64}  # trained: one epoch of 5 steps
    assert not torch.equal(state["stem.0.weight"], fresh["stem.0.weight"])

    (work / "configs" / "runs").mkdir(parents=True)
    (work / "configs" / "runs" / "transfer_linear.json").write_text(
        dumps(files["runs/transfer_linear.json"])
    )
    cfg = read_run_config("transfer_linear", work / "configs")
    assert isinstance(cfg, RunConfig)
    assert (cfg.model, cfg.finetune, cfg.split) == ("resnet20", "linear", "balanced")
    spec = SplitConfig(**params["profiles"]["quick"]["splits"]["balanced"])
    index = build_index("balanced", spec, arrays["y_train"], [str(c) for c in arrays["classes"]])
    data = split_data(index, CPU, work / "data")
    out = train(cfg, data, 0, CPU, backbone=state).state_dict
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(out[k], v), k
    assert not torch.equal(out["fc.weight"], state["fc.weight"])


def _evaluate(cfg: RunConfig, state: dict, data, x_test, y_test) -> float:
    model = build_model(cfg.model, data.num_classes, data.in_channels, **model_options(cfg))
    model.load_state_dict(state)
    logits = predict(model, x_test, data.mean, data.std, Scoring.of(cfg))
    return summarize(confusion(y_test, logits.argmax(1), data.num_classes).numpy())["accuracy"]


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="needs the dataset-fashion-mnist package")
def test_backbone_transfer_beats_scratch_fashion_mnist():
    """A resnet20 trained on 1000 images is the backbone for 400 other images of the same
    classes. With the same small budget (2 epochs), every transfer mode clearly beats training
    from scratch: about 0.6 against 0.35 on 1 CPU thread, data seeds 0-2, so the asserted
    margin of 0.1 leaves 0.15 of slack, and 0.45 (chance is 0.1) leaves about 0.15 too."""
    from ltcifar.data.datasets import DATASETS

    arrays = DATASETS["fashion_mnist"].read(FASHION)
    perm = np.random.default_rng(0).permutation(len(arrays["y_train"]))
    src_idx, tgt_idx = perm[:1000], perm[1000:1500]  # disjoint images, same ten classes
    source = make_split(arrays["x_train"][src_idx], arrays["y_train"][src_idx], 0, 10)
    target = make_split(arrays["x_train"][tgt_idx], arrays["y_train"][tgt_idx], 100, 10)
    x_test = torch.from_numpy(arrays["x_test"][:500].copy())
    y_test = torch.from_numpy(arrays["y_test"][:500].copy())
    base = dict(epochs=2, batch_size=32, schedule="cosine", milestones=[], warmup_epochs=0, lr=0.05)

    src_cfg = recipe(**base)
    backbone = train(src_cfg, source, 0, CPU).state_dict
    acc = {"source (1000 imgs)": _evaluate(src_cfg, backbone, source, x_test, y_test)}

    runs = {"scratch": (recipe(**base), None)}  # as the train stage: scratch gets no backbone
    for mode in MODES:
        factor = 0.1 if mode == "full" else 1.0
        runs[mode] = (recipe(**base, finetune=mode, lr_backbone_factor=factor), backbone)
    for name, (cfg, start) in runs.items():
        state = train(cfg, target, 0, CPU, backbone=start).state_dict
        acc[name] = _evaluate(cfg, state, target, x_test, y_test)

    print("\ntest accuracy, 500 Fashion-MNIST test images (target: 400 train images, 2 epochs)")
    for name, a in acc.items():
        print(f"  {name:<20} {a:.3f}")
    for mode in MODES:
        assert acc[mode] > 0.45, acc
        assert acc[mode] > acc["scratch"] + 0.1, acc


# ---------------------------------------------------------------------------------------------
# 5. config: transfer runs take the profile's backbone, and the refusals


def test_transfer_runs_resolve_the_profiles_backbone():
    params = config.load(REPO / "params.yaml")
    full_bb = params["profiles"]["full"]["backbone"]
    full = resolution.resolve_run(params, "transfer_linear", "full")
    assert full["model"] == full_bb["model"] == "tv_resnet18" and full["transfer"]
    assert resolution.resolve_run(params, "transfer_linear", "quick")["model"] == "resnet20"
    # the backbone's fine-tuning recipe applies to transfer runs only
    assert full["epochs"] == full_bb["recipe"]["epochs"] == 10 and full["input_size"] == 112
    step_ce = resolution.resolve_run(params, "step_ce", "full")
    assert step_ce["model"] == "resnet32" and not step_ce["transfer"]
    assert step_ce["epochs"] == params["profiles"]["full"]["recipe"]["epochs"] == 50
    assert step_ce["input_size"] == 0
    quick = resolution.resolve_run(params, "transfer_linear", "quick")
    assert quick["model"] == "resnet20" and quick["transfer"]
    assert quick["epochs"] == params["profiles"]["quick"]["budget"]["epochs"]
    assert resolution.resolve_run(params, "transfer_scratch", "quick")["model"] == "resnet20"
    assert resolution.backbone_config(params, "full") == {
        "model": "tv_resnet18",
        "weights": "imagenet",
        "sources": full_bb["sources"],
        "sha256": full_bb["sha256"],
    }
    quick_bb = resolution.backbone_config(params, "quick")
    assert quick_bb["weights"] == "pretrain" and quick_bb["run"]["model"] == "resnet20"
    assert "finetune" not in quick_bb["run"]  # the backbone itself trains from scratch


def test_run_config_holds_finetune_only_when_it_transfers(tmp_path):
    params = config.load(REPO / "params.yaml")
    scratch = resolution.run_config(params, "transfer_scratch", "full")
    assert "finetune" not in scratch and "lr_backbone_factor" not in scratch
    assert "transfer" not in scratch
    full = resolution.run_config(params, "transfer_full", "full")
    assert full["finetune"] == "full" and full["lr_backbone_factor"] == 0.1
    assert resolution.run_config(params, "transfer_linear", "full")["finetune"] == "linear"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "transfer_scratch.json").write_text(dumps(scratch))
    read = read_run_config("transfer_scratch", tmp_path)
    assert isinstance(read, RunConfig) and read.finetune == "scratch"  # catalog.OFF


def test_transfer_run_may_not_set_model(tmp_path):
    def edit(p):
        p["transfer_runs"]["transfer_linear"]["model"] = "plainnet20"

    with pytest.raises(ParamsError, match="backbone model") as err:
        load_modified(tmp_path, repo_params(), edit)
    prefix = "transfer_runs.transfer_linear.model: transfer runs use the profile's"
    assert str(err.value).startswith(prefix)


@pytest.mark.parametrize("where", ["runs", "candidate"])
def test_finetune_needs_a_transfer_run(tmp_path, where):
    def edit(p):
        if where == "runs":
            p["runs"]["step_ce"]["finetune"] = "linear"
        else:
            p["finetune"] = "bn_fc"

    with pytest.raises(ParamsError, match="only transfer_runs have one") as err:
        load_modified(tmp_path, repo_params(), edit)
    assert ("runs.step_ce (profile " if where == "runs" else "the candidate") in str(err.value)


def test_transfer_run_may_freeze(tmp_path):
    """The control of the refusals above: the unedited file loads, and a transfer run may use
    any mode (transfer_scratch switched to linear)."""
    load_modified(tmp_path, repo_params(), lambda p: None)

    def edit(p):
        p["transfer_runs"]["transfer_scratch"]["finetune"] = "linear"

    params = load_modified(tmp_path, repo_params(), edit)
    assert resolution.resolve_run(params, "transfer_scratch")["finetune"] == "linear"
