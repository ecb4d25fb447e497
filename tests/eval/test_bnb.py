"""`bnb:nf4|fp4|int8` bench rows: parsing, loading through BitsAndBytesConfig, closeness, the skip path.

The loading tests use a tiny Llama whose every linear has in_features divisible by 64: bitsandbytes'
CPU 4-bit kernel (AVX512-BF16 machines, bitsandbytes 0.50) reshapes the block scales as
[out, in / 64] and fails on conftest's 160-wide down_proj. That limit is bitsandbytes', and the
bench shows it as a skipped row (test_a_shape_bitsandbytes_cannot_run_is_a_skipped_row).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compress.cli import app
from compress.errors import CompressError
from compress.eval import bnb
from compress.eval.bench import BenchSettings, benchmark, fallback_note
from compress.eval.entries import check_entries, load_entry
from tests.conftest import make_model

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install 'compress[bnb]')")
CPU = torch.device("cpu")
QUICK = BenchSettings(seq_len=64, max_windows=2, prefill=(16,), new_tokens=2, prompt_len=4, warmup=0, repeats=1,
                      decode_mode="eager", threads=1)
# Relative RMS error of the logits against the fp32 base. 4-bit: a 64-block of Gaussian weights has absmax ≈ 2.4σ,
# so 16 levels leave a per-weight RMS error of ≈ 0.09σ (nf4; fp4's levels are coarser near 0) and the logits of a
# 2-layer model inherit about that (measured: nf4 0.065, fp4 0.090). int8: 254 levels per row (≈ 0.6% per weight)
# plus 8-bit activations and bf16 compute (0.5% alone): measured 0.009. A wrong model or unquantized garbage is ≥ 1.
TOLERANCE = {"nf4": 0.15, "fp4": 0.15, "int8": 0.03}


@pytest.fixture(scope="module")
def dir64(tmp_path_factory, tokenizer) -> Path:
    """A tiny Llama (another seed than conftest's) with all in_features multiples of 64, + tokenizer."""
    d = tmp_path_factory.mktemp("tiny-llama-64")
    make_model(ffn=128, seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_entries_parse():
    assert bnb.parse("bnb:nf4") == ("nf4", None)
    assert bnb.parse("bnb:int8:/models/x:y") == ("int8", "/models/x:y")
    with pytest.raises(CompressError, match=r"unknown bitsandbytes type 'q3'; allowed: bnb:nf4, bnb:fp4 or bnb:int8"):
        bnb.parse("bnb:q3")
    with pytest.raises(CompressError, match="empty model"):
        bnb.parse("bnb:nf4:")


def test_entries_checked_before_loading(tiny_dir):
    check_entries([str(tiny_dir), "bnb:nf4", "bnb:int8@bf16", f"bnb:fp4:{tiny_dir}@fp32"])
    with pytest.raises(CompressError, match="first entry is the base"):
        check_entries(["bnb:nf4", str(tiny_dir)])
    with pytest.raises(CompressError, match="quantizes a model on disk, not 'random:smollm2-135m'"):
        check_entries(["random:smollm2-135m", "bnb:nf4"])
    with pytest.raises(CompressError, match="unknown bitsandbytes type 'nf3'"):
        check_entries([str(tiny_dir), "bnb:nf3@bf16"])


def test_a_compress_checkpoint_base_is_refused(tmp_path, tiny_dir, recipe_file):
    import compress

    out = tmp_path / "ckpt"
    compress.run(recipe_file("passes:\n  - rtn: {bits: 8}\n"), str(tiny_dir), out=out, device="cpu", progress=False)
    with pytest.raises(CompressError, match="is a compress checkpoint; bitsandbytes quantizes a dense model"):
        check_entries([str(out), "bnb:nf4"])


@needs_bnb
@pytest.mark.parametrize("quant", bnb.QUANTS)
def test_loads_through_bitsandbytes_config(quant, dir64, tiny_dir):
    """bnb:QUANT:MODEL quantizes MODEL (not the base) with BitsAndBytesConfig: every decoder linear is
    bitsandbytes' layer, lm_head is not, and the logits stay near the dense model's."""
    import bitsandbytes
    from transformers import BitsAndBytesConfig

    from compress.models import load_model

    loaded = load_entry(f"bnb:{quant}:{dir64}", str(tiny_dir), CPU)
    model = loaded.model
    cfg = model.config.quantization_config
    assert isinstance(cfg, BitsAndBytesConfig)
    assert (cfg.load_in_8bit, cfg.load_in_4bit) == ((True, False) if quant == "int8" else (False, True))
    if quant != "int8":
        assert cfg.bnb_4bit_quant_type == quant and cfg.bnb_4bit_compute_dtype == torch.bfloat16
    layer = bitsandbytes.nn.Linear8bitLt if quant == "int8" else bitsandbytes.nn.Linear4bit
    linears = [m for n, m in model.named_modules() if n.startswith("model.layers.") and isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 7 and all(isinstance(m, layer) for m in linears), {type(m).__name__ for m in linears}
    assert not isinstance(model.lm_head, layer)
    assert loaded.kind == "bnb" and loaded.size_bytes is None
    assert loaded.info["bnb"] == {"bitsandbytes": bitsandbytes.__version__, "quant_type": quant, "model": str(dir64),
                                  "compute_dtype": "bfloat16"}

    base, _ = load_model(str(dir64), CPU, torch.float32)
    ids = torch.randint(0, 300, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = base(ids).logits.float(), model(ids).logits.float()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < TOLERANCE[quant], rel


@needs_bnb
def test_bench_rows_measure_bnb_and_count_its_scales(dir64):
    """A bnb row has perplexity, prefill, decode and memory like the others; its memory includes the
    absmax / row scales bitsandbytes keeps outside parameters (a 4-bit row would hide 1/8 otherwise)."""
    report = benchmark([str(dir64), "bnb:nf4", "bnb:int8"], QUICK, "cpu", progress=False)
    base, nf4, int8 = report["results"]
    n_weights = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3)  # q, o, k, v, gate, up, down over 2 layers
    n_rows = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    for row in (nf4, int8):
        assert row["kind"] == "bnb" and "skipped" not in row
        assert row["perplexity"] == pytest.approx(base["perplexity"], rel=0.05)
        assert row["prefill_ms"]["16"]["median"] > 0 and row["decode_tokens_per_s"]["1"]["median"] > 0
        assert row["ratios"]["memory_bytes"] < 1
    packed = nf4["weight_bytes_by_format"]["bnb-nf4"]
    assert n_weights // 2 + 2 * (n_weights // 64) <= packed <= n_weights // 2 + 4 * (n_weights // 64) + 14 * 64
    assert int8["weight_bytes_by_format"]["bnb-int8"] == n_weights + 4 * n_rows  # int8 codes + an fp32 scale per row
    for row in (nf4, int8):
        assert sum(row["weight_bytes_by_format"].values()) == row["memory_bytes"]


def test_skipped_when_bitsandbytes_is_missing(monkeypatch, tiny_dir, text_file, tmp_path):
    """No bitsandbytes: the row is skipped with its reason (printed and in the JSON); the bench goes on, exit 0."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(bnb.Unavailable, match=r"bitsandbytes is not installed \(pip install 'compress\[bnb\]'\)"):
        bnb.load("bnb:nf4", str(tiny_dir), CPU, None)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", str(tiny_dir), "bnb:nf4", "--device", "cpu", "--data", str(text_file),
                                   "--seq-len", "64", "--max-windows", "1", "--prefill", "16", "--new-tokens", "2",
                                   "--prompt-len", "4", "--warmup", "0", "--repeats", "1", "--decode-mode", "eager",
                                   "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    reason = "bitsandbytes is not installed (pip install 'compress[bnb]')"
    assert f"skipped bnb:nf4: {reason}" in res.stdout.splitlines()
    assert res.stderr.strip().splitlines() == [f"bench: skipping bnb:nf4: {reason}"]
    rows = json.loads(out.read_text())["results"]
    assert [r["name"] for r in rows] == [str(tiny_dir), "bnb:nf4"] and rows[0]["perplexity"] is not None
    assert rows[1]["skipped"] == reason and rows[1]["perplexity"] is None and rows[1]["ratios"] == {}


def test_a_backend_that_cannot_run_is_a_skipped_row(monkeypatch, tiny_dir):
    """bitsandbytes importable but its backend refuses (old release on a CPU, no CUDA): skipped, with why."""
    import transformers

    fake = type(sys)("bitsandbytes")
    fake.__version__ = "0.42.0"
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)

    plain = transformers.AutoModelForCausalLM.from_pretrained

    def refuse(*a, **k):
        if "quantization_config" in k:
            raise RuntimeError("No GPU found. A GPU is needed for quantization.\nmore detail")
        return plain(*a, **k)  # the base still loads

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    report = benchmark([str(tiny_dir), "bnb:int8"], QUICK, "cpu", progress=False)
    assert report["results"][1]["skipped"] == ("bitsandbytes 0.42.0 cannot run int8 on cpu here: RuntimeError: "
                                               "No GPU found. A GPU is needed for quantization.")


@needs_bnb
def test_a_shape_bitsandbytes_cannot_run_is_a_skipped_row(tiny_dir):
    """conftest's model (down_proj in_features 160): bitsandbytes' AVX512-BF16 4-bit path cannot run it; where the
    CPU lacks that path it runs. Either way: a row or a skip with bitsandbytes' own error, never a crash."""
    row = benchmark([str(tiny_dir), "bnb:nf4"], QUICK, "cpu", progress=False)["results"][1]
    if "skipped" in row:
        assert row["skipped"].startswith("bitsandbytes ") and "cannot run nf4 on cpu here: RuntimeError" in row["skipped"]
    else:
        assert row["perplexity"] is not None


def test_fallback_to_eager_is_noted():
    """`auto` that could not compile (the shared fallback of StaticDecoder) leaves a note in the row."""
    row = {"decode_mode": "eager"}
    fallback_note(row, BenchSettings(decode_mode="auto"))
    assert row["note"].startswith("compiled decode failed")
    row = {"decode_mode": "eager"}
    fallback_note(row, BenchSettings(decode_mode="eager"))  # asked for: nothing to note
    assert "note" not in row
