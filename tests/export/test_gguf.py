"""GGUF export: read back by two independent loaders (gguf's own block dequantizers, and transformers' GGUF
loader) and compared with the checkpoint's weights and logits; refusals are one line and write nothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.export.driver import MARKER, export
from compress.formats import QuantLinear
from tests.conftest import TEXT, make_model

gguf = pytest.importorskip("gguf")

INT4_G64 = {"rtn": {"bits": 4, "group_size": 64, "symmetric": False}}
CASES = {  # name: (passes, make_model kwargs, GGUF type of the decoder linears)
    "int8": ([{"rtn": {"bits": 8, "group_size": -1, "symmetric": True}}], {}, "Q8_0"),
    "int8-g32": ([{"rtn": {"bits": 8, "group_size": 32, "symmetric": True}}], {}, "Q8_0"),
    "int4-g64": ([INT4_G64], {}, "Q4_1"),
    "int4-g32-sym": ([{"rtn": {"bits": 4, "group_size": 32, "symmetric": True}}], {}, "Q4_0"),
    "int4-per-channel": ([{"rtn": {"bits": 4, "group_size": -1, "symmetric": False}}], {}, "Q4_1"),
    "int4-g64-padded": ([INT4_G64], {"hidden": 96}, "Q4_1"),  # K = 96: groups padded to 128, blocks are not
    "int4-untied": ([INT4_G64], {"tied": False}, "Q4_1"),
    "int8-head-tied": ([{"rtn": {"bits": 8, "group_size": -1, "symmetric": True, "ignore": []}}], {}, "Q8_0"),
    "int4-head-tied": ([{**INT4_G64, "rtn": {**INT4_G64["rtn"], "ignore": []}}], {"vocab": 320}, "Q4_1"),  # CPU layout
    "2of4": ([{"magnitude": {"sparsity": 0.5, "pattern": "2:4"}}], {}, "F32"),
}
LOGIT_CASES = ["int8", "int4-g64", "int4-g32-sym", "int4-g64-padded", "int4-untied", "int8-head-tied", "int4-head-tied",
               "2of4"]


def _model(kw: dict) -> torch.nn.Module:
    return make_model(**{"hidden": 64, "ffn": 128, **kw})  # 64 and 128 tile blocks of 32 and groups of 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Every case built and exported once: {case: root with ck/ and gguf/}."""
    out = {}
    for case, (passes, kw, _) in CASES.items():
        root = tmp_path_factory.mktemp(case)
        compress.run({"passes": passes}, _model(kw), tokenizer=tokenizer, out=root / "ck", progress=False)
        export(root / "ck", "gguf", root / "gguf")
        out[case] = root
    return out


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row order (rows (2i, 2i+1) of a head back to (i, i + d/2))."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _read(path: Path) -> tuple[dict[str, tuple[str, np.ndarray]], dict]:
    """{tensor name: (type, fp32 array in numpy's [rows, cols] order)}, {key: value} via gguf's reader and dequantizers."""
    r = gguf.GGUFReader(path)
    tensors = {t.name: (t.tensor_type.name,
                        gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist()))))
               for t in r.tensors}
    return tensors, {k: f.contents() for k, f in r.fields.items()}


def _expected(mod: QuantLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """What the blocks should decode to: our codes with fp16 block parameters (exact), and per weight the factors
    of the rounding bound: Q4_1 decodes q·d + m (errors q·Δd + Δm), Q4_0 / Q8_0 (q − z)·d (error (q − z)·Δd)."""
    k = mod.in_features
    group = mod.qspec.group_for(k)
    q = mod.codes()[:, :k].float()
    s = mod.scales.float().repeat_interleave(group, 1)[:, :k]
    z = mod.zero_points().float().repeat_interleave(group, 1)[:, :k]
    if mod.zeros is not None:
        return q * s.half().float() + (-z * s).half().float(), torch.stack([q * s, (z * s).abs()])
    return (q - z) * s.half().float(), torch.stack([(q - z).abs() * s, torch.zeros_like(s)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_blocks_decode_to_our_codes_and_weights(exported, case):
    root = exported[case]
    tensors, _ = _read(root / "gguf" / "model.gguf")
    report = json.loads((root / "gguf" / "gguf-report.json").read_text())
    ours = compress.load(root / "ck", device="cpu", dtype=torch.float32)
    cfg, kind = ours.config, CASES[case][2]
    rel_d = report["fp16_scale_rounding"]["max_rel_d"] or 0.0  # None: no block scales (dense)
    rel_m = report["fp16_scale_rounding"]["max_rel_m"] or 0.0  # None: no Q4_1 blocks
    assert rel_d < 2 ** -10  # fp16 has an 11-bit significand: half an ulp at most (no scale underflows here)
    for i in range(cfg.num_hidden_layers):
        for hf, gg in [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                       ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                       ("mlp.down_proj", "ffn_down")]:
            mod = ours.get_submodule(f"model.layers.{i}.{hf}")
            typ, w = tensors[f"blk.{i}.{gg}.weight"]
            assert typ == kind, (hf, typ)
            heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}.get(gg)
            got = torch.from_numpy(_unpermute(w, heads) if heads else w.copy())
            if isinstance(mod, QuantLinear):
                exact, parts = _expected(mod)
                torch.testing.assert_close(got, exact, rtol=1e-6, atol=1e-8)  # the codes, bit for bit
                bound = rel_d * parts[0] + rel_m * parts[1]  # the report bounds the distance to our weights
                assert ((got - mod.dense_weight()).abs() <= bound * 1.001 + 1e-7).all(), hf  # + fp32 rounding
            else:
                torch.testing.assert_close(got, mod.dense_weight(), rtol=0, atol=0)
        for hf, gg in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")]:
            typ, w = tensors[f"blk.{i}.{gg}.weight"]
            assert typ == "F32" and np.array_equal(w, ours.get_submodule(f"model.layers.{i}.{hf}").weight.detach().numpy())


@pytest.mark.parametrize("case", LOGIT_CASES)
def test_transformers_reads_the_gguf_with_the_checkpoints_logits(exported, case):
    """A second, independent reader: transformers' GGUF loader (dequantizes, undoes the rotary permutation)."""
    from transformers import AutoModelForCausalLM

    root = exported[case]
    plain = AutoModelForCausalLM.from_pretrained(root / "gguf", gguf_file="model.gguf", dtype=torch.float32).eval()
    ours = compress.load(root / "ck", device="cpu", dtype=torch.float32)
    x = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))  # 80 rows: ours runs fp32 dequant
    with torch.no_grad():
        ref, got = ours(x).logits, plain(x).logits
    # only the fp16 block parameters differ (≤ 2^-11 relative); a wrong code, nibble or row is ~100× more. A Q4_1
    # tied embedding adds its rounded block minimums (m = −z·s, up to 15 steps) at the input as well.
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-3 if case == "int4-head-tied" else 1e-3)
    base = _model(CASES[case][1])(x).logits.detach()
    assert (got - base).abs().max() > 5 * (got - ref).abs().max()  # the compressed weights, not the original ones


def test_metadata_and_tokenizer(exported, tokenizer):
    tensors, kv = _read(exported["int4-g64"] / "gguf" / "model.gguf")
    cfg = _model({}).config
    want = {"general.architecture": "llama", "llama.block_count": cfg.num_hidden_layers,
            "llama.context_length": cfg.max_position_embeddings, "llama.embedding_length": cfg.hidden_size,
            "llama.feed_forward_length": cfg.intermediate_size, "llama.attention.head_count": cfg.num_attention_heads,
            "llama.attention.head_count_kv": cfg.num_key_value_heads, "llama.vocab_size": cfg.vocab_size,
            "llama.rope.dimension_count": cfg.hidden_size // cfg.num_attention_heads,
            "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_1), "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.eos_token_id": tokenizer.eos_token_id,
            "tokenizer.ggml.add_bos_token": False}
    assert {k: kv.get(k) for k in want} == want
    assert kv["llama.rope.freq_base"] == pytest.approx(cfg.rope_parameters["rope_theta"])
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda t: t[1])
    assert kv["tokenizer.ggml.tokens"] == [t for t, _ in vocab] and len(vocab) == cfg.vocab_size
    assert kv["tokenizer.ggml.token_type"][tokenizer.eos_token_id] == int(gguf.TokenType.CONTROL)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert kv["tokenizer.ggml.merges"] == [" ".join(m) for m in merges] and merges
    assert "output.weight" not in tensors and tensors["token_embd.weight"][0] == "F32"  # tied: llama.cpp reuses token_embd
    assert "output.weight" in _read(exported["int4-untied"] / "gguf" / "model.gguf")[0]
    assert _read(exported["int8-head-tied"] / "gguf" / "model.gguf")[0]["token_embd.weight"][0] == "Q8_0"
    assert _read(exported["int4-head-tied"] / "gguf" / "model.gguf")[0]["token_embd.weight"][0] == "Q4_1"


def test_transformers_rebuilds_the_tokenizer_from_the_gguf(exported, tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported["int4-g64"] / "gguf", gguf_file="model.gguf")
    text = TEXT[:400] + " 12345 don't  spaces\n\nnew"
    assert tok(text, add_special_tokens=False).input_ids == tokenizer(text, add_special_tokens=False).input_ids


def test_card_report_and_modules(exported):
    out = exported["int4-g64"] / "gguf"
    report = json.loads((out / "gguf-report.json").read_text())
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "gguf" and marker["modules"]["model.layers.0.self_attn.q_proj"] == "Q4_1"
    assert marker["modules"]["model.norm"] == "F32" and report["types"]["Q4_1"] == 14
    assert 0 < report["fp16_scale_rounding"]["max_rel_m"] < 2 ** -10
    card = (out / "README.md").read_text()
    assert "llama-cli -m" in card and "Llama(model_path=" in card and "ollama create" in card and "gguf-report.json" in card


REFUSED = {  # name: (passes, model kwargs, words the one line holds)
    "int8-asym": ([{"rtn": {"bits": 8, "group_size": -1, "symmetric": False}}], {}, "symmetric: true"),
    "int4-k48": ([{"rtn": {"bits": 4, "group_size": -1, "symmetric": False}}], {"hidden": 48}, "in_features 48"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unrepresentable_is_one_line_and_writes_nothing(tmp_path, tokenizer, case):
    passes, kw, words = REFUSED[case]
    compress.run({"passes": passes}, _model(kw), tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    r = CliRunner().invoke(app, ["export", str(tmp_path / "ck"), "--format", "gguf", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: export --format gguf: model.layers.0.") and words in lines[0], r.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_a_checkpoint_without_tokenizer_is_refused_and_nothing_is_written(tmp_path):
    compress.run({"passes": [INT4_G64]}, _model({}), out=tmp_path / "ck", progress=False)
    with pytest.raises(compress.CompressError, match="no tokenizer"):
        export(tmp_path / "ck", "gguf", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_groups_that_do_not_tile_blocks_are_refused():
    """Recipes only allow groups of 32·2^n, but a module from elsewhere may have any: refused by name."""
    from compress.algorithms.grid import QuantSpec
    from compress.export.gguf import quant_type

    for spec, words in [(QuantSpec(4, 16, False), "group_size 16"), (QuantSpec(4, 48, True), "group_size 48"),
                        (QuantSpec(8, 16, True), "group_size 16")]:
        with pytest.raises(compress.CompressError, match=f"x.q_proj has {words}.*multiple of 32"):
            quant_type("x.q_proj", QuantLinear(96, 8, spec))
    assert quant_type("x", QuantLinear(96, 8, QuantSpec(4, 32, False))).name == "Q4_1"
    with pytest.raises(compress.CompressError, match="x.q_proj has 3-bit codes; GGUF blocks hold 4"):
        quant_type("x.q_proj", QuantLinear(96, 8, QuantSpec(3, 32, False)))


def test_other_architectures_and_layouts_are_refused():
    from transformers import MistralConfig, MistralForCausalLM

    from compress.checkpoint import NONUNIFORM_ATTR
    from compress.export.gguf import check_gguf

    mistral = MistralForCausalLM(MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    with pytest.raises(compress.CompressError, match="model type 'mistral'.*--format dense"):
        check_gguf(mistral)
    uneven = _model({})
    setattr(uneven, NONUNIFORM_ATTR, True)
    with pytest.raises(compress.CompressError, match="ffn_scope: layer"):
        check_gguf(uneven)
