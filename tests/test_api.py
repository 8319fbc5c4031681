"""``ltcifar.api``, the notebook's entry: a run's config as the configs stage writes it, a tiny
run trained and scored as validation scores it, a saved model loaded, a run's metrics read."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcifar import api
from ltcifar.config.runconfig import read_run_config
from tests.conftest import recipe
from tests.test_model_files import save_model_file

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_run_config_is_the_configs_stage_file():
    """The committed configs/ come from the committed params.yaml."""
    for run in ("candidate", "step_ce", "step_ldam_drw", "transfer_linear"):
        assert api.run_config(run, ROOT / "params.yaml") == read_run_config(run, ROOT / "configs")


def test_train_evaluate_on_tiny_data(tiny):
    cfg = recipe(epochs=2, posthoc_tau_grid=[0.0, 1.0])
    result = api.train_seed(cfg, tiny)  # seed: the config's first; device: the data's
    assert len(result.history) == 2
    model, model_cfg = api.trained(result, cfg, tiny)
    assert model_cfg == replace(cfg, posthoc_tau=result.posthoc_tau)
    assert model_cfg.posthoc_tau in cfg.posthoc_tau_grid  # chosen on validation images
    raw = api.evaluate(model, cfg, tiny)  # without the tuned tau: the engine's validation
    last = result.history[-1]  # of the same (last) model
    assert raw["accuracy"] == pytest.approx(last["val/accuracy"])
    assert raw["macro_f1"] == pytest.approx(last["val/macro_f1"])
    assert raw["balanced_accuracy"] == pytest.approx(last["val/balanced_accuracy"])
    assert {"medium_shot_accuracy", "minority_recall", "ece"} <= set(raw)  # 40 a class
    some = api.evaluate(model, model_cfg, tiny, x=tiny.x[:40], y=tiny.y[:40])  # any images
    assert some != raw and 0 <= some["accuracy"] <= 1


def test_load_model_and_run_metrics(tmp_path):
    saved = save_model_file(tmp_path / "seed0.pt", recipe())
    model, got = api.load_model(tmp_path / "seed0.pt", CPU)
    assert got["classes"] == saved["classes"]
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in model.state_dict().items())
    row = api.run_metrics("candidate", ROOT / "metrics")
    assert list(row.index) == ["candidate"]
    headline = json.loads((ROOT / "metrics" / "candidate.json").read_text())
    assert np.isclose(row.loc["candidate", "macro_f1"], headline["macro_f1"], atol=1e-6)
    assert len(api.run_metrics(metrics=ROOT / "metrics")) > 1
