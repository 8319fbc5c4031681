"""The report stage's library: what ``dvc plots`` (the per-run charts) cannot show, in REPORT.md:
tables over runs, each second stage beside its first, four cross-run figures, and other work's
numbers (``references.yaml``) apart from ours. Every field comes from what the evaluate stage
recorded in ``metrics/<run>.json``: nothing is inferred from a run's name.
"""

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltcifar import figures
from ltcifar.errors import PipelineError

CANDIDATE = "candidate"
REFERENCES = Path(__file__).with_name("references.yaml")
SCORES = {  # metrics key: column name
    "accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy",
    "many_shot_accuracy": "many", "medium_shot_accuracy": "medium", "few_shot_accuracy": "few",
    "minority_recall": "minority recall", "ece": "ECE",
}  # fmt: skip
SECOND_SCORES = ("macro_f1", "balanced_accuracy", "few_shot_accuracy")
GROUPS = ("imbalance", "balanced", "transfer")
SHAPES = ("step", "exp", "none")
PLAIN_CE = {"loss": "cross_entropy", "sampler": "instance", "mixup": "none", "posthoc": False}
ARCH_MODELS = ("plainnet20", "resnet20")
# What the report reads of a metrics file's ``run`` block, as the evaluate stage writes it.
RECORDED = {
    "dataset", "split", "profile", "model", "loss", "sampler", "mixup", "seeds", "test_images",
    "train_images", "device", "mode", "params", "trainable_params", "posthoc", "group",
    "split_shape", "n_max", "n_min", "k", "imbalance", "second_stage", "first_stage",
}  # fmt: skip


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) as in ``metrics.seed_summary``, so the table is checked."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """'0.7457 ± 0.0123' over seeds, '0.7457' for one, '' where not measured."""
    if math.isnan(mean):
        return ""
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def load_runs(metrics_dir: Path) -> pd.DataFrame:
    """One row per metrics/<run>.json: its ``run`` fields, and <score>, _std, _n over seeds."""
    paths = sorted(Path(metrics_dir).glob("*.json"))
    if not paths:
        raise PipelineError(f"no run metrics in {metrics_dir}/: run `dvc repro` first")
    rows = []
    for path in paths:
        metrics = json.loads(path.read_text())
        if missing := {"run", "per_seed"} - set(metrics) or RECORDED - set(metrics["run"]):
            raise PipelineError(
                f"{path} lacks {', '.join(sorted(missing))}: it was written by an older evaluate "
                "stage; rerun it (`dvc repro`)"
            )
        row = {"run": path.stem, **metrics["run"]}
        for key in SCORES:
            values = [s[key] for s in metrics["per_seed"].values() if key in s]
            row[key], row[f"{key}_std"] = mean_std(values)
            row[f"{key}_n"] = len(values)
        rows.append(row)
    runs = pd.DataFrame(rows).set_index("run", drop=False)

    def order(name: str) -> tuple:
        r = runs.loc[name]  # SHAPES: the seed study's step split first
        group, shape = GROUPS.index(r["group"]), SHAPES.index(r["split_shape"])
        return (name != CANDIDATE, group, shape, r["split"], not matches(r, PLAIN_CE), name)

    return runs.loc[sorted(runs.index, key=order)]


def matches(row: pd.Series, match: dict | list) -> bool:
    """A run measures what a reference measures when every field in ``match`` agrees (a list
    of values accepts any; a list of mappings is a choice of matches)."""
    if isinstance(match, list):
        return any(matches(row, m) for m in match)
    return all(row.get(k) in (v if isinstance(v, list) else [v]) for k, v in match.items())


def load_references(path: Path = REFERENCES) -> dict:
    return yaml.safe_load(Path(path).read_text())


def reference_for(row: pd.Series, refs: dict) -> str:
    """Other work's numbers for the same setting, only beside full-profile first stages (the
    quick profile is another dataset; a second stage is no published recipe)."""
    if row["profile"] != "full" or isinstance(row.get("second_stage"), str):
        return ""
    return "; ".join(
        f"{r['value']:.4f} {SCORES[r['metric']]} ({refs['sources'][r['source']]['short']})"
        for r in refs["references"]
        if "match" in r and matches(row, r["match"])
    )


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table ('|' escaped, so a device name cannot break it)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines)


def section(heading: str, *blocks: str) -> str:
    return "\n\n".join([heading, *blocks]) + "\n"


def score(row: pd.Series, key: str) -> str:
    return fmt_mean_std(row[key], row[f"{key}_std"], row[f"{key}_n"])


def split_text(r: pd.Series) -> str:
    """'step (step, k=1, 5000/500)', 'exp100 (exp, IF 100)', 'balanced (none)'."""
    detail = {
        "step": f"step, k={r['k']}, {r['n_max']}/{r['n_min']}",
        "exp": f"exp, IF {r['imbalance']:g}",
    }.get(r["split_shape"], r["split_shape"])
    return f"{r['split']} ({detail})"


def runs_markdown(runs: pd.DataFrame) -> str:
    """Where each number comes from: dataset, split shape, profile, images, seeds, machine."""
    rows = [
        [f"`{run}`", r["dataset"], split_text(r), r["profile"], r["group"],
         f"{r['train_images']} / {r['test_images']}", r["seeds"], r["device"]]
        for run, r in runs.iterrows()
    ]  # fmt: skip
    header = ["run", "dataset", "split", "profile", "group", "train / test images", "seeds"]
    return section("## Runs", md_table([*header, "training device"], rows))


def results_markdown(runs: pd.DataFrame, refs: dict) -> str:
    """Every run's method and test scores, with other work's number where one applies."""
    found = {run: reference_for(r, refs) for run, r in runs.iterrows()}
    extra = ["reference (not ours)"] if any(found.values()) else []
    rows = [
        [f"`{run}`", r["dataset"], r["split"], r["model"]
         + (f", {r['mode']}" if r["group"] == "transfer" else ""), r["loss"], r["sampler"],
         r["mixup"], r["seeds"], *(score(r, k) for k in SCORES), *([found[run]] if extra else [])]
        for run, r in runs.iterrows()
    ]  # fmt: skip
    header = ["run", "dataset", "split", "model", "loss", "sampler", "mixup", "seeds"]
    return section(
        "## Results on the test set",
        "Mean ± sample std (ddof = 1) over seeds, recomputed from each run's per-seed scores; "
        "one seed shows its value alone. Many / medium / few: accuracy over the classes with "
        "many, medium or few training images (blank where the split has none). ECE: expected "
        "calibration error, 15 bins. Blank: not measured for that run.",
        md_table([*header, *SCORES.values(), *extra], rows),
    )


def second_stage_markdown(runs: pd.DataFrame) -> str:
    """Each second stage beside its first run, on the scores re-balancing is meant to move."""
    parts = ("first", "second", "change")
    header = ["second stage", "method", "first stage", "seeds"]
    header += [f"{SCORES[k]}: {part}" for k in SECOND_SCORES for part in parts]
    rows = []
    for run, r in runs[runs["second_stage"].notna()].iterrows():
        first = runs.loc[r["first_stage"]]
        cells = [f"`{run}`", r["second_stage"], f"`{r['first_stage']}`", r["seeds"]]
        for k in SECOND_SCORES:
            change = "" if math.isnan(r[k] - first[k]) else f"{r[k] - first[k]:+.4f}"
            cells += [score(first, k), score(r, k), change]
        rows.append(cells)
    return section(
        "## Second stage",
        "Each second stage re-balances the classifier of the run it starts from (backbone frozen, "
        "first stage never retrained): cRT, LWS and tau-norm (Kang et al. 2020), MaxNorm with "
        "weight decay (Alshammari et al. 2022). Change: second minus first.",
        md_table(header, rows),
    )


def references_markdown(refs: dict, profiles: set[str]) -> str:
    """Other work's numbers with their sources, and whether they compare with these runs."""
    if others := ", ".join(sorted(profiles - {"full"})):
        note = (
            f"These runs use the {others} profile (not CIFAR): the references below are for "
            "CIFAR and are **not comparable** with them. "
        )
    else:
        note = "The results table's *reference* column shows the matching number beside ours. "
    caveat = (
        "LDAM-DRW's code (kaidic/LDAM-DRW) reports its best epoch on the test set; our runs "
        "keep the last epoch (or the best on validation images), so equal skill scores lower "
        "here, and the full profile trains 50 epochs, not the published 200."
    )
    full = {name: source["full"] for name, source in refs["sources"].items()}
    rows = [
        [r["what"], r["setting"], SCORES[r["metric"]], f"{r['value']:.4f}", full[r["source"]]]
        for r in refs["references"]
    ]
    table = md_table(["what", "setting", "metric (test)", "value", "source"], rows)
    return section("## Reference numbers (not produced by this pipeline)", note + caveat, table)


def load_accuracy_curves(logs_dir: Path, run: str) -> pd.DataFrame:
    """Per-epoch accuracy of every seed (columns seed, part, step, value) from the DVCLive logs."""
    frames = [
        pd.read_csv(tsv, sep="\t").assign(seed=tsv.parents[3].name, part=tsv.parent.name)
        for tsv in sorted(Path(logs_dir, run).glob("seed*/plots/metrics/*/accuracy.tsv"))
    ]
    if not frames:
        return pd.DataFrame(columns=["seed", "part", "step", "value"])
    return pd.concat(frames).rename(columns={"accuracy": "value"})


def figure_sections(runs: pd.DataFrame, logs_dir: Path, splits: dict, out: Path) -> list[str]:
    """The cross-run figures, each where its runs exist, else one line saying what it awaits."""
    md = [section("## Figures", "Per-run charts (confusion matrices, per-class F1, learning "
                  "curves): `dvc plots show`.")]  # fmt: skip

    def add(title: str, fig, name: str, missing: str) -> None:
        if fig is not None:
            figures.save(fig, out / name)
        body = missing if fig is None else f"![{title}](figures/{name})"
        md.append(section(f"### {title}", body))

    imbalance = runs[runs["group"] == "imbalance"]
    summary = figures.draw_summary(imbalance) if len(imbalance) else None
    add("Macro-F1 of every imbalance run", summary, "summary_macro_f1.png", "No runs yet.")
    arch = runs[(runs["group"] == "balanced") & runs["model"].isin(ARCH_MODELS)]
    curves = {r: load_accuracy_curves(logs_dir, r) for r in arch.index}
    curves = {r: c for r, c in curves.items() if len(c)}
    models = {arch.loc[r, "model"] for r in curves}
    fig = figures.draw_architecture(curves) if models == set(ARCH_MODELS) else None
    wait = "Waits for a plainnet20 and a resnet20 run on a balanced split, with their logs."
    add("PlainNet20 vs ResNet20", fig, "architecture.png", wait)
    transfer = runs[runs["group"] == "transfer"]
    fig = figures.draw_transfer(transfer) if len(transfer) else None
    add("Transfer learning", fig, "transfer.png", "Waits for the transfer runs.")
    for name, index in splits.items():
        if index["params"]["shape"] != "none":
            fig = figures.draw_class_counts(index)
            add(f"Class counts of split {name}", fig, f"class_counts_{name}.png", "")
    return md


def load_splits(splits_dir: Path) -> dict[str, dict]:
    """Every split index by name, without its image indices (the largest part, unused here)."""
    indexes = [json.loads(path.read_text()) for path in sorted(Path(splits_dir).glob("*.json"))]
    return {i["split"]: {k: v for k, v in i.items() if not k.endswith("_indices")} for i in indexes}


def write_report(
    metrics_dir: Path, logs_dir: Path, splits_dir: Path, out_dir: Path, refs: Path = REFERENCES
) -> Path:
    """Write ``out_dir/REPORT.md`` and ``out_dir/figures/*.png``; return the REPORT.md path."""
    runs, references = load_runs(metrics_dir), load_references(refs)
    profiles = set(runs["profile"])
    md = [
        section(
            "# Long-tailed CIFAR study: report",
            "Generated by `dvc repro` (stage `report`) from `metrics/`, `logs/` and `data/splits/`"
            ": edit nothing here, rerun `dvc repro`. The only numbers not ours are in the last "
            "section, with their sources.",
            f"Profile: {', '.join(sorted(profiles))}. Datasets: "
            f"{', '.join(runs['dataset'].unique())}. Training devices: "
            f"{', '.join(runs['device'].unique())}.",
        ),
        runs_markdown(runs),
        results_markdown(runs, references),
    ]
    if runs["second_stage"].notna().any():
        md.append(second_stage_markdown(runs))
    md += figure_sections(runs, Path(logs_dir), load_splits(splits_dir), Path(out_dir) / "figures")
    md.append(references_markdown(references, profiles))
    path = Path(out_dir) / "REPORT.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return path
