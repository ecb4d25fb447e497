"""The `rtn` pass with MSE clip search: packed, and closer to the dense model than min/max ranges."""
from __future__ import annotations

import compress
from compress.algorithms.grid import dequantize
from compress.formats.quant_linear import QuantLinear
from tests.conftest import make_model


def weight_error(model, ref) -> float:
    err = 0.0
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            w = ref.get_submodule(name).weight.detach()
            deq = dequantize(m.codes(), m.scales, m.zero_points(), m.qspec)[:, : m.in_features]
            err += float((deq - w).pow(2).sum())
    return err


def test_clip_search_lowers_weight_error(tokenizer):
    ref = make_model()
    runs = {c: compress.run({"passes": [{"rtn": {"bits": 4, "group_size": -1, "clip_search": c}}]}, make_model(),
                            tokenizer=tokenizer, device="cpu", progress=False).model for c in (False, True)}
    assert weight_error(runs[True], ref) < 0.95 * weight_error(runs[False], ref)
    assert isinstance(runs[True].model.layers[0].mlp.up_proj, QuantLinear)


def test_int3_is_packed_on_disk_and_loads_back(tokenizer, tmp_path):
    """3 bits: 3/8 byte per weight in the checkpoint (vs 1/2 for int4), the same logits after loading, and an
    error against the dense model between int4's and what zeroed weights would give."""
    import torch

    ref = make_model()
    res = {b: compress.run({"passes": [{"rtn": {"bits": b, "group_size": 32, "symmetric": False}}]}, make_model(),
                           tokenizer=tokenizer, device="cpu", progress=False, out=tmp_path / f"int{b}") for b in (3, 4)}
    q3 = {n: m for n, m in res[3].model.named_modules() if isinstance(m, QuantLinear)}
    assert q3 and all(m.qweight.numel() * 8 == m.out_features * m.qspec.padded_in(m.in_features) * 3 for m in q3.values())
    loaded = compress.load(tmp_path / "int3", device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, res[3].model(ids).logits)
    e3, e4 = weight_error(res[3].model, ref), weight_error(res[4].model, ref)
    zero = sum(float(ref.get_submodule(n).weight.pow(2).sum()) for n in q3)
    assert e4 < e3 < 0.2 * zero  # coarser than int4, far from nothing
