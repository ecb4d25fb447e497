"""Weight-only integer quantization, really packed: int8 bytes, two int4 codes per byte, or eight int3 codes in three bytes.

Buffers: `qweight` (int8 [N, Kp] for 8 bits, codes shifted by -128; uint8 [N, Kp/2] for 4 bits,
low nibble = even column; uint8 [N, 3·Kp/8] for 3 bits, which always compute through the
dequantizing path), `scales` [N, G] and, when asymmetric, integer-valued `zeros` [N, G] in
the compute dtype. Kp is K padded to whole groups (zeros beyond K never meet an input).

That portable layout is what checkpoints and `state_dict()` hold. In memory an int4 module keeps
its weight in the layout of its device's kernel (`layout`: see `int4_layout`), converted when the
module is built, loaded or moved, plus the kernel's scale/zero table `sz` (a buffer, so it is
counted): one copy of the weight, and a forward that is one kernel call. Where `sz` holds the
parameters exactly (bf16 scales, the kernel's dtype), `scales` is a view into it and integer
`zeros` are read back from it (z = 8 − round(zt / s)), so no parameter is held twice either.
"""
from __future__ import annotations

from typing import Any

import torch

from compress.algorithms.grid import QuantSpec, dequantize
from compress.formats import int4_layout
from compress.formats.base import PackedLinear, register_format

KERNEL_LAYOUTS = {"cpu": "cpu_int4", "cuda": "cuda_tinygemm"}  # int4 layout per device type (else portable)


def pack_codes(q: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [N, K] → storage: int8 (q - 128) for 8 bits, two nibbles per byte for 4 bits, and for
    3 bits eight codes in three bytes (code i of each eight at bits 3i..3i+2 of a little-endian 24-bit word)."""
    if bits == 8:
        return (q.to(torch.int16) - 128).to(torch.int8)
    if bits == 4:
        q = q.to(torch.uint8)
        return q[:, 0::2] | (q[:, 1::2] << 4)
    if bits == 3:
        n, k = q.shape
        shifts = 3 * torch.arange(8, dtype=torch.int32, device=q.device)
        word = (q.to(torch.int32).reshape(n, k // 8, 8) << shifts).sum(-1)
        return torch.stack([word & 0xFF, (word >> 8) & 0xFF, word >> 16], dim=-1).reshape(n, k * 3 // 8).to(torch.uint8)
    raise ValueError(f"bits={bits}: packed storage exists for 3, 4 and 8")


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of `pack_codes`: uint8 codes [N, K]."""
    if bits == 8:
        return (packed.to(torch.int16) + 128).to(torch.uint8)
    if bits == 3:
        b = packed.to(torch.int32).reshape(packed.shape[0], -1, 3)
        word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        return ((word.unsqueeze(-1) >> (3 * torch.arange(8, dtype=torch.int32, device=packed.device))) & 7
                ).reshape(packed.shape[0], -1).to(torch.uint8)
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)


@register_format
class QuantLinear(PackedLinear):
    """y = x · dequant(qweight)ᵀ + b, run through `compress.kernels` (real int kernels where they exist)."""

    format = "int"

    def __init__(self, in_features: int, out_features: int, spec: QuantSpec, bias: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features, self.qspec = in_features, out_features, spec
        kp = spec.padded_in(in_features)
        groups = kp // spec.group_for(in_features)
        cols = {8: kp, 4: kp // 2, 3: kp * 3 // 8}[spec.bits]
        store = torch.int8 if spec.bits == 8 else torch.uint8
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=store))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=dtype))
        self.register_buffer("zeros", None if spec.symmetric else torch.zeros(out_features, groups, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)
        self.register_buffer("sz", None, persistent=False)  # tinygemm (scale, zero) table in kernel layouts
        self.layout = "portable"
        self.register_state_dict_post_hook(_portable_state)
        self.register_load_state_dict_pre_hook(lambda mod, *args: mod.set_layout("portable"))
        self.register_load_state_dict_post_hook(lambda mod, _keys: mod.set_layout(mod.kernel_layout()))

    @classmethod
    def from_codes(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec,
                   in_features: int, bias: torch.Tensor | None, dtype: torch.dtype) -> "QuantLinear":
        """Pack integer codes [N, Kp] and their per-group parameters into a module."""
        mod = cls(in_features, q.shape[0], spec, bias is not None, dtype)
        mod.qweight.copy_(pack_codes(q, spec.bits))
        mod.scales.copy_(scale.to(dtype))
        if mod.zeros is not None:
            mod.zeros.copy_(zero.to(dtype))
        if bias is not None:
            mod.bias.copy_(bias.detach().to(dtype))
        return mod.to(q.device)

    def spec(self) -> dict[str, Any]:
        return {"bits": self.qspec.bits, "group_size": self.qspec.group_size, "symmetric": self.qspec.symmetric}

    @classmethod
    def from_spec(cls, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                  spec: dict[str, Any]) -> "QuantLinear":
        return cls(in_features, out_features, QuantSpec(**spec), bias, dtype)

    def codes(self) -> torch.Tensor:
        """uint8 codes [N, Kp], whatever the in-memory layout."""
        if self.layout == "cpu_int4":
            return int4_layout.cpu_unpack(self.qweight)
        if self.layout == "cuda_tinygemm":
            return int4_layout.cuda_unpack(self.qweight, self.out_features, self.qspec.padded_in(self.in_features))
        return unpack_codes(self.qweight, self.qspec.bits)

    def kernel_layout(self, device: torch.device | None = None) -> str:
        """The layout this module runs fastest in on `device` (its own by default)."""
        from compress.kernels.int4_tinygemm import tinygemm_group

        dev = device or self.qweight.device
        if self.qspec.bits != 4 or tinygemm_group(self) is None:
            return "portable"
        return KERNEL_LAYOUTS.get(dev.type, "portable")

    def set_layout(self, layout: str) -> None:
        """Re-store the weight in `layout` (exact: only the arrangement of the codes changes)."""
        if layout == self.layout:
            return
        from compress.kernels.int4_tinygemm import scales_and_zeros, tinygemm_group

        codes = self.codes()
        if layout == "portable":
            self._unfold_sz()
            self.qweight, self.sz = pack_codes(codes, self.qspec.bits), None
        else:
            pack = int4_layout.cpu_pack if layout == "cpu_int4" else int4_layout.cuda_convert
            group = tinygemm_group(self)
            assert group is not None, f"{layout} needs a tinygemm-compatible module"
            self.qweight, self.sz = pack(codes), scales_and_zeros(self, group).to(codes.device)
            self._fold_into_sz()
        self.layout = layout

    def _fold_into_sz(self) -> None:
        """Serve scales and zeros from `sz` instead of beside it, where that is exact (else keep them)."""
        from compress.kernels.int4_tinygemm import params_from_sz

        scales, zeros = params_from_sz(self.sz, self.scales.shape[1], self.zeros is not None)
        if scales.dtype != self.scales.dtype or not torch.equal(scales, self.scales):
            return  # fp32/fp16 scales: the bf16 table rounds them
        if zeros is not None and not torch.equal(zeros.to(self.zeros.dtype), self.zeros):
            return  # a zero scale hides its zero point
        self.scales = scales  # a view: no bytes of its own
        if zeros is not None:
            del self._buffers["zeros"]
            self.zeros_in_sz = True

    def _unfold_sz(self) -> None:
        """Give scales and zeros storage of their own again (before the table goes away)."""
        if self.sz is None or self.scales.untyped_storage().data_ptr() != self.sz.untyped_storage().data_ptr():
            return
        zeros = self.zeros if self.__dict__.get("zeros_in_sz") else None
        self.scales = self.scales.contiguous()
        if zeros is not None:
            self.zeros_in_sz = False
            self.register_buffer("zeros", zeros.to(self.scales.dtype))

    def __getattr__(self, name: str) -> Any:
        if name == "zeros" and self.__dict__.get("zeros_in_sz"):
            from compress.kernels.int4_tinygemm import params_from_sz

            sz, scales = self._buffers["sz"], self._buffers["scales"]
            return params_from_sz(sz, scales.shape[1], True)[1].to(scales.dtype).contiguous()
        return super().__getattr__(name)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """Device and dtype moves go through the portable layout, then into the new device's kernel layout.
        Scales and zero points are not widened (bf16 → fp32 would add bytes and no value): an fp32 model on a
        CPU without bf16 hardware still serves its bf16 scales from the int4 kernel's table. Narrowing casts them."""
        self.set_layout("portable")
        kept = {n: b.dtype for n, b in self._buffers.items() if n in ("scales", "zeros") and b is not None}
        super()._apply(fn, recurse)
        self._narrow(kept)
        self.set_layout(self.kernel_layout())
        return self

    def hold_params_in(self, dtype: torch.dtype) -> None:
        """Hold scales and zero points in `dtype` where it is narrower than theirs (a checkpoint's bf16, in an fp32
        model: the values it stores, in half the bytes, served from the int4 kernel's table); else nothing."""
        if self.scales.dtype == dtype or torch.promote_types(dtype, self.scales.dtype) != self.scales.dtype:
            return
        self.set_layout("portable")
        self._narrow({"scales": dtype, "zeros": dtype})
        self.set_layout(self.kernel_layout())

    def _narrow(self, dtypes: dict[str, torch.dtype]) -> None:
        """Cast each named floating buffer to its dtype in `dtypes` where that is narrower (never widen)."""
        for n, dtype in dtypes.items():
            b = self._buffers.get(n)
            if b is not None and b.dtype != dtype and b.is_floating_point() and torch.promote_types(dtype, b.dtype) == b.dtype:
                self._buffers[n] = b.to(dtype)

    def zero_points(self) -> torch.Tensor:
        if self.zeros is not None:
            return self.zeros
        return torch.full_like(self.scales, float(2 ** (self.qspec.bits - 1)))

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight [N, K] in fp32, or computed directly in `dtype` (the prefill path: (q - z) is exact in
        bf16, so one rounding, as fp32 math then a cast, at a third of the memory traffic)."""
        if dtype is None:
            return dequantize(self.codes(), self.scales, self.zero_points(), self.qspec)[:, : self.in_features]
        # tinygemm's CUDA layout is inverted by an index gather, not a pure function of the buffers: pass its codes
        stored, layout = (self.codes(), "codes") if self.layout == "cuda_tinygemm" else (self.qweight, self.layout)
        return dequant_weight(stored, self.scales, self.zeros, layout, self.qspec.bits,
                              self.qspec.group_for(self.in_features), self.in_features, dtype)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows `ids` (1-D) of `dense_weight(dtype)`, reading only their codes and parameters: a tied embedding's
        lookup. (tinygemm's CUDA layout has no per-row inverse here: its rows come from the whole unpack.)"""
        bits, group = self.qspec.bits, self.qspec.group_for(self.in_features)
        if self.__dict__.get("zeros_in_sz"):
            from compress.kernels.int4_tinygemm import params_from_sz

            zeros = params_from_sz(self.sz[:, ids], self.scales.shape[1], True)[1]
        else:
            zeros = None if self.zeros is None else self.zeros[ids]
        if bits == 8:
            stored, layout = self.qweight[ids], "portable"
        elif self.layout == "cpu_int4":
            stored, layout = int4_layout.cpu_rows(self.qweight, ids), "codes"
        elif self.layout == "cuda_tinygemm":
            stored, layout = self.codes()[ids], "codes"
        else:
            stored, layout = unpack_codes(self.qweight[ids], bits), "codes"
        return dequant_weight(stored, self.scales[ids], zeros, layout, bits, group, self.in_features, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from compress.kernels import quant_linear

        return quant_linear(x, self)


def dequant_weight(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, layout: str, bits: int,
                   group: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """[N, K] weight in `dtype` straight from the stored buffers (`layout` "codes": int4 codes already unpacked):
    a pure function, so the prefill path can compile it into one loop. (q − z) is exact in bf16, so there is
    one rounding, as in fp32 math then a cast."""
    unpack = {"cpu_int4": int4_layout.cpu_unpack, "codes": lambda c: c}.get(layout, lambda p: unpack_codes(p, bits))
    codes = qweight if bits == 8 else unpack(qweight)
    n, kp = codes.shape
    q = codes.view(n, kp // group, group).to(dtype)
    if bits == 8:  # stored q - 128: the symmetric zero (128) is already subtracted, an asymmetric one is z - 128
        q = q if zeros is None else q - (zeros.to(dtype).unsqueeze(-1) - 128)
    else:
        q = q - (zeros.to(dtype).unsqueeze(-1) if zeros is not None else 2 ** (bits - 1))
    return (q * scales.to(dtype).unsqueeze(-1)).view(n, kp)[:, :in_features]


def dequant_from_table(qweight: torch.Tensor, sz: torch.Tensor, groups: int, layout: str, bits: int, group: int,
                       in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """`dequant_weight` with scales and zero points read back from the int4 kernel's table: a pure function
    too, so the read-back compiles into the same loop as the unpack."""
    from compress.kernels.int4_tinygemm import params_from_sz

    scales, zeros = params_from_sz(sz, groups, True)
    return dequant_weight(qweight, scales, zeros, layout, bits, group, in_features, dtype)


def _portable_state(mod: QuantLinear, state: dict[str, torch.Tensor], prefix: str, _meta: Any) -> None:
    """Checkpoints hold the portable layout whatever the module runs in (scales and zeros their own tensors)."""
    if mod.layout != "portable":
        state[prefix + "qweight"] = pack_codes(mod.codes(), mod.qspec.bits)
        state[prefix + "scales"] = mod.scales.detach().contiguous()
        if mod.zeros is not None:
            state[prefix + "zeros"] = mod.zeros.detach()
