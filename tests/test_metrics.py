"""Metrics from one confusion matrix agree with scikit-learn; shot groups match the literature."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ltcifar.data.lt_index import class_counts
from ltcifar.evaluation.metrics import (
    confusion,
    minority_recall,
    per_class,
    seed_summary,
    shot_accuracy,
    shot_groups,
    summarize,
)
from tests.conftest import split_spec


def random_predictions(seed: int, n: int = 500, c: int = 7, never: int = 3):
    """Noisy predictions where class ``never`` is never predicted (but appears in y_true)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, n)
    y_true[:c] = np.arange(c)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, c, n))
    y_pred[y_pred == never] = (never + 1) % c
    return y_true, y_pred


def test_confusion_matches_sklearn():
    y_true, y_pred = random_predictions(0)
    conf = confusion(torch.from_numpy(y_true), torch.from_numpy(y_pred), 7).numpy()
    np.testing.assert_array_equal(conf, confusion_matrix(y_true, y_pred, labels=range(7)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_and_per_class_match_sklearn(seed):
    c = 7
    y_true, y_pred = random_predictions(seed, c=c)
    assert 3 not in y_pred
    conf = confusion(torch.from_numpy(y_true), torch.from_numpy(y_pred), c).numpy()
    s = summarize(conf)
    labels = list(range(c))
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    pc = per_class(conf)
    p, r, f, sup = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(pc["precision"], p)
    np.testing.assert_allclose(pc["recall"], r)
    np.testing.assert_allclose(pc["f1"], f)
    np.testing.assert_array_equal(pc["support"], sup)
    assert pc["precision"][3] == 0 and pc["recall"][3] == 0 and pc["f1"][3] == 0


def test_balanced_accuracy_ignores_absent_classes():
    """A class predicted but absent from y_true does not drag balanced accuracy down."""
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 3, 1, 1, 0, 2])
    conf = confusion(torch.from_numpy(y_true), torch.from_numpy(y_pred), 4).numpy()
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert summarize(conf)["balanced_accuracy"] == pytest.approx(expected)
    assert summarize(conf)["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_empty_confusion_is_zero():
    s = summarize(np.zeros((3, 3)))
    assert s == {"accuracy": 0.0, "macro_f1": 0.0, "micro_f1": 0.0, "balanced_accuracy": 0.0}


def test_shot_groups_cifar100_lt():
    counts = np.array(
        class_counts(split_spec(dataset="cifar100", shape="exp", imbalance=100.0), 100, 500)
    )
    groups = shot_groups(counts, 100, 20)
    assert groups["many"].sum() == 35
    assert groups["medium"].sum() == 35
    assert groups["few"].sum() == 30
    assert (groups["many"] ^ groups["medium"] ^ groups["few"]).all()
    assert (counts[groups["many"]] > 100).all()
    assert ((counts[groups["medium"]] >= 20) & (counts[groups["medium"]] <= 100)).all()
    assert (counts[groups["few"]] < 20).all()


def test_shot_group_boundaries():
    g = shot_groups(np.array([101, 100, 20, 19]), 100, 20)
    assert g["many"].tolist() == [True, False, False, False]
    assert g["medium"].tolist() == [False, True, True, False]
    assert g["few"].tolist() == [False, False, False, True]


def test_shot_accuracy_hand_made():
    # classes 0,1 many; 2 medium; 3 few
    conf = np.array(
        [
            [8, 2, 0, 0],  # 8/10
            [1, 3, 0, 0],  # 3/4
            [0, 0, 5, 5],  # 5/10
            [1, 1, 0, 0],  # 0/2
        ]
    )
    groups = shot_groups(np.array([500, 200, 50, 5]), 100, 20)
    acc = shot_accuracy(conf, groups)
    assert acc == pytest.approx(
        {"many_shot_accuracy": 11 / 14, "medium_shot_accuracy": 0.5, "few_shot_accuracy": 0.0}
    )
    # an empty group is left out
    acc = shot_accuracy(conf, shot_groups(np.array([500, 200, 150, 120]), 100, 20))
    assert acc == pytest.approx({"many_shot_accuracy": 16 / 26})


def test_minority_recall_averages_the_classes_below_the_largest():
    conf = np.array([[9, 1, 0], [2, 6, 2], [0, 5, 5]])
    assert minority_recall(conf, np.array([500, 50, 50])) == {
        "minority_recall": pytest.approx((0.6 + 0.5) / 2)
    }
    assert minority_recall(conf, np.array([50, 50, 50])) == {}


def test_seed_summary_is_mean_and_sample_std_and_zero_for_one_seed():
    table = pd.DataFrame({"accuracy": [0.78, 0.80, 0.85], "ece": [0.1, 0.2, 0.6]})
    mean, std = seed_summary(table)
    assert mean == pytest.approx({"accuracy": 0.81, "ece": 0.3})
    sample = {k: np.sqrt(((v - v.mean()) ** 2).sum() / (len(v) - 1)) for k, v in table.items()}
    assert std == pytest.approx({k: round(s, 6) for k, s in sample.items()}, abs=1e-12)
    assert std["accuracy"] == pytest.approx(0.036056, abs=1e-6)  # not ddof=0's 0.029439
    one_mean, one_std = seed_summary(table.iloc[:1])
    assert one_mean == {"accuracy": 0.78, "ece": 0.1} and one_std == {"accuracy": 0.0, "ece": 0.0}
