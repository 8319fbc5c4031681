"""The catalogue is the one source of truth: every method has a complete entry, every registry
holds exactly the catalogued names, params.yaml's recipe spells out the catalogue's defaults,
and every setting reaches the runs that read it."""

from pathlib import Path

import pytest
import torch
import yaml

from ltcifar.config import catalog
from ltcifar.config.records import RunConfig
from ltcifar.config.runs import settings_read
from ltcifar.data.augment import Augment
from ltcifar.data.autoaugment import policy
from ltcifar.data.datasets import DATASETS
from ltcifar.methods.losses import LOSSES, build_loss
from ltcifar.methods.mixup import MIXUPS
from ltcifar.methods.models import MODELS, build_model, model_options
from ltcifar.methods.samplers import SAMPLERS, sampler_for
from ltcifar.methods.transfer import param_groups
from ltcifar.training.optim import Schedule, lr_factor, scaled_lr
from ltcifar.training.second_stage import SECOND_STAGES

ROOT = Path(__file__).resolve().parents[1]
TABLES = [
    (LOSSES, catalog.LOSSES, catalog.RECIPE),
    (SAMPLERS, catalog.SAMPLERS, catalog.RECIPE),
    (MIXUPS, catalog.MIXUPS, catalog.RECIPE),
    (MODELS, catalog.MODELS, catalog.RECIPE),
    (SECOND_STAGES, catalog.SECOND_STAGES, catalog.SECOND),
]


@pytest.mark.parametrize(("registry", "table", "settings"), TABLES, ids=lambda t: "")
def test_every_registered_method_has_a_complete_entry(registry, table, settings):
    assert set(registry) == set(table), registry.kind
    for name, method in table.items():
        assert isinstance(method, catalog.Method), name
        assert set(method.reads) <= set(settings), (name, method.reads)
        assert method.doc, name
        assert method.corrects_prior is None or method.corrects_prior.strip(), name
    assert set(DATASETS) == set(catalog.DATASETS)


def test_a_name_not_in_the_catalogue_cannot_be_registered():
    with pytest.raises(KeyError, match="not in ltcifar/config/catalog.py"):
        LOSSES.register("hinge")


def test_params_yaml_recipe_is_the_catalogue_defaults():
    """params.yaml spells the recipe out (so `-S recipe.<key>=` works on every key); its values
    are the catalogue's defaults, so code, tests and the study share one recipe."""
    recipe = yaml.safe_load((ROOT / "params.yaml").read_text())["recipe"]
    defaults = catalog.defaults()
    assert set(recipe) <= set(defaults)
    assert {k: defaults[k] for k in recipe} == recipe
    assert set(defaults) - set(recipe) == set(catalog.OFF) - set(recipe)  # only off features


def all_on() -> dict:
    """A run with every optional feature on."""
    on = {"posthoc_tau": 0.5, "posthoc_tau_grid": [0.0, 1.0], "drw_from": 0.5, "drs_from": 0.5,
          "finetune": "linear", "stack_seeds": True, "grad_clip": 1.0, "processes": 2,
          "lr_scaling": "linear", "augment_policy": "randaugment", "cutout": 16,
          "experts": 3, "patience": 5, "rotation": 15.0}  # fmt: skip
    assert set(on) == set(catalog.OFF)
    return {**catalog.defaults(), "name": "t", "split": "s", "head": "cosine", **on}


def test_every_setting_reaches_a_run_that_reads_it():
    """Each off feature, turned on, is in the resolved config (else the engine would silently
    read its off value back), and every recipe setting is read by some method or feature."""
    cfg = all_on()
    read = set(settings_read(cfg))
    assert set(catalog.OFF) <= read
    for key, table in (("loss", catalog.LOSSES), ("sampler", catalog.SAMPLERS),
                       ("mixup", catalog.MIXUPS), ("model", catalog.MODELS)):  # fmt: skip
        for name in table:
            read |= set(settings_read({**cfg, key: name}))
    assert read - {"name", "split"} == set(catalog.RECIPE) - {"head"} | {"head"} & read


def carried(cfg: dict) -> RunConfig:
    """The run config the configs stage writes for ``cfg``: only the settings it reads."""
    return RunConfig(**{k: cfg[k] for k in settings_read(cfg)})


def test_every_method_and_feature_builds_from_the_settings_its_config_carries():
    """Code reading a setting the catalogue does not list for it finds None in a run config
    (``need`` raises): every method and every feature on builds from what its config carries."""
    plain = {**catalog.defaults(), "name": "t", "split": "s", "head": "linear"}
    counts = torch.tensor([50, 20, 10, 5])
    for name in catalog.LOSSES:
        head = "cosine" if name in catalog.COSINE_LOSSES else "linear"
        experts = 3 if name == "balpoe" else 1
        build_loss(carried({**plain, "loss": name, "head": head, "experts": experts}), counts)
    for name in catalog.MIXUPS:
        MIXUPS[name](carried({**plain, "mixup": name}))
    for name in catalog.SAMPLERS:
        assert sampler_for(carried({**plain, "sampler": name}), 0) == name
    for name in catalog.MODELS:
        model_options(carried({**plain, "model": name}))
    for schedule in ("multistep", "cosine"):
        cfg = carried({**all_on(), "schedule": schedule, "loss": "balpoe", "model": "resnet20"})
        build_loss(cfg, counts)
        lr_factor(Schedule.of(cfg), 10)(0)
        scaled_lr(cfg)
        param_groups(build_model(cfg.model, 4, **model_options(cfg)), cfg)
        aug = Augment.of(cfg)
        policy(aug.policy, aug.randaugment_ops, aug.randaugment_magnitude)


def test_prior_settings_are_optional_features():
    assert set(catalog.PRIOR_SETTINGS) <= set(catalog.OFF)


def test_docs_list_every_method():
    text = (ROOT / "docs" / "methods.md").read_text()
    for _, table, _ in TABLES[:-1]:  # first-stage methods: a row each, from the catalogue
        for name, method in table.items():
            assert f"| `{name}` | {method.doc} |" in text, name
    assert all(f"`{name}`" in text for name in catalog.SECOND_STAGES)
