"""The in-memory int4 layouts: ours against aten's converter, exact inverses, and a module that moves
between layouts without changing a code (the CPU proxy of the CUDA tinygemm conversion)."""
from __future__ import annotations

import copy

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.formats import int4_layout as L
from compress.formats.quant_linear import pack_codes
from tests.kernels.quantized import make

SHAPES = [(16, 64), (48, 32), (64, 576), (80, 64), (160, 96), (576, 1536)]


def aten_cpu(codes: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 2)


@pytest.mark.parametrize("nk", SHAPES)
def test_cpu_pack_is_atens_layout_and_unpack_inverts_it(nk):
    codes = torch.randint(0, 16, nk, dtype=torch.uint8, generator=torch.Generator().manual_seed(nk[0]))
    packed = L.cpu_pack(codes)
    # aten writes our layout where it runs its AVX512 kernels, 32-row blocks on AVX2-only CPUs: the probe says which
    # (under 32 rows both hold one partial block)
    assert torch.equal(packed, aten_cpu(codes)) == (L.aten_cpu_layout_matches() or nk[0] < 32)
    assert packed.shape == (nk[0], nk[1] // 2) and packed.dtype == torch.uint8  # same bytes as the portable layout
    assert torch.equal(L.cpu_unpack(packed), codes)


@pytest.mark.parametrize("nk", SHAPES)
def test_cpu_rows_reads_single_rows_of_full_and_short_blocks(nk):
    """A tied embedding's lookup, against the codes that were packed (every row, shuffled, some twice)."""
    codes = torch.randint(0, 16, nk, dtype=torch.uint8, generator=torch.Generator().manual_seed(nk[1]))
    ids = torch.cat([torch.randperm(nk[0]), torch.tensor([0, nk[0] - 1, 0])])
    assert torch.equal(L.cpu_rows(L.cpu_pack(codes), ids), codes[ids])


def test_layout_probe_follows_the_cpu_kernels_torch_runs():
    """Read off torch's own dispatch level, not the converter the probe calls."""
    assert L.aten_cpu_layout_matches() == (torch.backends.cpu.get_cpu_capability() != "AVX2")


@pytest.mark.parametrize("nk", SHAPES[:4])
def test_probe_inverse_of_any_nibble_permutation(nk):
    """The inverse used for CUDA's tinygemm layout, run here on aten's CPU converter."""
    codes = torch.randint(0, 16, nk, dtype=torch.uint8)
    index = L.gather_index(aten_cpu, *nk, torch.device("cpu"))
    assert index.dtype == torch.int32
    assert torch.equal(L.invert(index, aten_cpu(codes), *nk), codes)


def test_probe_refuses_a_layout_that_is_not_a_permutation():
    with pytest.raises(RuntimeError, match="not a permutation"):
        L.nibble_sources(lambda c: aten_cpu(c) & 0x77, 16, 64, torch.device("cpu"))  # drops a bit of every nibble


def test_module_holds_one_copy_in_the_kernel_layout_and_saves_the_portable_one():
    mod = make(QuantSpec(4, 64, False), 80, 576)
    portable = pack_codes(mod.codes(), 4)
    assert mod.layout == "cpu_int4" and torch.equal(mod.qweight, L.cpu_pack(mod.codes()))
    assert not torch.equal(mod.qweight, portable)  # really re-laid out in memory …
    assert torch.equal(mod.state_dict()["qweight"], portable)  # … and portable on disk
    assert "sz" not in mod.state_dict() and {n for n, _ in mod.named_buffers()} >= {"qweight", "sz"}
    other = make(QuantSpec(4, 64, False), 80, 576, seed=1)
    other.load_state_dict(mod.state_dict())
    assert other.layout == "cpu_int4" and torch.equal(other.qweight, mod.qweight) and torch.equal(other.sz, mod.sz)
    clone = copy.deepcopy(mod).to(torch.bfloat16)
    assert clone.layout == "cpu_int4" and torch.equal(clone.codes(), mod.codes())
    clone.set_layout("portable")
    assert torch.equal(clone.qweight, portable) and clone.sz is None


def test_dequantize_from_unpacked_codes_matches_every_stored_layout():
    """The CUDA layout's dense path hands `dequant_weight` its codes; checked here against the CPU layout's."""
    from compress.formats.quant_linear import dequant_weight

    mod = make(QuantSpec(4, 64, False), 80, 576)
    args = (mod.scales, mod.zeros, 4, 64, 576, torch.bfloat16)
    from_codes = dequant_weight(mod.codes(), args[0], args[1], "codes", *args[2:])
    assert torch.equal(from_codes, dequant_weight(mod.qweight, args[0], args[1], "cpu_int4", *args[2:]))
    assert torch.equal(from_codes, dequant_weight(pack_codes(mod.codes(), 4), args[0], args[1], "portable", *args[2:]))


def planted(spec: QuantSpec, dtype: torch.dtype, n: int = 48, k: int = 128, zero_scale: bool = False):
    """A module from hand-made codes, scales and integer zeros (all of 0..15), and those parameters."""
    from compress.formats.quant_linear import QuantLinear

    g = torch.Generator().manual_seed(7)
    groups = 1 if spec.group_size == -1 else k // spec.group_size
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
    s = (torch.rand(n, groups, generator=g) * 0.1 + 1e-3).to(dtype)
    z = torch.arange(n * groups).remainder(16).reshape(n, groups).to(dtype)
    if zero_scale:
        s[3, 0] = 0
    return QuantLinear.from_codes(q, s, z, spec, k, None, dtype), q, s, z


@pytest.mark.parametrize("group", [32, 64, -1])
def test_bf16_scales_and_zeros_live_in_the_kernel_table_only(group):
    """In memory: codes + the kernel's (scale, zero) table and nothing else; read back, they are the planted ones."""
    mod, q, s, z = planted(QuantSpec(4, group, False), torch.bfloat16)
    assert mod.layout == "cpu_int4"
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in mod.buffers()}
    assert sum(storages.values()) == mod.qweight.numel() + mod.sz.numel() * 2  # scales and zeros hold no bytes
    assert torch.equal(mod.scales, s) and torch.equal(mod.zeros, z)
    state = mod.state_dict()
    assert torch.equal(state["scales"], s) and torch.equal(state["zeros"], z) and state["scales"].is_contiguous()
    grp = mod.qspec.group_for(128)
    by_hand = (q.double() - z.double().repeat_interleave(grp, 1)) * s.double().repeat_interleave(grp, 1)
    assert torch.equal(mod.dense_weight().double(), by_hand.float().double())
    mod.set_layout("portable")  # own storage again, same values
    assert torch.equal(mod.scales, s) and torch.equal(mod.zeros, z) and "zeros" in dict(mod.named_buffers())


@pytest.mark.parametrize("dtype, zero_scale", [(torch.float32, False), (torch.float16, False), (torch.bfloat16, True)])
def test_parameters_the_table_would_round_are_kept_beside_it(dtype, zero_scale):
    """fp32/fp16 scales do not fit the bf16 table exactly, and a zero scale hides its zero point: kept as they are."""
    mod, q, s, z = planted(QuantSpec(4, 64, False), dtype, zero_scale=zero_scale)
    assert mod.layout == "cpu_int4" and "zeros" in dict(mod.named_buffers())
    assert torch.equal(mod.scales, s) and torch.equal(mod.zeros, z)
    assert torch.equal(mod.state_dict()["zeros"], z)


def test_scales_are_narrowed_but_never_widened_and_served_from_the_table():
    """An fp32 model on a CPU without bf16 hardware keeps a bf16 checkpoint's scales (no bytes added), and a held
    bf16 scale is what the kernel's table serves."""
    mod = make(QuantSpec(4, 64, False), 64, 576, bias=False)  # fp32 scales and zeros, beside the bf16 table
    assert mod.scales.dtype == torch.float32 and "zeros" in mod._buffers
    mod.hold_params_in(torch.bfloat16)
    codes, scales = mod.codes().clone(), mod.scales.clone()
    assert scales.dtype == torch.bfloat16 and "zeros" not in mod._buffers  # folded into the table
    mod.hold_params_in(torch.float32)  # wider: nothing
    mod.to(torch.float32)
    assert mod.scales.dtype == torch.bfloat16 and torch.equal(mod.scales, scales) and torch.equal(mod.codes(), codes)
    mod.to(torch.float16)  # not wider than bf16: cast as before
    assert mod.scales.dtype == torch.float16
