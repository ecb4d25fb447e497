"""The built-in export formats, imported for their registration."""
from compress.export import dense  # noqa: F401
from compress.export import compressed_tensors  # noqa: F401
from compress.export import gguf  # noqa: F401
