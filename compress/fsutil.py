"""Atomic directory writes: a failed run leaves nothing half-written."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import CompressError


MARKERS = ("compress.json", "recipe.yaml", "compress-export.json")  # only a directory we wrote holds one: the only kind --force replaces


def _is_ours(d: Path) -> bool:
    return d.is_dir() and (any((d / m).is_file() for m in MARKERS) or not any(d.iterdir()))


def check_out_dir(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work is done: an existing output unless `force`, and with `force` anything but a
    compress checkpoint (or an empty directory); the working directory, an input, or a parent of either."""
    if not str(out).strip():
        raise CompressError("--out is empty; name a new directory, e.g. --out out/int8")
    where = out.resolve()
    for kind, p in [("the working directory", Path.cwd()), *(("the input", i) for i in inputs)]:
        p = p.resolve()
        if where == p or where in p.parents:
            raise CompressError(f"{out}: is {kind} {p} or a parent of it; write the checkpoint to a new directory")
    if not out.exists():
        check_writable(out)
        return
    if not out.is_dir():
        raise CompressError(f"{out}: exists and is not a directory")
    if not force:
        raise CompressError(f"{out}: output directory exists; pass --force to replace it")
    if not _is_ours(out):
        raise CompressError(f"{out}: exists and is not a compress checkpoint (no {' or '.join(MARKERS)}); "
                            f"--force only replaces checkpoints, so nothing was deleted; choose another --out")


def check_writable(out: Path, what: str = "--out") -> None:
    """`out` can be created: its nearest existing parent is a writable directory (found now, not after the work)."""
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CompressError(f"{what} {out}: {parent} is a file, so nothing can be made under it; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CompressError(f"{what} {out}: {parent} is not writable (permissions or a read-only file system); choose another path")


def _clean_stale(out: Path) -> None:
    """Remove temporary siblings left by a killed run (their process is gone), saying so."""
    import sys

    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            print(f"removing {tmp}: left by an interrupted run (process {pid} is gone)", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but not ours, or cannot tell: leave it
    return True


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `out` only if the block succeeds.

    The existing `out` (with `force`) is renamed aside first and removed only after the new one is in
    place, so a failure at any point leaves the old checkpoint (or nothing) at `out`."""
    out = Path(out)
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            check_out_dir(out, force)  # again: another run may have written it meanwhile
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            try:
                tmp.rename(out)
            except OSError:
                old.rename(out)  # put the previous checkpoint back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(out)
            except OSError:
                if out.exists():
                    raise CompressError(f"{out}: another run wrote it while this one was saving; it was left as it is") from None
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    """Total bytes of the files under `path` (a checkpoint's size on disk)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
