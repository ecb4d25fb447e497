"""User-facing errors: one line that says where and what to do; the CLI exits with the error's `exit_code`.

Exit codes: 0 success; 1 a fault of the environment (disk full, I/O error) or, for `regress`, a
regression found; 2 a mistake in the input (recipe, option, path, damaged file).
"""
from __future__ import annotations

import errno


class CompressError(Exception):
    """A mistake in the user's input (recipe, path, option): shown as one line, never a traceback."""

    exit_code: int = 2


class RecipeError(CompressError):
    """A recipe (file or --set override) that does not validate."""


class EnvironmentFault(CompressError):
    """The machine, not the input, stopped the work (no space left, an I/O error): one line, exit 1.

    Distinct from a user mistake so scripts can tell "fix your command" (2) from "retry elsewhere" (1)."""

    exit_code = 1


def os_fault(e: OSError) -> str:
    """An OSError as one readable clause: '[ENOSPC] No space left on device: PATH'."""
    name = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    what = e.strerror or str(e) or type(e).__name__
    where = f": {e.filename}" if e.filename else ""
    return f"{f'[{name}] ' if name else ''}{what}{where}"
