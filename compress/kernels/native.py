"""Small C kernels for the CPU, compiled on first use with the system C compiler and called through ctypes.

Why C: the int4 prefill path dequantizes the weight on every call, and Inductor's best version of the
CPU layout's unpack needs a transposing copy (0.5–0.9 ms per 1536×576 weight, 10–19% of the bf16
matmul it feeds). `csrc/int4_cpu_kn.c` writes Wᵀ in one streaming pass instead (about a third of
the time, bit-equal output). At decode sizes aten's int4pack kernel reads its bytes at about half
the rate a streaming loop does: `csrc/gemv_cpu.c` computes x · Wᵀ from the same layout with
AVX512-BF16 dot products (a generic C loop elsewhere). No torch headers are needed, so the build takes well under a second;
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
from typing import Callable

import torch

from compress.kernels.ops import cpu_op

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("int4_cpu_kn.c", "gemv_cpu.c")]
HEADERS = [Path(__file__).with_name("csrc") / "bf16.h"]
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
SPLIT_MIN = 1 << 18  # weights with fewer elements than this are unpacked on one thread (pool overhead)
GEMV_SPLIT_MIN = 1 << 22  # a GEMV of a smaller weight takes less time than handing it to the pool (~20 µs)
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


def _build(cc: str, flags: list[str]) -> Path:
    src = b"".join(p.read_bytes() for p in SOURCES + HEADERS)
    key = hashlib.sha1(src + " ".join([cc, *flags, _cpu_id()]).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"compress_cpu-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=lib.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run([cc, *flags, "-o", tmp, *map(str, SOURCES), "-lm"], check=True, capture_output=True, timeout=120)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def library(generic: bool = False) -> ctypes.CDLL | None:
    """The compiled kernels, or None (disabled, no compiler, failed build: warned once). `generic`: the build
    without vector intrinsics (what a CPU without AVX512-BF16 runs; the tests check it too)."""
    name = "generic" if generic else "lib"
    if name in _LIB:
        return _LIB[name]
    _LIB[name] = None
    if os.environ.get("COMPRESS_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if cc is None:
            raise FileNotFoundError("no C compiler (cc/gcc) on PATH")
        lib = ctypes.CDLL(str(_build(cc, FLAGS + ["-DCOMPRESS_GENERIC"] * generic)))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        warnings.warn(f"native CPU kernels unavailable ({type(e).__name__}: {e} {detail.decode(errors='replace')[:200]}); "
                      "int4 prefill dequantizes through PyTorch", RuntimeWarning)
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for fn, args in ((lib.int4_cpu_kn, [ptr] * 3 + [i64] * 5), (lib.int4_gemv, [ptr] * 4 + [i64] * 6),
                     (lib.int8_gemv, [ptr] * 4 + [i64] * 5)):
        fn.restype, fn.argtypes = ctypes.c_int, args
    _LIB[name] = lib
    return lib


def _kn_fake(packed: torch.Tensor, sz: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return packed.new_empty(k, n, dtype=torch.bfloat16)


@cpu_op("int4_cpu_kn(Tensor packed, Tensor sz, int n, int k) -> Tensor", _kn_fake)
def int4_cpu_kn(packed: torch.Tensor, sz: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Wᵀ [K, N] in bf16 from the CPU int4pack layout and its (scale, zero) table: an opaque op, so a
    compiled graph calls it too. Split over torch's intra-op threads by columns (ctypes frees the GIL)."""
    lib = library()
    assert lib is not None, "int4_cpu_kn called without the native library"
    packed, sz = packed.contiguous(), sz.contiguous()
    out = torch.empty(k, n, dtype=torch.bfloat16)
    args = (packed.data_ptr(), sz.data_ptr(), out.data_ptr(), n, k, sz.shape[0])
    threads = torch.get_num_threads() if n * k >= SPLIT_MIN else 1
    if any(_split(lambda r: lib.int4_cpu_kn(*args, *r), k, threads, 1)):
        raise MemoryError("int4_cpu_kn: no memory for its scale scratch")
    return out


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernels can run here: a constant to torch.compile (the build runs outside the trace)."""
    return library() is not None


def _split(call: Callable[[tuple[int, int]], int], size: int, threads: int, unit: int) -> list[int]:
    """`call` on ranges of [0, size) (multiples of `unit`, the last one ending at size), one per thread of the pool."""
    if threads <= 1:
        return [call((0, size))]
    if not _POOL or _POOL[0]._max_workers < threads:
        _POOL[:] = [ThreadPoolExecutor(threads, thread_name_prefix="compress-native")]
    step = -(-size // threads // unit) * unit
    return list(_POOL[0].map(call, [(a, min(size, a + step)) for a in range(0, size, step)]))


def _int4_gemv_fake(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, n: int, generic: bool = False) -> torch.Tensor:
    return x.new_empty(x.shape[0], n, dtype=torch.bfloat16)


@cpu_op("int4_gemv(Tensor x, Tensor packed, Tensor sz, int n, bool generic=False) -> Tensor", _int4_gemv_fake)
def int4_gemv(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, n: int, generic: bool = False) -> torch.Tensor:
    """y [M, N] in bf16 = x [M, Kp] (bf16, padded to the packed K) · Wᵀ from the CPU int4pack layout and its table,
    for decode-sized M (each row of x streams the weight once). `generic`: the build without intrinsics."""
    lib = library(generic)
    assert lib is not None, "int4_gemv called without the native library"
    x, packed, sz = x.contiguous(), packed.contiguous(), sz.contiguous()
    m, k = x.shape
    out = torch.empty(m, n, dtype=torch.bfloat16)
    args = (x.data_ptr(), packed.data_ptr(), sz.data_ptr(), out.data_ptr(), m, n, k, sz.shape[0])
    threads = torch.get_num_threads() if n * k >= GEMV_SPLIT_MIN else 1
    if any(_split(lambda r: lib.int4_gemv(*args, *r), n, threads, 64)):
        raise MemoryError("int4_gemv: no memory for its scratch")
    return out



def _int8_gemv_fake(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, generic: bool = False) -> torch.Tensor:
    return x.new_empty(x.shape[0], q.shape[0], dtype=torch.bfloat16)


@cpu_op("int8_gemv(Tensor x, Tensor q, Tensor scales, bool generic=False) -> Tensor", _int8_gemv_fake)
def int8_gemv(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, generic: bool = False) -> torch.Tensor:
    """y [M, N] in bf16 = (x [M, K] bf16 · q [N, K] int8ᵀ) · scales [N] (bf16), for decode-sized M: each row of x
    streams the codes once, sums in fp32. `generic`: the build without intrinsics."""
    lib = library(generic)
    assert lib is not None, "int8_gemv called without the native library"
    x, q, scales = x.contiguous(), q.contiguous(), scales.contiguous()
    (m, k), n = x.shape, q.shape[0]
    out = torch.empty(m, n, dtype=torch.bfloat16)
    args = (x.data_ptr(), q.data_ptr(), scales.data_ptr(), out.data_ptr(), m, n, k)
    threads = torch.get_num_threads() if n * k >= GEMV_SPLIT_MIN else 1
    if any(_split(lambda r: lib.int8_gemv(*args, *r), n, threads, 64)):
        raise MemoryError("int8_gemv: no memory for its scratch")
    return out

