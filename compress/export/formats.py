"""The built-in export formats, imported for their registration."""
from compress.export import dense  # noqa: F401
