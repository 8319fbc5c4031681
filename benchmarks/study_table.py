"""One table of a study's runs, from a pipeline checkout's metrics: what each run trained, its test
scores, the tau a second stage chose, and the published number where one applies.

Usage: python benchmarks/study_table.py REPO [RUN ...]   (REPO: a checkout after its evaluate
stages; RUN: the runs and second stages to list, in order; default every one in metrics/)
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltcifar.errors import PipelineError  # noqa: E402
from ltcifar.reporting.report import load_references, load_runs, md_table, reference_for  # noqa: E402

COLUMNS = ("accuracy", "macro_f1", "many_shot_accuracy", "medium_shot_accuracy",
           "few_shot_accuracy")  # fmt: skip


def main() -> None:
    repo = Path(sys.argv[1])
    refs = load_references()
    try:
        runs = load_runs(repo / "metrics")
    except PipelineError:  # no run finished within the budget: each is listed as not finished
        runs = None
    names = sys.argv[2:] or ([] if runs is None else list(runs.index))
    rows = []
    for name in names:
        if runs is None or name not in runs.index:
            rows.append([f"`{name}`", "not finished", *[""] * (len(COLUMNS) + 5)])
            continue
        r = runs.loc[name]
        cfg = json.loads((repo / "configs" / "runs" / f"{name}.json").read_text())
        what = r["second_stage"] if isinstance(r["second_stage"], str) else r["loss"]
        if r["sampler"] != "instance" or r["mixup"] != "none":
            what += f" + {r['sampler']} + {r['mixup']}"
        tau = json.loads((repo / "metrics" / f"{name}.json").read_text()).get("tau")
        scores = [f"{r[k]:.4f}" if r[k] == r[k] else "" for k in COLUMNS]
        rows.append([f"`{name}`", what, r["split"], cfg["epochs"], r["seeds"], *scores,
                     "" if tau is None else f"{tau:g}", reference_for(r, refs)])  # fmt: skip
    header = ["run", "method", "split", "epochs", "seeds", "top-1", "macro-F1", "many", "medium",
              "few", "tau", "published (top-1; how its model was selected)"]  # fmt: skip
    if runs is not None:
        devices = ", ".join(sorted(set(runs["device"])))
        tests = ", ".join(f"{n:,}" for n in sorted(set(runs["test_images"])))
        print(f"Training device: {devices}. Test set: the untouched {tests} images (top-1 on a")
        print("balanced test set is its balanced accuracy). Ours: the last epoch.\n")
    print(md_table(header, rows))


if __name__ == "__main__":
    main()
