"""docs/params.md's reference is the catalogue's: every key has a one-line doc, and the page
holds exactly what ``ltcifar.config.docs`` renders from it."""

import json
import re
from pathlib import Path

import pytest
import yaml
from dvc.dependency import ParamsDependency
from dvc.repo import Repo

from ltcifar.config import catalog
from ltcifar.config.docs import BEGIN, END, TABLES, reference, with_reference
from ltcifar.config.params import PROFILE_BACKBONE, STRUCTURE
from ltcifar.errors import PipelineError
from tests.dvcrepo import leaves

ROOT = Path(__file__).resolve().parents[1]


def test_every_key_has_a_one_line_doc():
    for heading, _, table in TABLES:
        for key, spec in table.items():
            assert spec.doc.strip() and "\n" not in spec.doc, (heading, key)


def test_the_reference_covers_every_table_of_params_yaml():
    """Every block of params.yaml that holds settings has its table (runs and transfer_runs
    hold recipe keys; the top level, the candidate's and the blocks' names)."""
    tables = [id(t) for _, _, t in TABLES]
    profile = STRUCTURE["profiles"].schema
    blocks = (catalog.RECIPE, profile, profile["splits"].schema, PROFILE_BACKBONE, catalog.SECOND)
    for block in blocks:
        assert id(block) in tables
    assert id(STRUCTURE["download"].schema) in tables and id(catalog.EVALUATE) in tables
    assert {"lr_backbone_factor", "pad_mode", "checkpoint_every", "eval_batch_size"} <= set(
        catalog.RECIPE
    )


def test_docs_params_md_is_what_the_catalogue_renders():
    page = (ROOT / "docs" / "params.md").read_text()
    assert with_reference(page) == page, "docs/params.md is stale: run `ltcifar docs --write`"
    assert f"{BEGIN}\n{reference()}\n{END}" in page


def test_a_rendered_row():
    """A row states type, default, off value, range and doc as the catalogue has them."""
    text = reference()
    assert "\n| `drw_from` | float | `1.0` (off) | within [0, 1] (1 = off) | deferred re-" in text
    rows = text.splitlines()
    seeds = next(r for r in rows if r.startswith("| `seeds` |"))
    assert seeds.startswith("| `seeds` | list of int | `[0, 1, 2]` | not empty; distinct | ")
    checkpoint = next(r for r in rows if r.startswith("| `checkpoint` |"))
    assert "| `best_val`, `best_val_loss`, `last` |" in checkpoint


def test_a_page_without_markers_is_refused():
    with pytest.raises(PipelineError, match="needs one pair of marker lines"):
        with_reference("# params\n")


def test_the_readmes_exp_show_count_is_the_committed_projects():
    """The README's count of plain `dvc exp show` columns, by kind, is the committed project's:
    params.yaml's values, one score per run of reports/headline.json and the dependency paths
    of dvc.yaml (tests/test_pipeline.py checks the same identity against DVC's own table)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(
        r"it has (\d+) columns, 5 of DVC's own, (\d+) params values, (\d+) scores .*? and "
        r"(\d+) dependency paths",
        text,
    )
    assert found, "README.md: the plain `dvc exp show` count is missing"
    total, params, scores, deps = map(int, found.groups())
    with Repo(str(ROOT)) as repo:
        paths = {d.def_path for d in repo.index.deps if not isinstance(d, ParamsDependency)}
    headline = json.loads((ROOT / "reports" / "headline.json").read_text())
    counted = (leaves(yaml.safe_load((ROOT / "params.yaml").read_text())), len(headline))
    assert (params, scores, deps) == (*counted, len(paths))
    assert total == 5 + params + scores + deps
