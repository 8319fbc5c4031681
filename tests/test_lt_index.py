"""Long-tailed index files: exact published totals, the LDAM-DRW draw, validation hold-out."""

import json
import re

import numpy as np
import pytest

from ltcifar.data.lt_index import build_index, class_counts, read_index, write_index
from ltcifar.errors import PipelineError
from tests.conftest import split_spec

CIFAR10_EXP100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
C10_STEP = dict(dataset="cifar10", shape="step", n_max=5000, n_min=500)  # the seed study's
C10_EXP100 = dict(dataset="cifar10", shape="exp", n_max=5000, imbalance=100)


def shuffled_labels(num_classes: int, per_class: int, seed: int = 123) -> np.ndarray:
    """Labels shaped like a CIFAR training set: per_class images of each class, shuffled."""
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    np.random.default_rng(seed).shuffle(labels)
    return labels


@pytest.fixture(scope="module")
def cifar10_labels() -> np.ndarray:
    return shuffled_labels(10, 5000)


@pytest.fixture(scope="module")
def cifar100_labels() -> np.ndarray:
    return shuffled_labels(100, 500)


def names(num_classes: int) -> list[str]:
    return [f"class{c}" for c in range(num_classes)]


def index(name: str, labels: np.ndarray, **spec) -> dict:
    return build_index(name, split_spec(**spec), labels, names(int(labels.max()) + 1))


def check_consistent(idx: dict, labels: np.ndarray) -> None:
    """Counts match the lists, indices carry their class's label, train and val are disjoint."""
    train_all, val_all = [], []
    for c, (tr, va) in enumerate(zip(idx["train_indices"], idx["val_indices"], strict=True)):
        assert len(tr) == idx["counts"][c]
        assert len(va) == idx["val_counts"][c]
        assert len(set(tr)) == len(tr) and len(set(va)) == len(va)
        assert np.all(labels[tr] == c)
        assert np.all(labels[va] == c)
        train_all += tr
        val_all += va
    assert not set(train_all) & set(val_all)
    assert len(train_all) == idx["total_train"] == sum(idx["counts"])
    assert len(val_all) == idx["total_val"] == sum(idx["val_counts"])


def test_class_counts_formula():
    spec = split_spec(dataset="cifar10", shape="exp", imbalance=100.0)
    expected = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]
    assert class_counts(spec, 10, 5000) == expected == CIFAR10_EXP100
    step = split_spec(dataset="cifar10", shape="step", k=3, n_min=7)
    assert class_counts(step, 5, 100) == [100, 100, 100, 7, 7]
    assert class_counts(split_spec(dataset="cifar10", shape="none"), 4, 9) == [9, 9, 9, 9]


def test_cifar10_lt_exp100(cifar10_labels):
    idx = index(
        "exp100",
        cifar10_labels,
        **C10_EXP100,
        sampling="ldam",
        val_policy="exact",
    )
    assert idx["counts"] == CIFAR10_EXP100
    assert idx["total_train"] == 12406
    assert idx["total_val"] == 0
    assert idx["split"] == "exp100" and idx["dataset"] == "cifar10"
    check_consistent(idx, cifar10_labels)


def test_cifar100_lt_exp100(cifar100_labels):
    idx = index(
        "c100_exp100",
        cifar100_labels,
        dataset="cifar100",
        shape="exp",
        n_max=500,
        imbalance=100,
        sampling="ldam",
        val_policy="exact",
    )
    assert idx["total_train"] == 10847
    assert idx["counts"][0] == 500 and idx["counts"][-1] == 5
    assert idx["counts"] == sorted(idx["counts"], reverse=True)
    check_consistent(idx, cifar100_labels)


def test_seed_step_split_exact(cifar10_labels):
    idx = index(
        "step",
        cifar10_labels,
        **C10_STEP,
        k=1,
        val_policy="exact",
        val_per_class=0,
    )
    assert idx["counts"] == [5000] + [500] * 9
    assert idx["total_train"] == 9500
    check_consistent(idx, cifar10_labels)


def test_step_reserve_holds_out_balanced_val(cifar10_labels):
    idx = index(
        "step",
        cifar10_labels,
        **C10_STEP,
        k=1,
        val_per_class=50,
        val_policy="reserve",
    )
    assert idx["n_max_used"] == 4950
    assert idx["counts"] == [4950] + [500] * 9
    assert idx["val_counts"] == [50] * 10
    assert idx["total_val"] == 500
    check_consistent(idx, cifar10_labels)


def test_a_subset_larger_than_its_class_is_refused_with_the_fix(cifar10_labels):
    spec = split_spec(dataset="cifar10", shape="step", n_max=5001, n_min=500, val_policy="exact")
    with pytest.raises(PipelineError) as err:
        build_index("mystep", spec, cifar10_labels, names(10))
    msg = str(err.value)
    assert "'mystep'" in msg
    assert "class 0" in msg and "class0" in msg
    assert "lower n_max" in msg


@pytest.mark.parametrize(
    "spec, head, val_counts",
    [
        # the exact step split uses all 5,000 images of class 0: none left to validate on
        ({"shape": "step", "n_max": 5000, "n_min": 500, "val_per_class": 50}, 5000, [0] + [50] * 9),
        ({"shape": "exp", "n_max": 4000, "imbalance": 10, "val_per_class": 100}, 4000, [100] * 10),
    ],
)
def test_exact_keeps_the_subset_and_validates_on_leftovers(cifar10_labels, spec, head, val_counts):
    idx = index("exact", cifar10_labels, dataset="cifar10", val_policy="exact", **spec)
    assert idx["counts"][0] == head
    assert idx["val_counts"] == val_counts
    check_consistent(idx, cifar10_labels)


@pytest.mark.parametrize("sampling", ["seeded", "ldam"])
def test_deterministic_and_seed_dependent(cifar10_labels, sampling):
    spec = dict(
        **C10_STEP,
        val_per_class=50,
        sampling=sampling,
    )
    a = index("s", cifar10_labels, seed=0, **spec)
    b = index("s", cifar10_labels, seed=0, **spec)
    c = index("s", cifar10_labels, seed=1, **spec)
    assert a == b
    assert a["counts"] == c["counts"]
    for c_a, c_c in zip(a["train_indices"][1:], c["train_indices"][1:], strict=True):
        assert c_a != c_c
    assert a["val_indices"] != c["val_indices"]


def test_sampling_ldam_replays_ldam_drw(cifar10_labels):
    """Inline replay of LDAM-DRW's IMBALANCECIFAR10.gen_imbalanced_data."""
    targets = cifar10_labels.copy()
    state = np.random.get_state()
    try:
        np.random.seed(0)
        classes = np.unique(targets)
        expected = []
        for c, n in zip(classes, CIFAR10_EXP100, strict=True):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            expected.append(set(idx[:n].tolist()))
    finally:
        np.random.set_state(state)

    before = np.random.get_state()[1].copy()
    idx = index(
        "exp100",
        cifar10_labels,
        **C10_EXP100,
        sampling="ldam",
        val_policy="exact",
        seed=0,
    )
    got = [set(t) for t in idx["train_indices"]]
    assert got == expected
    # the replay uses a private RandomState: numpy's global stream is untouched
    assert np.array_equal(np.random.get_state()[1], before)

    seeded = index(
        "exp100",
        cifar10_labels,
        **C10_EXP100,
        sampling="seeded",
        val_policy="exact",
        seed=0,
    )
    assert [set(t) for t in seeded["train_indices"][1:]] != expected[1:]


def test_none_profile(cifar10_labels):
    idx = index("bal", cifar10_labels, dataset="cifar10", shape="none", val_per_class=50)
    assert idx["counts"] == [4950] * 10
    assert idx["val_counts"] == [50] * 10
    check_consistent(idx, cifar10_labels)

    idx = index("bal", cifar10_labels, dataset="cifar10", shape="none", n_max=300, val_per_class=20)
    assert idx["counts"] == [300] * 10
    assert idx["val_counts"] == [20] * 10
    assert idx["total_train"] == 3000
    check_consistent(idx, cifar10_labels)


def test_write_read_round_trip(tmp_path, cifar10_labels):
    idx = index(
        "step",
        cifar10_labels,
        **C10_STEP,
        val_per_class=50,
    )
    path = tmp_path / "sub" / "step.json"
    write_index(idx, path)
    assert read_index(path) == idx
    text = path.read_text()
    assert json.loads(text) == idx
    assert not list(path.parent.glob("*.tmp"))
    lines = text.splitlines()
    # each class's index list sits on one line: 10 train + 10 val lists
    one_line_lists = []
    for line in lines:
        s = line.strip().rstrip(",")
        if s.startswith("[") and s.endswith("]") and "[" not in s[1:]:
            one_line_lists.append(json.loads(s))
    for lst in idx["train_indices"] + idx["val_indices"]:
        assert lst in one_line_lists
    assert len(lines) < 100
    counts_line = next(line for line in lines if line.strip().startswith('"counts"'))
    assert json.loads(counts_line.split(":", 1)[1].strip().rstrip(",")) == idx["counts"]


def test_read_index_missing(tmp_path):
    with pytest.raises(PipelineError, match="lt_index"):
        read_index(tmp_path / "nope.json")


def _small_index() -> dict:
    return index(
        "s", shuffled_labels(4, 30), dataset="cifar10", shape="none", n_max=20, val_per_class=5
    )


def _drop(key: str):
    def edit(idx: dict) -> None:
        del idx[key]

    return edit


def _empty_class(idx: dict) -> None:
    idx["train_indices"][3], idx["counts"][3] = [], 0
    idx["total_train"] = sum(idx["counts"])


BAD_INDEX = {
    "empty object": (lambda idx: idx.clear(), "lacks dataset, classes"),
    "no val lists": (_drop("val_indices"), "lacks val_indices"),
    "count off": (
        lambda idx: idx["counts"].__setitem__(1, 21),
        r"counts\[1\] is 21, but train_indices\[1\] lists 20 images",
    ),
    "total off": (
        lambda idx: idx.__setitem__("total_val", 21),
        "total_val is 21, but val_counts sum to 20",
    ),
    "class missing": (
        lambda idx: idx["train_indices"].pop(),
        r"train_indices does not have one entry per class \(4\)",
    ),
    "negative": (
        lambda idx: idx["val_indices"][2].__setitem__(0, -1),
        r"val_indices\[2\] is not a list of non-negative integers",
    ),
    "duplicate": (
        lambda idx: idx["train_indices"][0].__setitem__(1, idx["train_indices"][0][0]),
        r"image \d+ is in train_indices\[0\] and again in train_indices\[0\]",
    ),
    "train and val overlap": (
        lambda idx: idx["val_indices"][2].__setitem__(0, idx["train_indices"][2][0]),
        r"image \d+ is in train_indices\[2\] and again in val_indices\[2\]",
    ),
    "empty class": (_empty_class, r"class 3 \(class3\) has no training images"),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEX))
def test_read_index_names_file_and_problem(tmp_path, case):
    idx = _small_index()
    path = tmp_path / "s.json"
    write_index(idx, path)
    assert read_index(path) == idx
    edit, problem = BAD_INDEX[case]
    edit(idx)
    path.write_text(json.dumps(idx))
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))}: {problem}"):
        read_index(path)


@pytest.mark.parametrize("text", ["", '{"split": "s", "counts": [1, 2', "[1, 2]"])
def test_read_index_rejects_what_is_not_an_index_object(tmp_path, text):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(path))}"):
        read_index(path)


def test_exact_holdout_validates_the_head_class_and_keeps_the_rest_exact():
    """CIFAR-10-LT drawn as LDAM does: ``exact`` uses class 0 whole (no validation image);
    ``exact_holdout`` gives up its last 50 in the draw's order and keeps every other class's
    training images exactly."""
    labels = np.repeat(np.arange(10), 5000)
    spec = {"dataset": "cifar10", "shape": "exp", "n_max": 5000, "imbalance": 100.0,
            "n_min": 0, "k": 1, "val_per_class": 50, "sampling": "ldam", "seed": 0}  # fmt: skip
    classes = [str(c) for c in range(10)]
    exact = build_index("e", split_spec(**spec, val_policy="exact"), labels, classes)
    held = build_index("h", split_spec(**spec, val_policy="exact_holdout"), labels, classes)
    assert exact["counts"] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert exact["val_counts"][0] == 0 and held["val_counts"] == [50] * 10
    assert held["counts"] == [4950, *exact["counts"][1:]]
    assert held["train_indices"][1:] == exact["train_indices"][1:]
    assert set(held["train_indices"][0]) < set(exact["train_indices"][0])
    assert not set(held["val_indices"][0]) & set(held["train_indices"][0])
