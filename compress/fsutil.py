"""Atomic directory writes: a failed run leaves nothing half-written."""
from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import CompressError, EnvironmentFault, os_fault


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
    check_writable(out)  # replacing renames it aside: its parent must take new entries


def check_writable(out: Path, what: str = "--out") -> None:
    """`out` can be created: its nearest existing parent is a directory we can really write in, found now
    (not after the work). Permission bits alone lie to root, on /proc and on read-only bind mounts, so a
    probe directory is made and removed."""
    parent = _existing_parent(out)
    if not parent.is_dir():
        raise CompressError(f"{what} {out}: {parent} is a file, so nothing can be made under it; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CompressError(f"{what} {out}: {parent} is not writable (permissions or a read-only file system); choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".compress-probe-", dir=parent))
    except OSError as e:
        cls = EnvironmentFault if e.errno in FULL else CompressError
        raise cls(f"{what} {out}: {parent} is not writable ({os_fault(e)}); choose another path") from None


FULL = (errno.ENOSPC, errno.EDQUOT)  # the disk, not the path, is the problem


def _existing_parent(out: Path) -> Path:
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def check_free_space(out: Path, needed: int, what: str = "--out") -> None:
    """Refuse before writing when the file system that will hold `out` has less than `needed` bytes free."""
    parent = _existing_parent(out)
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise EnvironmentFault(f"{what} {out}: needs about {needed:,} bytes but {parent} has {free:,} available; "
                               f"nothing was written; free some space or choose another location")


def _clean_stale(out: Path) -> None:
    """Siblings left by a killed run (their process is gone), saying so: a temporary dir is removed; a
    checkpoint moved aside during a replace is put back when nothing took its place, else removed."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        if _orphaned(tmp):
            _say(f"removing {tmp}: left by an interrupted run (process {_pid(tmp)} is gone)")
            shutil.rmtree(tmp, ignore_errors=True)
    for old in out.parent.glob(f".{out.name}.old-*"):
        if not _orphaned(old):
            continue
        if not out.exists():
            _say(f"restoring {out} from {old}: a run replacing it was interrupted (process {_pid(old)} is gone)")
            old.rename(out)
        else:
            _say(f"removing {old}: the checkpoint an interrupted run was replacing (process {_pid(old)} is gone)")
            shutil.rmtree(old, ignore_errors=True)


def _pid(p: Path) -> str:
    return p.name.rsplit("-", 1)[-1]


def _orphaned(p: Path) -> bool:
    return _pid(p).isdigit() and not _alive(int(_pid(p)))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but not ours, or cannot tell: leave it
    return True


@contextmanager
def atomic_dir(out: Path, force: bool = False, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `out` only if the block succeeds.

    The existing `out` (with `force`) is renamed aside first and removed only after the new one is in
    place, so a failure at any point leaves the old checkpoint (or nothing) at `out`. `needed_bytes`:
    refuse before writing when the file system has less free. An OSError (disk full, I/O error) becomes
    one EnvironmentFault line saying what was kept."""
    out = Path(out)
    try:
        _clean_stale(out)  # first: a checkpoint an interrupted replace moved aside is back before the checks
    except OSError as e:
        raise _write_fault(out, e) from None
    check_out_dir(out, force)
    if needed_bytes is not None:
        check_free_space(out, needed_bytes)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise _write_fault(out, e) from None
    try:
        yield tmp
        _move_in(tmp, out, force)
    except OSError as e:
        raise _write_fault(out, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_in(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished `tmp` to `out`; a replaced `out` is put back if the new one cannot be moved in."""
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
        return
    try:
        tmp.rename(out)
    except OSError:
        if out.exists():
            raise CompressError(f"{out}: another run wrote it while this one was saving; it was left as it is") from None
        raise


def _write_fault(out: Path, e: OSError) -> EnvironmentFault:
    kept = "the previous one there is unchanged" if out.exists() else "nothing was left behind"
    return EnvironmentFault(f"{out}: could not be written ({os_fault(e)}); {kept}; "
                            f"free some space or choose another location, then run again")


def dir_bytes(path: Path) -> int:
    """Total bytes of the files under `path` (a checkpoint's size on disk)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
