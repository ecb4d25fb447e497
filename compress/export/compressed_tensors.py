"""compressed-tensors export: our int4/int8 codes as `pack-quantized` tensors, which plain transformers loads
(with the `compressed-tensors` package installed) and vLLM serves.

The codes are mapped, never re-quantized: compressed-tensors stores signed codes q − 2^(b−1) and a signed zero
point z − 2^(b−1), so (q_ct − zp_ct)·scale is our (q − z)·scale exactly; a symmetric grid has no zero point on
either side ((q − 8)·scale for int4). The package's own packer writes the int32 words, and its own decompressor
re-reads every module before anything is saved, so a packing mismatch fails the export instead of the model.

Asymmetric grids carry packed zero points, which transformers 5 with compressed-tensors 0.20 cannot load into its
compressed modules (the zero-point placeholder keeps the unpacked shape: a size mismatch), so such exports also set
`dequantize: true`, which makes transformers decompress from the same packed tensors while loading. That load path
applies one scheme to every module, hence: an asymmetric grid must be the model's only grid.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from compress.algorithms.grid import QuantSpec
from compress.errors import CompressError
from compress.export.dense import check_uniform, save_hf
from compress.export.registry import Exporter, register_exporter
from compress.formats import PackedLinear, QuantLinear, SparseLinear
from compress.formats.tied_embedding import tied_names
from compress.models import storage_dtype
from compress.select import set_module

FMT = "compressed-tensors"
PACKED = "pack-quantized"  # weight-only int (4 or 8 bits) is this format; `int-quantized` is for W8A8
GROUP_CHOICES = (32, 64, 128, 256)  # the group sizes our quantizing passes offer


def _ct() -> ModuleType:
    """The compressed-tensors package, imported only when this format is used (an optional extra)."""
    try:
        import compressed_tensors
    except ImportError:
        raise CompressError(f"export --format {FMT} needs the compressed-tensors package: "
                            "pip install compress[export]") from None
    return compressed_tensors


def _quantized(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def _whole_groups(name: str, mod: QuantLinear) -> None:
    """compressed-tensors' group strategy needs K = groups × group_size; compress pads the last group instead."""
    g, k = mod.qspec.group_size, mod.in_features
    if g == -1 or k % g == 0:
        return
    fits = [str(c) for c in GROUP_CHOICES if k % c == 0] + ["-1"]
    raise CompressError(f"export --format {FMT}: {name} has in_features {k}, not a multiple of its group_size {g} "
                        f"(compress pads the last group, compressed-tensors needs whole groups); quantize it with "
                        f"group_size {' or '.join(fits)}, or add {name} to the pass's ignore")


def _refuse(name: str, mod: nn.Module) -> None:
    """A packed module other than QuantLinear: one line saying why and what to do instead."""
    if isinstance(mod, SparseLinear):
        pattern = mod.pattern or "unstructured"
        raise CompressError(f"export --format {FMT}: {name} is SparseLinear (pattern {pattern}), and "
                            f"compressed-tensors {_ct().__version__} has no sparse compressor (its bitmask and 2:4 "
                            "formats were removed); quantize after pruning (e.g. recipes/wanda-2of4-int4.yaml), "
                            "or export with --format dense")
    fmt = getattr(mod, "format", "?")
    raise CompressError(f"export --format {FMT}: {name} is {type(mod).__name__} (format {fmt!r}), which "
                        "compressed-tensors cannot represent; export with --format dense")


def _one_grid_if_asymmetric(quant: dict[str, QuantLinear]) -> None:
    """transformers decompresses an asymmetric export with a single scheme for all modules (see the docstring)."""
    first: dict[QuantSpec, str] = {}
    for name, mod in quant.items():
        first.setdefault(mod.qspec, name)
    if len(first) > 1 and not all(spec.symmetric for spec in first):
        (a, sa), (b, sb) = [(n, s) for s, n in first.items()][:2]
        raise CompressError(f"export --format {FMT}: {a} is {_grid(sa)} but {b} is {_grid(sb)}; with an asymmetric "
                            "grid transformers loads only one grid per model, so quantize every module with the "
                            "same bits/group_size/symmetric, or use symmetric: true for all passes")


def check(model: nn.Module) -> None:
    """Refuse, by module name, what pack-quantized cannot hold; runs before a byte is written."""
    check_uniform(model, FMT)
    _ct()
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            if mod.qspec.bits not in (4, 8):
                raise CompressError(f"export --format {FMT}: {name} has {mod.qspec.bits}-bit codes; this export "
                                    "writes 4 or 8 bits (what vLLM's and transformers' loaders run); quantize with "
                                    "bits 4 or 8, or export with --format dense")
            _whole_groups(name, mod)
        elif isinstance(mod, PackedLinear):
            _refuse(name, mod)
    quant = _quantized(model)
    if _head_goes_dense(model):
        quant = {n: m for n, m in quant.items() if n not in tied_names(model).values()}
    if not quant:
        raise CompressError(f"export --format {FMT}: the model has no quantized module; run a quantizing pass "
                            "(rtn, gptq, awq) first, or export with --format dense")
    _one_grid_if_asymmetric(quant)


def weight_args(spec: QuantSpec) -> dict[str, Any]:
    """Our grid as compressed-tensors QuantizationArgs fields."""
    strategy = "channel" if spec.group_size == -1 else "group"
    return {"num_bits": spec.bits, "type": "int", "symmetric": spec.symmetric, "strategy": strategy,
            "group_size": None if spec.group_size == -1 else spec.group_size, "dynamic": False}


def _scheme(spec: QuantSpec, targets: list[str]) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    return QuantizationScheme(targets=targets, weights=QuantizationArgs(**weight_args(spec)), format=PACKED)


def ct_tensors(mod: QuantLinear) -> dict[str, torch.Tensor]:
    """The module's pack-quantized tensors: signed codes packed into int32 words, scales [N, G] in fp32, zero points
    signed and packed along the output dim (asymmetric only), and the dense shape [N, K].

    fp32 scales hold the checkpoint's (bf16) scales exactly and cost ~3% of an int4 g64 file: a loader that
    dequantizes in the scales' own dtype (transformers with `dequantize: true`) then adds no rounding of its own."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    spec, k = mod.qspec, mod.in_features
    half = 2 ** (spec.bits - 1)
    codes = mod.codes()[:, :k]  # drop padding columns (only the odd-K int4 per-channel one reaches here)
    out = {"weight_packed": pack_to_int32(_signed(codes, half), spec.bits),
           "weight_scale": mod.scales.detach().float().contiguous(),
           "weight_shape": torch.tensor([mod.out_features, k])}
    if not spec.symmetric:
        assert mod.zeros is not None
        zero = _signed(mod.zeros.detach().round(), half)
        out["weight_zero_point"] = pack_to_int32(zero, spec.bits, packed_dim=0)
    return out


def _signed(values: torch.Tensor, half: int) -> torch.Tensor:
    """Our unsigned codes / zero points, [0, 2^b − 1], as compressed-tensors' signed int8 ones (minus 2^(b−1))."""
    return (values.to(torch.int16) - half).to(torch.int8)


def _verify(name: str, mod: QuantLinear, tensors: dict[str, torch.Tensor], scheme: Any) -> None:
    """The package's own decompressor must give back our weight bit for bit (in fp32: no rounding at all)."""
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor

    theirs = PackedQuantizationCompressor.decompress(tensors, scheme)["weight"]
    ours = mod.dense_weight().float()
    if theirs.shape != ours.shape:
        problem = f"a weight of shape {tuple(theirs.shape)}, not {tuple(ours.shape)}"
    elif not torch.equal(theirs, ours):
        problem = f"weights up to {(theirs - ours).abs().max().item():.3g} off"
    else:
        return
    raise CompressError(f"export --format {FMT}: {name}: compressed-tensors reads back {problem}; "
                        "this is a bug in compress, please report it")


class PackedWeights(nn.Module):
    """Stand-in for a quantized linear while saving: holds exactly the tensors compressed-tensors reads."""

    def __init__(self, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None) -> None:
        super().__init__()
        for key, value in tensors.items():
            self.register_buffer(key, value)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())


def _grid(spec: QuantSpec) -> str:
    group = "per-channel" if spec.group_size == -1 else f"g{spec.group_size}"
    return f"int{spec.bits} {group} {'sym' if spec.symmetric else 'asym'}"


def _describe(spec: QuantSpec) -> str:
    return f"{PACKED} {_grid(spec)}"


def quantization_config(groups: dict[QuantSpec, list[str]], ignore: list[str]) -> Any:
    """One config group per spec: every Linear when there is one spec, else the modules by name."""
    from compressed_tensors.quantization import QuantizationConfig

    single = len(groups) == 1
    schemes = {f"group_{i}": _scheme(spec, ["Linear"] if single else sorted(names))
               for i, (spec, names) in enumerate(sorted(groups.items(), key=lambda kv: sorted(kv[1])))}
    return QuantizationConfig(config_groups=schemes, format=PACKED, quantization_status="compressed",
                              ignore=sorted(ignore))


def _untie_quantized_head(model: nn.Module, dtype: torch.dtype) -> None:
    """compressed-tensors cannot share a packed lm_head with the embedding: untie them, and where the embedding
    reads the packed head's rows (a tied QuantEmbedding, no weight of its own) write those rows as a dense embedding."""
    if not getattr(model.config, "tie_word_embeddings", False) or not hasattr(model, "get_output_embeddings"):
        return
    if not isinstance(model.get_output_embeddings(), QuantLinear):
        return
    emb = model.get_input_embeddings()
    head = getattr(emb, "head", None)
    if not isinstance(emb, nn.Embedding) and isinstance(head, QuantLinear):
        rows = head.dense_weight().to(dtype)
        model.set_input_embeddings(nn.Embedding.from_pretrained(rows, padding_idx=getattr(emb, "padding_idx", None)))
    model.config.tie_word_embeddings = False


def _head_goes_dense(model: nn.Module) -> bool:
    """A tied packed head on a grid of its own beside an asymmetric grid would be a second grid, which transformers
    cannot load (`_one_grid_if_asymmetric`): such a head is written as its values in a dense, still tied, embedding."""
    heads = set(tied_names(model).values())
    rest = [m.qspec for n, m in _quantized(model).items() if n not in heads]
    return bool(heads) and any(not s.symmetric for s in rest) and any(
        model.get_submodule(h).qspec not in rest for h in heads)


def _densify_tied_head(model: nn.Module, dtype: torch.dtype) -> dict[str, str]:
    """Embedding and lm_head as one dense matrix holding the packed head's values: the same function as ours."""
    (name,) = tied_names(model).values()
    emb = model.get_input_embeddings()
    rows = emb.head.dense_weight().to(dtype)
    dense = nn.Embedding.from_pretrained(rows, freeze=False, padding_idx=getattr(emb, "padding_idx", None))
    model.set_input_embeddings(dense)
    lin = nn.Linear(rows.shape[1], rows.shape[0], bias=False, dtype=dtype)
    lin.weight = dense.weight
    set_module(model, name, lin)
    return {name: "dense (tied packed head's values: an asymmetric export holds one grid)"}


def write(model: nn.Module, tokenizer: Any, out: Path) -> dict[str, str]:
    """Swap every quantized linear for its pack-quantized tensors (checked against the package's decompressor),
    save with transformers, then let compressed-tensors write `quantization_config` into config.json."""
    _ct()
    from compressed_tensors.compressors import ModelCompressor

    dtype = storage_dtype(model)
    modules: dict[str, str] = {}
    if _head_goes_dense(model):
        modules.update(_densify_tied_head(model, dtype))
    else:
        _untie_quantized_head(model, dtype)
    model.to(dtype)  # the checkpoint's dtype, which holds its scales exactly; packed below with fp32 scales
    groups: dict[QuantSpec, list[str]] = defaultdict(list)
    for name, mod in _quantized(model).items():
        tensors = ct_tensors(mod)
        _verify(name, mod, tensors, _scheme(mod.qspec, [name]))
        set_module(model, name, PackedWeights(tensors, mod.bias))
        groups[mod.qspec].append(name)
        modules[name] = _describe(mod.qspec)
    ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]  # what stayed dense, e.g. lm_head
    save_hf(model, tokenizer, out, dtype)
    ModelCompressor(quantization_config=quantization_config(groups, ignore)).update_config(str(out))
    if not all(spec.symmetric for spec in groups):
        _set_dequantize(out / "config.json")
    return modules


def _set_dequantize(config_file: Path) -> None:
    """Ask transformers to decompress while loading (asymmetric grids; see the docstring). compressed-tensors and
    vLLM ignore the key."""
    config = json.loads(config_file.read_text())
    config["quantization_config"]["dequantize"] = True
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


register_exporter(Exporter(
    FMT, "pack-quantized int4/int8 weights for vLLM and transformers (needs pip install compress[export])",
    check=check, write=write,
    load_hint=("# pip install compressed-tensors\n"
               "from transformers import AutoModelForCausalLM\n"
               "model = AutoModelForCausalLM.from_pretrained('{out}')\n"
               "# serve on a GPU:\n"
               "vllm serve {out}")))
