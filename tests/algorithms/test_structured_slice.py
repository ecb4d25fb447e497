"""Slicing keeps the function of what remains: a sliced block equals the dense block with the
removed units' outgoing weights zeroed (an independent dense reference)."""
from __future__ import annotations

import copy

import torch

from compress.algorithms.structured_slice import drop_layers, prune_attention, prune_mlp, slice_linear


def test_slice_linear():
    lin = torch.nn.Linear(3, 4)
    new = slice_linear(lin, rows=torch.tensor([0, 2]), cols=torch.tensor([1, 2]))
    assert torch.equal(new.weight, lin.weight[[0, 2]][:, [1, 2]]) and torch.equal(new.bias, lin.bias[[0, 2]])


def test_mlp_slice_equals_zeroed_dense(tiny_model):
    mlp = tiny_model.model.layers[0].mlp
    ref = copy.deepcopy(mlp)
    keep = torch.arange(0, 160, 2)
    with torch.no_grad():
        dropped = torch.ones(160, dtype=torch.bool)
        dropped[keep] = False
        ref.down_proj.weight[:, dropped] = 0
    prune_mlp(mlp, keep)
    x = torch.randn(2, 5, 64)
    assert mlp.gate_proj.weight.shape == (80, 64) and mlp.down_proj.weight.shape == (64, 80)
    assert torch.allclose(mlp(x), ref(x), atol=1e-6)


def test_attention_slice_equals_zeroed_dense(tiny_model):
    layer = tiny_model.model.layers[0]
    ref = copy.deepcopy(layer)
    hd = layer.self_attn.head_dim  # 16; 4 query heads, 2 KV heads
    with torch.no_grad():  # remove query heads 1 and 3 (one per KV group)
        ref.self_attn.o_proj.weight[:, hd : 2 * hd] = 0
        ref.self_attn.o_proj.weight[:, 3 * hd :] = 0
    prune_attention(layer.self_attn, torch.tensor([0, 2]), torch.tensor([0, 1]))
    assert layer.self_attn.q_proj.out_features == 2 * hd and layer.self_attn.num_key_value_groups == 1
    ids = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        h = tiny_model.model.embed_tokens(ids)
        pos = tiny_model.model.rotary_emb(h, torch.arange(7).unsqueeze(0))
        out = layer(h, position_embeddings=pos)
        want = ref(h, position_embeddings=pos)
    out = out[0] if isinstance(out, tuple) else out
    want = want[0] if isinstance(want, tuple) else want
    assert torch.allclose(out, want, atol=1e-5)


def test_drop_layers_renumbers_cache_slots(tiny_model):
    layers = tiny_model.model.layers
    kept = drop_layers(layers, [0])
    assert len(kept) == 1 and kept[0] is layers[1] and kept[0].self_attn.layer_idx == 0
