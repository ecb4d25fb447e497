"""Built-in passes, imported explicitly so that each registers itself: one algorithm per module."""
from compress.passes import rtn  # noqa: F401
