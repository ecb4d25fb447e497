"""The tokenizer in GGUF: GPT-2 style byte-level BPE (tokens, types, merges, special ids) as llama.cpp reads it."""
from __future__ import annotations

import json
from typing import Any

from gguf import GGUFWriter, TokenType

from compress.export.gguf_blocks import refuse as _refuse


def pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE: its split regex must be the one ours uses."""
    def byte_level(p: dict[str, Any]) -> bool:
        return p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space", False)

    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if len(parts) == 1 and byte_level(parts[0]):
        return "gpt-2"  # llama.cpp's name for GPT-2's split regex
    if len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits") and byte_level(parts[1]):
        return "smollm"  # digits split one by one, then GPT-2's regex
    raise _refuse(f"tokenizer pre_tokenizer {json.dumps(pre)[:120]}: only GPT-2 style byte-level BPE (as SmolLM2) is written")


def tokenizer_spec(tok: Any) -> dict[str, Any]:
    """The tokenizers JSON of a fast tokenizer, checked to be a byte-level BPE llama.cpp's gpt2 model reproduces."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise _refuse(f"tokenizer {type(tok).__name__} is not a fast (tokenizers) tokenizer; GGUF needs its BPE vocab and merges")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or spec.get("normalizer"):
        raise _refuse(f"tokenizer model {model.get('type')!r} (byte_fallback {model.get('byte_fallback')}, normalizer "
                      f"{(spec.get('normalizer') or {}).get('type')}): only GPT-2 style byte-level BPE is written")
    return spec


def vocab(tok: Any, size: int) -> tuple[list[str], list[int]]:
    """Tokens and their types for every embedding row: added special tokens CONTROL, unused rows [PADi]."""
    by_id = {i: t for t, i in tok.get_vocab().items()}
    if by_id and max(by_id) >= size:
        raise _refuse(f"tokenizer has id {max(by_id)}, beyond the model's {size} embedding rows")
    added = getattr(tok, "added_tokens_decoder", {})
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(TokenType.NORMAL if i not in added else TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
    return tokens, [int(t) for t in types]


def _adds_specials(tok: Any) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS, seen by encoding (the tokenizer's post-processor decides)."""
    with_sp = tok("a", add_special_tokens=True)["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    extra = len(with_sp) > len(plain)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    return extra and bos is not None and with_sp[0] == bos, extra and eos is not None and with_sp[-1] == eos


def add_tokenizer(w: GGUFWriter, tok: Any, size: int) -> dict[str, Any]:
    """tokenizer.ggml.*: gpt2 model, pre-tokenizer, tokens, types, merges, special ids, chat template."""
    if tok is None:
        raise _refuse("the source has no tokenizer, which a GGUF file carries; export a checkpoint saved with its tokenizer")
    spec = tokenizer_spec(tok)
    pre = pre_tokenizer(spec)
    tokens, types = vocab(tok, size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id}
    adders = {"bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id, "pad": w.add_pad_token_id}
    for key, add in adders.items():
        if ids[key] is not None:
            add(int(ids[key]))
    add_bos, add_eos = _adds_specials(tok)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(add_eos)
    w.add_add_space_prefix(False)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = [{"name": k, "template": v} for k, v in template.items()]
    if template:
        w.add_chat_template(template)
    return {"pre": pre, "tokens": len(tokens), "merges": len(merges), "add_bos": add_bos} | {f"{k}_id": v for k, v in ids.items()}


# ---------------------------------------------------------------- writing
