"""Small C kernels for the CPU, built on first use with the system compilers and registered as torch operators.

Why C: the int4 prefill path dequantizes the weight on every call, and Inductor's best version of the
CPU layout's unpack needs a transposing copy (0.5–0.9 ms per 1536×576 weight, 10–19% of the bf16
matmul it feeds). `csrc/int4_cpu_kn.c` writes Wᵀ in one streaming pass instead (about a third of
the time, bit-equal output); `csrc/int8_cpu_unpack.c` does the same for int8 prefill (W = q·s, in place of a
compiled dequantize and its dynamo frame per call). At decode sizes aten's int4pack and int8pack kernels read their bytes at
about half the rate a streaming loop does: `csrc/gemv_cpu.c` computes x · Wᵀ from the same layouts with
AVX512-BF16 dot products (int4) and fp32 FMAs (int8), or generic C loops elsewhere. `csrc/ops.cpp` makes
them torch operators (`torch.ops.compress.*`: ~2 µs a call through the dispatcher, split over torch's
threads), so a compiled decode step calls them as they are. `csrc/attn_decode_cpu.c` is that step's one-token attention
(`attn_decode`, called from `eval/gqa_attention.py`). The build (~10 s: torch's headers) is cached
per source, flags, CPU and torch (``COMPRESS_CACHE`` or ~/.cache/compress) and written atomically, so
concurrent processes share it. ``COMPRESS_NATIVE=0`` turns it off; without compilers (or if the build
fails) the callers keep their PyTorch path, after one warning.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")
C_SOURCES = [CSRC / "int4_cpu_kn.c", CSRC / "gemv_cpu.c", CSRC / "int8_cpu_unpack.c", CSRC / "gemv_q8_cpu.c",
             CSRC / "attn_decode_cpu.c"]
SOURCES = [*C_SOURCES, CSRC / "ops.cpp", CSRC / "bf16.h", CSRC / "int4_cpu_layout.h"]
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fPIC"]
KN_FP32 = ["-DKN_FP32", "-Dint4_cpu_kn=int4_cpu_kn_f32"]
GENERIC = ["-DCOMPRESS_GENERIC", "-Dint4_gemv=int4_gemv_generic", "-Dint8_gemv=int8_gemv_generic",
           "-Dint4_gemv_q8=int4_gemv_q8_generic", "-Dint8_gemv_q8=int8_gemv_q8_generic"]
REASSOCIATE = ["-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]  # lets sums vectorize (attention only)
SPLIT_MIN = 1 << 18  # weights with fewer elements than this are unpacked on one thread
GEMV_SPLIT_MIN = 1 << 18  # and multiplied on one thread: below it waking the others costs more than they save
_LIB: dict[str, Path | None] = {}


def _cpu_id() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return flags


Q8_CHOICES = {"0": frozenset(), "int8": frozenset({8}), "all": frozenset({4, 8})}


def _q8_default() -> frozenset[int]:
    """Bit widths whose decode GEMVs round x to int8 blocks (`q8`): ``COMPRESS_GEMV_Q8`` = 0, int8 or all; by default
    int8 where the fp32 GEMVs are bound by their instructions — AVX2 without AVX512-BF16. There, SmolLM2 at 1 thread:
    int8 decode 21.8 → 26.6 tok/s; int4's GEMVs already stream at the memory's rate (1536 × 576 in a decode step:
    ~42 µs either way, though 78 → 43 µs in cache), so int4 stays exact. Perplexity: docs/quantization.md."""
    env = os.environ.get("COMPRESS_GEMV_Q8", "")
    if env in Q8_CHOICES:
        return Q8_CHOICES[env]
    if env:
        warnings.warn(f"COMPRESS_GEMV_Q8={env!r} ignored: allowed: {', '.join(Q8_CHOICES)}", RuntimeWarning)
    flags = _cpu_id().split()
    avx2 = "avx2" in flags and "fma" in flags  # what the kernel's AVX2 path is built for
    return Q8_CHOICES["int8" if avx2 and "avx512_bf16" not in flags else "0"]


GEMV_Q8 = _q8_default()


def _cache_dir() -> Path:
    return Path(os.environ.get("COMPRESS_CACHE") or Path.home() / ".cache" / "compress") / "native"


def _compilers() -> tuple[str, str]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cc is None or cxx is None:
        raise FileNotFoundError("no C and C++ compilers (cc/gcc, c++/g++) on PATH")
    return cc, cxx


def _build(cc: str, cxx: str) -> Path:
    """The operator library: eight C objects (the kernels, the int4 unpack again with fp32 output and both kinds of
    GEMV again without intrinsics, under other names) linked into the C++ operators against this torch."""
    torch_lib = Path(torch.__file__).parent / "lib"
    # -fopenmp: at::parallel_for is OpenMP in torch's headers (serial without it); libgomp.so.1 is the one torch loaded
    cxx_flags = [*FLAGS, "-std=c++17", "-fopenmp", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                 f"-I{torch_lib.parent / 'include'}"]  # ATen and torch/library.h (cpp_extension would need setuptools)
    src = b"".join(p.read_bytes() for p in SOURCES)
    key = hashlib.sha1(src + " ".join([cc, cxx, *cxx_flags, torch.__version__, str(torch_lib), _cpu_id()]).encode())
    lib = _cache_dir() / f"compress_ops-{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent, suffix=".tmp") as tmp:
        objs = []
        for name, source, extra in (("kn", C_SOURCES[0], []), ("kn32", C_SOURCES[0], KN_FP32), ("gemv", C_SOURCES[1], []),
                                    ("generic", C_SOURCES[1], GENERIC), ("int8", C_SOURCES[2], []),
                                    ("q8", C_SOURCES[3], []), ("q8generic", C_SOURCES[3], GENERIC),
                                    ("attn", C_SOURCES[4], REASSOCIATE)):
            objs.append(f"{tmp}/{name}.o")
            subprocess.run([cc, *FLAGS, *extra, "-c", str(source), "-o", objs[-1]], check=True, capture_output=True, timeout=120)
        out = f"{tmp}/ops.so"
        subprocess.run([cxx, *cxx_flags, "-shared", str(CSRC / "ops.cpp"), *objs, f"-L{torch_lib}", "-lc10", "-ltorch_cpu",
                        f"-Wl,-rpath,{torch_lib}", "-lm", "-o", out], check=True, capture_output=True, timeout=300)
        os.replace(out, lib)
    return lib


def library() -> Path | None:
    """The loaded operator library, or None (disabled, no compilers, failed build: warned once)."""
    if "lib" in _LIB:
        return _LIB["lib"]
    _LIB["lib"] = None
    if os.environ.get("COMPRESS_NATIVE", "1") == "0":
        return None
    try:
        path = _build(*_compilers())
        if not hasattr(torch.ops.compress, "int4_gemv"):  # a library loaded once stays registered
            torch.ops.load_library(str(path))
            _register_fakes()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        warnings.warn(f"native CPU kernels unavailable ({type(e).__name__}: {e} {detail.decode(errors='replace')[:300]}); "
                      "int decode and prefill run through PyTorch", RuntimeWarning)
        return None
    _LIB["lib"] = path
    return path


def _register_fakes() -> None:
    """Shapes for tracing (torch.compile): the kernels themselves run only on real tensors."""
    bf16 = torch.bfloat16
    torch.library.register_fake("compress::int4_cpu_kn")(
        lambda packed, sz, n, k, min_split, fp32=False: packed.new_empty(k, n, dtype=torch.float32 if fp32 else bf16))
    torch.library.register_fake("compress::int8_unpack")(
        lambda q, scales, min_split, fp32=False: q.new_empty(q.shape, dtype=torch.float32 if fp32 else bf16))
    torch.library.register_fake("compress::int4_gemv")(
        lambda x, packed, sz, n, min_split, generic=False, q8=False: x.new_empty(x.shape[0], n, dtype=bf16))
    torch.library.register_fake("compress::int8_gemv")(
        lambda x, q, scales, min_split, generic=False, q8=False: x.new_empty(x.shape[0], q.shape[0], dtype=bf16))
    torch.library.register_fake("compress::attn_decode")(lambda q, k, v, mask, scale, min_split: torch.empty_like(q))


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernels can run here: a constant to torch.compile (the build runs outside the trace)."""
    return library() is not None


def int4_cpu_kn(packed: torch.Tensor, sz: torch.Tensor, n: int, k: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Wᵀ [K, N] in bf16 (or fp32) from the CPU int4pack layout and its (scale, zero) table, split over torch's
    threads by columns."""
    return torch.ops.compress.int4_cpu_kn(packed.contiguous(), sz.contiguous(), n, k, SPLIT_MIN, dtype == torch.float32)


def int8_unpack(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """W [N, K] in bf16 (or fp32) = q · s from per-channel int8 codes and their bf16 scales [N], split over torch's
    threads by rows."""
    return torch.ops.compress.int8_unpack(q.contiguous(), scales.contiguous(), SPLIT_MIN, dtype == torch.float32)


def int4_gemv(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, n: int, generic: bool = False,
              q8: bool = False) -> torch.Tensor:
    """y [M, N] in bf16 = x [M, Kp] (bf16, padded to the packed K) · Wᵀ from the CPU int4pack layout and its table,
    for decode-sized M (each row of x streams the weight once). `generic`: the kernel without intrinsics. `q8`: x
    rounded to int8 blocks of 32 and integer sums (K and the group multiples of 32; see `q8_preferred`)."""
    return torch.ops.compress.int4_gemv(x.contiguous(), packed, sz, n, GEMV_SPLIT_MIN, generic, q8)


def int8_gemv(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, generic: bool = False, q8: bool = False) -> torch.Tensor:
    """y [M, N] in bf16 = (x [M, K] bf16 · q [N, K] int8ᵀ) · scales [N] (bf16), for decode-sized M: each row of x
    streams the codes once, sums in fp32 (`q8`: x rounded to int8 blocks of 32, integer sums; K a multiple of 32).
    `generic`: the kernel without intrinsics."""
    return torch.ops.compress.int8_gemv(x.contiguous(), q, scales.contiguous(), GEMV_SPLIT_MIN, generic, q8)


def attn_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Attention of one token a row: q [B, Hkv, R, D] (the R query heads of each KV head), the cache k, v [B, Hkv, L,
    D] read in place, mask [B, L] (True: attend; None: every position) → [B, Hkv, R, D], fp32 or bf16 (fp32 sums).
    Masked positions are skipped, so a static cache's unused length costs nothing."""
    return torch.ops.compress.attn_decode(q.contiguous(), k, v, mask, scale, GEMV_SPLIT_MIN)
