"""Writing outputs so that a kill never leaves a torn file, and keeping a stage's output folder
to exactly what params.yaml asks for."""

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Delete temporaries of ``path`` left by a killed process (SIGKILL and SIGTERM skip
    ``finally``), so they never end up in a DVC output; a live writer's stays untouched."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.tmp")
    for other in path.parent.glob(f".{path.name}.*.tmp"):
        m = pattern.fullmatch(other.name)
        if m and not _alive(int(m.group(1))):
            other.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling to write; it replaces ``path`` only if the block finishes, so a
    reader sees the old file or the new, never half. Its name (``.name.<pid>.tmp``) keeps
    concurrent writers apart; an existing target's permissions carry over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_unused(paths: Iterable[Path], keep: set[str], why: str) -> None:
    """Delete each path (file or folder) whose name or stem is not in ``keep``, so a DVC output
    never carries datasets, splits or weights left over from another profile."""
    for path in sorted(p for p in paths if p.name not in keep and p.stem not in keep):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        print(f"removed {path}: {why}")
