"""Several long-tailed draws of one split (``draws``): each draw replays LDAM-DRW's
``np.random.seed(rand_number)`` draw, a split without draws is what it was, bad lists are
refused in one line, and a tiny run of 2 draws x 2 seeds reports the spread over seeds and over
draws apart, each equal to what the per-model scores give by hand."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ltcifar.config.runconfig import dumps
from ltcifar.config.runs import stage_configs
from ltcifar.data.lt_index import build_index, build_split, read_index, split_draws, write_index
from ltcifar.errors import PipelineError
from ltcifar.reporting import report
from tests.conftest import split_spec
from tests.params_edit import error_of, load_modified, repo_params

EXP = dict(dataset="cifar10", shape="exp", n_max=400, imbalance=10, sampling="ldam")
EXP.update(val_policy="exact", val_per_class=5)


def labels(num_classes: int = 10, per_class: int = 500) -> np.ndarray:
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    np.random.default_rng(7).shuffle(y)
    return y


def ldam_draw(targets: np.ndarray, counts: list[int], rand_number: int) -> list[set[int]]:
    """LDAM-DRW's IMBALANCECIFAR10.gen_imbalanced_data after ``np.random.seed(rand_number)``."""
    state = np.random.get_state()
    try:
        np.random.seed(rand_number)
        chosen = []
        for c, n in zip(np.unique(targets), counts, strict=True):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            chosen.append(set(idx[:n].tolist()))
    finally:
        np.random.set_state(state)
    return chosen


def split_of(spec: dict, y: np.ndarray) -> dict:
    names = [f"c{c}" for c in range(int(y.max()) + 1)]
    return build_split("exp", split_spec(**spec), y, names)


def test_each_draw_replays_ldams_draw_and_the_draws_differ():
    y = labels()
    split = split_of({**EXP, "draws": [0, 1, 2]}, y)
    assert list(split["draws"]) == ["0", "1", "2"]
    trained = []
    for d in (0, 1, 2):
        index = split["draws"][str(d)]
        assert [set(t) for t in index["train_indices"]] == ldam_draw(y, index["counts"], d)
        trained.append(index["train_indices"])
    assert trained[0] != trained[1] != trained[2] != trained[0]


def test_a_split_without_draws_is_unchanged(tmp_path):
    """The same index and file as the single draw of ``seed``, and no ``draws`` key in the
    validated spec (so configs/splits.json and every split file stay byte-identical)."""
    y = labels()
    params = load_modified(tmp_path, repo_params(), lambda d: None)
    for prof in params["profiles"].values():
        assert all("draws" not in split and "seed" in split for split in prof["splits"].values())
    spec = split_spec(**EXP, seed=3)
    names = [f"c{c}" for c in range(10)]
    single = build_split("exp", spec, y, names)
    assert single == build_index("exp", spec, y, names)
    write_index(single, tmp_path / "exp.json")
    assert split_draws(tmp_path / "exp.json") == [None]
    with pytest.raises(PipelineError, match="has no draws, so no draw 0"):
        read_index(tmp_path / "exp.json", 0)


def test_a_drawn_split_file_reads_back_each_draw(tmp_path):
    y = labels()
    spec = {**EXP, "draws": [5, 2]}
    split = split_of(spec, y)
    write_index(split, tmp_path / "exp.json")
    assert split_draws(tmp_path / "exp.json") == [5, 2]
    names = [f"c{c}" for c in range(10)]
    one = split_spec(**EXP, seed=2)
    assert read_index(tmp_path / "exp.json", 2) == build_index("exp", one, y, names)
    for draw, message in ((None, "holds draws 5, 2, not None"), (3, "holds draws 5, 2, not 3")):
        with pytest.raises(PipelineError, match=re.escape(message)):
            read_index(tmp_path / "exp.json", draw)


QUICK_EXP = ("profiles", "quick", "splits", "exp100")


def _set_exp(**over):
    def edit(d: dict) -> None:
        d["profiles"]["quick"]["splits"]["exp100"].update(over)

    return edit


def _draws_on(split: str, **over):
    def edit(d: dict) -> None:
        d["profiles"]["quick"]["splits"][split]["draws"] = [0, 1]
        for key, value in over.items():
            d["profiles"]["quick"][key] = value

    return edit


W = "profiles.quick.splits.exp100"
REFUSED = [
    (_set_exp(draws=[0, -1]), f"{W}.draws = [0, -1] must all be in [0, 2**32)"),
    (_set_exp(draws=[1, 1]), f"{W}.draws = [1, 1] lists a value twice"),
    (_set_exp(draws=[]), f"{W}.draws is empty; give at least one value"),
    (_set_exp(draws=3), f"{W}.draws = 3 must be a list"),
    (_set_exp(draws=[0, 1], seed=0), f"{W}: give seed or draws, not both"),
    (_draws_on("step"), "profiles.quick.backbone.split = 'step' has draws"),
]


@pytest.mark.parametrize(("edit", "message"), REFUSED)
def test_bad_draws_are_refused_in_one_line(tmp_path, edit, message):
    error = error_of(tmp_path, repo_params(), edit)
    assert error.startswith(message) and "\n" not in error


def test_a_second_stage_on_a_split_with_draws_is_refused(tmp_path):
    error = error_of(tmp_path, repo_params(), _set_exp(draws=[0, 1]))
    assert error.startswith("second_stages.exp_ce_crt: split 'exp100' has draws")


def test_draws_replace_seed_in_the_split_config(tmp_path):
    def edit(d: dict) -> None:
        d["second_stages"] = {}
        d["profiles"]["quick"]["splits"]["exp100"]["draws"] = [0, 1]

    files = stage_configs(load_modified(tmp_path, repo_params(), edit))
    spec = files["splits.json"]["exp100"]
    assert spec["draws"] == [0, 1] and "seed" not in spec
    assert "draws" not in files["splits.json"]["step"]


# ---- a tiny end to end: 2 draws x 2 seeds through the lt_index, train and evaluate stages ----


def write_prepared(root: Path) -> None:
    """A 4-class 8x8 grey dataset the stages read as fashion_mnist (learnable, seconds)."""
    rng = np.random.default_rng(0)

    def images(y: np.ndarray) -> np.ndarray:
        noise = rng.integers(0, 60, (len(y), 8, 8, 1))
        return (noise + 50 * y[:, None, None, None]).astype(np.uint8)

    y_train, y_test = np.repeat(np.arange(4), 60), np.repeat(np.arange(4), 20)
    x_train = images(y_train)
    (root / "data/prepared").mkdir(parents=True)
    np.savez(
        root / "data/prepared/fashion_mnist.npz",
        x_train=x_train,
        y_train=y_train.astype(np.int64),
        x_test=images(y_test),
        y_test=y_test.astype(np.int64),
        classes=np.array(["a", "b", "c", "d"]),
        mean=np.array([x_train.mean() / 255], np.float32),
        std=np.array([x_train.std() / 255], np.float32),
    )


def tiny_params(d: dict) -> None:
    """The committed params, one run on an exp split of 2 draws, 2 seeds, 1 epoch of ResNet20."""
    quick = d["profiles"]["quick"]
    exp = {"dataset": "fashion_mnist", "shape": "exp", "n_max": 40, "imbalance": 4}
    quick["splits"] = {"exp": {**exp, "sampling": "ldam", "val_per_class": 4, "draws": [0, 1]}}
    quick["budget"] = {"epochs": 1, "seeds": [0, 1], "batch_size": 16, "checkpoint_every": 1}
    quick["runs"] = ["ce"]
    del quick["backbone"]
    d["runs"], d["transfer_runs"], d["second_stages"] = {"ce": {"split": "exp"}}, {}, {}
    d["split"] = "exp"
    del d["profiles"]["full"]


def run_stage(module: str, *args: str) -> None:
    __import__(f"stages.{module}", fromlist=["main"]).main(*args)


@pytest.mark.slow  # about 40 s of CPU: four ResNet20s trained and scored
def test_two_draws_by_two_seeds_report_both_spreads(tmp_path, monkeypatch):
    params = load_modified(tmp_path, repo_params(), tiny_params)
    repo = tmp_path / "repo"
    write_prepared(repo)
    for path, cfg in stage_configs(params).items():
        (repo / "configs" / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / "configs" / path).write_text(dumps(cfg))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVCLIVE_RESUME", "false")
    for module, args in (("lt_index", ()), ("train", ("ce",)), ("evaluate", ("ce",))):
        run_stage(module, *args)
    models = sorted(p.name for p in Path("models/ce").glob("*.pt"))
    assert models == [f"draw{d}_seed{s}.pt" for d in (0, 1) for s in (0, 1)]
    assert sorted(p.name for p in Path("logs/ce").iterdir()) == [m[:-3] for m in models]

    details = json.loads(Path("metrics/ce/details.json").read_text())
    headline = json.loads(Path("metrics/ce.json").read_text())
    assert details["draws"] == {str(d): [f"draw{d}_seed{s}" for s in (0, 1)] for d in (0, 1)}
    for key in ("accuracy", "macro_f1"):
        by_draw = [[details["per_seed"][m][key] for m in ms] for ms in details["draws"].values()]
        means = [np.mean(v) for v in by_draw]
        assert headline[key] == pytest.approx(np.mean(means), abs=1e-6)
        seed_std = np.mean([np.std(v, ddof=1) for v in by_draw])
        assert details["std"][key] == pytest.approx(seed_std, abs=1e-6)
        assert details["draw_std"][key] == pytest.approx(np.std(means, ddof=1), abs=1e-6)

    runs = report.load_runs(Path("metrics"))
    row = runs.loc["ce"]
    assert row["draw_count"] == 2 and row["accuracy_n"] == 2
    for key in ("accuracy", "macro_f1"):
        assert row[f"{key}_std"] == pytest.approx(details["std"][key], abs=1e-6)
        assert row[f"{key}_draw_std"] == pytest.approx(details["draw_std"][key], abs=1e-6)
    text = report.draws_markdown(runs)
    assert "## Variance over long-tailed draws" in text
    assert f"{row['macro_f1_draw_std']:.4f}" in text.splitlines()[-1]
