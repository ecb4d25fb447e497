"""Kernels: run packed formats, dispatched by device, dtype and the number of rows M."""
from compress.kernels.dispatch import quant_linear

__all__ = ["quant_linear"]
