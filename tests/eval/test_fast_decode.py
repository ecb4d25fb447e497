"""Static-cache greedy decoding must produce exactly what HF `generate` (dynamic cache) produces."""
from __future__ import annotations

import pytest
import torch

from compress.errors import CompressError
from compress.eval.fast_decode import StaticDecoder, generate_fast, resolve_mode


def hf_greedy(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)


def test_matches_hf_generate_batch2(tiny_model):
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(generate_fast(tiny_model, ids, 12), hf_greedy(tiny_model, ids, 12))


def test_repeated_decode_rewinds_the_cache(tiny_model):
    """Timed runs decode the same steps again; without a rewind the cache would overflow or drift."""
    ids = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(2))
    dec = StaticDecoder(tiny_model, 9 + 6 + 1)
    first = dec.prefill(ids)
    runs = [dec.decode(first, 9, 6) for _ in range(3)]
    ref = hf_greedy(tiny_model, ids, 7)[:, 10:]
    assert all(torch.equal(r, ref) for r in runs)


def test_modes_and_limits():
    cpu = torch.device("cpu")
    assert resolve_mode("compile", cpu) == "compile" and resolve_mode("eager", cpu) == "eager"
    assert resolve_mode("auto", torch.device("cuda")) == "compile" == resolve_mode("auto", cpu)
    with pytest.raises(CompressError, match="needs CUDA"):
        resolve_mode("graph", cpu)
    with pytest.raises(CompressError, match="allowed: auto, eager, graph, compile"):
        resolve_mode("fast", cpu)


def test_prompt_longer_than_cache_is_a_user_error(tiny_model):
    with pytest.raises(CompressError, match="does not fit"):
        StaticDecoder(tiny_model, 4).prefill(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph / compile modes need a GPU")
@pytest.mark.parametrize("mode", ["graph", "compile"])
def test_cuda_modes_match_eager(tiny_model, mode):
    model = tiny_model.cuda()
    ids = torch.randint(0, 300, (2, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    want = generate_fast(model, ids, 10, "eager")
    dec = StaticDecoder(model, 16, mode)
    assert torch.equal(dec.generate(ids, 10), want)
    assert torch.equal(dec.generate(ids, 10), want)  # replay after a rewind


def test_auto_falls_back_to_eager_when_compiling_fails(tiny_model, monkeypatch):
    """Where Inductor cannot build (no C++ compiler, say) `auto` still decodes, eagerly, with a warning;
    an explicit `compile` raises."""
    from compress.eval import fast_decode

    def broken(fn, device, mode="compile", lean_guards=False):
        def step(*a):
            raise RuntimeError("no C++ compiler found")
        return step

    monkeypatch.setattr(fast_decode, "compile_step", broken)
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(0))
    want = StaticDecoder(tiny_model, 12, "eager").generate(ids, 6)
    dec = StaticDecoder(tiny_model, 12, "auto")
    with pytest.warns(RuntimeWarning, match="compiled decode failed .*no C\\+\\+ compiler"):
        got = dec.generate(ids, 6)
    assert torch.equal(got, want) and dec.mode == "eager"
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        StaticDecoder(tiny_model, 12, "compile").generate(ids, 6)


def test_compiled_step_keeps_no_guards_on_its_decoder(tiny_model, monkeypatch):
    """The lean step drops dynamo's guards on the bound decoder (model, cache) and keeps those on its inputs,
    and decodes what the eager step decodes; with skip_guards off every guard stays."""
    from compress.eval import fast_decode

    seen: list[tuple[list[str], list[bool]]] = []
    lean = fast_decode._lean_guards

    def spy(entries):
        keep = lean(entries)
        seen.append(([e.name for e in entries], list(keep)))
        return keep

    monkeypatch.setattr(fast_decode, "_lean_guards", spy)
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    want = StaticDecoder(tiny_model, 16, "eager").generate(ids, 8)
    torch._dynamo.reset()
    assert torch.equal(StaticDecoder(tiny_model, 16, "compile").generate(ids, 8), want)
    (names, keep), = seen
    dropped = [n for n, k in zip(names, keep) if not k]
    kept = [n for n, k in zip(names, keep) if k]
    assert len(dropped) > 100 and all("bound_decoder" in n for n in dropped)
    assert "tok" in kept and not any("bound_decoder" in n for n in kept)  # the token shape still guards the graph
    seen.clear()
    torch._dynamo.reset()
    full = StaticDecoder(tiny_model, 16, "compile")
    full.skip_guards = False
    assert torch.equal(full.generate(ids, 8), want) and seen == []


def test_two_decoders_of_one_architecture_keep_their_own_models():
    """Decoders of a dense model and of its int8 copy in one process (as `bench --interleave` holds them): each
    compiled step decodes its own model, although neither keeps guards on its model."""
    import compress
    from tests.conftest import make_model

    dense = make_model()
    packed = compress.run({"passes": [{"rtn": {"bits": 8}}]}, make_model(), progress=False).model
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(4))
    want = [StaticDecoder(m, 16, "eager").generate(ids, 8) for m in (dense, packed)]
    got = [StaticDecoder(m, 16, "compile").generate(ids, 8) for m in (dense, packed)]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
