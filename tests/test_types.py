"""The type checker catches a config key a record does not have, before any run: the defect of
a key read on one device's branch only (``cfg["precision"]`` of a second stage, on CUDA) fails
``mypy`` on a CPU. The snippets import only the torch-free config layer, so this takes seconds."""

from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[1]

SNIPPETS = {
    # the second stage's config has no precision: its first run's is not carried over
    "wrong_key": "def read(cfg: SecondConfig) -> str:\n    return cfg.precision\n",
    "right_key": "def read(cfg: SecondConfig) -> str:\n    return cfg.method\n",
    # lr is only in the configs of the methods that read it: a reader narrows it
    "unnarrowed": "def read(cfg: SecondConfig) -> float:\n    return cfg.lr\n",
    "narrowed": "def read(cfg: SecondConfig) -> float:\n    return need(cfg.lr, 'lr')\n",
}


@pytest.fixture(scope="module")
def errors(tmp_path_factory) -> dict[str, list[str]]:
    """Each snippet's mypy errors, from one run under the project's mypy settings."""
    tmp = tmp_path_factory.mktemp("snippets")
    head = "from ltcifar.config.records import SecondConfig, need\n\n\n"
    for name, body in SNIPPETS.items():
        (tmp / f"{name}.py").write_text(head + body)
    out, err, _ = mypy_api.run(
        [
            *(str(tmp / f"{name}.py") for name in SNIPPETS),
            "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(tmp / ".mypy_cache"),
            "--no-error-summary",
        ]
    )  # fmt: skip
    assert not err, err
    lines = out.splitlines()
    return {name: [ln for ln in lines if f"/{name}.py:" in ln] for name in SNIPPETS}


def test_a_key_the_record_lacks_fails_the_type_check(errors):
    assert len(errors["wrong_key"]) == 1
    assert '"SecondConfig" has no attribute "precision"' in errors["wrong_key"][0]


def test_a_key_the_record_has_passes(errors):
    assert errors["right_key"] == []


def test_a_setting_some_configs_lack_must_be_narrowed(errors):
    assert len(errors["unnarrowed"]) == 1
    assert 'got "float | None", expected "float"' in errors["unnarrowed"][0]
    assert errors["narrowed"] == []
