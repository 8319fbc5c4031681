"""The package's layers, as the file tree shows them: each module imports only its own layer or
lower ones, no import cycle, empty package ``__init__`` files (importing a package pulls in no
module, so a stage depends on exactly the files it imports) and short functions. The entry
points on top (the ``ltcifar`` command, the notebook API) are imported by no stage."""

import ast
from pathlib import Path

import pytest

from tests.imports import ROOT, _imported, source_files

# Lowest first: the base modules every layer may use, then each package, then the entry points.
LAYERS = ["base", "config", "data", "methods", "evaluation", "training", "reporting", "entry"]
BASE = {"ltcifar.errors", "ltcifar.files", "ltcifar.device"}
ENTRY = {"ltcifar.api", "ltcifar.cli"}
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "ltcifar").rglob("*.py")
    if p.name != "__init__.py"
)


def layer(module: str) -> int:
    if module in ENTRY:
        return LAYERS.index("entry")
    return 0 if module in BASE else LAYERS.index(module.split(".")[1])


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    return {n for n in _imported(path) if n in MODULES}


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in MODULES} == set(range(len(LAYERS)))


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down_the_layers(module):
    upward = {m for m in imports(module) if layer(m) > layer(module)}
    assert not upward, f"{module} ({LAYERS[layer(module)]}) imports {upward}"


def test_no_import_cycle():
    graph = {m: imports(m) for m in MODULES}
    done, path = set(), []

    def visit(m: str) -> None:
        assert m not in path, " -> ".join([*path[path.index(m) :], m])
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in MODULES:
        visit(m)


def test_package_init_files_are_empty():
    for init in (ROOT / "ltcifar").rglob("__init__.py"):
        assert init.read_text().strip() == "", init


def test_no_library_function_is_over_60_lines():
    long = []
    for path in (ROOT / "ltcifar").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({length} lines)")
    assert not long, long


def test_no_stage_imports_an_entry_point():
    """So each stage's code deps in dvc.yaml stay the files it runs."""
    entry = {f"{m.replace('.', '/')}.py" for m in ENTRY}
    for stage in sorted((ROOT / "stages").glob("[!_]*.py")):
        assert not source_files(f"stages.{stage.stem}") & entry, stage.name
