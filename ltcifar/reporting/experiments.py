"""The experiments as a readable table: ``dvc exp show`` with the README's filters, the
candidate's macro-F1 and the params and runs' macro-F1 that changed, best candidate first (plain
``dvc exp show`` lists every param and every dependency too). ``ltcifar exps`` runs it."""

import subprocess
from collections.abc import Sequence

from ltcifar.errors import PipelineError

EXP_SHOW = (
    "dvc", "exp", "show", "--only-changed",
    "--drop", "^(configs|data|ltcifar|stages|models|metrics|logs)(/|$)",
    "--keep", r"^candidate\.macro_f1$",
    "--sort-by", "candidate.macro_f1", "--sort-order", "desc",
)  # fmt: skip


def show_experiments(extra: Sequence[str] = ()) -> int:
    """Run the table's ``dvc exp show`` (with ``extra`` arguments, e.g. ``-A``) in the current
    repository, its output straight to the terminal; its exit status."""
    try:
        return subprocess.run([*EXP_SHOW, *extra], check=False).returncode
    except FileNotFoundError as e:
        raise PipelineError("dvc is not on PATH: activate the venv (. .venv/bin/activate)") from e
