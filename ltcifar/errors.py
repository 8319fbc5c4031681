"""One exception family for mistakes a user can fix; stages print these as one line, exit 2."""

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A bad param, missing file or failed fetch; the message says what to set or where to look."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; turn PipelineError into a one-line message instead of a traceback."""
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
