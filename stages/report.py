"""DVC stage `report`: write reports/REPORT.md, reports/figures/*.png and reports/headline.json
(every reported run's macro-F1, the pipeline's one metrics file) from the pipeline's outputs.

Usage: python -m stages.report
Reads only metrics/, logs/, data/splits/, the names in configs/runs/ and
ltcifar/reporting/references.yaml (no models, no images, no torch), so it runs in seconds. The
runs reported are those the configs stage wrote a config for: a run removed from params.yaml
leaves its metrics files behind (no stage owns them any more), and they are not reported
(without configs/runs/, every metrics file is).
The report is built in a temporary folder beside reports/ and swapped in whole, so an
interrupted run never leaves half a report or a stale figure behind.
"""

import shutil
import tempfile
from pathlib import Path

from ltcifar.errors import run_stage, stage_parser
from ltcifar.reporting.report import write_report

OUT = Path("reports")
CONFIGS = Path("configs/runs")


def swap_in(new: Path, dest: Path) -> None:
    """Replace the folder ``dest`` by ``new`` with two renames (same filesystem), so readers see
    either the old report or the new one, never a mix."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{OUT.name}-", dir="."))
    try:
        names = {p.stem for p in CONFIGS.glob("*.json")} if CONFIGS.is_dir() else None
        report = write_report(Path("metrics"), Path("logs"), Path("data/splits"), tmp, names=names)
        figures = len(list((tmp / "figures").glob("*.png")))
        swap_in(tmp, OUT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {OUT / report.name}, {OUT / 'headline.json'} and {figures} figure(s)")


if __name__ == "__main__":
    run_stage(main, stage_parser("stages.report", __doc__))
