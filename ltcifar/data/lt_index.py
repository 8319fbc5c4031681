"""Long-tailed training subsets and balanced validation sets, as small human-readable files.

Validation images come from the training images a subset left unused, never from the test set.
Where a subset uses a class whole (class 0 of ``exp`` and of the seed's step split), ``val_policy``
decides:

- ``reserve`` lowers n_max to keep ``val_per_class`` images of every class free;
- ``exact`` keeps the published subset and validates on up to ``val_per_class`` leftovers, so
  CIFAR-LT's head class has none: validation never sees what a correction costs the head (its
  recall), so tau choices and ``best_val`` favour the tail more than the test set rewards;
- ``exact_holdout`` keeps the published subset but for a class it would use whole (or nearly),
  which gives up its last ``val_per_class`` images in the draw's order to validation: CIFAR-10-LT
  trains 4,950 head images, not LDAM's 5,000, and every class is validated.
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np

from ltcifar.config.records import SplitConfig, as_dict, need
from ltcifar.config.runconfig import dumps
from ltcifar.errors import PipelineError
from ltcifar.files import write_text_atomic


def class_counts(spec: SplitConfig, num_classes: int, n_max: int) -> list[int]:
    """Per-class training counts of a profile, computed exactly as LDAM-DRW does for ``exp``."""
    if spec.shape == "exp":
        factor = 1.0 / spec.imbalance
        return [int(n_max * factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if spec.shape == "step":
        return [n_max if i < spec.k else spec.n_min for i in range(num_classes)]
    return [n_max] * num_classes


def class_orders(labels: np.ndarray, sampling: str, seed: int) -> list[np.ndarray]:
    """A seeded random order of each class's indices; subsets take a prefix. ``ldam`` replays
    LDAM-DRW's imbalance_cifar.py (``np.random.seed(seed)``, then per class in label order
    ``np.random.shuffle(np.where(targets == c)[0])``) on a private RandomState: the same stream,
    with numpy's global state untouched."""
    rng = np.random.RandomState(seed) if sampling == "ldam" else np.random.default_rng(seed)
    orders = []
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        rng.shuffle(idx)
        orders.append(idx)
    return orders


def build_index(name: str, spec: SplitConfig, labels: np.ndarray, classes: list[str]) -> dict:
    """The index of one named split: training and validation indices per class, and counts."""
    orders = class_orders(labels, spec.sampling, need(spec.seed, "seed"))
    available = [len(o) for o in orders]
    val = spec.val_per_class
    n_max = spec.n_max or min(available)
    if spec.val_policy == "reserve":
        n_max = min(n_max, min(available) - val)
    counts = class_counts(spec, len(orders), n_max)
    if spec.val_policy == "exact_holdout":  # a class short of leftovers gives up images
        counts = [min(n, avail - val) for n, avail in zip(counts, available, strict=True)]
    reserved = 0 if spec.val_policy == "exact" else val  # exact: leftovers, if any
    for c, (n, avail) in enumerate(zip(counts, available, strict=True)):
        if n <= 0 or n + reserved > avail:
            raise PipelineError(
                f"split {name!r}: class {c} ({classes[c]}) needs {n} training + {reserved} "
                f"validation images but has {avail}; lower n_max/n_min or val_per_class, "
                "or set val_policy: reserve"
            )
    train = [o[:n].tolist() for o, n in zip(orders, counts, strict=True)]
    val_idx = [o[n : n + val].tolist() for o, n in zip(orders, counts, strict=True)]  # leftovers
    return {
        "split": name,
        "dataset": spec.dataset,
        "params": as_dict(spec),
        "n_max_used": n_max,
        "classes": list(classes),
        "counts": counts,
        "val_counts": [len(v) for v in val_idx],
        "total_train": sum(counts),
        "total_val": sum(len(v) for v in val_idx),
        "train_indices": [sorted(t) for t in train],
        "val_indices": [sorted(v) for v in val_idx],
    }


def build_split(name: str, spec: SplitConfig, labels: np.ndarray, classes: list[str]) -> dict:
    """What ``data/splits/<name>.json`` holds: the index of the split's one draw (``seed``), or,
    for a split with ``draws``, one index per draw, each the index the same split with
    ``seed: <draw>`` would have (LDAM-DRW's ``rand_number``), in one file so that every stage
    that reads the split still depends on exactly one file."""
    if spec.draws is None:
        return build_index(name, spec, labels, classes)
    draws = {
        str(d): build_index(name, replace(spec, seed=d, draws=None), labels, classes)
        for d in spec.draws
    }
    return {"split": name, "dataset": spec.dataset, "params": as_dict(spec), "draws": draws}


def member(seed: int, draw: int | None = None) -> str:
    """The name of one trained model of a run (its model, log and score files): ``seed<k>``, or
    ``draw<d>_seed<k>`` on a split with draws."""
    return f"seed{seed}" if draw is None else f"draw{draw}_seed{seed}"


def write_index(index: dict, path: Path) -> None:
    """Write JSON with each flat list (a class's indices, the counts) on one line, for diffs."""
    write_text_atomic(path, dumps(index))


INDEX_KEYS = ("dataset", "classes", "counts", "val_counts", "total_train", "total_val")
INDEX_LISTS = (("train_indices", "counts"), ("val_indices", "val_counts"))


def _index_problem(index: object) -> str | None:
    """What makes an index unusable (the first problem found), or None."""
    if not isinstance(index, dict):
        return "is not a JSON object"
    missing = [k for k in (*INDEX_KEYS, *(lst for lst, _ in INDEX_LISTS)) if k not in index]
    if missing:
        return f"lacks {', '.join(missing)}"
    classes = index["classes"]
    for lists, counts in INDEX_LISTS:
        for key in (lists, counts):
            if not isinstance(index[key], list) or len(index[key]) != len(classes):
                return f"{key} does not have one entry per class ({len(classes)})"
        for c, (idx, n) in enumerate(zip(index[lists], index[counts], strict=True)):
            if not isinstance(idx, list) or not all(type(i) is int and i >= 0 for i in idx):
                return f"{lists}[{c}] is not a list of non-negative integers"
            if len(idx) != n:
                return f"{counts}[{c}] is {n}, but {lists}[{c}] lists {len(idx)} images"
        total = "total_" + lists.split("_")[0]
        if index[total] != sum(index[counts]):
            return f"{total} is {index[total]}, but {counts} sum to {sum(index[counts])}"
    empty = [f"{c} ({classes[c]})" for c, n in enumerate(index["counts"]) if n == 0]
    if empty:
        return f"class {', '.join(empty)} has no training images"
    seen: dict[int, str] = {}
    for lists, _ in INDEX_LISTS:
        for c, idx in enumerate(index[lists]):
            for i in idx:
                if i in seen:
                    return f"image {i} is in {seen[i]} and again in {lists}[{c}]"
                seen[i] = f"{lists}[{c}]"
    return None


def _read_split(path: Path) -> object:
    if not path.exists():
        raise PipelineError(f"{path} not found; run `dvc repro lt_index` first")
    try:
        split = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not valid JSON ({e}); rerun `dvc repro lt_index`") from e
    if isinstance(split, dict) and "skipped" in split:  # lt_index's placeholder
        raise PipelineError(f"{path} is no split index: {split['skipped']}")
    return split


def split_draws(path: Path) -> list[int | None]:
    """The draws a split file holds, in order; ``[None]`` for a split of one draw (``seed``)."""
    split = _read_split(path)
    if isinstance(split, dict) and isinstance(split.get("draws"), dict):
        return [int(d) for d in split["draws"]]
    return [None]


def read_index(path: Path, draw: int | None = None) -> dict:
    """Read an index (of ``draw``, on a split with draws), checked whole and self-consistent: a
    hand-edited or torn one fails here."""
    index = _read_split(path)
    draws = index.get("draws") if isinstance(index, dict) else None
    if isinstance(draws, dict) and str(draw) not in draws:
        raise PipelineError(
            f"{path} holds draws {', '.join(draws)}, not {draw}; rerun `dvc repro lt_index`"
        )
    if isinstance(draws, dict):
        index = draws[str(draw)]
    elif draw is not None:
        raise PipelineError(f"{path} has no draws, so no draw {draw}; rerun `dvc repro lt_index`")
    problem = _index_problem(index)
    if problem is not None:
        raise PipelineError(f"{path}: {problem}; rerun `dvc repro lt_index`")
    return cast(dict, index)  # ``_index_problem`` found none: a JSON object


def check_fits(index: dict, path: Path, labels: np.ndarray, classes: list[str]) -> None:
    """Fail unless ``index`` (read from ``path``) fits this training set (class names, index range,
    labels): a split written for another dataset, or before it was prepared anew, fails here."""
    if index["classes"] != classes:
        raise PipelineError(
            f"{path}: its classes differ from {index['dataset']}'s prepared class names; "
            "rerun `dvc repro lt_index`"
        )
    for lists, _ in INDEX_LISTS:
        for c, idx in enumerate(index[lists]):
            idx = np.asarray(idx, np.int64)
            past = idx[idx >= len(labels)]
            if past.size:
                raise PipelineError(
                    f"{path}: {lists}[{c}] holds image {past[0]}, but {index['dataset']} has "
                    f"{len(labels)} training images; rerun `dvc repro lt_index`"
                )
            wrong = idx[labels[idx] != c]
            if wrong.size:
                raise PipelineError(
                    f"{path}: {lists}[{c}] holds image {wrong[0]}, whose label is "
                    f"{labels[wrong[0]]}; rerun `dvc repro lt_index`"
                )
