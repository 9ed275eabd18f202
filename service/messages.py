"""Errors as the one line a person reads: on a command's stderr, in a startup log, on /readyz.

Standard library only, so that any module, the bench scripts included, can use it without importing
torch. `run_command` is how `vsod` and the bench scripts end: a status, never a traceback for a bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UsageError(Exception):
    """A combination of arguments that cannot work: exit 2, as argparse's own errors."""


# What a bad input or setting raises, as opposed to a bug: ModelStoreError is a RuntimeError, VideoError
# and pydantic's ValidationError are ValueErrors, and OSError covers a missing or unwritable file or a
# busy port. These end in one line and a non-zero exit; anything else keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, RuntimeError)


def first_line(error: BaseException) -> str:
    """The first line of the error's message (pydantic's and FFmpeg's span several), or its type's
    name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_command(prog: str, call: Callable[[], int | None]) -> int:
    """`call()`'s exit status (None is 0). A UsageError is `prog: error: ...` and exit 2, a USER_ERRORS
    one the first line of its message and exit 1, Ctrl-C `prog: interrupted` and exit 130."""
    try:
        return int(call() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        print(f"{prog}: error: {first_line(error)}", file=sys.stderr)
        return 1
