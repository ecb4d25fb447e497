"""End to end on the real SmolLM2-135M: fetch, int8 RTN, evaluate, save, load, compare."""
from __future__ import annotations

import pytest
import torch

import compress
from compress import checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return compress.fetch_smollm2()


def test_fetch_is_a_plain_bf16_hf_dir(smollm2):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(smollm2)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert str(cfg.dtype).endswith("bfloat16") and not hasattr(cfg, "quantization_config")


def test_int8_rtn_end_to_end(smollm2, tmp_path):
    recipe = {"passes": [{"rtn": {"bits": 8}}],
              "evaluate": {"perplexity": {"source": "wikitext2-test", "seq_len": 2048, "max_windows": 2}}}
    res = compress.run(recipe, str(smollm2), out=tmp_path / "int8", device="cpu", progress=False)
    before = res.report["perplexity_before"]
    after = res.report["perplexity_after"]
    assert before["tokens"] == 304_986  # the standard protocol's count for this tokenizer
    assert after["windows"] == 2
    assert abs(after["perplexity"] / before["perplexity"] - 1) < 0.005
    size = res.report["size"]
    # int8 decoder linears + bf16 embeddings: well under the bf16 checkpoint
    assert size["on_disk_bytes"] < 0.62 * size["before_bytes"]
    info = checkpoint.inspect(tmp_path / "int8")
    assert info["modules"]["model.layers.0.mlp.down_proj"]["format"].startswith("int:bits=8")
    assert info["modules"]["model.layers.0.mlp.down_proj"]["tensors"]["qweight"]["dtype"] == "I8"
    ids = torch.randint(0, 49152, (1, 64))
    with torch.no_grad():
        assert torch.equal(res.model(ids).logits, compress.load(tmp_path / "int8", device="cpu", dtype=torch.float32)(ids).logits)
