"""Export a compressed checkpoint to what serving engines load (see `driver.export`).

Each target format is one module that registers an `Exporter`: `check` refuses, by module name,
anything the format cannot represent (before a byte is written), `write` fills a temporary
directory that the driver renames into place.
"""
from compress.export.registry import EXPORTERS, Exporter, register_exporter

__all__ = ["EXPORTERS", "Exporter", "register_exporter"]
