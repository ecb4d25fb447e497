from __future__ import annotations

import torch
import torch.nn as nn

from compress.layerwise import capture_inputs, decoder_layers, run_layerwise, watch_inputs


class Recorder:
    """Checks the driver: every layer sees every window, and edits feed forward to later layers."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.order: list[str] = []

    def prepare(self, index: int, layer: nn.Module) -> None:
        self.order.append(f"prepare{index}")
        self._ctx = watch_inputs({"up": layer.mlp.up_proj}, lambda n, x: self.seen.__setitem__(index, self.seen.get(index, 0) + x.shape[0]))
        self._ctx.__enter__()

    def finish(self, index: int, layer: nn.Module) -> None:
        self._ctx.__exit__(None, None, None)
        self.order.append(f"finish{index}")
        layer.mlp.down_proj.weight.zero_()  # a visible edit: the MLP branch now adds nothing


def test_layer_inputs_match_the_full_model(tiny_model):
    ids = torch.randint(0, 300, (3, 16))
    inputs, kwargs = capture_inputs(tiny_model, ids, torch.device("cpu"))
    assert len(inputs) == 3 and inputs[0].shape == (1, 16, 64)
    h = inputs[0]
    for layer in decoder_layers(tiny_model):
        out = layer(h, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
    with torch.no_grad():
        full = tiny_model(ids[:1], output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(tiny_model.model.norm(h), full, atol=1e-5)


def test_driver_visits_each_layer_with_all_tokens(tiny_model):
    rec = Recorder()
    ids = torch.randint(0, 300, (4, 8))
    run_layerwise(tiny_model, ids, rec, torch.device("cpu"), progress=False)
    assert rec.order == ["prepare0", "finish0", "prepare1", "finish1"]
    assert rec.seen == {0: 32, 1: 32}
    assert all(float(l.mlp.down_proj.weight.abs().sum()) == 0 for l in decoder_layers(tiny_model))
