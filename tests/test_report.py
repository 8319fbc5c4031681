"""The report stage on synthetic but well-formed pipeline outputs: tables hold the right numbers
(mean ± sample std recomputed by hand from per-seed values), every cross-run figure is drawn
and readable, missing runs are said in text rather than drawn empty, the reference numbers come
from references.yaml, and groups come from what the evaluate stage recorded, not from names."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.image import imread

from ltcifar.errors import PipelineError
from ltcifar.evaluation.metrics import seed_summary
from ltcifar.reporting import figures, report

ROOT = Path(__file__).resolve().parents[1]
# The fixture's runs on long-tailed splits (the architecture pair is on the balanced split).
IMBALANCE_RUNS = {
    "candidate",
    "step_ce",
    "step_balanced_softmax",
    "step_sampler_mixup",
    "exp_ce",
    "c100_ce",
}
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
H100 = "cuda: NVIDIA H100 80GB HBM3"
BEST = "best epoch on the test set"  # how LDAM-DRW's and the seed study's numbers were kept
LA = "google-research logit_adjustment, last epoch"

# Per-seed scores of the fixture runs: the expected table cells are computed from these by hand.
STEP_CE = {
    "accuracy": [0.78, 0.80, 0.82],
    "macro_f1": [0.74, 0.75, 0.77],
    "balanced_accuracy": [0.70, 0.71, 0.72],
    "many_shot_accuracy": [0.94, 0.93, 0.92],
    "medium_shot_accuracy": [0.68, 0.70, 0.72],
    "ece": [0.10, 0.12, 0.08],
}


def split_index(name: str, dataset: str, classes: list[str], counts: list[int], **params) -> dict:
    val = [params.get("val_per_class", 0)] * len(classes)
    return {
        "split": name,
        "dataset": dataset,
        "params": {
            "dataset": dataset,
            "n_max": max(counts),
            "imbalance": 100.0,
            "n_min": 0,
            "k": 1,
            "val_per_class": 0,
            "val_policy": "exact",
            "sampling": "ldam",
            "seed": 0,
            **params,
        },
        "classes": classes,
        "counts": counts,
        "val_counts": val,
        "total_train": sum(counts),
        "total_val": sum(val),
        "train_indices": [list(range(c)) for c in counts],
        "val_indices": [list(range(v)) for v in val],
    }


SPLIT_FIELDS = {
    "step": {"split_shape": "step", "n_max": 5000, "n_min": 500, "k": 1, "imbalance": 100.0},
    "exp100": {"split_shape": "exp", "n_max": 5000, "n_min": 0, "k": 1, "imbalance": 100.0},
    "c100_exp100": {"split_shape": "exp", "n_max": 500, "n_min": 0, "k": 1, "imbalance": 100.0},
    "balanced": {"split_shape": "none", "n_max": 450, "n_min": 0, "k": 1, "imbalance": 100.0},
}


def write_run(root: Path, name: str, run: dict, per_seed: dict[str, list[float]]) -> None:
    """metrics/<name>.json and metrics/<name>/details.json as the evaluate stage writes them
    (means; sample std, per seed, and the run's recorded fields: group and split shape included)."""
    n = len(next(iter(per_seed.values())))
    seeds = {f"seed{s}": {k: v[s] for k, v in per_seed.items()} for s in range(n)}
    table = pd.DataFrame(seeds).T
    mean, std = seed_summary(table)
    details = {
        "std": std,
        "per_seed": seeds,
        "run": {
            "profile": "full",
            "model": "resnet32",
            "loss": "cross_entropy",
            "sampler": "instance",
            "mixup": "none",
            "seeds": n,
            "test_images": 200,
            "train_images": 9450,
            "device": H100,
            "mode": "scratch",  # what the evaluate stage writes for runs trained from scratch
            "params": 272_474,
            "trainable_params": 272_474,
            "posthoc": False,
            "group": "balanced" if run["split"] == "balanced" else "imbalance",
            "second_stage": None,
            "first_stage": None,
            **SPLIT_FIELDS[run["split"]],
            **run,
        },
    }
    (root / "metrics" / name).mkdir(parents=True, exist_ok=True)
    (root / "metrics" / f"{name}.json").write_text(json.dumps(mean, indent=2))
    (root / "metrics" / name / "details.json").write_text(json.dumps(details, indent=2))


def write_logs(root: Path, name: str, seeds: int, epochs: int, val: bool, plain: bool = False):
    """DVCLive TSVs for every seed: train (and val) loss/accuracy/macro_f1/balanced_accuracy."""
    for s in range(seeds):
        base = root / "logs" / name / f"seed{s}" / "plots" / "metrics"
        t = np.arange(epochs)
        ceiling = 0.6 if plain else 0.8
        curves = {
            "train": ceiling * (1 - np.exp(-(t + 1) / 4)) + 0.01 * s,
            "val": ceiling * 0.85 * (1 - np.exp(-(t + 1) / 4)) + 0.01 * s,
        }
        for part, acc in curves.items():
            if part == "val" and not val:
                continue
            (base / part).mkdir(parents=True, exist_ok=True)
            for metric, v in (
                ("loss", 2.3 * (1 - acc)),
                ("accuracy", acc),
                ("macro_f1", acc - 0.05),
                ("balanced_accuracy", acc - 0.02),
            ):
                pd.DataFrame({"step": t, metric: v}).to_csv(
                    base / part / f"{metric}.tsv", sep="\t", index=False
                )
        pd.DataFrame({"step": t, "lr": 0.1 * np.cos(t / epochs)}).to_csv(
            base / "lr.tsv", sep="\t", index=False
        )


def make_outputs(root: Path, transfer: bool = False, profile: str = "full") -> Path:
    """A pipeline's outputs: step runs (3 seeds), exp runs on CIFAR-10-LT and CIFAR-100-LT,
    PlainNet20/ResNet20 on balanced CIFAR-100, a one-seed candidate, optional transfer."""
    splits = root / "data" / "splits"
    splits.mkdir(parents=True)
    step_counts = [4950] + [500] * 9
    c100_counts = [int(500 * 100 ** (-i / 99)) for i in range(100)]
    c10_counts = [int(5000 * 100 ** (-i / 9)) for i in range(10)]
    for index in (
        split_index(
            "step",
            "cifar10",
            CIFAR10,
            step_counts,
            shape="step",
            n_max=5000,
            n_min=500,
            val_per_class=50,
            val_policy="reserve",
            sampling="seeded",
        ),
        split_index("exp100", "cifar10", CIFAR10, c10_counts, shape="exp"),
        split_index("c100_exp100", "cifar100", CIFAR100, c100_counts, shape="exp"),
        split_index("balanced", "cifar100", CIFAR100, [450] * 100, shape="none", val_per_class=50),
    ):
        (splits / f"{index['split']}.json").write_text(json.dumps(index))

    def shift(d: dict, by: float) -> dict:
        return {k: [round(x + by, 6) for x in v] for k, v in d.items()}

    step = {"split": "step", "dataset": "cifar10", "profile": profile}
    write_run(root, "step_ce", step, STEP_CE)
    write_run(
        root, "step_balanced_softmax", {**step, "loss": "balanced_softmax"}, shift(STEP_CE, 0.05)
    )
    sampler_mixup = {**step, "sampler": "class_balanced", "mixup": "mixup"}
    write_run(root, "step_sampler_mixup", sampler_mixup, shift(STEP_CE, 0.03))
    write_logs(root, "step_ce", 3, 12, val=True)
    # The candidate: one seed, and no ece measured.
    write_run(
        root,
        "candidate",
        step,
        {
            "accuracy": [0.81],
            "macro_f1": [0.76],
            "balanced_accuracy": [0.7],
            "many_shot_accuracy": [0.9],
            "medium_shot_accuracy": [0.7],
        },
    )
    write_logs(root, "candidate", 1, 6, val=True)
    exp = {"split": "exp100", "dataset": "cifar10", "profile": profile}
    write_run(
        root,
        "exp_ce",
        exp,
        {"accuracy": [0.70, 0.72], "macro_f1": [0.68, 0.70], "few_shot_accuracy": [0.3, 0.4]},
    )
    write_logs(root, "exp_ce", 2, 8, val=False)
    write_run(
        root,
        "c100_ce",
        {"split": "c100_exp100", "dataset": "cifar100", "profile": profile},
        {"accuracy": [0.38, 0.39], "macro_f1": [0.33, 0.35], "top5_accuracy": [0.6, 0.61]},
    )
    arch = {"split": "balanced", "dataset": "cifar100", "profile": profile}
    write_run(
        root,
        "resnet20",
        {**arch, "model": "resnet20"},
        {"accuracy": [0.66, 0.68], "macro_f1": [0.65, 0.67]},
    )
    write_run(
        root,
        "plainnet20",
        {**arch, "model": "plainnet20"},
        {"accuracy": [0.60, 0.62], "macro_f1": [0.59, 0.61]},
    )
    write_logs(root, "resnet20", 2, 15, val=True)
    write_logs(root, "plainnet20", 2, 15, val=True, plain=True)
    if transfer:
        for mode, params, acc in (
            ("scratch", 11_227_812, 0.5),
            ("full", 11_227_812, 0.78),
            ("linear", 51_300, 0.55),
            ("bn_fc", 60_000, 0.62),
        ):
            write_run(
                root,
                f"transfer_{mode}",
                {
                    **arch,
                    "group": "transfer",
                    "model": "resnet18",
                    "mode": mode,
                    "params": 11_227_812,
                    "trainable_params": params,
                },
                {"accuracy": [acc, acc + 0.01], "macro_f1": [acc - 0.01, acc]},
            )
    return root


def build(root: Path) -> Path:
    return report.write_report(
        root / "metrics", root / "logs", root / "data" / "splits", root / "reports"
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = make_outputs(tmp_path_factory.mktemp("outputs"))
    build(root)
    return root


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """`python -m stages.report` run in a repo with transfer runs, a README and a stale figure
    from an earlier report."""
    from stages import report as stage

    root = make_outputs(tmp_path_factory.mktemp("staged"), transfer=True)
    (root / "README.md").write_text("# Study\n")
    (root / "reports" / "figures").mkdir(parents=True)
    (root / "reports" / "figures" / "stale.png").write_bytes(b"old")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        stage.main()
    finally:
        os.chdir(cwd)
    return root


def results_table(text: str, title: str = "Results on the test set") -> dict[str, dict[str, str]]:
    """A table section of REPORT.md as {first cell: {column: cell}}."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln[1:-1].split(" | ")]
        rows[cells[0].strip("`")] = dict(zip(header, cells, strict=True))
    return rows


def by_hand(values: list[float]) -> str:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.4f} ± {s:.4f}"


def test_mean_std_is_sample_std():
    m, s = report.mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5) and s == pytest.approx(math.sqrt(5 / 3))
    assert report.mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(x) for x in report.mean_std([]))
    assert report.fmt_mean_std(0.74567, 0.01234, 3) == "0.7457 ± 0.0123"
    assert report.fmt_mean_std(0.74567, 0.0, 1) == "0.7457"
    assert report.fmt_mean_std(float("nan"), float("nan"), 0) == ""


def test_headline_is_each_reported_runs_macro_f1_in_the_reports_order(built):
    """reports/headline.json, DVC's one metrics file: every run with scores, none other, its
    macro-F1 as its metrics file holds it, in the order of the report's tables."""
    headline = json.loads((built / "reports" / "headline.json").read_text())
    runs = report.load_runs(built / "metrics")
    assert list(headline) == list(runs.index)
    for run, scores in headline.items():
        recorded = json.loads((built / "metrics" / f"{run}.json").read_text())["macro_f1"]
        assert scores == {"macro_f1": recorded}, run


def test_table_holds_mean_and_std_over_seeds(built):
    text = (built / "reports" / "REPORT.md").read_text()
    rows = results_table(text)
    assert set(rows) == IMBALANCE_RUNS | {"resnet20", "plainnet20"}
    ce = rows["step_ce"]
    assert ce["seeds"] == "3"
    assert ce["accuracy"] == by_hand(STEP_CE["accuracy"]) == "0.8000 ± 0.0200"
    assert ce["macro-F1"] == by_hand(STEP_CE["macro_f1"])
    assert ce["balanced accuracy"] == by_hand(STEP_CE["balanced_accuracy"])
    assert ce["many"] == by_hand(STEP_CE["many_shot_accuracy"])
    assert ce["medium"] == by_hand(STEP_CE["medium_shot_accuracy"])
    assert ce["ECE"] == by_hand(STEP_CE["ece"])
    assert ce["few"] == ""  # the step split has no few-shot class
    assert (ce["loss"], ce["sampler"], ce["mixup"], ce["model"]) == (
        "cross_entropy",
        "instance",
        "none",
        "resnet32",
    )
    assert rows["exp_ce"]["few"] == by_hand([0.3, 0.4])
    # One seed shows its value alone; a score not measured stays blank.
    cand = rows["candidate"]
    assert cand["accuracy"] == "0.8100" and cand["ECE"] == "" and cand["seeds"] == "1"
    # The baseline comes first among the step runs; the candidate leads the table.
    assert list(rows)[:2] == ["candidate", "step_ce"]


def test_post_hoc_adjustment_is_matched_to_logit_adjustment_and_second_stages_to_nothing(
    tmp_path,
):
    root = make_outputs(tmp_path)
    c100 = {"split": "c100_exp100", "dataset": "cifar100", "profile": "full"}
    write_run(root, "c100_posthoc_la", {**c100, "posthoc": True}, STEP_CE)
    write_run(
        root, "c100_ce_crt", {**c100, "second_stage": "crt", "first_stage": "c100_ce"}, STEP_CE
    )
    rows = results_table(build(root).read_text())
    ref = "reference (not ours)"
    assert rows["c100_posthoc_la"][ref] == f"0.4410 accuracy ({LA})"
    assert rows["c100_ce"][ref] == f"0.3830 accuracy (Cao et al. 2019, {BEST})"
    assert rows["c100_ce_crt"][ref] == ""


def test_second_stage_table_sets_each_beside_its_first_stage(tmp_path):
    root = make_outputs(tmp_path)
    crt = {"split": "step", "dataset": "cifar10", "second_stage": "crt", "first_stage": "step_ce"}
    write_run(root, "step_ce_crt", crt, {k: [x + 0.04 for x in v] for k, v in STEP_CE.items()})
    text = build(root).read_text()
    row = results_table(text, "Second stage")["step_ce_crt"]
    assert (row["method"], row["first stage"]) == ("crt", "`step_ce`")
    assert row["macro-F1: first"] == by_hand(STEP_CE["macro_f1"])
    assert row["macro-F1: second"] == by_hand([x + 0.04 for x in STEP_CE["macro_f1"]])
    assert row["macro-F1: change"] == "+0.0400"
    assert "step_ce_crt" in results_table(text)  # and a row of the results table


def test_runs_table_names_dataset_split_seeds_and_device(built):
    text = (built / "reports" / "REPORT.md").read_text()
    assert "generated by `dvc repro`" in text.lower()
    runs = text.split("## Runs", 1)[1].split("## Results", 1)[0]
    line = next(ln for ln in runs.splitlines() if ln.startswith("| `step_ce`"))
    assert "cifar10" in line and "step (step, k=1, 5000/500)" in line and H100 in line
    assert "| 3 |" in line and "| imbalance |" in line
    c100 = next(ln for ln in runs.splitlines() if ln.startswith("| `c100_ce`"))
    assert "c100_exp100 (exp, IF 100)" in c100


def test_references_sit_beside_matching_full_runs(built):
    text = (built / "reports" / "REPORT.md").read_text()
    rows = results_table(text)
    ref = "reference (not ours)"
    assert rows["step_ce"][ref] == f"0.7457 macro-F1 (seed study, {BEST})"
    assert rows["step_sampler_mixup"][ref] == f"0.7971 macro-F1 (seed study, {BEST})"
    assert rows["step_balanced_softmax"][ref] == f"0.7991 macro-F1 (seed study, {BEST})"
    assert rows["exp_ce"][ref] == f"0.7040 accuracy (Cao et al. 2019, {BEST})"
    assert rows["c100_ce"][ref] == f"0.3830 accuracy (Cao et al. 2019, {BEST})"
    assert rows["resnet20"][ref] == f"0.6498 accuracy (seed study, {BEST})"
    both = f"0.4300 accuracy (seed study, {BEST}); 0.6142 accuracy (seed study, {BEST})"
    assert rows["plainnet20"][ref] == both
    refs = text.split("## Reference numbers (not produced by this pipeline)", 1)[1]
    for number in (
        "0.7457",
        "0.7971",
        "0.7991",
        "0.6498",
        "0.7040",
        "0.3830",
        "0.7700",
        "0.4200",
        "0.7790",
        "0.4410",
        "0.8250",
        "0.4700",
        "Cao et al., NeurIPS 2019, Table 2",
    ):
        assert number in refs
    assert "not comparable" not in text
    assert "reports its best epoch on the test set" in refs  # under every profile


FIGURES = [
    "summary_macro_f1.png",
    "architecture.png",
    "class_counts_step.png",
    "class_counts_exp100.png",
    "class_counts_c100_exp100.png",
]


def test_every_figure_is_drawn_and_linked(built):
    figs = built / "reports" / "figures"
    text = (built / "reports" / "REPORT.md").read_text()
    for name in FIGURES:
        path = figs / name
        assert path.exists(), name
        img = imread(path)
        assert path.stat().st_size > 10_000 and min(img.shape[:2]) > 250, name
        assert img[..., :3].std() > 0.05, f"{name} is blank"
        assert f"](figures/{name})" in text, name
    assert sorted(p.name for p in figs.iterdir()) == sorted(FIGURES)  # per-run charts: dvc plots
    assert "`dvc plots show`" in text
    assert "Waits for the transfer runs." in text


def test_transfer_chart_when_transfer_runs_exist(staged):
    text = (staged / "reports" / "REPORT.md").read_text()
    assert (staged / "reports" / "figures" / "transfer.png").exists()
    assert "](figures/transfer.png)" in text and "Waits for the transfer runs" not in text
    runs = report.load_runs(staged / "metrics")
    fig = figures.draw_transfer(runs[runs["group"] == "transfer"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [
        "linear\n51,300 of 11.23 M trainable",
        "bn_fc\n60,000 of 11.23 M trainable",
        "full\n11.23 M trainable",
        "scratch\n11.23 M trainable",
    ]
    assert ax.get_ylabel() and ax.get_xlabel() and ax.get_title()
    rows = results_table(text)
    assert rows["transfer_linear"]["model"] == "resnet18, linear"
    assert rows["transfer_scratch"]["accuracy"] == by_hand([0.5, 0.51])
    assert rows["resnet20"]["model"] == "resnet20"  # group balanced: no transfer mode shown
    # Transfer runs stay out of the imbalance summary.
    summary = figures.draw_summary(runs[runs["group"] == "imbalance"])
    assert not any("transfer" in t.get_text() for t in summary.axes[0].get_yticklabels())


def test_groups_are_the_recorded_ones_not_guessed_from_names(tmp_path):
    root = make_outputs(tmp_path)
    write_run(root, "transfer_like_name", {"split": "step", "dataset": "cifar10"}, STEP_CE)
    runs = report.load_runs(root / "metrics")
    assert runs.loc["transfer_like_name", "group"] == "imbalance"
    assert "transfer_like_name" in results_table(build(root).read_text())


def test_reference_numbers_come_from_the_data_file(tmp_path):
    root = make_outputs(tmp_path)
    refs = report.load_references()
    refs["references"] = [{**refs["references"][0], "value": 0.1234}]
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump(refs))
    out = report.write_report(
        root / "metrics", root / "logs", root / "data" / "splits", root / "r", refs=path
    )
    rows = results_table(out.read_text())
    assert rows["step_ce"]["reference (not ours)"] == f"0.1234 macro-F1 (seed study, {BEST})"
    assert rows["step_balanced_softmax"]["reference (not ours)"] == ""


def legend_clear_of_data(fig) -> bool:
    """True when no legend box overlaps the plotting area of any axes."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    boxes = [ax.get_window_extent(r) for ax in fig.axes]
    return bool(legends) and all(
        not leg.get_window_extent(r).overlaps(b) for leg in legends for b in boxes
    )


def test_figures_are_labelled_and_legible(built):
    splits = report.load_splits(built / "data" / "splits")
    fig = figures.draw_class_counts(splits["c100_exp100"])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == CIFAR100 and 7 <= ax.get_xticklabels()[0].get_fontsize() < 10

    arch = {r: report.load_accuracy_curves(built / "logs", r) for r in ("plainnet20", "resnet20")}
    assert set(arch["resnet20"]["seed"]) == {"seed0", "seed1"}
    fig = figures.draw_architecture(arch)
    ax = fig.axes[0]
    assert "error" in ax.get_ylabel() and ax.get_xlabel() == "epoch"
    styles = {ln.get_label(): (ln.get_linestyle(), ln.get_linewidth()) for ln in ax.lines}
    assert styles["resnet20 train (2 seeds)"][0] == "--"
    assert styles["resnet20 val (2 seeds)"][0] == "-"
    assert styles["resnet20 val (2 seeds)"][1] > styles["resnet20 train (2 seeds)"][1]
    assert legend_clear_of_data(fig)

    runs = report.load_runs(built / "metrics")
    fig = figures.draw_summary(runs[runs["group"] == "imbalance"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "step_balanced_softmax" and set(labels) == IMBALANCE_RUNS
    assert "macro-F1" in ax.get_xlabel()
    assert legend_clear_of_data(fig)


def test_quick_profile_says_references_are_not_comparable(tmp_path):
    root = make_outputs(tmp_path, profile="quick")
    for extra in ("exp_ce", "c100_ce", "resnet20", "plainnet20", "step_sampler_mixup"):
        (root / "metrics" / f"{extra}.json").unlink()
    for details in (root / "metrics").glob("*/details.json"):  # quick: Fashion-MNIST stand-ins
        d = json.loads(details.read_text())
        d["run"]["dataset"] = "fashion_mnist"
        details.write_text(json.dumps(d))
    shutil.rmtree(root / "logs")
    text = build(root).read_text()
    assert "references below are for CIFAR and are **not comparable**" in text
    assert "reports its best epoch on the test set" in text
    assert "reference (not ours)" not in text
    assert "Waits for a plainnet20 and a resnet20 run" in text


def test_stage_writes_the_report_whole_and_nothing_else(staged):
    assert (staged / "reports" / "REPORT.md").exists()
    assert not (staged / "reports" / "figures" / "stale.png").exists()
    assert not list(staged.glob(".reports-*")) and not list(staged.glob(".*.old"))
    assert (staged / "README.md").read_text() == "# Study\n"  # no undeclared output


def test_stage_without_metrics_says_to_run_dvc_repro(tmp_path, monkeypatch):
    from stages import report as stage

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"metrics.*dvc repro"):
        stage.main()
    (tmp_path / "metrics").mkdir()
    with pytest.raises(PipelineError, match=r"metrics.*dvc repro"):
        stage.main()
    assert not (tmp_path / "reports").exists()


def test_metrics_of_an_older_evaluate_stage_are_refused_in_one_line(tmp_path):
    root = make_outputs(tmp_path)
    path = root / "metrics" / "exp_ce" / "details.json"
    old = json.loads(path.read_text())
    del old["run"]["group"]
    path.write_text(json.dumps(old))
    with pytest.raises(PipelineError, match=r"details.json lacks group: .*older evaluate") as e:
        report.load_runs(root / "metrics")
    assert "\n" not in str(e.value)


def test_stage_does_not_import_torch():
    code = "import sys, stages.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_second_stage_sits_beside_only_the_numbers_that_name_it():
    """cRT on cross-entropy is no published cross-entropy number; post-hoc logit adjustment as
    a second stage is Menon et al.'s; the JPEG copy of CIFAR-10 matches CIFAR-10's numbers."""
    refs = report.load_references()
    row = pd.Series({"dataset": "cifar10_jpeg", "split_shape": "exp", "imbalance": 100.0,
                     "model": "resnet32", "loss": "cross_entropy", "sampler": "instance",
                     "mixup": "none", "posthoc": False, "second_stage": None})  # fmt: skip
    assert report.reference_for(row, refs) == f"0.7040 accuracy (Cao et al. 2019, {BEST})"
    assert report.reference_for({**row, "second_stage": "crt"}, refs) == ""
    la = report.reference_for({**row, "second_stage": "posthoc_la"}, refs)
    assert la == f"0.7790 accuracy ({LA})"


def test_a_run_removed_from_params_is_not_reported(tmp_path, monkeypatch):
    """A run that params.yaml no longer defines leaves its metrics behind (no stage owns them):
    the report stage reports only the runs with a config in configs/runs/."""
    from stages import report as stage

    root = make_outputs(tmp_path)
    write_run(root, "removed_run", {"split": "step", "dataset": "cifar10"}, STEP_CE)
    kept = set(report.load_runs(root / "metrics")["run"]) - {"removed_run"}
    (root / "configs/runs").mkdir(parents=True)
    for name in kept:
        (root / "configs/runs" / f"{name}.json").write_text("{}")
    monkeypatch.chdir(root)
    stage.main()
    rows = results_table((root / "reports" / "REPORT.md").read_text())
    assert "removed_run" not in rows and set(rows) == kept


def test_every_reference_says_how_its_model_was_selected(tmp_path):
    """The reference table shows each number's selection; an entry without one is refused."""
    text = build(make_outputs(tmp_path)).read_text()
    refs = text.split("## Reference numbers (not produced by this pipeline)", 1)[1]
    assert "| what | setting | metric (test) | value | model | source |" in refs
    assert f"| 0.7700 | {BEST} |" in refs and "| 0.7790 | last epoch |" in refs
    data = report.load_references()
    data["references"][1]["selection"] = "best"
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        PipelineError, match=r"references\[1\] \(Balanced-MixUp.*selection = 'best'"
    ):
        report.load_references(path)


def test_a_run_on_several_draws_shows_both_spreads(tmp_path):
    """The report recomputes the seed and draw spreads from the per-model scores."""
    root = make_outputs(tmp_path)
    scores = {"draw0_seed0": 0.70, "draw0_seed1": 0.72, "draw1_seed0": 0.76, "draw1_seed1": 0.80}
    write_run(root, "exp_drawn", {"split": "exp100", "dataset": "cifar10"}, STEP_CE)
    path = root / "metrics" / "exp_drawn" / "details.json"
    details = json.loads(path.read_text())
    template = next(iter(details["per_seed"].values()))
    details["per_seed"] = {m: {**template, "accuracy": v} for m, v in scores.items()}
    details["draws"] = {"0": ["draw0_seed0", "draw0_seed1"], "1": ["draw1_seed0", "draw1_seed1"]}
    path.write_text(json.dumps(details))
    row = report.load_runs(root / "metrics").loc["exp_drawn"]
    assert row["draw_count"] == 2 and row["accuracy_n"] == 2
    assert row["accuracy"] == pytest.approx(0.745)
    assert row["accuracy_std"] == pytest.approx((0.02 / 2**0.5 + 0.04 / 2**0.5) / 2)
    assert row["accuracy_draw_std"] == pytest.approx(0.07 / 2**0.5)
    text = build(root).read_text()
    section = text.split("## Variance over long-tailed draws", 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("| `exp_drawn`"))
    assert "| 0.7450 | 0.0212 | 0.0495 |" in line
    assert (
        "## Variance over long-tailed draws" not in build(make_outputs(tmp_path / "b")).read_text()
    )
