"""Small C kernels for the CPU, compiled on first use with the system C compiler and called through ctypes.

Why C: the int4 prefill path dequantizes the weight on every call, and Inductor's best version of the
CPU layout's unpack needs a transposing copy (0.5–0.9 ms per 1536×576 weight, 10–19% of the bf16
matmul it feeds). `csrc/int4_cpu_kn.c` writes Wᵀ in one streaming pass instead (about a third of
the time, bit-equal output). No torch headers are needed, so the build takes well under a second;
the library is cached per source, flags and CPU (``COMPRESS_CACHE`` or ~/.cache/compress) and
written atomically, so concurrent processes share it. ``COMPRESS_NATIVE=0`` turns it off; without
a compiler (or if the build fails) the callers keep their PyTorch path, after one warning.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "int4_cpu_kn.c"
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
SPLIT_MIN = 1 << 18  # weights with fewer elements than this are unpacked on one thread (pool overhead)
_LIB: dict[str, ctypes.CDLL | None] = {}
_POOL: list[ThreadPoolExecutor] = []


def _cpu_id() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return flags


def _cache_dir() -> Path:
    return Path(os.environ.get("COMPRESS_CACHE") or Path.home() / ".cache" / "compress") / "native"


def _build(cc: str) -> Path:
    src = SOURCE.read_bytes()
    key = hashlib.sha1(src + " ".join([cc, *FLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"int4_cpu_kn-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=lib.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], check=True, capture_output=True, timeout=120)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (disabled, no compiler, failed build: warned once)."""
    if "lib" in _LIB:
        return _LIB["lib"]
    _LIB["lib"] = None
    if os.environ.get("COMPRESS_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if cc is None:
            raise FileNotFoundError("no C compiler (cc/gcc) on PATH")
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        warnings.warn(f"native CPU kernels unavailable ({type(e).__name__}: {e} {detail.decode(errors='replace')[:200]}); "
                      "int4 prefill dequantizes through PyTorch", RuntimeWarning)
        return None
    fn = lib.int4_cpu_kn
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 5
    _LIB["lib"] = lib
    return lib


def _ranges(k: int, parts: int) -> list[tuple[int, int]]:
    step = -(-k // parts)
    return [(a, min(k, a + step)) for a in range(0, k, step)]


@torch.library.custom_op("compress::int4_cpu_kn", mutates_args=())
def int4_cpu_kn(packed: torch.Tensor, sz: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Wᵀ [K, N] in bf16 from the CPU int4pack layout and its (scale, zero) table: an opaque op, so a
    compiled graph calls it too. Split over torch's intra-op threads by columns (ctypes frees the GIL)."""
    lib = library()
    assert lib is not None, "int4_cpu_kn called without the native library"
    packed, sz = packed.contiguous(), sz.contiguous()
    out = torch.empty(k, n, dtype=torch.bfloat16)
    args = (packed.data_ptr(), sz.data_ptr(), out.data_ptr(), n, k, sz.shape[0])
    threads = torch.get_num_threads() if n * k >= SPLIT_MIN else 1
    if threads <= 1:
        failed = [lib.int4_cpu_kn(*args, 0, k)]
    else:
        if not _POOL or _POOL[0]._max_workers < threads:
            _POOL[:] = [ThreadPoolExecutor(threads, thread_name_prefix="compress-native")]
        failed = list(_POOL[0].map(lambda r: lib.int4_cpu_kn(*args, *r), _ranges(k, threads)))
    if any(failed):
        raise MemoryError("int4_cpu_kn: no memory for its scale scratch")
    return out


@int4_cpu_kn.register_fake
def _(packed: torch.Tensor, sz: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return packed.new_empty(k, n, dtype=torch.bfloat16)
