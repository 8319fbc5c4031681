"""Post-hoc logit adjustment (Menon et al. 2021): z - tau log prior, tau chosen on validation."""

import numpy as np
import pytest
import torch

from ltcifar.errors import PipelineError
from ltcifar.evaluation.inference import choose_posthoc_tau
from ltcifar.methods.losses import log_prior
from ltcifar.training import engine
from tests.conftest import make_split, recipe
from tests.params_edit import error_of, repo_params

COUNTS = torch.tensor([900, 90, 10])


def biased_logits(n_per_class: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced labels whose logits are a clean signal plus exactly log prior: tau = 1 undoes
    the bias and is the only grid value that classifies every image right."""
    y = torch.arange(3).repeat_interleave(n_per_class)
    signal = torch.nn.functional.one_hot(y, 3).float() * 2.0
    return signal + log_prior(COUNTS), y


def test_tau_that_undoes_the_prior_is_chosen():
    logits, y = biased_logits()
    assert choose_posthoc_tau(logits, y, COUNTS, [0.0, 0.5, 1.0, 2.0]) == 1.0
    assert (logits.argmax(1) == y).float().mean() < 0.5  # unadjusted, the head class wins


def test_ties_go_to_the_first_grid_value():
    y = torch.arange(3).repeat_interleave(5)
    logits = torch.nn.functional.one_hot(y, 3).float() * 100.0  # right whatever tau
    assert choose_posthoc_tau(logits, y, COUNTS, [0.0, 1.0]) == 0.0


def test_training_chooses_tau_on_the_validation_images(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [60, 30, 30])
    x = rng.integers(0, 255, (120, 12, 12, 3)).astype(np.uint8)
    perm = rng.permutation(120)
    data = make_split(x[perm], y[perm], 30, 3)
    seen = {}

    def spy(logits, labels, counts, grid):
        seen["labels"], seen["grid"] = labels, grid
        return 0.5

    monkeypatch.setattr(engine, "choose_posthoc_tau", spy)
    cfg = recipe(epochs=1, posthoc_tau_grid=[0.0, 0.5])
    result = engine.train(cfg, data, 0, torch.device("cpu"))
    assert result.posthoc_tau == 0.5
    assert torch.equal(seen["labels"], data.y_val) and seen["grid"] == [0.0, 0.5]


def test_a_grid_needs_a_validation_set():
    y = np.repeat(np.arange(3), 20)
    x = np.zeros((60, 12, 12, 3), np.uint8)
    cfg = recipe(epochs=1, posthoc_tau_grid=[0.0, 1.0])
    with pytest.raises(PipelineError, match="chooses tau on a validation set"):
        engine.train(cfg, make_split(x, y, 0, 3), 0, torch.device("cpu"))


def test_params_refuse_a_grid_on_a_split_without_validation(tmp_path):
    def no_validation(raw):
        for prof in raw["profiles"].values():  # every LT split has one now: take exp100's away
            prof["splits"]["exp100"]["val_per_class"] = 0
        raw["runs"]["step_logit_adjusted"]["split"] = "exp100"

    def tuned_and_fixed(raw):
        raw["runs"]["step_logit_adjusted"] = {"split": "step", "posthoc_tau": 1.0}
        raw["runs"]["step_logit_adjusted"]["posthoc_tau_grid"] = [0.0, 1.0]

    msg = error_of(tmp_path, repo_params(), no_validation)
    assert "posthoc_tau_grid chooses tau on validation images" in msg
    assert "one prior correction per run" in error_of(tmp_path, repo_params(), tuned_and_fixed)
