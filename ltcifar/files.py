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
