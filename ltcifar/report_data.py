"""The report's data layer: what the evaluate and train stages wrote, as pandas, and the reference
numbers of other work.

It exists so that every number the report prints comes through one place that can be tested
without drawing anything: metrics/<run>.json becomes one row per run (mean ± sample std
recomputed from the per-seed values), the DVCLive logs become long-form curves, and
metrics/<run>/{per_class,confusion}.csv become frames. It reads only ``metrics/``, ``logs/`` and
``data/splits/`` - never a model, never an image. The reference numbers are the only numbers not
ours; they sit in the constants below with their sources, together with the rule that says which
of our runs measures the same thing.
"""

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ltcifar.errors import PipelineError

CANDIDATE = "candidate"
BASELINE = "step_ce"  # the seed study's cross-entropy run: every method is compared with it
STEP_SPLIT = "step"
BALANCED_SPLIT = "balanced"
ARCH_RUNS = ("plainnet20", "resnet20")
TRANSFER_PREFIX = "transfer_"

# The scores of one seed, as the evaluate stage writes them; the table shows the first seven.
SCORES = (
    "accuracy",
    "macro_f1",
    "balanced_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
    "minority_recall",
    "ece",
    "micro_f1",
    "top5_accuracy",
)
TABLE_SCORES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "many_shot_accuracy": "many",
    "medium_shot_accuracy": "medium",
    "few_shot_accuracy": "few",
    "minority_recall": "minority recall",
    "ece": "ECE",
}
RUN_FIELDS = (
    "dataset",
    "split",
    "profile",
    "model",
    "loss",
    "sampler",
    "mixup",
    "seeds",
    "test_images",
    "train_images",
    "device",
    "mode",
    "params",
    "trainable_params",
    "second_stage",
    "first_stage",
    "posthoc",
)

# Plain training: no re-sampling, no mixup. With cross-entropy it is the baseline method.
PLAIN = {"sampler": "instance", "mixup": "none"}
PLAIN_CE = {"loss": "cross_entropy", **PLAIN, "posthoc": (None, False)}  # None: older files

# Numbers of other work, kept apart from ours. Copied from ../shared/DESIGN.md, which cites the
# sources below. `match` says which of our runs measure the same thing: run fields, the split
# index's own params (split profile, sizes) and the metric. Values are as published.
SEED_STUDY_STEP = {"dataset": "cifar10", "split_profile": "step", "n_max": 5000, "n_min": 500}
SEED_STUDY = [
    {
        "what": "CE",
        "setting": "imbalanced CIFAR-10, step 5000/500",
        "metric": "macro_f1",
        "value": 0.7457,
        "match": {**SEED_STUDY_STEP, **PLAIN_CE},
    },
    {
        "what": "Balanced-MixUp (its variant: class-balanced sampler + ordinary mixup)",
        "setting": "imbalanced CIFAR-10, step 5000/500",
        "metric": "macro_f1",
        "value": 0.7971,
        "match": {**SEED_STUDY_STEP, "loss": "cross_entropy", "mixup": "sampler_mixup"},
    },
    {
        "what": "Balanced Softmax",
        "setting": "imbalanced CIFAR-10, step 5000/500",
        "metric": "macro_f1",
        "value": 0.7991,
        "match": {**SEED_STUDY_STEP, "loss": "balanced_softmax", **PLAIN},
    },
    {
        "what": "ResNet20",
        "setting": "CIFAR-100",
        "metric": "accuracy",
        "value": 0.6498,
        "match": {"dataset": "cifar100", "split_profile": "none", "model": "resnet20"},
    },
    {
        "what": "PlainNet20",
        "setting": "CIFAR-100",
        "metric": "accuracy",
        "value": (0.4300, 0.6142),  # "0.4300 in one run, 0.6142 in another"
        "match": {"dataset": "cifar100", "split_profile": "none", "model": "plainnet20"},
    },
]
SEED_STUDY_SOURCE = (
    "the seed study (one seed; it chose models by their test score), as quoted in "
    "../shared/DESIGN.md"
)

# Published top-1 accuracy (%) with ResNet-32, exponential profile, imbalance factor 100.
PUBLISHED = [
    {
        "what": "Cross-entropy",
        "cifar10": 70.4,
        "cifar100": 38.3,
        "source": "Cao et al., NeurIPS 2019, Table 2",
        "short": "Cao et al. 2019",
        "match": PLAIN_CE,
    },
    {
        "what": "LDAM-DRW",
        "cifar10": 77.0,
        "cifar100": 42.0,
        "source": "Cao et al., NeurIPS 2019, Table 2",
        "short": "Cao et al. 2019",
        "match": {"loss": "ldam"},
    },
    {
        "what": "Logit adjustment",
        "cifar10": 77.9,
        "cifar100": 44.1,
        "source": "the google-research logit_adjustment code, as run by its authors",
        "short": "google-research logit_adjustment",
        # The logit-adjusted loss with tau = 1 is Balanced Softmax (see params.yaml la_tau), and
        # Menon et al.'s other half: cross-entropy, adjusted post hoc
        "match": [
            {"loss": ("logit_adjusted", "balanced_softmax"), **PLAIN},
            {"loss": "cross_entropy", **PLAIN, "posthoc": True},
        ],
    },
    {
        "what": "MiSLAS",
        "cifar10": 82.5,
        "cifar100": 47.0,
        "source": "Zhong et al., CVPR 2021, the MiSLAS README",
        "short": "Zhong et al. 2021",
        "match": None,  # no run of ours reproduces MiSLAS's two-stage recipe
    },
]
PUBLISHED_SETTING = {"split_profile": "exp", "imbalance": 100.0, "model": "resnet32"}


# ----------------------------------------------------------------------------- aggregation


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for one value), as the evaluate stage computes them
    (``metrics.seed_summary``), so a table built from per-seed values agrees with
    metrics/<run>.json; NaNs (a seed without the key) are ignored, and no values give (nan, nan)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def fmt_mean_std(mean: float, std: float, n: int, digits: int = 4) -> str:
    """'0.7457 ± 0.0123' over several seeds, '0.7457' for one, '' when not measured: a single
    seed has no spread to show, and a blank cell is honest where a key is missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


# ----------------------------------------------------------------------------- loading


def load_splits(splits_dir: Path) -> dict[str, dict]:
    """Every split index by name, without the image indices (the report needs only the spec,
    class names and counts, and CIFAR's index lists are by far the largest part)."""
    splits = {}
    for path in sorted(Path(splits_dir).glob("*.json")):
        index = json.loads(path.read_text())
        index.pop("train_indices", None)
        index.pop("val_indices", None)
        splits[index.get("split", path.stem)] = index
    return splits


def _scores(metrics: dict) -> dict[str, tuple[float, float, int]]:
    """(mean, std, n) of each score, recomputed from the per-seed values when the file has them
    (so the table is checked arithmetic, not a copy), else taken from the file's mean and std."""
    per_seed = metrics.get("per_seed") or {}
    out = {}
    for key in SCORES:
        if per_seed:
            values = [s.get(key) for s in per_seed.values()]
            n = sum(v is not None for v in values)
            mean, std = mean_std(values)
        else:
            n = int(metrics.get("run", {}).get("seeds", 1))
            mean = float(metrics.get(key, math.nan))
            std = float(metrics.get("std", {}).get(key, math.nan))
        out[key] = (mean, std, n)
    return out


def _split_spec(index: dict | None) -> dict:
    """The split fields the report matches and prints: split profile, sizes, imbalance."""
    if not index:
        return {}
    params = index.get("params", {})
    counts = index.get("counts") or [0]
    return {
        "split_profile": params.get("shape"),
        "n_max": params.get("n_max"),
        "n_min": params.get("n_min"),
        "k": params.get("k"),
        "imbalance": params.get("imbalance"),
        "num_classes": len(index.get("classes", [])),
        "measured_imbalance": max(counts) / max(min(counts), 1),
        "total_val": index.get("total_val"),
    }


def _group(name: str, run: dict, spec: dict) -> str:
    """imbalance / balanced / transfer: the summary chart shows the imbalance runs only. The
    evaluate stage writes mode 'scratch' for every run trained from scratch, so a transfer run
    is one named transfer_* (transfer_scratch is the study's baseline) or pretrained."""
    if name.startswith(TRANSFER_PREFIX) or run.get("mode") not in (None, "scratch"):
        return "transfer"
    if run.get("split") == BALANCED_SPLIT or spec.get("split_profile") == "none":
        return "balanced"
    return "imbalance"


def load_runs(metrics_dir: Path, splits: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per metrics/<run>.json: the run's description, its split's spec and every score
    as <score> (mean), <score>_std and <score>_n. Keys that older files lack become NaN/None,
    so a report over a mix of old and new runs still renders."""
    metrics_dir = Path(metrics_dir)
    if not metrics_dir.is_dir():
        raise PipelineError(
            f"no metrics directory {metrics_dir}/: run `dvc repro` to train and evaluate first"
        )
    splits = splits or {}
    rows = []
    for path in sorted(metrics_dir.glob("*.json")):
        metrics = json.loads(path.read_text())
        if "accuracy" not in metrics:
            continue  # not a run's metrics file
        run = metrics.get("run", {})
        spec = _split_spec(splits.get(run.get("split")))
        row = {"run": path.stem, **{k: run.get(k) for k in RUN_FIELDS}, **spec}
        row["group"] = _group(path.stem, run, spec)
        for key, (mean, std, n) in _scores(metrics).items():
            row[key], row[f"{key}_std"], row[f"{key}_n"] = mean, std, n
        row["n_seeds"] = len(metrics.get("per_seed") or {}) or int(run.get("seeds") or 1)
        rows.append(row)
    if not rows:
        raise PipelineError(
            f"no run metrics (*.json) in {metrics_dir}/: run `dvc repro` to train and evaluate"
        )
    return _ordered(pd.DataFrame(rows).set_index("run", drop=False))


def _ordered(runs: pd.DataFrame) -> pd.DataFrame:
    """Candidate first, then imbalance (step split first), balanced and transfer runs; within a
    split the plain cross-entropy baseline first, so tables read down from the reference point."""
    group_rank = {"imbalance": 1, "balanced": 2, "transfer": 3}
    key = runs.apply(
        lambda r: (
            0 if r["run"] == CANDIDATE else group_rank[r["group"]],
            r["split"] != STEP_SPLIT,  # the seed study's split first
            str(r["split"]),
            not _matches(r, PLAIN_CE),
            r["run"],
        ),
        axis=1,
    )
    return runs.loc[sorted(runs.index, key=lambda i: key[i])]


def load_curves(logs_dir: Path, run: str) -> pd.DataFrame:
    """A run's DVCLive per-epoch logs in long form (seed, part, metric, step, value): every
    seed's ``plots/metrics/{train,val}/<metric>.tsv`` and ``lr.tsv`` (part '' for lr); empty
    when the run has no logs (e.g. a report built from metrics only)."""
    frames = []
    for seed_dir in sorted(Path(logs_dir, run).glob("seed*")):
        base = seed_dir / "plots" / "metrics"
        for tsv in sorted(base.glob("**/*.tsv")):
            df = pd.read_csv(tsv, sep="\t")
            if "step" not in df or df.shape[1] < 2:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed_dir.name,
                        "part": tsv.parent.name if tsv.parent != base else "",
                        "metric": tsv.stem,
                        "step": df["step"].astype(int),
                        "value": df.iloc[:, 1].astype(float),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["seed", "part", "metric", "step", "value"])
    return pd.concat(frames, ignore_index=True)


def load_per_class(metrics_dir: Path, run: str) -> pd.DataFrame | None:
    """metrics/<run>/per_class.csv (class order = label order), or None if absent."""
    path = Path(metrics_dir, run, "per_class.csv")
    return pd.read_csv(path) if path.exists() else None


def load_confusion(metrics_dir: Path, run: str, classes: Sequence[str]) -> pd.DataFrame | None:
    """The C×C count matrix (rows = actual, columns = predicted, in ``classes`` order) rebuilt
    from metrics/<run>/confusion.csv, one row per test image; None if absent."""
    path = Path(metrics_dir, run, "confusion.csv")
    if not path.exists():
        return None
    pairs = pd.read_csv(path)
    names = list(classes) or sorted(set(pairs["actual"]) | set(pairs["predicted"]))
    counts = pd.crosstab(
        pd.Categorical(pairs["actual"], categories=names),
        pd.Categorical(pairs["predicted"], categories=names),
        dropna=False,
    )
    return counts.reindex(index=names, columns=names, fill_value=0)


# ----------------------------------------------------------------------------- references


def _matches(row: pd.Series, match: dict) -> bool:
    """A run measures the same thing as a reference row when every listed field agrees (a tuple
    lists accepted values)."""
    for key, want in match.items():
        have = row.get(key)
        if isinstance(want, tuple):
            if have not in want:
                return False
        elif isinstance(want, float | int) and not isinstance(want, bool):
            if have is None or pd.isna(have) or float(have) != float(want):
                return False
        elif have != want:
            return False
    return True


def reference_for(row: pd.Series) -> str:
    """The other work's number for the same setting, as text for the table's reference column;
    only for full-profile (CIFAR) runs, since quick runs are on another dataset entirely."""
    if row.get("profile") != "full" or isinstance(row.get("second_stage"), str):
        return ""  # a second stage is no published recipe
    found = []
    for ref in SEED_STUDY:
        if _matches(row, ref["match"]):
            v = ref["value"]
            shown = " / ".join(f"{x:.4f}" for x in v) if isinstance(v, tuple) else f"{v:.4f}"
            found.append(f"{shown} {TABLE_SCORES[ref['metric']]} (seed study)")
    if row.get("dataset") in ("cifar10", "cifar100") and _matches(row, PUBLISHED_SETTING):
        for ref in PUBLISHED:
            alternatives = ref["match"] if isinstance(ref["match"], list) else [ref["match"]]
            if ref["match"] and any(_matches(row, m) for m in alternatives):
                found.append(f"{ref[row['dataset']] / 100:.3f} accuracy ({ref['short']})")
    return "; ".join(found)
