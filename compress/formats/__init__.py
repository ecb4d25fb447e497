"""Formats: how compressed weights are stored (packed, on disk and in memory) and run."""
from compress.formats.base import FORMATS, PackedLinear, register_format
from compress.formats.quant_linear import QuantLinear
from compress.formats.sparse import SparseLinear

__all__ = ["FORMATS", "PackedLinear", "QuantLinear", "SparseLinear", "register_format"]
