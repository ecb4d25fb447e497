"""GGUF export: one `model.gguf` that llama.cpp, llama-cpp-python and Ollama load, packed weights kept as they are.

Our int codes map onto llama.cpp's 32-weight block types without re-quantizing: a group of g weights
(g a multiple of 32, or a whole row) shares one scale and zero, so each of its 32-blocks gets that
same scale/zero, and the codes are copied unchanged:

- int8 symmetric            → Q8_0: d = scale, qs = q − 128
- int4 symmetric (zero 8)   → Q4_0: d = scale, value (q − 8)·d
- int4 asymmetric           → Q4_1: d = scale, m = −zero·scale, value q·d + m
- dense / pruned linears and embeddings → the checkpoint's storage dtype (BF16, F16 or F32: exact);
  norms → F32 (as llama.cpp does)

The one rounding is GGUF's fp16 d (and m); its largest relative size is written to `gguf-report.json`.
llama.cpp's rotary layout pairs rows (2i, 2i+1) of each head where Hugging Face pairs (i, i + d/2), so
q_proj/k_proj rows are permuted per head; groups run along the input dimension, so permuting whole
rows of codes, scales and zeros is exact. What cannot be written exactly is refused by `check` (one
line, naming the module and what to change in the recipe) before anything is written.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter, LlamaFileType

from compress.export.dense import check_uniform
from compress.export.gguf_blocks import BLOCK, FMT, Rounding, block_params, encode_q4_0, encode_q4_1, encode_q8_0
from compress.export.gguf_blocks import refuse as _refuse
from compress.export.gguf_tokenizer import add_tokenizer
from compress.export.registry import Exporter, register_exporter
from compress.formats import PackedLinear, QuantLinear
from compress.formats.tied_embedding import QuantEmbedding
from compress.models import head_dim, storage_dtype

GGUF_FILE = "model.gguf"
REPORT_FILE = "gguf-report.json"
FP16_MAX = 65504.0
LAYER_LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
FLOAT_TYPES = {torch.bfloat16: QT.BF16, torch.float16: QT.F16, torch.float32: QT.F32}
FILE_TYPES = {QT.Q8_0: LlamaFileType.MOSTLY_Q8_0, QT.Q4_0: LlamaFileType.MOSTLY_Q4_0, QT.Q4_1: LlamaFileType.MOSTLY_Q4_1,
              QT.BF16: LlamaFileType.MOSTLY_BF16, QT.F16: LlamaFileType.MOSTLY_F16, QT.F32: LlamaFileType.ALL_F32}


# ---------------------------------------------------------------- what can be written (checked first)

def quant_type(name: str, mod: QuantLinear) -> QT:
    """The GGUF block type that holds `mod`'s codes exactly, or a one-line refusal saying what to change."""
    s, k = mod.qspec, mod.in_features
    if s.bits == 8 and not s.symmetric:
        raise _refuse(f"{name} is int8 with a zero point (symmetric: false), which no GGUF block holds (Q8_0 has a "
                      f"scale only); quantize int8 with symmetric: true")
    if s.bits not in (4, 8):
        raise _refuse(f"{name} has {s.bits}-bit codes; GGUF blocks hold 4 (Q4_0/Q4_1) or 8 (Q8_0) bits exactly; use bits 4 or 8")
    if k % BLOCK:
        raise _refuse(f"{name} has in_features {k}, not a multiple of {BLOCK} (the weights per GGUF block), so its "
                      f"codes cannot be blocked; keep it dense: add '*.{name.rsplit('.', 1)[-1]}' to the pass's ignore")
    if s.group_size != -1 and s.group_size % BLOCK:
        raise _refuse(f"{name} has group_size {s.group_size}, which does not tile GGUF's {BLOCK}-weight blocks; "
                      f"quantize with group_size 32, 64 or 128 (a multiple of {BLOCK}) or -1 (per channel)")
    if s.bits == 8:
        return QT.Q8_0
    return QT.Q4_0 if s.symmetric else QT.Q4_1


def _check_fp16_range(name: str, mod: QuantLinear, qtype: QT) -> None:
    """d (and m) are fp16 in GGUF: a scale beyond its range would become inf."""
    big = mod.scales.abs().max().item()
    if qtype == QT.Q4_1:
        big = max(big, (mod.zeros * mod.scales).abs().max().item())
    if not big <= FP16_MAX:
        raise _refuse(f"{name} has a scale of {big:.3g}, beyond fp16's range ({FP16_MAX:g}) that GGUF blocks store")


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def _rope_type(config: Any) -> str:
    for attr in ("rope_parameters", "rope_scaling"):
        params = getattr(config, attr, None)
        if isinstance(params, dict) and params.get("rope_type", params.get("type")):
            return str(params.get("rope_type", params.get("type")))
    return "default"


def check_architecture(model: nn.Module) -> None:
    """Only what llama.cpp's `llama` architecture computes the same way: a Llama with SiLU, no biases, plain RoPE."""
    cfg = getattr(model, "config", None)
    kind, arch = getattr(cfg, "model_type", None), (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
    if kind != "llama":
        raise _refuse(f"model type {kind!r} ({arch}) is not supported; this exporter writes llama.cpp's llama "
                      f"architecture (LlamaForCausalLM) only; use --format dense")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise _refuse(f"hidden_act {cfg.hidden_act!r}: llama.cpp's llama architecture uses silu")
    if _rope_type(cfg) != "default":
        raise _refuse(f"rope_type {_rope_type(cfg)!r}: only plain RoPE (rope_type default) is written")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise _refuse("attention_bias / mlp_bias: biased projections are not written; export with --format dense")


def check_gguf(model: nn.Module) -> None:
    """Refuse, by module, whatever GGUF cannot hold exactly (before a byte is written)."""
    check_uniform(model, FMT)
    check_architecture(model)
    covered = {"lm_head"}  # written as `output`, or it is the embedding (tied)
    for name, _gguf_name, mod in tensors_of(model):
        covered.add(name)
        if isinstance(mod, (nn.Linear, PackedLinear)) and getattr(mod, "bias", None) is not None:
            raise _refuse(f"{name} has a bias, which the llama architecture's tensors do not include; export with --format dense")
        if isinstance(mod, QuantLinear):
            _check_fp16_range(name, mod, quant_type(name, mod))
    extra = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, PackedLinear)) and n not in covered]
    if extra:
        raise _refuse(f"{extra[0]} has no place among llama.cpp's llama tensors; export with --format dense")


# ---------------------------------------------------------------- tensor names and layout

def tensors_of(model: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
    """(module name, GGUF tensor name, module) in llama.cpp's order; no `output` when the head is the embedding."""
    def get(name: str) -> nn.Module:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise _refuse(f"{name} is missing, so this is not a Llama layout llama.cpp reads; "
                          f"export with --format dense") from None

    emb, head = get("model.embed_tokens"), get("lm_head")
    yield ("lm_head" if isinstance(emb, QuantEmbedding) else "model.embed_tokens"), "token_embd", (
        emb.head if isinstance(emb, QuantEmbedding) else emb)
    for i in range(model.config.num_hidden_layers):
        for hf, gg in LAYER_NORMS.items():
            yield f"model.layers.{i}.{hf}", f"blk.{i}.{gg}", get(f"model.layers.{i}.{hf}")
        for hf, gg in LAYER_LINEARS.items():
            yield f"model.layers.{i}.{hf}", f"blk.{i}.{gg}", get(f"model.layers.{i}.{hf}")
    yield "model.norm", "output_norm", get("model.norm")
    if not _head_is_embedding(emb, head):
        yield "lm_head", "output", head


def _head_is_embedding(emb: nn.Module, head: nn.Module) -> bool:
    if isinstance(emb, QuantEmbedding):
        return emb.head is head
    return isinstance(head, nn.Linear) and not isinstance(head, PackedLinear) and head.weight is emb.weight


def rope_rows(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order that turns Hugging Face's rotate-half heads into llama.cpp's interleaved pairs:
    new row h·d + 2i + a is old row h·d + a·d/2 + i (a ∈ {0, 1})."""
    half = head_dim // 2
    within = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)  # 0, h, 1, h+1, ...
    return (torch.arange(n_heads).unsqueeze(1) * head_dim + within).reshape(-1)


def _row_order(gguf_name: str, cfg: Any) -> torch.Tensor | None:
    if gguf_name.endswith(".attn_q"):
        return rope_rows(cfg.num_attention_heads, head_dim(cfg))
    if gguf_name.endswith(".attn_k"):
        return rope_rows(cfg.num_key_value_heads, head_dim(cfg))
    return None


def quant_tensor(name: str, mod: QuantLinear, rows: torch.Tensor | None, rounding: Rounding) -> tuple[np.ndarray, QT]:
    """A QuantLinear's codes as GGUF blocks (rows permuted for rotary heads when `rows` is given)."""
    qtype = quant_type(name, mod)
    codes = mod.codes()[:, : mod.in_features]
    scale, zero = block_params(mod)
    if rows is not None:
        codes, scale = codes[rows], scale[rows]
        zero = None if zero is None else zero[rows]
    rounding.add("d", scale, name)
    if qtype == QT.Q8_0:
        data = encode_q8_0(codes, scale)
    elif qtype == QT.Q4_0:
        data = encode_q4_0(codes, scale)
    else:
        assert zero is not None
        rounding.add("m", -zero * scale, name)
        data = encode_q4_1(codes, scale, zero)
    return data.numpy(), qtype


def float_tensor(w: torch.Tensor, dtype: torch.dtype) -> tuple[np.ndarray, QT]:
    """A float tensor in `dtype` (numpy has no bfloat16: BF16 goes as its raw 16-bit words)."""
    qtype = FLOAT_TYPES.get(dtype, QT.F32)
    w = w.detach().cpu().contiguous()
    if qtype == QT.BF16:
        return w.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), qtype
    return w.to(torch.float16 if qtype == QT.F16 else torch.float32).numpy(), qtype


def module_tensor(name: str, gguf_name: str, mod: nn.Module, cfg: Any, dtype: torch.dtype,
                  rounding: Rounding) -> tuple[np.ndarray, QT]:
    """The tensor llama.cpp reads for one module: blocks for int codes, floats otherwise (norms F32)."""
    rows = _row_order(gguf_name, cfg)
    if isinstance(mod, QuantLinear):
        return quant_tensor(name, mod, rows, rounding)
    if gguf_name.endswith("norm"):
        return float_tensor(mod.weight, torch.float32)
    with torch.no_grad():
        w = mod.dense_weight() if isinstance(mod, PackedLinear) else mod.weight
    return float_tensor(w if rows is None else w[rows], dtype)


# ---------------------------------------------------------------- metadata (the tokenizer: gguf_tokenizer.py)

def add_hparams(w: GGUFWriter, model: nn.Module, name: str) -> None:
    """The llama.* keys llama.cpp reads (tied embeddings are the absence of an `output` tensor)."""
    cfg = model.config
    w.add_name(name)
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(model.get_submodule("model.layers.0.mlp.gate_proj").out_features))
    w.add_head_count(int(cfg.num_attention_heads))
    w.add_head_count_kv(int(cfg.num_key_value_heads))
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_rope_dimension_count(head_dim(cfg))
    if head_dim(cfg) * cfg.num_attention_heads != cfg.hidden_size:
        w.add_key_length(head_dim(cfg))
        w.add_value_length(head_dim(cfg))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(int(model.get_input_embeddings().num_embeddings))


def _model_name(model: nn.Module) -> str:
    src = str(getattr(model.config, "_name_or_path", "") or getattr(model.config, "name_or_path", "") or "model")
    return Path(src).name or "model"


def write_gguf(model: nn.Module, tokenizer: Any, out: Path) -> dict[str, str]:
    """Write `out/model.gguf` and `out/gguf-report.json`; {module name: GGUF tensor type}."""
    check_gguf(model)
    dtype, cfg, rounding = storage_dtype(model), model.config, Rounding()
    w = GGUFWriter(out / GGUF_FILE, "llama")
    add_hparams(w, model, _model_name(model))
    tok_info = add_tokenizer(w, tokenizer, int(model.get_input_embeddings().num_embeddings))
    modules: dict[str, str] = {}
    for name, gguf_name, mod in tensors_of(model):
        data, qtype = module_tensor(name, gguf_name, mod, cfg, dtype, rounding)
        w.add_tensor(f"{gguf_name}.weight", data, raw_dtype=qtype)
        modules[name] = qtype.name
    linear = Counter(t for n, t in modules.items() if not n.endswith("norm") and "layernorm" not in n)
    w.add_file_type(int(FILE_TYPES[QT[linear.most_common(1)[0][0]]]))
    w.add_quantization_version(2)  # GGML_QNT_VERSION: the block layouts above
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    report = {"file": GGUF_FILE, "dense_dtype": FLOAT_TYPES.get(dtype, QT.F32).name, "fp16_scale_rounding": rounding.report(),
              "types": dict(Counter(modules.values())), "tokenizer": tok_info, "modules": modules}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return modules


LOAD_HINT = (f"# llama.cpp\nllama-cli -m {{out}}/{GGUF_FILE} -p 'Hello'\n"
             f"# llama-cpp-python\nfrom llama_cpp import Llama; llm = Llama(model_path='{{out}}/{GGUF_FILE}')\n"
             f"# Ollama\necho 'FROM {{out}}/{GGUF_FILE}' > Modelfile && ollama create mymodel -f Modelfile "
             f"&& ollama run mymodel\n"
             f"# fp16 rounding of the block scales (max relative), types and tokenizer: {{out}}/{REPORT_FILE}")

register_exporter(Exporter(
    FMT, "one GGUF file for llama.cpp / llama-cpp-python / Ollama: int8 → Q8_0, int4 → Q4_0 / Q4_1 (codes kept)",
    check=check_gguf, write=write_gguf, load_hint=LOAD_HINT))
