"""Tied embedding + packed (int8 or int4) head: one packed copy of the matrix serves both, against the original weights."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import compress
from compress.formats.quant_linear import QuantLinear
from compress.formats.tied_embedding import QuantEmbedding
from compress.eval.speed import memory_bytes
from tests.conftest import make_model

HEAD8 = {"rtn": {"bits": 8, "targets": ["lm_head"], "ignore": []}}
INT4 = {"rtn": {"bits": 4, "group_size": 32, "symmetric": False}}
HEAD4 = {"rtn": {"bits": 4, "group_size": 32, "symmetric": False, "targets": ["lm_head"], "ignore": []}}
VOCAB4 = 336  # 5 full blocks of 64 rows and a last block of 16 in the CPU int4 layout (N % 16 = 0 lets it run)


def quantized(passes: list[dict], tied: bool = True, tokenizer=None, out=None,
              vocab: int = 300) -> tuple[nn.Module, nn.Module]:
    base = make_model(tied=tied, vocab=vocab)
    res = compress.run({"passes": passes}, copy.deepcopy(base), tokenizer=tokenizer, out=out, progress=False)
    return base, res.model


def test_embedding_rows_are_the_original_rows_within_half_a_step():
    base, model = quantized([HEAD8])
    emb = model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding) and emb.head is model.lm_head
    ids = torch.tensor([[0, 5, 299], [7, 7, 1]])
    want = base.get_input_embeddings().weight[ids]
    got = emb(ids)
    step = model.lm_head.scales[ids]  # per-row scale [.., 1]
    assert got.shape == want.shape
    assert bool(((got - want).abs() <= step / 2 + 1e-6).all())
    assert (got - want).abs().max() > 0  # really quantized, not the dense rows


def test_one_copy_in_memory_and_on_disk(tmp_path, tokenizer):
    base, model = quantized([INT4, HEAD8], tokenizer=tokenizer, out=tmp_path / "ck")
    _, untied_head = quantized([INT4])  # the head left dense: the embedding matrix once, in fp32
    vocab, dim = base.config.vocab_size, base.config.hidden_size
    saved = memory_bytes(untied_head) - memory_bytes(model)
    assert saved >= vocab * dim * 4 - vocab * dim - vocab * 4 - 64  # fp32 matrix → int8 + a scale per row
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.qweight" in keys and not any(k.startswith("model.embed_tokens") for k in keys)
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    assert isinstance(loaded.get_input_embeddings(), QuantEmbedding)
    assert loaded.get_input_embeddings().head is loaded.lm_head
    x = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
        ref = base(x).logits
        assert (loaded(x).logits - ref).abs().max() < 0.1 * ref.abs().max()


def test_moves_and_copies_keep_the_tie():
    _, model = quantized([HEAD8])
    moved = copy.deepcopy(model).to(torch.bfloat16)
    assert moved.get_input_embeddings().head is moved.lm_head
    assert moved.get_input_embeddings()(torch.tensor([[3]])).dtype == torch.bfloat16


@pytest.mark.parametrize("device_layout", ["cpu_int4", "portable"])
def test_int4_head_rows_are_the_original_rows_within_half_a_step(device_layout, tmp_path, tokenizer):
    """Rows read from the kernel's interleaved layout (full blocks and the short last one) or the portable one."""
    base, model = quantized([HEAD4], vocab=VOCAB4, tokenizer=tokenizer, out=tmp_path / "ck")
    head, emb = model.lm_head, model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding) and emb.head is head and head.layout == "cpu_int4"
    head.set_layout(device_layout)
    ids = torch.tensor([[0, 63, 64, 319, 1], [320, 335, 327, 97, 40]])  # first/last of a block, the short block
    want = base.get_input_embeddings().weight[ids]
    got = emb(ids)
    step = head.scales.repeat_interleave(32, dim=1)[ids]  # each weight's group scale
    assert got.shape == want.shape
    assert bool(((got - want).abs() <= step / 2 + 1e-6).all())
    assert (got - want).abs().max() > 0  # really quantized, not the dense rows
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    assert loaded.get_input_embeddings().head is loaded.lm_head and loaded.lm_head.qspec.bits == 4
    torch.testing.assert_close(loaded.get_input_embeddings()(ids), got, rtol=0, atol=0)
    # bf16: scales and zero points live only in the kernel's table (`zeros_in_sz`), read back per row; a wrong row of
    # the table is whole steps off, bf16 rounding of scales and values a few hundredths of one
    bf = copy.deepcopy(model).to(torch.bfloat16)  # a move re-stores the head in its device's kernel layout
    assert bf.lm_head.layout == "cpu_int4" and bf.lm_head.__dict__.get("zeros_in_sz")
    torch.testing.assert_close(bf.get_input_embeddings()(ids).float(), got, rtol=2 ** -7, atol=float(step.max()) / 16)


def test_untied_models_keep_their_dense_embedding():
    _, model = quantized([HEAD8], tied=False)
    assert isinstance(model.lm_head, QuantLinear) and type(model.get_input_embeddings()) is nn.Embedding
