"""The decode step of every format compiles to one graph on the CPU Inductor backend (fullgraph=True:
a graph break is an error), does not recompile over 64 steps, and gives eager's tokens.

This is the CPU proxy that keeps the CUDA compile path (the same graph, replayed as a CUDA graph)
working while no GPU is lent.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

import compress
from compress.eval.fast_decode import StaticDecoder
from compress.formats import PackedLinear
from compress.kernels import dispatch
from tests.conftest import make_model

STEPS = 64
FORMATS = {
    "dense": [],
    "int8": [{"rtn": {"bits": 8}}],
    "int4-g64": [{"rtn": {"bits": 4, "group_size": 64, "symmetric": False}}],
    "int4-g64+int8-tied-head": [{"rtn": {"bits": 4, "group_size": 64, "symmetric": False}},
                                {"rtn": {"bits": 8, "targets": ["lm_head"], "ignore": []}}],
    "int4-g64+int4-tied-head": [{"rtn": {"bits": 4, "group_size": 64, "symmetric": False, "ignore": []}}],
    "int4-g128": [{"rtn": {"bits": 4, "group_size": 128, "symmetric": True}}],
    "int4-per-channel": [{"rtn": {"bits": 4, "group_size": -1, "symmetric": False}}],
    "sparse-2:4": [{"magnitude": {"pattern": "2:4"}}],
    "pruned": [{"prune_structured": {"ffn_sparsity": 0.25, "importance": "magnitude"}}],
}


def compressed(name: str, tokenizer, text_file) -> torch.nn.Module:
    # K = 128 / 256: every group size fits; vocab 336 = 5 blocks of 64 rows and one of 16 (an int4 head's CPU layout)
    model = make_model(hidden=128, layers=1, heads=4, kv_heads=2, ffn=256, vocab=336)
    if FORMATS[name]:
        recipe = {"passes": FORMATS[name], "calibration": {"source": str(text_file), "samples": 2, "seq_len": 32}}
        model = compress.run(recipe, model, tokenizer=tokenizer, progress=False).model
    return model


@pytest.mark.parametrize("name", FORMATS)
def test_decode_step_is_one_graph_without_recompiles(name, tokenizer, text_file, monkeypatch):
    # the eager prefill's own compiled dequantize (int4 where aten's kernel cannot run: AVX2) is not the step's graph
    monkeypatch.setattr(dispatch, "COMPILE_DEQUANT", False)
    model = compressed(name, tokenizer, text_file)
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, PackedLinear)}
    assert bool(kinds) == (name not in ("dense", "pruned"))
    ids = torch.randint(0, 300, (1, 8), generator=torch.Generator().manual_seed(0))
    eager = StaticDecoder(model, 8 + STEPS, "eager").generate(ids, STEPS)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        checked = StaticDecoder(model, 8 + STEPS, "compile")
        checked.skip_guards = False  # every step's guards run, so a recompile would be seen
        compiled = checked.generate(ids, STEPS)
    stats = torch._dynamo.utils.counters["stats"]
    assert stats["unique_graphs"] == 1, dict(stats)
    assert torch.equal(compiled, eager)
    fast = StaticDecoder(model, 8 + STEPS, "compile").generate(ids, STEPS)  # guards skipped after the first step
    assert torch.equal(fast, eager)


@pytest.mark.parametrize("name", ["dense", "int4-g64+int8-tied-head"])
def test_max_mode_is_one_graph_with_eagers_tokens(name, tokenizer, text_file, monkeypatch):
    """`--decode-mode max` (max-autotune, freezing on a CPU: the fastest dense rows) compiles the same step whole."""
    monkeypatch.setattr(dispatch, "COMPILE_DEQUANT", False)  # the prefill's, as above
    model = compressed(name, tokenizer, text_file)
    ids = torch.randint(0, 300, (1, 8), generator=torch.Generator().manual_seed(0))
    eager = StaticDecoder(model, 8 + 16, "eager").generate(ids, 16)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dec = StaticDecoder(model, 8 + 16, "max")
    assert torch.equal(dec.generate(ids, 16), eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_max_mode_freezes_on_cpu_only_while_building():
    import torch._inductor.config as inductor

    from compress.eval.fast_decode import building

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with building("max", cpu):
        assert inductor.freezing
    for mode, device in (("compile", cpu), ("", cpu), ("max", cuda)):
        with building(mode, device):
            assert not inductor.freezing
