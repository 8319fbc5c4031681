"""The typed records of ``configs/`` keep the catalogue the one source of truth: each record's
fields are its table's keys and what resolution adds, typed as each Setting says, optional
exactly where a config may lack the setting; and every config params.yaml resolves to reads
back whole."""

import json
import typing
from dataclasses import MISSING, fields

import pytest

from ltcifar.config import catalog
from ltcifar.config.catalog import Setting
from ltcifar.config.params import load
from ltcifar.config.records import (
    ArchiveSource,
    EvaluateConfig,
    ImageFolderSource,
    ImagenetBackbone,
    PretrainBackbone,
    RunConfig,
    SecondConfig,
    Skipped,
    SplitConfig,
    TrainedConfig,
    as_dict,
    need,
    parse,
)
from ltcifar.config.runconfig import (
    SKIPPED,
    dumps,
    read_backbone,
    read_download,
    read_run_config,
)
from ltcifar.config.runs import BASE, download_config, stage_configs
from ltcifar.config.second import FROM_RUN
from ltcifar.errors import PipelineError
from tests.params_edit import PARAMS

# Settings every run config carries: BASE, the optional features (read back at their off
# values) and what every model reads.
ALWAYS = {*BASE, *catalog.OFF, *set.intersection(*(set(m.reads) for m in catalog.MODELS.values()))}
CHOSEN = {"tau", "lws_scale_min", "lws_scale_max", "max_norm_limit"}  # second stages' choices


def field_type(setting: Setting, optional: bool) -> object:
    """The type a record's field must have for ``setting``: choices are strings."""
    kind = str if isinstance(setting.kind, tuple) else setting.kind
    kind = list[kind] if setting.list_of else kind
    return kind | None if optional else kind


def default(record: type, name: str) -> object:
    f = next(f for f in fields(record) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


@pytest.fixture(scope="module")
def params() -> dict:
    return load(PARAMS)


@pytest.fixture(scope="module")
def every_profile(params) -> dict[str, dict[str, dict]]:
    """What the configs stage writes under each profile, by profile."""
    return {p: stage_configs({**params, "profile": p}) for p in params["profiles"]}


def test_run_record_is_the_recipe_and_what_resolution_adds(every_profile):
    written = {
        key
        for files in every_profile.values()
        for path, cfg in files.items()
        if path.startswith("runs/") and SKIPPED not in cfg
        for key in cfg
    }
    extras = written - set(catalog.RECIPE)
    assert extras == {"name", "split", "group", "second_stage", "first_stage"}
    assert {f.name for f in fields(RunConfig)} == set(catalog.RECIPE) | extras
    hints = typing.get_type_hints(RunConfig)
    for key, setting in catalog.RECIPE.items():
        assert hints[key] == field_type(setting, key not in ALWAYS), key
        want = catalog.OFF.get(key, MISSING if key in ALWAYS else None)
        assert default(RunConfig, key) == want, key
    assert hints["name"] is hints["split"] is str
    assert all(hints[k] == str | None for k in ("group", "second_stage", "first_stage"))


def test_a_model_file_adds_what_second_stages_choose():
    added = {f.name for f in fields(TrainedConfig)} - {f.name for f in fields(RunConfig)}
    assert added == CHOSEN
    assert all(typing.get_type_hints(TrainedConfig)[k] == float | None for k in added)


def test_second_record_is_its_table_and_what_it_takes_from_the_run():
    assert {f.name for f in fields(SecondConfig)} == {*catalog.SECOND, *FROM_RUN, "name"}
    hints = typing.get_type_hints(SecondConfig)
    every_method = set.intersection(*(set(m.reads) for m in catalog.SECOND_STAGES.values()))
    for key, setting in catalog.SECOND.items():
        optional = key not in every_method and key not in ("run", "split", "method")
        assert hints[key] == field_type(setting, optional), key
    for key in FROM_RUN:
        assert hints[key] == field_type(catalog.RECIPE[key], key not in BASE), key
    assert hints["name"] is str


@pytest.mark.parametrize(
    ("records_", "table", "extras", "optional"),
    [
        # a split's draws (default None) replace its seed (``params._check_split``)
        ((SplitConfig,), catalog.SPLIT, {}, {"seed", "draws"}),
        ((ImageFolderSource,), catalog.DOWNLOAD, {}, set()),
        (
            (ArchiveSource,),
            {"sources": catalog.DOWNLOAD["sources"]},
            {"md5": dict[str, list[str]]},
            set(),
        ),
        (
            (ImagenetBackbone, PretrainBackbone),
            catalog.BACKBONE,
            {"split_spec": SplitConfig, "run": RunConfig},
            set(),
        ),
        ((EvaluateConfig,), catalog.EVALUATE, {"profile": str}, set()),
    ],
    ids=["split", "image_folder", "archives", "backbone", "evaluate"],
)
def test_stage_records_are_their_tables(records_, table, extras, optional):
    """Each field is a table key typed as its Setting says, or a resolved extra; together the
    records cover the table. Optional: what a config may lack, as a setting without default."""
    assert {k for k, s in table.items() if s.default is None} <= optional
    seen = set()
    for record in records_:
        for key, hint in typing.get_type_hints(record).items():
            seen.add(key)
            assert hint == (extras.get(key) or field_type(table[key], key in optional)), key
    assert seen == set(table) | set(extras)


def test_every_config_of_every_profile_reads_back_whole(every_profile):
    """Each file parses into its record, and the record gives back what the file holds (a
    run's, with the off values of the features it leaves off)."""
    readers = {
        "runs/": lambda c: (RunConfig, {**catalog.OFF, **c}),
        "second/": lambda c: (SecondConfig, c),
        "evaluate.json": lambda c: (EvaluateConfig, c),
    }
    for files in every_profile.values():
        for path, cfg in files.items():
            if SKIPPED in cfg or not any(path.startswith(p) for p in readers):
                continue
            record, want = next(f for p, f in readers.items() if path.startswith(p))(cfg)
            assert as_dict(parse(record, cfg, path)) == want, path
        for name, spec in files["splits.json"].items():  # in order: index files hold them
            if SKIPPED not in spec:
                assert list(as_dict(parse(SplitConfig, spec, name)).items()) == list(spec.items())


def test_download_and_backbone_read_as_their_kinds(tmp_path, every_profile):
    folder = {"kind": "image_folder", "sources": ["/images"], "image_size": 32, "sha256": ""}
    kinds = set()
    for files in every_profile.values():
        download = {**files["download.json"], "mine": download_config(folder)}
        (tmp_path / "download.json").write_text(dumps(download))
        (tmp_path / "backbone.json").write_text(dumps(files["backbone.json"]))
        kinds |= {type(s) for s in read_download(tmp_path).values()}
        kinds.add(type(read_backbone(tmp_path)))
    assert kinds == {ArchiveSource, ImageFolderSource, ImagenetBackbone, PretrainBackbone}
    (tmp_path / "backbone.json").write_text(dumps({SKIPPED: "outside"}))
    assert read_backbone(tmp_path) == Skipped("outside")


def test_a_config_with_an_unknown_or_missing_key_fails_in_one_line(tmp_path, every_profile):
    cfg = every_profile["quick"]["runs/candidate.json"]
    (tmp_path / "runs").mkdir()
    for edited, problem in [
        ({**cfg, "lr_typo": 0.1}, "has the unknown key 'lr_typo'"),
        ({k: v for k, v in cfg.items() if k != "precision"}, "lacks the key 'precision'"),
    ]:
        (tmp_path / "runs" / "candidate.json").write_text(dumps(edited))
        with pytest.raises(PipelineError, match=problem) as e:
            read_run_config("candidate", tmp_path)
        assert "\n" not in str(e.value) and "run `dvc repro configs`" in str(e.value)


def test_need_narrows_a_carried_setting_and_names_a_missing_one():
    assert need(0.5, "la_tau") == 0.5 and need(0.0, "la_tau") == 0.0
    with pytest.raises(PipelineError, match="^la_tau is not in this config") as e:
        need(None, "la_tau")
    assert "ltcifar/config/catalog.py" in str(e.value) and "\n" not in str(e.value)


def test_checkpoints_record_and_hash_what_each_config_file_gives():
    """A run's checkpoint holds, and its fingerprint hashes, the config file's settings with
    the off values of the rest and the seed: the dict the stages read before records, so the
    fingerprints keep their values and every checkpoint of a committed config still resumes."""
    from ltcifar.training.checkpoints import seed_config

    root = PARAMS.parent / "configs"
    for path in sorted((root / "runs").glob("*.json")):
        raw = json.loads(path.read_text())
        cfg = read_run_config(path.stem, root)
        if SKIPPED in raw:
            assert cfg == Skipped(raw[SKIPPED], raw.get("name"))
            continue
        assert seed_config(cfg, 3) == {**catalog.OFF, **raw, "seed": 3}, path.name
