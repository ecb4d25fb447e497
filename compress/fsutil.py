"""Atomic directory writes: a failed run leaves nothing half-written."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import CompressError


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing output directory unless `force` (checked before any work is done)."""
    if out.exists() and not force:
        raise CompressError(f"{out}: output directory exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise CompressError(f"{out}: exists and is not a directory")


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `out` only if the block succeeds."""
    out = Path(out)
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    """Total bytes of the files under `path` (a checkpoint's size on disk)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
