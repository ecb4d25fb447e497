"""The compute dtype a model runs in, per device and CPU."""
from __future__ import annotations

from pathlib import Path

import torch

from compress.models import compute_dtype, cpu_has_bf16


def _cpu_flags() -> set[str]:
    line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def test_bf16_hardware_is_read_off_the_cpu():
    """An independent reading: the kernel's own CPU flags (Linux), not oneDNN's."""
    assert cpu_has_bf16() == bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def test_packed_int_models_run_in_bf16_only_where_the_cpu_multiplies_it():
    cpu = torch.device("cpu")
    assert compute_dtype(cpu) == torch.float32
    assert compute_dtype(cpu, packed_int=True) == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert compute_dtype(torch.device("cuda"), packed_int=False) == torch.bfloat16
