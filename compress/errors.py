"""User-facing errors: one line, says where and what is allowed; the CLI exits 2 on them."""
from __future__ import annotations


class CompressError(Exception):
    """A mistake in the user's input (recipe, path, option): shown as one line, never a traceback."""


class RecipeError(CompressError):
    """A recipe (file or --set override) that does not validate."""
