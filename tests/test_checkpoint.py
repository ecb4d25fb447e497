from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from compress import checkpoint
from compress.api import run
from compress.errors import CompressError


def test_save_load_gives_identical_logits(tmp_path, tiny_model, tokenizer):
    res = run({"passes": [{"rtn": {"bits": 4, "group_size": 32, "symmetric": False, "targets": ["*.mlp.*"]}},
                          {"rtn": {"bits": 8}}]}, tiny_model, tokenizer=tokenizer, out=tmp_path / "ck", device="cpu", progress=False)
    ids = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        before = res.model(ids).logits
        after = checkpoint.load(tmp_path / "ck", device="cpu", dtype=torch.float32)(ids).logits
    assert torch.equal(before, after)
    files = {p.name for p in (tmp_path / "ck").iterdir()}
    assert {"model.safetensors", "config.json", "compress.json", "recipe.yaml", "report.json", "tokenizer.json"} <= files
    report = json.loads((tmp_path / "ck" / "report.json").read_text())
    assert report["size"]["on_disk_bytes"] == (tmp_path / "ck" / "model.safetensors").stat().st_size


def test_inspect_reports_formats_and_bytes(tmp_path, tiny_model, tokenizer):
    run({"passes": [{"rtn": {"bits": 8}}]}, tiny_model, tokenizer=tokenizer, out=tmp_path / "ck", device="cpu", progress=False)
    info = checkpoint.inspect(tmp_path / "ck")
    q = info["modules"]["model.layers.0.mlp.up_proj"]
    assert q["format"].startswith("int:bits=8") and q["bytes"] == 160 * 64 + 160 * 4  # int8 codes + fp32 scales
    assert info["modules"]["model.embed_tokens"]["format"] == "dense"
    assert "lm_head" not in info["modules"]  # tied: stored once
    assert info["total_bytes"] > info["weights_bytes"] > 0


def test_unquantized_checkpoint_loads_in_plain_transformers(tmp_path, tiny_model, tokenizer):
    checkpoint.save(tiny_model, tokenizer, tmp_path / "plain")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, tiny_model(ids).logits)


def test_existing_out_is_refused_without_force(tmp_path, tiny_model, tokenizer):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(CompressError, match="exists; pass --force"):
        checkpoint.save(tiny_model, tokenizer, out)
    assert (out / "keep").exists()
    with pytest.raises(CompressError, match="not a compress checkpoint"):  # --force replaces only what we wrote
        checkpoint.save(tiny_model, tokenizer, out, force=True)
    assert (out / "keep").exists()
    checkpoint.save(tiny_model, tokenizer, tmp_path / "ck2")
    (tmp_path / "ck2" / "keep").write_text("x")
    checkpoint.save(tiny_model, tokenizer, tmp_path / "ck2", force=True)
    assert not (tmp_path / "ck2" / "keep").exists() and (tmp_path / "ck2" / "model.safetensors").exists()


def test_failed_save_leaves_nothing(tmp_path, tiny_model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(RuntimeError):
        checkpoint.save(tiny_model, None, tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []
