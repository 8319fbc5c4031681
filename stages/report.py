"""DVC stage `report`: write reports/REPORT.md and reports/figures/*.png from the pipeline's
outputs, and refresh the README's results block.

Usage: python -m stages.report
Reads only metrics/, logs/ and data/splits/ (no models, no images, no torch), so it runs in
seconds on any machine. The report is built in a temporary folder beside reports/ and swapped in
whole, so an interrupted run never leaves half a report or a stale figure behind. If README.md
holds the markers `<!-- report:start -->` and `<!-- report:end -->`, the text between them is
replaced with a compact results table; the rest of the README is left byte for byte.
"""

import shutil
import tempfile
from pathlib import Path

from ltcifar.errors import PipelineError, run_stage
from ltcifar.files import write_text_atomic
from ltcifar.report import readme_block, replace_block, write_report

METRICS = Path("metrics")
LOGS = Path("logs")
SPLITS = Path("data/splits")
OUT = Path("reports")
README = Path("README.md")


def swap_in(new: Path, dest: Path) -> None:
    """Replace the folder ``dest`` by ``new`` with two renames (same filesystem), so readers see
    either the old report or the new one, never a mix."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def update_readme(readme: Path, block: str) -> bool:
    """Put ``block`` between the README's report markers; False when there is no README or it
    has no markers (then it is left alone)."""
    if not readme.exists():
        return False
    text = readme.read_text()
    new = replace_block(text, block)
    if new is None:
        return False
    if new != text:
        write_text_atomic(readme, new)
    return True


def main() -> None:
    if not METRICS.is_dir():
        raise PipelineError(
            f"no {METRICS}/ directory: run `dvc repro` to train and evaluate the runs first"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{OUT.name}-", dir=OUT.parent))
    try:
        report = write_report(METRICS, LOGS, SPLITS, tmp)
        figures = len(list((tmp / "figures").glob("*.png")))
        swap_in(tmp, OUT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {OUT / report.name} and {figures} figure(s) in {OUT / 'figures'}")
    if update_readme(README, readme_block(METRICS)):
        print(f"updated the results block in {README}")


if __name__ == "__main__":
    run_stage(main)
