"""Keeping a stage's output folder to exactly what params.yaml asks for."""

import shutil
from collections.abc import Iterable
from pathlib import Path


def remove_unused(paths: Iterable[Path], keep: set[str], why: str) -> None:
    """Delete each path (file or folder) whose name or stem is not in ``keep``, so a DVC output
    never carries datasets, splits or weights left over from another profile."""
    for path in sorted(paths):
        if path.name in keep or path.stem in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        print(f"removed {path}: {why}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary sibling and a rename, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
