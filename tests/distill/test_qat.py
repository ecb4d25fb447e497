"""QAT modules: start exactly at the packed model, and pack back to exactly what training saw."""
from __future__ import annotations

import torch
import torch.nn as nn

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.distill.qat import FakeQuantLinear, pack_after_training, unpack_for_training
from compress.formats.quant_linear import QuantLinear


def packed(spec: QuantSpec, n: int = 12, k: int = 40) -> QuantLinear:
    torch.manual_seed(0)
    lin = nn.Linear(k, n, bias=True)
    codes, s, z = rtn_quantize(lin.weight, spec)
    return QuantLinear.from_codes(codes, s, z, spec, k, lin.bias, torch.float32)


def test_starts_at_the_packed_weights_and_packs_back_what_it_computes():
    for spec in (QuantSpec(4, 16, False), QuantSpec(4, -1, True), QuantSpec(8, -1, True)):
        q = packed(spec)
        x = torch.randn(3, 40)
        fq = FakeQuantLinear(q)
        assert torch.allclose(fq(x), q(x), atol=1e-5)
        with torch.no_grad():
            fq.weight.add_(0.3 * torch.randn_like(fq.weight))  # as if trained
        back = fq.to_quant_linear()
        assert back.qweight.dtype == q.qweight.dtype and back.qweight.shape == q.qweight.shape
        assert torch.equal(back.scales, q.scales)
        assert not torch.equal(back.qweight, q.qweight)
        ref = x @ back.dense_weight().T + q.bias  # dense reference math on the packed result
        assert torch.allclose(fq(x), ref, atol=1e-5)


def test_swap_in_and_out_of_a_model():
    model = nn.Sequential(nn.Linear(40, 12), nn.ReLU())
    model[0] = packed(QuantSpec(4, 16, False))
    swapped = unpack_for_training(model, {"0": model[0]})
    assert isinstance(model[0], FakeQuantLinear) and list(swapped) == ["0"]
    assert [n for n, _ in model.named_parameters()] == ["0.weight"]
    pack_after_training(model, ["0"])
    assert isinstance(model[0], QuantLinear) and not list(model.parameters())


def test_latent_weights_sit_in_the_same_rounding_bins():
    spec = QuantSpec(4, 16, False)
    torch.manual_seed(0)
    lin = nn.Linear(40, 12)
    codes, s, z = rtn_quantize(lin.weight, spec)
    q = QuantLinear.from_codes(codes, s, z, spec, 40, lin.bias, torch.float32)
    fq = FakeQuantLinear(q, latent=lin.weight)
    assert torch.allclose(fq.weight, lin.weight)  # RTN codes are round(w/s + z): the original lies in its bin
    assert torch.equal(fq.to_quant_linear().qweight, q.qweight)  # so the codes are unchanged
    other = FakeQuantLinear(q, latent=torch.randn(12, 40))  # not this layer's weight: ignored
    assert torch.equal(other.weight, q.dense_weight())


def test_a_rescaled_latent_is_not_taken_for_the_weight():
    """After AWQ the packed weight is W·diag(s) with s ≈ 0.5–2 per input channel; the teacher's W is then no
    latent for it (its norm is close, its bins are not)."""
    spec = QuantSpec(4, 16, False)
    torch.manual_seed(0)
    lin = nn.Linear(40, 12)
    scaled = lin.weight.detach() * torch.empty(40).uniform_(0.5, 2.0)
    q = QuantLinear.from_codes(*rtn_quantize(scaled, spec), spec, 40, lin.bias, torch.float32)
    w = lin.weight.detach()
    assert float((w - q.dense_weight()).norm()) < 0.5 * float(q.dense_weight().norm())  # the old check passed it
    assert torch.equal(FakeQuantLinear(q, latent=lin.weight).weight, q.dense_weight())
    assert not torch.equal(FakeQuantLinear(q, latent=scaled).weight, q.dense_weight())  # its own weight still is
