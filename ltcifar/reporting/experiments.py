"""The experiments as a readable table: ``dvc exp show`` with the README's filters, the
candidate's headline scores and the params that changed, best macro-F1 first (plain
``dvc exp show`` lists every key of every file). ``ltcifar exps`` runs it."""

import subprocess
from collections.abc import Sequence

from ltcifar.errors import PipelineError

EXP_SHOW = (
    "dvc", "exp", "show", "--only-changed",
    "--drop", "^(configs|data|ltcifar|stages|models|metrics)/",
    "--keep", r"^metrics/candidate\.json:(macro_f1|balanced_accuracy|few_shot_accuracy)$",
    "--sort-by", "metrics/candidate.json:macro_f1", "--sort-order", "desc",
)  # fmt: skip


def show_experiments(extra: Sequence[str] = ()) -> int:
    """Run the table's ``dvc exp show`` (with ``extra`` arguments, e.g. ``-A``) in the current
    repository, its output straight to the terminal; its exit status."""
    try:
        return subprocess.run([*EXP_SHOW, *extra], check=False).returncode
    except FileNotFoundError as e:
        raise PipelineError("dvc is not on PATH: activate the venv (. .venv/bin/activate)") from e
