"""compressed-tensors export: plain transformers (with the compressed-tensors package) loads the directory from its
packed int32 tensors and computes the checkpoint's logits; refusals are one line and write nothing.

Relative logit difference, here and in the docs: max |ours − theirs| over all logits / max |ours|.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.export.driver import MARKER, export
from compress.export.registry import get_exporter
from compress.formats import QuantLinear
from tests.conftest import make_model

if sys.version_info < (3, 11):  # compressed-tensors 0.20 needs Python 3.11; the dev extra then leaves it out
    pytest.importorskip("compressed_tensors")

FMT = "compressed-tensors"
SYM = {"symmetric": True}
ASYM = {"symmetric": False}
CASES = {  # name: (passes, make_model kwargs); ffn 192 tiles groups of 32 and 64
    "int4-g32-asym": ([{"rtn": {"bits": 4, "group_size": 32, **ASYM}}], {}),
    "int4-g64-asym": ([{"rtn": {"bits": 4, "group_size": 64, **ASYM}}], {}),
    "int4-g32-sym": ([{"rtn": {"bits": 4, "group_size": 32, **SYM}}], {}),
    "int4-g64-sym": ([{"rtn": {"bits": 4, "group_size": 64, **SYM}}], {}),
    "int4-pc-asym": ([{"rtn": {"bits": 4, "group_size": -1, **ASYM}}], {}),
    "int4-pc-sym-odd": ([{"rtn": {"bits": 4, "group_size": -1, **SYM}}], {"ffn": 159}),  # K=159: one pad column
    "int4-pc-asym-odd": ([{"rtn": {"bits": 4, "group_size": -1, **ASYM}}], {"ffn": 159}),  # N=159 zero points
    "int8-pc-sym": ([{"rtn": {"bits": 8, "group_size": -1, **SYM}}], {}),
    "int8-g64-asym": ([{"rtn": {"bits": 8, "group_size": 64, **ASYM}}], {}),
    "mixed-sym": ([{"rtn": {"bits": 4, "group_size": 32, **SYM, "targets": ["*.mlp.*"]}},
                   {"rtn": {"bits": 8, "group_size": -1, **SYM, "targets": ["*.self_attn.*"]}}], {}),
    "int8-head-tied": ([{"rtn": {"bits": 8, "group_size": -1, **SYM, "ignore": []}}], {}),
    "int4-head-tied": ([{"rtn": {"bits": 4, "group_size": 64, **ASYM, "ignore": []}}], {"vocab": 320}),  # CPU layout
    "int4-asym+int8-head": ([{"rtn": {"bits": 4, "group_size": 64, **ASYM}},  # recipes/int4-rtn.yaml's shape
                             {"rtn": {"bits": 8, "group_size": -1, **SYM, "targets": ["lm_head"], "ignore": []}}], {}),
}
IDS = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))  # 80 rows: ours runs fp32 dequant


def _model(kw: dict) -> torch.nn.Module:
    return make_model(**{"ffn": 192, **kw})


def rel_diff(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def load_plain(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """name → (checkpoint dir, export dir), each built once."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            passes, kw = CASES[name]
            d = tmp_path_factory.mktemp(name)
            compress.run({"passes": passes}, _model(kw), tokenizer=tokenizer, out=d / "ck", progress=False)
            export(d / "ck", FMT, d / "ct")
            cache[name] = (d / "ck", d / "ct")
        return cache[name]

    return get


def _quantized_names(ck: Path) -> dict[str, dict]:
    ours = compress.load(ck, device="cpu", dtype=torch.float32)
    return {n: {"shape": (m.out_features, m.in_features), **m.spec()} for n, m in ours.named_modules()
            if isinstance(m, QuantLinear)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transformers_loads_the_export_with_the_checkpoints_logits(exported, name):
    ck, ct = exported(name)
    ours = compress.load(ck, device="cpu", dtype=torch.float32)
    ref = logits(ours)
    got = logits(load_plain(ct))
    assert rel_diff(got, ref) < 1e-2  # measured: 0.0 (fp32 dequantization is exact on both sides)
    base = logits(_model(CASES[name][1]))  # the original weights: the export is not them
    assert (got - base).abs().max() > 1e-3
    card = (ct / "README.md").read_text()
    assert "from_pretrained" in card and f"vllm serve {ct}" in card
    assert json.loads((ct / MARKER).read_text())["format"] == FMT


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_files_hold_packed_int32_tensors_in_the_packages_layout(exported, name):
    ck, ct = exported(name)
    qc = json.loads((ct / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == FMT and qc["format"] == "pack-quantized" and qc["quantization_status"] == "compressed"
    groups = list(qc["config_groups"].values())
    tensors = load_file(ct / "model.safetensors")
    quant = _quantized_names(ck)
    if name == "int4-asym+int8-head":
        del quant["lm_head"]  # written dense on purpose (its own test below)
    assert quant and ("lm_head" in qc["ignore"]) == ("lm_head" not in quant)
    asym = False
    for mod, spec in quant.items():
        (n, k), bits, g = spec["shape"], spec["bits"], spec["group_size"]
        scheme = next(gr for gr in groups if gr["targets"] == ["Linear"] or mod in gr["targets"])["weights"]
        assert (scheme["num_bits"], scheme["type"], scheme["symmetric"]) == (bits, "int", spec["symmetric"])
        assert (scheme["strategy"], scheme["group_size"]) == (("channel", None) if g == -1 else ("group", g))
        groups_k = 1 if g == -1 else k // g
        assert f"{mod}.weight" not in tensors
        packed, scale = tensors[f"{mod}.weight_packed"], tensors[f"{mod}.weight_scale"]
        assert packed.dtype == torch.int32 and tuple(packed.shape) == (n, -(-k * bits // 32))
        assert scale.dtype == torch.float32 and tuple(scale.shape) == (n, groups_k)
        assert tensors[f"{mod}.weight_shape"].tolist() == [n, k]
        zp = tensors.get(f"{mod}.weight_zero_point")
        if spec["symmetric"]:
            assert zp is None
        else:
            asym = True
            assert zp.dtype == torch.int32 and tuple(zp.shape) == (-(-n * bits // 32), groups_k)
        stored = sum(t.numel() * t.element_size() for key, t in tensors.items() if key.startswith(mod + "."))
        assert stored <= (bits / 32 + 0.06) * 4 * n * k  # fp32 dense would be 4·N·K bytes
    assert qc.get("dequantize", False) == asym  # see the exporter's docstring: asymmetric loads decompress early


@pytest.mark.parametrize("name", ["int4-g64-sym", "int8-pc-sym"])
def test_symmetric_exports_load_in_compressed_form_then_decompress(exported, name):
    _, ct = exported(name)
    tensors = load_file(ct / "model.safetensors")
    plain = load_plain(ct)
    q = plain.model.layers[0].self_attn.q_proj
    params = dict(q.named_parameters())
    assert "weight" not in params and q.quantization_status.value == "compressed"
    assert torch.equal(params["weight_packed"], tensors["model.layers.0.self_attn.q_proj.weight_packed"])
    logits(plain)  # the first forward decompresses, from those tensors
    assert q.weight.dtype == torch.float32 and "weight_packed" not in dict(q.named_parameters())


def _swap_nibbles(words: torch.Tensor) -> torch.Tensor:
    b = words.contiguous().view(torch.uint8)
    return ((b >> 4) | (b << 4)).view(torch.int32)


@pytest.mark.parametrize("name,key,tamper", [
    ("int4-g64-sym", "weight_packed", _swap_nibbles),
    ("int4-g64-asym", "weight_packed", _swap_nibbles),
    ("int4-g64-asym", "weight_zero_point", _swap_nibbles),
    ("int8-pc-sym", "weight_packed", lambda w: w.flip(-1)),
])
def test_transformers_computes_from_the_packed_tensors(exported, tmp_path, name, key, tamper):
    """Tampering with one module's packed tensor in the file changes what transformers computes."""
    ck, ct = exported(name)
    copy = tmp_path / "ct"
    copy.mkdir()
    for f in ct.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    tensors = load_file(ct / "model.safetensors")
    target = f"model.layers.0.mlp.down_proj.{key}"
    tensors[target] = tamper(tensors[target])
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    ref = logits(compress.load(ck, device="cpu", dtype=torch.float32))
    assert rel_diff(logits(load_plain(copy)), ref) > 1e-2


def test_mixed_grids_become_config_groups_by_module_name(exported):
    _, ct = exported("mixed-sym")
    groups = json.loads((ct / "config.json").read_text())["quantization_config"]["config_groups"]
    by_bits = {g["weights"]["num_bits"]: g["targets"] for g in groups.values()}
    assert sorted(by_bits) == [4, 8] and "model.layers.1.mlp.down_proj" in by_bits[4]
    assert "model.layers.0.self_attn.q_proj" in by_bits[8] and not any("mlp" in t for t in by_bits[8])


def test_a_quantized_tied_head_is_untied(exported):
    ck, ct = exported("int8-head-tied")
    cfg = json.loads((ct / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and "lm_head" not in cfg["quantization_config"]["ignore"]
    tensors = load_file(ct / "model.safetensors")
    assert tensors["lm_head.weight_packed"].dtype == torch.int32 and "model.embed_tokens.weight" in tensors


def test_a_tied_int8_head_beside_an_asymmetric_grid_is_written_as_its_dense_values(exported):
    """One grid per asymmetric export: the head's int8 values go into the (still tied) dense embedding."""
    ck, ct = exported("int4-asym+int8-head")
    cfg = json.loads((ct / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and "lm_head" in cfg["quantization_config"]["ignore"]
    tensors = load_file(ct / "model.safetensors")
    assert "lm_head.weight_packed" not in tensors and tensors["model.embed_tokens.weight"].is_floating_point()
    ours = compress.load(ck, device="cpu", dtype=torch.float32)
    assert torch.equal(tensors["model.embed_tokens.weight"].float(), ours.lm_head.dense_weight())


REFUSED = {  # name: (passes, make_model kwargs, words in the one-line error)
    "partial-group": ([{"rtn": {"bits": 4, "group_size": 64, **ASYM}}], {"ffn": 160},
                      "model.layers.0.mlp.down_proj has in_features 160, not a multiple of its group_size 64"),
    "sparse-2of4": ([{"magnitude": {"sparsity": 0.5, "pattern": "2:4"}}], {},
                    "model.layers.0.self_attn.q_proj is SparseLinear (pattern 2:4)"),
    "mixed-asym": ([{"rtn": {"bits": 4, "group_size": 32, **ASYM, "targets": ["*.mlp.*"]}},
                    {"rtn": {"bits": 8, "group_size": -1, **SYM, "targets": ["*.self_attn.*"]}}], {},
                   "same bits/group_size/symmetric"),
    "int3": ([{"rtn": {"bits": 3, "group_size": 32, **ASYM}}], {}, "model.layers.0.self_attn.q_proj has 3-bit codes"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unrepresentable_models_are_refused_in_one_line_before_writing(tmp_path, tokenizer, name):
    passes, kw, words = REFUSED[name]
    compress.run({"passes": passes}, _model(kw), tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    with pytest.raises(compress.CompressError, match=re.escape(words)) as err:
        export(tmp_path / "ck", FMT, tmp_path / "ct")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"export --format {FMT}: ")
    r = CliRunner().invoke(app, ["export", str(tmp_path / "ck"), "--format", FMT, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert not (tmp_path / "ct").exists() and not (tmp_path / "x").exists() and not list(tmp_path.glob(".[cx]*"))


def test_the_partial_group_error_says_which_group_sizes_fit(tmp_path, tokenizer):
    compress.run({"passes": REFUSED["partial-group"][0]}, _model({"ffn": 160}), tokenizer=tokenizer,
                 out=tmp_path / "ck", progress=False)
    with pytest.raises(compress.CompressError, match="group_size 32 or -1, or add model.layers.0.mlp.down_proj to"):
        export(tmp_path / "ck", FMT, tmp_path / "ct")


def test_smollm2_shapes_with_group_128_are_refused_naming_the_first_module(tokenizer):
    """SmolLM2's hidden size 576 is not a multiple of 128 (compress pads it to 640): one layer of its shapes."""
    smol = make_model(hidden=576, heads=9, kv_heads=3, ffn=1536, layers=1)
    res = compress.run({"passes": [{"rtn": {"bits": 4, "group_size": 128, **ASYM}}]}, smol, tokenizer=tokenizer,
                       progress=False)
    with pytest.raises(compress.CompressError, match=r"model\.layers\.0\.self_attn\.q_proj has in_features 576.*"
                                                     r"group_size 32 or 64 or -1"):
        get_exporter(FMT).check(res.model)


def test_a_dense_model_and_uneven_widths_are_refused(tiny_dir, tmp_path):
    from compress.checkpoint import NONUNIFORM_ATTR

    with pytest.raises(compress.CompressError, match="no quantized module.*--format dense"):
        export(tiny_dir, FMT, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()
    uneven = make_model()
    setattr(uneven, NONUNIFORM_ATTR, True)
    with pytest.raises(compress.CompressError, match="ffn_scope: layer"):
        get_exporter(FMT).check(uneven)


def test_without_the_package_the_error_says_what_to_install(tmp_path, tokenizer, monkeypatch):
    compress.run({"passes": CASES["int4-g32-sym"][0]}, _model({}), tokenizer=tokenizer, out=tmp_path / "ck",
                 progress=False)
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import now raises ImportError
    with pytest.raises(compress.CompressError, match=r"pip install compress\[export\]"):
        export(tmp_path / "ck", FMT, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()


# ---- the real model ----------------------------------------------------------------------------------------------

SMOL = {"int4-g64-asym": {"bits": 4, "group_size": 64, **ASYM}, "int8": {"bits": 8, "group_size": -1, **SYM}}


@pytest.fixture(scope="module")
def smollm2() -> str:
    return str(compress.fetch_smollm2())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOL))
def test_smollm2_export_matches_the_checkpoint_in_logits_and_perplexity(smollm2, tmp_path, name):
    from transformers import AutoTokenizer

    compress.run({"passes": [{"rtn": SMOL[name]}]}, smollm2, out=tmp_path / "ck", device="cpu", progress=False)
    export(tmp_path / "ck", FMT, tmp_path / "ct")
    ours = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    plain = load_plain(tmp_path / "ct")
    ids = torch.randint(0, 49152, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = rel_diff(plain(ids).logits, ours(ids).logits)
    assert diff < 1e-2
    tok = AutoTokenizer.from_pretrained(tmp_path / "ct")
    ppl = {k: compress.evaluate(m, tok, seq_len=2048, max_windows=2, progress=False)["perplexity"]
           for k, m in (("ours", ours), ("export", plain))}
    print(f"\n{name}: max relative logit diff {diff:.2e}, perplexity ours {ppl['ours']:.4f} export {ppl['export']:.4f}")
    assert abs(ppl["export"] / ppl["ours"] - 1) < 0.002
    size, bf16 = ((p / "model.safetensors").stat().st_size for p in (tmp_path / "ct", Path(smollm2)))
    assert size < (0.45 if name.startswith("int4") else 0.62) * bf16  # the bf16 embedding is a fifth of it
