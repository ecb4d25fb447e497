"""Layer maps between a depth-pruned student and its teacher; capturing layer outputs."""
from __future__ import annotations

import copy

import torch

from compress.distill.layers import DistillStudent, auto_layer_map, capture_layer_outputs, proportional_layer_map
from conftest import make_model


def drop_layers(model, drop: list[int]):
    """A depth-pruned copy: layers deleted, config and attention layer indices fixed."""
    m = copy.deepcopy(model)
    for i in sorted(drop, reverse=True):
        del m.model.layers[i]
    m.config.num_hidden_layers = len(m.model.layers)
    for i, layer in enumerate(m.model.layers):
        layer.self_attn.layer_idx = i
    return m


def test_proportional_map_by_hand():
    assert proportional_layer_map(4, 8) == {0: 1, 1: 3, 2: 5, 3: 7}
    assert proportional_layer_map(3, 3) == {0: 0, 1: 1, 2: 2}


def test_auto_map_finds_the_kept_layers():
    teacher = make_model(layers=6)
    with torch.no_grad():
        for n, p in teacher.named_parameters():
            if "layernorm" in n:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    student = drop_layers(teacher, [1, 2, 4])
    assert auto_layer_map(student, teacher) == {0: 0, 1: 3, 2: 5}


def test_auto_map_falls_back_to_proportional_when_norms_are_identical():
    teacher = make_model(layers=4)  # fresh norms are all ones: nothing to match on
    assert auto_layer_map(drop_layers(teacher, [0, 1]), teacher) == {0: 1, 1: 3}


def test_captured_outputs_equal_hidden_states_and_projection_shape():
    model = make_model(layers=3)
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True).hidden_states  # [embeddings, layer 0 out, layer 1 out, ...]
        with capture_layer_outputs(model, [0, 1]) as seen:
            model(ids)
    assert torch.allclose(seen[0], ref[1]) and torch.allclose(seen[1], ref[2])
    wrapped = DistillStudent(model, {1: 2}, student_width=64, teacher_width=96)
    logits, hidden = wrapped(ids)
    assert logits.shape == (2, 10, 300) and hidden[1].shape == (2, 10, 96)
