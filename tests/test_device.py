"""Every choice that differs between the CPU and CUDA, made by a named function of the device
type: CUDA's choices are checked here with the device type named, so no GPU is needed, and
every setting they take is read whichever device runs (``ltcifar.device``)."""

import os

import pytest
import torch

from ltcifar import device
from ltcifar.config.records import SecondConfig, as_dict, parse
from ltcifar.config.second import second_config
from ltcifar.evaluation import inference
from ltcifar.methods.models import build_model
from ltcifar.training.second_stage import posthoc_la
from tests.conftest import recipe


@pytest.mark.parametrize(
    ("device_type", "precision", "dtype"),
    [
        ("cuda", "auto", torch.bfloat16),
        ("cpu", "auto", None),
        ("cuda", "bf16", torch.bfloat16),
        ("cpu", "bf16", torch.bfloat16),
        ("cuda", "fp32", None),
        ("cpu", "fp32", None),
    ],
)
def test_autocast_dtype_per_device_and_precision(device_type, precision, dtype):
    assert device.autocast_dtype(device_type, precision) == dtype


def test_bf16_autocast_runs_on_the_cpu():
    x = torch.ones(2, 3)
    with device.autocast_for(torch.device("cpu"), "bf16"):
        assert (x @ x.T).dtype == torch.bfloat16
    with device.autocast_for(torch.device("cpu"), "auto"):
        assert (x @ x.T).dtype == torch.float32


def test_device_choices_named_by_device_type():
    assert device.sgd_kernel("cuda") == {"fused": True}
    assert device.sgd_kernel("cpu") == {"foreach": True}
    assert device.process_group_backend("cuda") == "nccl"
    assert device.process_group_backend("cpu") == "gloo"


def test_compile_is_off_unless_asked():
    net = torch.nn.Linear(2, 2)
    assert device.compiled(net, "never") is net


def test_determinism_flags_set_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", calls.append)
    device.set_determinism("cpu", False)
    assert (calls, torch.backends.cudnn.benchmark) == ([], False)
    device.set_determinism("cuda", False)  # autotuned kernels, nondeterministic allowed
    assert (calls, torch.backends.cudnn.benchmark) == ([False], True)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    device.set_determinism("cuda", True)
    assert (calls, torch.backends.cudnn.benchmark) == ([False, True], False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_posthoc_la_runs_on_a_second_stage_config_as_cuda_would(tiny, monkeypatch):
    """posthoc_la scores validation images with the second stage's own config, which carries
    no ``precision``; scored as on CUDA (the device type named), it used to raise KeyError."""
    cuda_like = device.autocast_for
    monkeypatch.setattr(
        inference, "autocast_for", lambda d, *a: cuda_like(torch.device("cuda"), *a)
    )
    run_cfg = as_dict(recipe(split="s"))
    entry = {"run": "t", "split": "s", "method": "posthoc_la", "tau_grid": [0.0, 1.0]}
    cfg = second_config("t_posthoc_la", entry, run_cfg)
    assert "precision" not in cfg
    model = build_model("resnet20", tiny.num_classes, tiny.in_channels)
    second = parse(SecondConfig, cfg, "t_posthoc_la")
    assert set(posthoc_la(model, tiny, second, torch.Generator())) == {"tau"}


def test_device_name_names_the_card_or_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "NVIDIA H100 80GB HBM3")
    assert device.device_name(torch.device("cuda", 0)) == "cuda: NVIDIA H100 80GB HBM3"
    cpu = device.device_name(torch.device("cpu"))
    assert cpu.startswith("cpu: ") and cpu.endswith(f"({torch.get_num_threads()} threads)")
