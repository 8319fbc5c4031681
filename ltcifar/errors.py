"""One exception family for mistakes a user can fix; stages print these as one line, exit 2."""

import argparse
import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A bad param, missing file or failed fetch; the message says what to set or where to look."""


def run_stage(main: Callable[..., None], parser: argparse.ArgumentParser) -> None:
    """Run a stage's main with the arguments of its command line (``stage_parser``); turn
    PipelineError into a one-line message instead of a traceback."""
    args = vars(parser.parse_args())
    try:
        main(**args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def stage_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A stage's command line, ``python -m <module>``: ``--help`` prints its docstring, and a
    missing or stray argument is argparse's usage error (exit 2), not a traceback."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
