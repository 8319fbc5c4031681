"""The report stage's library: read what the evaluate and train stages wrote, draw the figures and
write REPORT.md.

It reads only ``metrics/`` (per-run JSON and CSV), the DVCLive logs under ``logs/`` and the split
indexes ``data/splits/*.json`` - never a model, never an image - so the report regenerates in
seconds and every number in it comes from a file that ``dvc repro`` produced. Nothing is copied
by hand, except the reference numbers of other work, which sit in one constant below with their
sources and are always printed apart from ours.

Figures use matplotlib's object-oriented API on Agg canvases (no pyplot, no global state), so
drawing is headless, deterministic and does not depend on the user's matplotlib backend. Each
figure has a ``draw_*`` function that returns the Figure (tests inspect its axes) and a
``plot_*`` function that saves it and returns the path.
"""

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ltcifar.errors import PipelineError

CANDIDATE = "candidate"
BASELINE = "step_ce"  # the seed study's cross-entropy run: every method is compared with it
STEP_SPLIT = "step"
BALANCED_SPLIT = "balanced"
ARCH_RUNS = ("plainnet20", "resnet20")
TRANSFER_PREFIX = "transfer_"
DPI = 120

# The scores of one seed, as the evaluate stage writes them; the table shows the first seven.
SCORES = (
    "accuracy",
    "macro_f1",
    "balanced_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
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
)
CURVE_METRICS = {"loss": "loss", "accuracy": "accuracy", "macro_f1": "macro-F1"}

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
        "match": {
            **SEED_STUDY_STEP,
            "loss": "cross_entropy",
            "sampler": "instance",
            "mixup": "none",
        },
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
        "match": {
            **SEED_STUDY_STEP,
            "loss": "balanced_softmax",
            "sampler": "instance",
            "mixup": "none",
        },
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
        "match": {"loss": "cross_entropy", "sampler": "instance", "mixup": "none"},
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
        # The logit-adjusted loss with tau = 1 is Balanced Softmax (see params.yaml la_tau).
        "match": {
            "loss": ("logit_adjusted", "balanced_softmax"),
            "sampler": "instance",
            "mixup": "none",
        },
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
    """Mean and population std (ddof=0), as the evaluate stage computes them, so a table built
    from per-seed values agrees with metrics/<run>.json; NaNs (a seed without the key) are
    ignored, and no values give (nan, nan)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=0))


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
        "split_profile": params.get("profile"),
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


def _is_baseline(row: pd.Series) -> bool:
    return (row.get("loss"), row.get("sampler"), row.get("mixup")) == (
        "cross_entropy",
        "instance",
        "none",
    )


def _ordered(runs: pd.DataFrame) -> pd.DataFrame:
    """Candidate first, then imbalance (step split first), balanced and transfer runs; within a
    split the plain cross-entropy baseline first, so tables read down from the reference point."""
    group_rank = {"imbalance": 1, "balanced": 2, "transfer": 3}
    key = runs.apply(
        lambda r: (
            0 if r["run"] == CANDIDATE else group_rank[r["group"]],
            r["split"] != STEP_SPLIT,  # the seed study's split first
            str(r["split"]),
            not _is_baseline(r),
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
            part = tsv.parent.name if tsv.parent != base else ""
            df = pd.read_csv(tsv, sep="\t")
            if "step" not in df or df.shape[1] < 2:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed_dir.name,
                        "part": part,
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


# ----------------------------------------------------------------------------- figure helpers


def _label_size(n: int) -> float:
    """Tick-label font size for n class names: 10 pt for CIFAR-10, 7 pt for CIFAR-100 (the
    figures give each class at least ~10 pt of axis, so rotated 7 pt names do not collide)."""
    return float(np.clip(600 / max(n, 1), 7, 10))


def _class_ticks(ax: Axes, names: Sequence[str], axis: str = "x") -> None:
    """Every class name as a tick label, rotated and sized so 10 or 100 names stay legible."""
    n, size = len(names), _label_size(len(names))
    pos = np.arange(n)
    if axis == "x":
        ax.set_xticks(pos)
        rot, ha = (90, "center") if n > 20 else (40, "right")
        ax.set_xticklabels(
            names,
            rotation=rot,
            ha=ha,
            fontsize=size,
            rotation_mode="anchor" if ha == "right" else "default",
        )
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(names, fontsize=size)


def save(fig: Figure, path: Path) -> Path:
    """Render on an Agg canvas at the report's dpi with a tight bounding box (outside legends
    included) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _seed_colors(n: int) -> list:
    """tab10 colours, cycled: distinct for seeds, splits and modes alike."""
    return [colormaps["tab10"](i % 10) for i in range(n)]


# ----------------------------------------------------------------------------- a. learning curves


def _log_if_spread(ax: Axes, values: pd.Series) -> None:
    """Log y when positive values span more than 50x (a diverging first-epoch validation loss
    would otherwise flatten the rest of the curve into the x axis)."""
    v = values[values > 0]
    if len(v) and v.max() / v.min() > 50:
        ax.set_yscale("log")
        ax.set_ylabel(f"{ax.get_ylabel()} (log scale)")


def draw_learning_curves(curves: pd.DataFrame, run: str, subtitle: str = "") -> Figure:
    """Loss, accuracy and macro-F1 per epoch in a 1×3 grid: train solid, validation dashed, one
    colour per seed (up to 5 seeds; more seeds show the mean with a ±std band), so seed-to-seed
    spread and the train/val gap are both visible."""
    fig = _figure(13, 3.9)
    axes = fig.subplots(1, 3)
    seeds = sorted(curves["seed"].unique(), key=lambda s: int(s[4:]) if s[4:].isdigit() else s)
    banded = len(seeds) > 5
    colors = _seed_colors(1 if banded else len(seeds))
    for ax, (metric, label) in zip(axes, CURVE_METRICS.items(), strict=True):
        for part, style in (("train", "-"), ("val", "--")):
            sel = curves[(curves["metric"] == metric) & (curves["part"] == part)]
            if sel.empty:
                continue
            if banded:
                g = sel.groupby("step")["value"]
                x, m, s = g.mean().index + 1, g.mean().to_numpy(), g.std(ddof=0).to_numpy()
                ax.plot(x, m, style, color=colors[0])
                ax.fill_between(x, m - s, m + s, color=colors[0], alpha=0.2, lw=0)
            else:
                for color, seed in zip(colors, seeds, strict=True):
                    one = sel[sel["seed"] == seed].sort_values("step")
                    ax.plot(one["step"] + 1, one["value"], style, color=color, lw=1.5)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _log_if_spread(ax, curves.loc[curves["metric"] == metric, "value"])
    handles = [Line2D([], [], color="0.3", ls="-", label="train")]
    if (curves["part"] == "val").any():
        handles.append(Line2D([], [], color="0.3", ls="--", label="validation"))
    if banded:
        handles.append(Patch(color=colors[0], alpha=0.4, label=f"mean ± std, {len(seeds)} seeds"))
    else:
        handles += [
            Line2D([], [], color=c, lw=3, label=s) for c, s in zip(colors, seeds, strict=True)
        ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{run}: learning curves" + (f" ({subtitle})" if subtitle else ""))
    return fig


def plot_learning_curves(curves: pd.DataFrame, run: str, path: Path, subtitle: str = "") -> Path:
    """Save ``draw_learning_curves``; see there."""
    return save(draw_learning_curves(curves, run, subtitle), path)


# ----------------------------------------------------------------------------- b. architecture


def draw_architecture(curves: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """Training (dashed) and validation (bold) error, 1 - accuracy, per epoch for PlainNet20 and
    ResNet20, averaged over seeds: the degradation plot of He et al. 2016, Fig. 6."""
    fig = _figure(8, 4.8)
    ax = fig.subplots()
    for color, (run, df) in zip(_seed_colors(len(curves)), curves.items(), strict=True):
        n = df["seed"].nunique()
        for part, style, lw, name in (("train", "--", 1.2, "train"), ("val", "-", 2.6, "val")):
            sel = df[(df["metric"] == "accuracy") & (df["part"] == part)]
            if sel.empty:
                continue
            err = 1 - sel.groupby("step")["value"].mean()
            ax.plot(
                err.index + 1,
                err.to_numpy(),
                style,
                color=color,
                lw=lw,
                label=f"{run} {name} ({n} seed{'s' if n > 1 else ''})",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (1 − accuracy)")
    ax.set_title(title or "PlainNet20 vs ResNet20 (cf. He et al. 2016, Fig. 6)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    return fig


def plot_architecture(curves: dict[str, pd.DataFrame], path: Path, title: str = "") -> Path:
    """Save ``draw_architecture``; see there."""
    return save(draw_architecture(curves, title), path)


# ----------------------------------------------------------------------------- c. class counts


def draw_class_counts(index: dict) -> Figure:
    """Training images per class of one split on a log axis, class names on x: the shape of the
    tail (exp or step) and its imbalance factor at a glance."""
    names, counts = index["classes"], np.asarray(index["counts"])
    n = len(names)
    fig = _figure(min(max(6.0, 0.15 * n + 2), 18), 4.2)
    ax = fig.subplots()
    ax.bar(np.arange(n), counts, color="tab:blue", width=0.8)
    ax.set_yscale("log")
    ax.set_ylim(max(counts.min() / 2, 0.5), counts.max() * (3 if n <= 20 else 1.6))
    if n <= 20:
        for i, c in enumerate(counts):
            ax.annotate(
                f"{c}",
                (i, c),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    _class_ticks(ax, names)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel("class")
    ax.set_ylabel("training images (log scale)")
    spec = index.get("params", {})
    ax.set_title(
        f"split {index.get('split')}: {index.get('dataset')}, {spec.get('profile')} profile\n"
        f"{index.get('total_train', counts.sum())} training images, "
        f"imbalance factor {counts.max() / max(counts.min(), 1):.3g}"
    )
    ax.grid(axis="y", which="both", alpha=0.25)
    return fig


def plot_class_counts(index: dict, path: Path) -> Path:
    """Save ``draw_class_counts``; see there."""
    return save(draw_class_counts(index), path)


# ----------------------------------------------------------------------------- d. per-class F1


def draw_per_class_f1(per_class: dict[str, pd.DataFrame], baseline: str = BASELINE) -> Figure:
    """One panel per method: its per-class F1 beside the baseline's, grouped bars by class, so
    it shows which classes (the tail?) a method helps or hurts; many methods stay readable."""
    base = per_class[baseline]
    others = [r for r in per_class if r != baseline]
    names = base["class"].tolist()
    n = len(names)
    ncols = min(3, len(others))
    nrows = math.ceil(len(others) / ncols)
    panel_w = min(max(4.2, 0.32 * n + 1.2), 16)
    fig = _figure(panel_w * ncols, 3.2 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    x = np.arange(n)
    for ax, run in zip(axes, others, strict=False):
        df = per_class[run].set_index("class").reindex(names)
        ax.bar(x - 0.2, base["f1"], 0.4, color="0.65")
        ax.bar(x + 0.2, df["f1"].to_numpy(), 0.4, color="tab:orange")
        ax.set_title(
            f"{run}: macro-F1 {df['f1'].mean():.3f} vs {base['f1'].mean():.3f}", fontsize=10
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("F1")
        ax.set_xlim(-0.7, n - 0.3)
        _class_ticks(ax, names)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(others) :]:
        ax.remove()
    fig.legend(
        handles=[
            Patch(color="0.65", label=f"{baseline} (baseline)"),
            Patch(color="tab:orange", label="the method named in the panel title"),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    fig.suptitle(f"Per-class F1 on the test set, {STEP_SPLIT} split: each method vs {baseline}")
    return fig


def plot_per_class_f1(
    per_class: dict[str, pd.DataFrame], path: Path, baseline: str = BASELINE
) -> Path:
    """Save ``draw_per_class_f1``; see there."""
    return save(draw_per_class_f1(per_class, baseline), path)


# ----------------------------------------------------------------------------- e. confusion


def draw_confusion(counts: pd.DataFrame, run: str, note: str = "") -> Figure:
    """Confusion matrix normalised by row (each true class sums to 1, so tail classes are as
    visible as head classes), class names on both axes, values printed up to 15 classes."""
    names = list(counts.index)
    n = len(names)
    rows = counts.to_numpy(dtype=float)
    norm = np.divide(
        rows,
        rows.sum(1, keepdims=True),
        out=np.zeros_like(rows),
        where=rows.sum(1, keepdims=True) > 0,
    )
    side = min(max(5.5, 0.13 * n + 3), 16)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    _class_ticks(ax, names, "x")
    _class_ticks(ax, names, "y")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{run}: confusion matrix, normalised by row" + (f"\n{note}" if note else ""))
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class's test images")
    return fig


def plot_confusion(counts: pd.DataFrame, run: str, path: Path, note: str = "") -> Path:
    """Save ``draw_confusion``; see there."""
    return save(draw_confusion(counts, run, note), path)


# ----------------------------------------------------------------------------- f. summary


def draw_summary(runs: pd.DataFrame, metric: str = "macro_f1") -> Figure:
    """Horizontal bars of one score with ±std error bars, grouped and coloured by split and
    sorted best-first within each split: the whole imbalance study in one picture."""
    splits = list(dict.fromkeys(runs["split"]))
    colors = dict(zip(splits, _seed_colors(len(splits)), strict=True))
    order = []
    for split in splits:
        block = runs[runs["split"] == split].sort_values(metric, ascending=False)
        order.append(block)
    ypos, y, labels, rows = [], 0.0, [], []
    for block in order:
        for run, row in block.iterrows():
            ypos.append(y)
            labels.append(run)
            rows.append(row)
            y += 1
        y += 0.6
    ypos = -np.asarray(ypos)  # top to bottom
    vals = np.array([r[metric] for r in rows], dtype=float)
    errs = np.nan_to_num(np.array([r[f"{metric}_std"] for r in rows], dtype=float))
    fig = _figure(9, 0.34 * len(rows) + 0.25 * len(order) + 1.6)
    ax = fig.subplots()
    ax.barh(ypos, vals, color=[colors[r["split"]] for r in rows], height=0.75)
    multi = np.array([r[f"{metric}_n"] > 1 for r in rows])
    if multi.any():  # one seed has no spread: no error bar rather than a misleading zero
        ax.errorbar(
            vals[multi],
            ypos[multi],
            xerr=errs[multi],
            fmt="none",
            ecolor="0.2",
            elinewidth=1,
            capsize=3,
        )
    ax.set_ylim(ypos.min() - 0.7, ypos.max() + 0.7)
    for yy, v, e, r in zip(ypos, vals, errs, rows, strict=True):
        text = f"{v:.3f}" + (f" ± {e:.3f}" if r[f"{metric}_n"] > 1 else "")
        ax.text(v + e + 0.01, yy, text, va="center", fontsize=8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlim(0, min(1.0, np.nanmax(vals + errs)) + 0.2)
    ax.set_xlabel(f"{TABLE_SCORES.get(metric, metric)} on the test set (mean ± std over seeds)")
    ax.set_title(f"{TABLE_SCORES.get(metric, metric)} of every imbalance run, by split")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(
        handles=[Patch(color=colors[s], label=f"split {s}") for s in splits],
        loc="outside right upper",
        frameon=False,
    )
    return fig


def plot_summary(runs: pd.DataFrame, path: Path, metric: str = "macro_f1") -> Path:
    """Save ``draw_summary``; see there."""
    return save(draw_summary(runs, metric), path)


# ----------------------------------------------------------------------------- g. transfer


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{int(n):,}"


def _params_label(trainable, total=None) -> str:
    """'51,300 of 11.23 M trainable': how much of the network a mode lets move."""
    if trainable is None or pd.isna(trainable):
        return "trainable params not recorded"
    if total is None or pd.isna(total) or total == trainable:
        return f"{_count(trainable)} trainable"
    return f"{_count(trainable)} of {_count(total)} trainable"


def draw_transfer(runs: pd.DataFrame) -> Figure:
    """Test accuracy (± std over seeds) of each fine-tuning mode, labelled with how many
    parameters it trains: how much of the network must move to fit CIFAR-100. Pretrained
    modes go left to right by trainable parameters; training from scratch (grey) comes last."""
    scratch = runs["mode"].eq("scratch")
    runs = runs.assign(_s=scratch, _p=runs["trainable_params"].astype(float))
    runs = runs.sort_values(["_s", "_p"])
    fig = _figure(max(5.5, 2.2 * len(runs)), 4.4)
    ax = fig.subplots()
    x = np.arange(len(runs))
    vals = runs["accuracy"].to_numpy(float)
    errs = np.nan_to_num(runs["accuracy_std"].to_numpy(float))
    colors = [
        c if not s else "0.6" for c, s in zip(_seed_colors(len(runs)), runs["_s"], strict=True)
    ]
    ax.bar(x, vals, yerr=errs, color=colors, capsize=4, width=0.6)
    for xx, v, e in zip(x, vals, errs, strict=True):
        ax.text(xx, v + e + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x)
    names = [r["mode"] if isinstance(r["mode"], str) else run for run, r in runs.iterrows()]
    params = [_params_label(r["trainable_params"], r["params"]) for _, r in runs.iterrows()]
    ax.set_xticklabels([f"{n}\n{p}" for n, p in zip(names, params, strict=True)], fontsize=9)
    ax.set_ylim(0, min(1.0, np.nanmax(vals + errs) + 0.12))
    ax.set_xlabel("fine-tuning mode")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(
        "Transfer: a pretrained backbone fine-tuned on "
        f"{', '.join(sorted(set(map(str, runs['dataset']))))}"
    )
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_transfer(runs: pd.DataFrame, path: Path) -> Path:
    """Save ``draw_transfer``; see there."""
    return save(draw_transfer(runs), path)


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
    if row.get("profile") != "full":
        return ""
    found = []
    for ref in SEED_STUDY:
        if _matches(row, ref["match"]):
            v = ref["value"]
            shown = " / ".join(f"{x:.4f}" for x in v) if isinstance(v, tuple) else f"{v:.4f}"
            found.append(f"{shown} {TABLE_SCORES[ref['metric']]} (seed study)")
    if row.get("dataset") in ("cifar10", "cifar100") and _matches(row, PUBLISHED_SETTING):
        for ref in PUBLISHED:
            if ref["match"] and _matches(row, ref["match"]):
                found.append(f"{ref[row['dataset']] / 100:.3f} accuracy ({ref['short']})")
    return "; ".join(found)


def references_markdown(profiles: set[str]) -> str:
    """The 'Reference numbers' section: the seed study's and the published numbers, exactly as
    DESIGN.md quotes them, with sources, and whether they are comparable to these runs."""
    lines = ["## Reference numbers (not produced by this pipeline)", ""]
    if profiles - {"full"}:
        lines += [
            f"These runs use the {', '.join(sorted(profiles - {'full'}))} profile "
            "(Fashion-MNIST, not CIFAR): the references below are for CIFAR and are **not "
            "comparable** with them. They are listed so a `full` run can be checked against them.",
            "",
        ]
    else:
        lines += [
            "The *reference* column of the results table shows the matching number beside ours "
            "(same dataset, split profile and method). Published numbers are top-1 accuracy "
            "with ResNet-32 (shown there as a fraction).",
            "",
        ]
    lines += [f"Seed study numbers, from {SEED_STUDY_SOURCE}:", ""]
    rows = []
    for ref in SEED_STUDY:
        v = ref["value"]
        shown = (
            f"{v[0]:.4f} in one run, {v[1]:.4f} in another" if isinstance(v, tuple) else f"{v:.4f}"
        )
        rows.append([ref["what"], ref["setting"], TABLE_SCORES[ref["metric"]], shown])
    lines += [_md_table(["run", "setting", "metric (test)", "value"], rows), ""]
    lines += [
        "Published top-1 accuracy (%) with ResNet-32, exponential profile, imbalance factor 100:",
        "",
    ]
    rows = [
        [r["what"], f"{r['cifar10']:.1f}", f"{r['cifar100']:.1f}", r["source"]] for r in PUBLISHED
    ]
    lines += [_md_table(["method", "CIFAR-10-LT IF100", "CIFAR-100-LT IF100", "source"], rows)]
    lines += [
        "",
        "Our `balanced_softmax` runs are matched to the logit-adjustment row: the "
        "logit-adjusted loss with τ = 1 is Balanced Softmax. No run here reproduces "
        "MiSLAS.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- markdown


def _md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; '|' inside cells is escaped so device names cannot break it."""

    def cell(v) -> str:
        return (
            ""
            if v is None or (isinstance(v, float) and math.isnan(v))
            else str(v).replace("|", "\\|")
        )

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _score(row: pd.Series, key: str) -> str:
    return fmt_mean_std(row[key], row[f"{key}_std"], int(row[f"{key}_n"]))


def _split_text(row: pd.Series) -> str:
    """'step (k=1, 5000/500)', 'exp100 (exp, IF 100)', 'balanced (none)': the split's name and
    the shape that its index file says it has."""
    prof = row.get("split_profile")
    if not isinstance(prof, str):
        return str(row["split"])
    if prof == "step":
        detail = f"step, k={row['k']}, {row['n_max']}/{row['n_min']}"
    elif prof == "exp":
        detail = f"exp, IF {row['imbalance']:g}"
    else:
        detail = "balanced"
    return f"{row['split']} ({detail})"


def _device(row: pd.Series) -> str:
    d = row.get("device")
    return d if isinstance(d, str) and d else "not recorded"


def _seeds(row: pd.Series) -> int:
    return int(row["n_seeds"])


def runs_markdown(runs: pd.DataFrame) -> str:
    """Where each number comes from: dataset, split and its shape, profile, image counts, seeds
    and the machine that trained the run."""
    rows = [
        [
            f"`{run}`",
            r["dataset"],
            _split_text(r),
            r["profile"],
            f"{r['train_images']} / {r['test_images']}",
            _seeds(r),
            _device(r),
        ]
        for run, r in runs.iterrows()
    ]
    return _md_table(
        ["run", "dataset", "split", "profile", "train / test images", "seeds", "training device"],
        rows,
    )


def _model_text(row: pd.Series) -> str:
    """The model, with the fine-tuning mode for transfer runs ('resnet18, linear')."""
    mode = row.get("mode")
    if row["group"] == "transfer" and isinstance(mode, str):
        return f"{row['model']}, {mode}"
    return str(row["model"])


def results_markdown(runs: pd.DataFrame) -> str:
    """One row per run: its method and every test score as mean ± std over seeds (blank where
    the evaluate stage did not measure it), plus a reference column where one applies."""
    refs = {run: reference_for(r) for run, r in runs.iterrows()}
    show_refs = any(refs.values())
    header = [
        "run",
        "dataset",
        "split",
        "model",
        "loss",
        "sampler",
        "mixup",
        "seeds",
        *TABLE_SCORES.values(),
    ] + (["reference (not ours)"] if show_refs else [])
    rows = []
    for run, r in runs.iterrows():
        row = [
            f"`{run}`",
            r["dataset"],
            r["split"],
            _model_text(r),
            r["loss"],
            r["sampler"],
            r["mixup"],
            _seeds(r),
            *(_score(r, k) for k in TABLE_SCORES),
        ]
        rows.append(row + ([refs[run]] if show_refs else []))
    return _md_table(header, rows)


def _join(values: Iterable) -> str:
    vals = [str(v) for v in dict.fromkeys(values) if isinstance(v, str) and v]
    return ", ".join(vals) if vals else "not recorded"


def _devices(runs: pd.DataFrame) -> str:
    """The distinct training devices, and how many runs did not record one (older files)."""
    known = runs["device"].map(lambda d: d if isinstance(d, str) and d else None)
    text = _join(known)
    missing = int(known.isna().sum())
    if missing and missing < len(runs):
        text += f" (not recorded for {_plural(missing, 'run')})"
    return text


def readme_block(metrics_dir: Path, report: str = "reports/REPORT.md") -> str:
    """A compact results table plus one sentence naming dataset, profile and machine, for the
    README between its report markers: the README then never carries a hand-copied number."""
    runs = load_runs(metrics_dir)
    rows = [
        [
            f"`{run}`",
            r["dataset"],
            r["profile"],
            _seeds(r),
            _score(r, "accuracy"),
            _score(r, "macro_f1"),
            _score(r, "balanced_accuracy"),
        ]
        for run, r in runs.iterrows()
    ]
    sentence = (
        f"Test scores (mean ± std over seeds) written by `dvc repro` from `metrics/`: "
        f"{_join(runs['dataset'])}, {_join(runs['profile'])} profile, training device: "
        f"{_devices(runs)}. "
        f"Figures and every score: [{report}]({report})."
    )
    table = _md_table(
        ["run", "dataset", "profile", "seeds", "accuracy", "macro-F1", "balanced accuracy"], rows
    )
    return f"{sentence}\n\n{table}\n"


MARKERS = ("<!-- report:start -->", "<!-- report:end -->")


def replace_block(text: str, block: str, markers: tuple[str, str] = MARKERS) -> str | None:
    """``text`` with what lies between the two markers replaced by ``block`` (markers kept, the
    rest byte for byte); None when the markers are missing or out of order."""
    start, end = markers
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return None
    return text[: i + len(start)] + "\n" + block.strip("\n") + "\n" + text[j:]


# ----------------------------------------------------------------------------- the report


def _img(path: Path, out_dir: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(out_dir).as_posix()})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _curve_subtitle(row: pd.Series) -> str:
    return f"{row['dataset']}, split {row['split']}, {row['model']}, {_plural(_seeds(row), 'seed')}"


def _step_methods(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs on the step split that per-class F1 and the confusion matrices compare; the
    candidate is left out when it repeats the baseline's method (a duplicate panel)."""
    step = runs[(runs["split"] == STEP_SPLIT) & (runs["group"] == "imbalance")]
    if CANDIDATE in step.index and BASELINE in step.index:
        cand, base = step.loc[CANDIDATE], step.loc[BASELINE]
        if all(cand[k] == base[k] for k in ("model", "loss", "sampler", "mixup")):
            step = step.drop(index=CANDIDATE)
    return step


def _figures(
    runs: pd.DataFrame, metrics_dir: Path, logs_dir: Path, splits: dict[str, dict], out_dir: Path
) -> list[str]:
    """Draw every figure whose inputs exist and return the report's figure sections; a figure
    whose runs are missing is replaced by one line saying what it waits for."""
    figs = out_dir / "figures"
    md: list[str] = []

    imbalance = runs[runs["group"] == "imbalance"]
    md += ["### Summary: macro-F1 of every imbalance run", ""]
    if imbalance.empty:
        md += ["No imbalance runs yet.", ""]
    else:
        p = plot_summary(imbalance, figs / "summary_macro_f1.png")
        md += [_img(p, out_dir, "macro-F1 by run"), ""]

    step = _step_methods(runs)
    per_class = {r: pc for r in step.index if (pc := load_per_class(metrics_dir, r)) is not None}
    md += [f"### Per-class F1 on the `{STEP_SPLIT}` split", ""]
    if BASELINE in per_class and len(per_class) > 1:
        ordered = {
            BASELINE: per_class[BASELINE],
            **{r: v for r, v in per_class.items() if r != BASELINE},
        }
        p = plot_per_class_f1(ordered, figs / f"per_class_f1_{STEP_SPLIT}.png")
        md += [_img(p, out_dir, "per-class F1"), ""]
    else:
        md += [
            f"Needs the baseline `{BASELINE}` and at least one other run on the "
            f"`{STEP_SPLIT}` split; not there yet.",
            "",
        ]

    md += [f"### Confusion matrices on the `{STEP_SPLIT}` split (seed 0)", ""]
    others = step.drop(index=BASELINE, errors="ignore")
    if len(others) > 1:  # the best *report* run; the candidate only when it is the only one
        others = others.drop(index=CANDIDATE, errors="ignore")
    chosen = [(BASELINE, "baseline")] if BASELINE in step.index else []
    if not others.empty:
        best = others["macro_f1"].idxmax()
        chosen.append((best, f"best macro-F1 on {STEP_SPLIT} ({others.loc[best, 'macro_f1']:.3f})"))
    drawn = 0
    for run, why in chosen:
        pc = per_class.get(run)
        counts = load_confusion(metrics_dir, run, pc["class"].tolist() if pc is not None else [])
        if counts is not None:
            p = plot_confusion(counts, run, figs / f"confusion_{run}.png", note=why)
            md += [_img(p, out_dir, f"confusion matrix of {run}"), ""]
            drawn += 1
    if not drawn:
        md += [f"No run on the `{STEP_SPLIT}` split has a confusion matrix yet.", ""]

    md += ["### Architecture: PlainNet20 vs ResNet20", ""]
    arch = {
        r: c for r in ARCH_RUNS if r in runs.index and not (c := load_curves(logs_dir, r)).empty
    }
    if len(arch) == len(ARCH_RUNS):
        ds = _join(runs.loc[list(arch), "dataset"])
        p = plot_architecture(
            arch,
            figs / "architecture.png",
            f"PlainNet20 vs ResNet20 on {ds} (cf. He et al. 2016, Fig. 6)",
        )
        md += [
            "Training error dashed, validation error bold.",
            "",
            _img(p, out_dir, "PlainNet20 vs ResNet20 error curves"),
            "",
        ]
    else:
        md += [
            "The architecture runs (`plainnet20` and `resnet20`, with their logs) are not "
            "there yet, so this figure is skipped.",
            "",
        ]

    md += ["### Transfer learning", ""]
    transfer = runs[runs["group"] == "transfer"]
    if transfer.empty:
        md += [
            "The transfer runs (`transfer_scratch`, `transfer_linear`, `transfer_bn_fc`, "
            "`transfer_full`) are not "
            "there yet: no `metrics/transfer_*.json` was found, so no transfer chart is "
            "drawn.",
            "",
        ]
    else:
        p = plot_transfer(transfer, figs / "transfer.png")
        md += [_img(p, out_dir, "transfer accuracy by mode"), ""]

    md += ["### Class counts of the long-tailed splits", ""]
    lt = {name: ix for name, ix in splits.items() if ix.get("params", {}).get("profile") != "none"}
    if not lt:
        md += ["No long-tailed split index found in `data/splits/`.", ""]
    for name, index in lt.items():
        p = plot_class_counts(index, figs / f"class_counts_{name}.png")
        md += [_img(p, out_dir, f"class counts of {name}"), ""]

    md += [
        "### Learning curves",
        "",
        "Per epoch, from the DVCLive logs: train solid, validation dashed, one colour per seed.",
        "",
    ]
    missing = []
    for run, row in runs.iterrows():
        curves = load_curves(logs_dir, run)
        if curves.empty:
            missing.append(f"`{run}`")
            continue
        p = plot_learning_curves(curves, run, figs / f"curves_{run}.png", _curve_subtitle(row))
        md += [f"#### `{run}`", "", _img(p, out_dir, f"learning curves of {run}"), ""]
    if missing:
        md += [f"No logs under `{logs_dir}/` for: {', '.join(missing)}.", ""]
    return md


def write_report(metrics_dir: Path, logs_dir: Path, splits_dir: Path, out_dir: Path) -> Path:
    """Write ``out_dir/REPORT.md`` and ``out_dir/figures/*.png`` from the pipeline's outputs
    only, and return the REPORT.md path."""
    metrics_dir, logs_dir, out_dir = Path(metrics_dir), Path(logs_dir), Path(out_dir)
    splits = load_splits(splits_dir)
    runs = load_runs(metrics_dir, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = {p for p in runs["profile"] if isinstance(p, str)}
    md = [
        "# Long-tailed CIFAR study: report",
        "",
        "Generated by `dvc repro` (stage `report`, `python -m stages.report`) from `metrics/`, "
        "the DVCLive logs in `logs/` and the split indexes in `data/splits/`. No number in this "
        "file is copied by hand: edit nothing here, rerun `dvc repro`. The only numbers that "
        "are not ours are in the last section, with their sources.",
        "",
        f"Profile: {', '.join(sorted(profiles)) or 'not recorded'}. Datasets: "
        f"{_join(runs['dataset'])}. Training devices: {_devices(runs)}.",
        "",
        "## Runs",
        "",
        runs_markdown(runs),
        "",
        "## Results on the test set",
        "",
        "Mean ± population std (ddof = 0) over seeds, recomputed from each run's per-seed "
        "scores; one seed shows its value alone. Many / medium / few: accuracy over the classes "
        "with many, medium or few training images (blank where the split has no such class). "
        "ECE: expected calibration error, 15 bins. Blank: not measured for that run.",
        "",
        results_markdown(runs),
        "",
        "## Figures",
        "",
        *_figures(runs, metrics_dir, logs_dir, splits, out_dir),
        references_markdown(profiles),
    ]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return path
