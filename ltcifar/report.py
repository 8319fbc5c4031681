"""The report stage's library: REPORT.md and the README's results block.

It exists to turn what ``report_data`` loaded into prose and markdown tables, to decide which
figures (drawn by ``figures``) the report shows and to say in text what a missing figure waits
for. Every number in the report comes from a file that ``dvc repro`` produced; nothing is copied
by hand, except the reference numbers of other work, which ``report_data`` keeps with their
sources and which are always printed apart from ours.
"""

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ltcifar.figures import (
    draw_architecture,
    draw_class_counts,
    draw_confusion,
    draw_learning_curves,
    draw_per_class_f1,
    draw_summary,
    draw_transfer,
    save,
)
from ltcifar.report_data import (
    ARCH_RUNS,
    BASELINE,
    CANDIDATE,
    PUBLISHED,
    SEED_STUDY,
    SEED_STUDY_SOURCE,
    STEP_SPLIT,
    TABLE_SCORES,
    fmt_mean_std,
    load_confusion,
    load_curves,
    load_per_class,
    load_runs,
    load_splits,
    reference_for,
)

MARKERS = ("<!-- report:start -->", "<!-- report:end -->")


# ----------------------------------------------------------------------------- text helpers


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _recorded(v) -> str | None:
    """A run field that older metrics files may lack: the text, or None when not recorded."""
    return v if isinstance(v, str) and v else None


def _join(values: Iterable) -> str:
    vals = [v for v in dict.fromkeys(values) if _recorded(v)]
    return ", ".join(vals) if vals else "not recorded"


def _devices(runs: pd.DataFrame) -> str:
    """The distinct training devices, and how many runs did not record one (older files)."""
    text = _join(runs["device"])
    missing = sum(_recorded(d) is None for d in runs["device"])
    if missing and missing < len(runs):
        text += f" (not recorded for {_plural(missing, 'run')})"
    return text


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


def _model_text(row: pd.Series) -> str:
    """The model, with the fine-tuning mode for transfer runs ('resnet18, linear')."""
    mode = row.get("mode")
    if row["group"] == "transfer" and isinstance(mode, str):
        return f"{row['model']}, {mode}"
    return str(row["model"])


# ----------------------------------------------------------------------------- tables


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
            int(r["n_seeds"]),
            _recorded(r.get("device")) or "not recorded",
        ]
        for run, r in runs.iterrows()
    ]
    return _md_table(
        ["run", "dataset", "split", "profile", "train / test images", "seeds", "training device"],
        rows,
    )


def results_markdown(runs: pd.DataFrame) -> str:
    """One row per run: its method and every test score as mean ± std over seeds (blank where
    the evaluate stage did not measure it), plus a reference column where one applies."""
    refs = {run: reference_for(r) for run, r in runs.iterrows()}
    show_refs = any(refs.values())
    header = ["run", "dataset", "split", "model", "loss", "sampler", "mixup", "seeds"]
    header += [*TABLE_SCORES.values(), *(["reference (not ours)"] if show_refs else [])]
    rows = [
        [
            f"`{run}`",
            r["dataset"],
            r["split"],
            _model_text(r),
            r["loss"],
            r["sampler"],
            r["mixup"],
            int(r["n_seeds"]),
            *(_score(r, k) for k in TABLE_SCORES),
            *([refs[run]] if show_refs else []),
        ]
        for run, r in runs.iterrows()
    ]
    return _md_table(header, rows)


SECOND_SCORES = ("macro_f1", "balanced_accuracy", "few_shot_accuracy")


def second_stage_markdown(runs: pd.DataFrame) -> str:
    """Each second stage beside the run it started from: the first stage's score, the second's,
    and the change, for the scores a re-balanced classifier is meant to move."""
    rows = []
    for run, r in runs[runs["second_stage"].notna()].iterrows():
        first = runs.loc[r["first_stage"]] if r["first_stage"] in runs.index else None
        cells = [f"`{run}`", r["second_stage"], f"`{r['first_stage']}`", int(r["n_seeds"])]
        for key in SECOND_SCORES:
            before = _score(first, key) if first is not None else "not evaluated"
            delta = r[key] - first[key] if first is not None else float("nan")
            cells += [before, _score(r, key), f"{delta:+.4f}" if delta == delta else ""]
        rows.append(cells)
    header = ["second stage", "method", "first stage", "seeds"]
    for key in SECOND_SCORES:
        name = TABLE_SCORES[key]
        header += [f"{name}: first", f"{name}: second", f"{name}: change"]
    return _md_table(header, rows)


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
    seed_rows = []
    for ref in SEED_STUDY:
        v = ref["value"]
        shown = (
            f"{v[0]:.4f} in one run, {v[1]:.4f} in another" if isinstance(v, tuple) else f"{v:.4f}"
        )
        seed_rows.append([ref["what"], ref["setting"], TABLE_SCORES[ref["metric"]], shown])
    published_rows = [
        [r["what"], f"{r['cifar10']:.1f}", f"{r['cifar100']:.1f}", r["source"]] for r in PUBLISHED
    ]
    lines += [
        f"Seed study numbers, from {SEED_STUDY_SOURCE}:",
        "",
        _md_table(["run", "setting", "metric (test)", "value"], seed_rows),
        "",
        "Published top-1 accuracy (%) with ResNet-32, exponential profile, imbalance factor 100:",
        "",
        _md_table(["method", "CIFAR-10-LT IF100", "CIFAR-100-LT IF100", "source"], published_rows),
        "",
        "Our `balanced_softmax` runs and cross-entropy runs adjusted post hoc are matched to "
        "the logit-adjustment row: the logit-adjusted loss with τ = 1 is Balanced Softmax, and "
        "post-hoc adjustment is Menon et al.'s other half. No run here reproduces MiSLAS. "
        "LDAM-DRW's code (kaidic/LDAM-DRW) reports its best epoch on the test set; ours keep "
        "the last epoch (or the best on validation images) and never read the test set before "
        "the evaluate stage, so equal skill scores lower here. The full profile trains 50 "
        "epochs, not the published 200 (README, Speed): its numbers sit below these.",
        "",
    ]
    return "\n".join(lines)


def readme_block(metrics_dir: Path, report: str = "reports/REPORT.md") -> str:
    """A compact results table plus one sentence naming dataset, profile and machine, for the
    README between its report markers: the README then never carries a hand-copied number."""
    runs = load_runs(metrics_dir)
    rows = [
        [
            f"`{run}`",
            r["dataset"],
            r["profile"],
            int(r["n_seeds"]),
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


def replace_block(text: str, block: str, markers: tuple[str, str] = MARKERS) -> str | None:
    """``text`` with what lies between the two markers replaced by ``block`` (markers kept, the
    rest byte for byte); None when the markers are missing or out of order."""
    start, end = markers
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return None
    return text[: i + len(start)] + "\n" + block.strip("\n") + "\n" + text[j:]


# ----------------------------------------------------------------------------- figure sections
# Each section draws its figure when the inputs exist and returns its markdown lines; when they
# do not, one line says what the figure waits for.


def _img(path: Path, alt: str) -> list[str]:
    """The markdown image of a saved figure (REPORT.md sits beside the figures folder)."""
    return [f"![{alt}]({path.parent.name}/{path.name})", ""]


def _summary_section(runs: pd.DataFrame, figs: Path) -> list[str]:
    md = ["### Summary: macro-F1 of every imbalance run", ""]
    imbalance = runs[runs["group"] == "imbalance"]
    if imbalance.empty:
        return md + ["No imbalance runs yet.", ""]
    path = save(draw_summary(imbalance), figs / "summary_macro_f1.png")
    return md + _img(path, "macro-F1 by run")


def _step_methods(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs on the step split that per-class F1 and the confusion matrices compare; the
    candidate is left out when it repeats the baseline's method (a duplicate panel)."""
    step = runs[(runs["split"] == STEP_SPLIT) & (runs["group"] == "imbalance")]
    if CANDIDATE in step.index and BASELINE in step.index:
        cand, base = step.loc[CANDIDATE], step.loc[BASELINE]
        if all(cand[k] == base[k] for k in ("model", "loss", "sampler", "mixup")):
            step = step.drop(index=CANDIDATE)
    return step


def _per_class_section(per_class: dict[str, pd.DataFrame], figs: Path) -> list[str]:
    md = [f"### Per-class F1 on the `{STEP_SPLIT}` split", ""]
    if BASELINE not in per_class or len(per_class) < 2:
        return md + [
            f"Needs the baseline `{BASELINE}` and at least one other run on the "
            f"`{STEP_SPLIT}` split; not there yet.",
            "",
        ]
    path = save(draw_per_class_f1(per_class), figs / f"per_class_f1_{STEP_SPLIT}.png")
    return md + _img(path, "per-class F1")


def _confusion_section(
    step: pd.DataFrame, per_class: dict[str, pd.DataFrame], metrics_dir: Path, figs: Path
) -> list[str]:
    """The baseline's confusion matrix and that of the best other run by macro-F1 (the candidate
    only when it is the only other run)."""
    others = step.drop(index=BASELINE, errors="ignore")
    if len(others) > 1:
        others = others.drop(index=CANDIDATE, errors="ignore")
    chosen = [(BASELINE, "baseline")] if BASELINE in step.index else []
    if not others.empty:
        best = others["macro_f1"].idxmax()
        chosen.append((best, f"best macro-F1 on {STEP_SPLIT} ({others.loc[best, 'macro_f1']:.3f})"))
    images = []
    for run, why in chosen:
        pc = per_class.get(run)
        counts = load_confusion(metrics_dir, run, pc["class"].tolist() if pc is not None else [])
        if counts is not None:
            path = save(draw_confusion(counts, run, note=why), figs / f"confusion_{run}.png")
            images += _img(path, f"confusion matrix of {run}")
    md = [f"### Confusion matrices on the `{STEP_SPLIT}` split (seed 0)", ""]
    return md + (images or [f"No run on the `{STEP_SPLIT}` split has a confusion matrix yet.", ""])


def _architecture_section(runs: pd.DataFrame, logs_dir: Path, figs: Path) -> list[str]:
    md = ["### Architecture: PlainNet20 vs ResNet20", ""]
    arch = {
        r: c for r in ARCH_RUNS if r in runs.index and not (c := load_curves(logs_dir, r)).empty
    }
    if len(arch) < len(ARCH_RUNS):
        return md + [
            "The architecture runs (`plainnet20` and `resnet20`, with their logs) are not "
            "there yet, so this figure is skipped.",
            "",
        ]
    datasets = _join(runs.loc[list(arch), "dataset"])
    title = f"PlainNet20 vs ResNet20 on {datasets} (cf. He et al. 2016, Fig. 6)"
    path = save(draw_architecture(arch, title), figs / "architecture.png")
    md += ["Training error dashed, validation error bold.", ""]
    return md + _img(path, "PlainNet20 vs ResNet20 error curves")


def _transfer_section(runs: pd.DataFrame, figs: Path) -> list[str]:
    md = ["### Transfer learning", ""]
    transfer = runs[runs["group"] == "transfer"]
    if transfer.empty:
        return md + [
            "The transfer runs (`transfer_scratch`, `transfer_linear`, `transfer_bn_fc`, "
            "`transfer_full`) are not there yet: no `metrics/transfer_*.json` was found, so no "
            "transfer chart is drawn.",
            "",
        ]
    path = save(draw_transfer(transfer), figs / "transfer.png")
    return md + _img(path, "transfer accuracy by mode")


def _class_counts_section(splits: dict[str, dict], figs: Path) -> list[str]:
    md = ["### Class counts of the long-tailed splits", ""]
    lt = {name: ix for name, ix in splits.items() if ix.get("params", {}).get("shape") != "none"}
    if not lt:
        return md + ["No long-tailed split index found in `data/splits/`.", ""]
    for name, index in lt.items():
        path = save(draw_class_counts(index), figs / f"class_counts_{name}.png")
        md += _img(path, f"class counts of {name}")
    return md


def _curves_section(runs: pd.DataFrame, logs_dir: Path, figs: Path) -> list[str]:
    md = [
        "### Learning curves",
        "",
        "Per epoch, from the DVCLive logs: train solid, validation dashed, one colour per seed.",
        "",
    ]
    missing = []
    for run, r in runs.iterrows():
        curves = load_curves(logs_dir, run)
        if curves.empty:
            missing.append(f"`{run}`")
            continue
        seeds = _plural(int(r["n_seeds"]), "seed")
        subtitle = f"{r['dataset']}, split {r['split']}, {r['model']}, {seeds}"
        path = save(draw_learning_curves(curves, run, subtitle), figs / f"curves_{run}.png")
        md += [f"#### `{run}`", "", *_img(path, f"learning curves of {run}")]
    if missing:
        md += [f"No logs under `{logs_dir}/` for: {', '.join(missing)}.", ""]
    return md


def _figures(
    runs: pd.DataFrame, metrics_dir: Path, logs_dir: Path, splits: dict[str, dict], figs: Path
) -> list[str]:
    """Every figure section of the report, in order."""
    step = _step_methods(runs)
    per_class = {r: pc for r in step.index if (pc := load_per_class(metrics_dir, r)) is not None}
    return [
        *_summary_section(runs, figs),
        *_per_class_section(per_class, figs),
        *_confusion_section(step, per_class, metrics_dir, figs),
        *_architecture_section(runs, logs_dir, figs),
        *_transfer_section(runs, figs),
        *_class_counts_section(splits, figs),
        *_curves_section(runs, logs_dir, figs),
    ]


# ----------------------------------------------------------------------------- the report


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
        "Mean ± sample std (ddof = 1) over seeds, recomputed from each run's per-seed "
        "scores; one seed shows its value alone. Many / medium / few: accuracy over the classes "
        "with many, medium or few training images (blank where the split has no such class). "
        "ECE: expected calibration error, 15 bins. Blank: not measured for that run.",
        "",
        results_markdown(runs),
        "",
        *(
            [
                "## Second stage",
                "",
                "Each second stage re-balances the classifier of the run it starts from (its "
                "backbone frozen, the first stage never retrained): cRT, LWS and tau-norm (Kang "
                "et al. 2020), MaxNorm with weight decay (Alshammari et al. 2022). Scores on the "
                "test set, mean ± std over the same seeds; change: second minus first (means).",
                "",
                second_stage_markdown(runs),
                "",
            ]
            if runs["second_stage"].notna().any()
            else []
        ),
        "## Figures",
        "",
        *_figures(runs, metrics_dir, logs_dir, splits, out_dir / "figures"),
        references_markdown(profiles),
    ]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return path
