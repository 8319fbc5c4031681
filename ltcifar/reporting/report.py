"""The report stage's library: what ``dvc plots`` (the per-run charts) cannot show, in REPORT.md:
tables over runs, each second stage beside its first, four cross-run figures, and other work's
numbers (``references.yaml``) apart from ours. Every field comes from what the evaluate stage
recorded in ``metrics/<run>.json``: nothing is inferred from a run's name.
"""

import json
import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltcifar.errors import PipelineError
from ltcifar.reporting import figures

CANDIDATE = "candidate"
SKIPPED = "skipped"  # the placeholders of runs and splits outside the active profile
REFERENCES = Path(__file__).with_name("references.yaml")
SCORES = {  # metrics key: column name
    "accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy",
    "many_shot_accuracy": "many", "medium_shot_accuracy": "medium", "few_shot_accuracy": "few",
    "minority_recall": "minority recall", "ece": "ECE",
}  # fmt: skip
SECOND_SCORES = ("macro_f1", "balanced_accuracy", "few_shot_accuracy")
DRAW_SCORES = ("accuracy", "macro_f1", "balanced_accuracy")
GROUPS = ("imbalance", "balanced", "transfer")
SHAPES = ("step", "exp", "none")
PLAIN_CE = {"loss": "cross_entropy", "sampler": "instance", "mixup": "none", "posthoc": False}
ARCH_MODELS = ("plainnet20", "resnet20")
# How a published number's model was selected (references.yaml's ``selection``): the wording.
SELECTIONS = {
    "last": "last epoch",
    "validation": "selected on validation images",
    "best_on_test": "best epoch on the test set",
    "unknown": "selection not stated",
}
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


def load_runs(metrics_dir: Path, names: Collection[str] | None = None) -> pd.DataFrame:
    """One row per metrics/<run>.json, from its details.json: its ``run`` fields, and <score>,
    _std, _n over seeds. A run outside the active profile (its details say ``skipped``) has no
    row, nor, given ``names`` (the runs params.yaml defines), a file no stage writes any more:
    the metrics of a run since removed from params.yaml stay in the folder until deleted."""
    paths = sorted(Path(metrics_dir).glob("*.json"))
    if names is not None:
        paths = [p for p in paths if p.stem in names]
    rows = []
    for path in paths:
        details_path = path.with_suffix("") / "details.json"
        metrics = json.loads(details_path.read_text()) if details_path.is_file() else {}
        if SKIPPED in metrics:
            continue
        if missing := {"run", "per_seed"} - set(metrics) or RECORDED - set(metrics["run"]):
            raise PipelineError(
                f"{details_path} lacks {', '.join(sorted(missing))}: it was written by an older "
                "evaluate stage; rerun it (`dvc repro`)"
            )
        per_seed = metrics["per_seed"]
        draws = list(metrics["draws"].values()) if "draws" in metrics else [list(per_seed)]
        row = {"run": path.stem, **metrics["run"], "draw_count": len(draws)}
        for key in SCORES:
            by_draw = [[per_seed[m][key] for m in models if key in per_seed[m]] for models in draws]
            row.update(score_spread(key, [v for v in by_draw if v]))
        rows.append(row)
    if not rows:
        raise PipelineError(f"no run metrics in {metrics_dir}/: run `dvc repro` first")
    runs = pd.DataFrame(rows).set_index("run", drop=False)

    def order(name: str) -> tuple:
        r = runs.loc[name]  # SHAPES: the seed study's step split first
        group, shape = GROUPS.index(r["group"]), SHAPES.index(r["split_shape"])
        return (name != CANDIDATE, group, shape, r["split"], not matches(r, PLAIN_CE), name)

    return runs.loc[sorted(runs.index, key=order)]


def score_spread(key: str, by_draw: list[list[float]]) -> dict[str, float]:
    """<key>, _std, _n (seeds) and _draw_std of one score, from its values by draw: one draw's
    mean ± std over seeds; several draws' mean of per-draw means, seed std averaged over draws
    and std over the per-draw means, as ``metrics.draw_summary`` records them."""
    if len(by_draw) <= 1:
        mean, std = mean_std(by_draw[0] if by_draw else [])
        n = len(by_draw[0]) if by_draw else 0
        return {key: mean, f"{key}_std": std, f"{key}_n": n, f"{key}_draw_std": math.nan}
    per_draw = [mean_std(values) for values in by_draw]
    mean, draw_std = mean_std(m for m, _ in per_draw)
    return {
        key: mean,
        f"{key}_std": float(np.mean([s for _, s in per_draw])),
        f"{key}_n": len(by_draw[0]),
        f"{key}_draw_std": draw_std,
    }


def matches(row: pd.Series, match: dict | list) -> bool:
    """A run measures what a reference measures when every field in ``match`` agrees (a list
    of values accepts any; a list of mappings is a choice of matches). A second stage matches
    only a mapping that names it: cRT on cross-entropy is no published cross-entropy number."""
    if isinstance(match, list):
        return any(matches(row, m) for m in match)
    if isinstance(row.get("second_stage"), str) and "second_stage" not in match:
        return False
    return all(row.get(k) in (v if isinstance(v, list) else [v]) for k, v in match.items())


def load_references(path: Path = REFERENCES) -> dict:
    """Other work's numbers, each saying how its model was selected (``SELECTIONS``): a number
    kept at its best test epoch is not comparable with ours, so none may leave it unsaid."""
    refs = yaml.safe_load(Path(path).read_text())
    for i, r in enumerate(refs["references"]):
        if r.get("selection") not in SELECTIONS:
            raise PipelineError(
                f"{path}: references[{i}] ({r.get('what')}) selection = {r.get('selection')!r} "
                f"is not allowed; choose one of: {', '.join(SELECTIONS)}"
            )
    return refs


def reference_for(row: pd.Series, refs: dict) -> str:
    """Other work's numbers for the same setting (``matches``), with how each was selected."""
    return "; ".join(
        f"{r['value']:.4f} {SCORES[r['metric']]} ({refs['sources'][r['source']]['short']}, "
        f"{SELECTIONS[r['selection']]})"
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
        "one seed shows its value alone (a run on several draws: the mean over draws ± the "
        "seed std, its spread over draws in the next section). Many / medium / few: accuracy "
        "over the classes with many, medium or few training images (blank where the split has "
        "none). ECE: expected calibration error, 15 bins. Blank: not measured for that run.",
        md_table([*header, *SCORES.values(), *extra], rows),
    )


def draws_markdown(runs: pd.DataFrame) -> str:
    """The runs trained on several long-tailed draws: the spread over training seeds and over
    draws side by side, since a draw of the subset can move a score more than a seed does."""
    header = ["run", "split", "draws", "seeds per draw"]
    header += [
        f"{SCORES[k]}: {part}" for k in DRAW_SCORES for part in ("mean", "± seeds", "± draws")
    ]
    rows = []
    for run, r in runs[runs["draw_count"] > 1].iterrows():
        cells = [f"`{run}`", r["split"], r["draw_count"], r["seeds"]]
        for k in DRAW_SCORES:
            cells += [f"{r[k]:.4f}", f"{r[f'{k}_std']:.4f}", f"{r[f'{k}_draw_std']:.4f}"]
        rows.append(cells)
    return section(
        "## Variance over long-tailed draws",
        "A split with `draws` trains every run on each draw of its long-tailed subset (LDAM-DRW's "
        "`rand_number`) x each training seed. Mean: over draws of each draw's mean over seeds. "
        "± seeds: sample std over training seeds at each draw, averaged over draws. ± draws: "
        "sample std over draws of the per-draw means.",
        md_table(header, rows),
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


def reference_datasets(refs: dict) -> set[str]:
    """The datasets other work's numbers are for, as the references' matches name them."""
    found = set()
    for r in refs["references"]:
        match = r.get("match") or []
        for m in match if isinstance(match, list) else [match]:
            ds = m.get("dataset", [])
            found |= set(ds if isinstance(ds, list) else [ds])
    return found


def references_markdown(refs: dict, profiles: set[str], datasets: set[str]) -> str:
    """Other work's numbers with their sources, and whether they compare with these runs."""
    if not datasets & reference_datasets(refs):
        note = (
            f"These runs use the {', '.join(sorted(profiles))} profile on "
            f"{', '.join(sorted(datasets))}: the references below are for CIFAR and are **not "
            "comparable** with them. "
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
        [r["what"], r["setting"], SCORES[r["metric"]], f"{r['value']:.4f}",
         SELECTIONS[r["selection"]], full[r["source"]]]
        for r in refs["references"]
    ]  # fmt: skip
    table = md_table(["what", "setting", "metric (test)", "value", "model", "source"], rows)
    return section("## Reference numbers (not produced by this pipeline)", note + caveat, table)


def load_accuracy_curves(logs_dir: Path, run: str) -> pd.DataFrame:
    """Per-epoch accuracy of every model (columns seed, part, step, value: seed names the model,
    ``draw<d>_seed<k>`` on a split with draws) from the DVCLive logs."""
    frames = [
        pd.read_csv(tsv, sep="\t").assign(seed=tsv.parents[3].name, part=tsv.parent.name)
        for tsv in sorted(Path(logs_dir, run).glob("*seed*/plots/metrics/*/accuracy.tsv"))
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
    """Every split index by name, without its image indices (the largest part, unused here);
    lt_index's placeholders of splits outside the active profile left out. A split with draws
    is its first draw's index: the draws share their per-class counts."""
    files = [json.loads(path.read_text()) for path in sorted(Path(splits_dir).glob("*.json"))]
    indexes = [next(iter(i["draws"].values())) if "draws" in i else i for i in files]
    return {
        i["split"]: {k: v for k, v in i.items() if not k.endswith("_indices")}
        for i in indexes
        if SKIPPED not in i
    }


def headline(metrics_dir: Path, runs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Each reported run's macro-F1 as its evaluate stage recorded it, in the report's order.
    This is the one metrics file DVC tracks: `dvc metrics diff` then shows every run's headline
    change and plain `dvc exp show` one column per run, where tracking every score of every
    run's own file gave it 260."""
    return {
        name: {"macro_f1": json.loads((Path(metrics_dir) / f"{name}.json").read_text())["macro_f1"]}
        for name in runs.index
    }


def write_report(
    metrics_dir: Path,
    logs_dir: Path,
    splits_dir: Path,
    out_dir: Path,
    refs: Path = REFERENCES,
    names: Collection[str] | None = None,
) -> Path:
    """Write ``out_dir/REPORT.md``, ``out_dir/figures/*.png`` and ``out_dir/headline.json``;
    return the REPORT.md path. ``names``: the runs to report (``load_runs``)."""
    runs, references = load_runs(metrics_dir, names), load_references(refs)
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
    if (runs["draw_count"] > 1).any():
        md.append(draws_markdown(runs))
    if runs["second_stage"].notna().any():
        md.append(second_stage_markdown(runs))
    md += figure_sections(runs, Path(logs_dir), load_splits(splits_dir), Path(out_dir) / "figures")
    md.append(references_markdown(references, profiles, set(runs["dataset"])))
    scores = json.dumps(headline(Path(metrics_dir), runs), indent=2)
    (Path(out_dir) / "headline.json").write_text(scores + "\n")
    path = Path(out_dir) / "REPORT.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return path
