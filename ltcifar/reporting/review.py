"""A pull request's review comment: what changed in params, metrics and run configs against a rev.

Usage: python -m ltcifar.reporting.review <rev>   (e.g. ``main``; compares <rev> with the
workspace)

DVC's own tables are wide and name metrics by file path; a reviewer wants three compact ones:
``dvc params diff``, ``dvc metrics diff`` (the headline's ``<run>.macro_f1``) and, per run whose
``configs/runs/<run>.json`` changed, its changed keys, old → new.
"""

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

RUNS = "configs/runs"
HEADLINE = "reports/headline.json"  # the report's metrics file: {run: {"macro_f1": ...}}


def _out(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def fmt(value: object) -> str:
    """A cell: floats to 4 significant digits, missing as an em dash, the rest as JSON."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def metric_name(path: str, key: str) -> str:
    """Short, stable: the headline's keys as they are (``<run>.macro_f1``); another file's
    ``metrics/<run>.json`` + ``key`` → ``<run>.key``."""
    if PurePosixPath(path) == PurePosixPath(HEADLINE):
        return key
    stem = PurePosixPath(path).with_suffix("")
    parts = stem.parts[1:] if stem.parts[:1] == ("metrics",) and len(stem.parts) > 1 else stem.parts
    return f"{'/'.join(parts)}.{key}"


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys, so a change deep in a config is one row."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def params_rows(diff: dict) -> list[list[str]]:
    """``dvc params diff --json`` → rows; the file is named only when not params.yaml."""
    return [
        [(key if path == "params.yaml" else f"{path}:{key}"), fmt(c.get("old")), fmt(c.get("new"))]
        for path, changes in sorted(diff.items())
        for key, c in sorted(changes.items())
    ]


def metrics_rows(diff: dict) -> list[list[str]]:
    """``dvc metrics diff --json`` → rows."""
    rows = []
    for path, changes in sorted(diff.items()):
        for key, c in sorted(changes.items()):
            change = c.get("diff")
            delta = f"{change:+.4g}" if isinstance(change, int | float) else "—"
            rows.append([metric_name(path, key), fmt(c.get("old")), fmt(c.get("new")), delta])
    return rows


def config_changes(old: dict | None, new: dict | None) -> list[list[str]]:
    before, after = flatten(old or {}), flatten(new or {})
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [[k, fmt(before.get(k)), fmt(after.get(k))] for k in keys]


def changed_runs(rev: str) -> dict[str, list[list[str]]]:
    """Per run whose ``configs/runs/<run>.json`` differs between ``rev`` and the workspace."""
    names = _out("git", "diff", "--name-only", rev, "--", RUNS).split()
    result = {}
    for name in sorted(names):
        old = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, text=True)
        before = json.loads(old.stdout) if old.returncode == 0 else None
        after = json.loads(Path(name).read_text()) if Path(name).exists() else None
        if rows := config_changes(before, after):
            result[PurePosixPath(name).stem] = rows
    return result


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(rev: str, params: dict, metrics: dict, runs: dict[str, list[list[str]]]) -> str:
    """The comment: one section per kind of change that exists."""
    out = [f"## Changes against `{rev}`"]
    if rows := params_rows(params):
        out += ["### Params", table(["param", "old", "new"], rows)]
    if rows := metrics_rows(metrics):
        out += ["### Metrics", table(["metric", "old", "new", "change"], rows)]
    for run, rows in runs.items():
        out += [f"### Run config `{run}`", table(["key", "old", "new"], rows)]
    if len(out) == 1:
        out.append("No params, metrics or run-config changes.")
    return "\n\n".join(out) + "\n"


def review(rev: str) -> str:
    params = json.loads(_out("dvc", "params", "diff", rev, "--json") or "{}")
    metrics = json.loads(_out("dvc", "metrics", "diff", rev, "--json") or "{}")
    return render(rev, params, metrics, changed_runs(rev))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ltcifar.reporting.review <rev>")
    sys.stdout.write(review(sys.argv[1]))
