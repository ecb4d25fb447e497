"""Distillation data: the evaluation split is refused, held-out windows, deterministic batches, teacher text."""
from __future__ import annotations

import pytest
import torch

from compress.data import WIKITEXT, data_dir
from compress.distill.data import eval_split_reason, split_holdout, step_batch, teacher_windows, text_windows
from compress.errors import CompressError


def test_eval_split_is_recognized_by_name_path_and_hub_spec(tmp_path):
    assert eval_split_reason("wikitext2-test")
    assert eval_split_reason("hf:wikitext:wikitext-2-raw-v1:test")
    test_file = data_dir() / WIKITEXT["wikitext2-test"]
    if test_file.is_file():
        assert eval_split_reason(str(test_file))
    other = tmp_path / "wiki.test.raw"  # same name elsewhere is just a file
    other.write_text("x")
    assert eval_split_reason(str(other)) is None
    assert eval_split_reason("wikitext2-valid") is None
    assert eval_split_reason("hf:wikitext:wikitext-2-raw-v1:train") is None


def test_text_windows_and_holdout(tokenizer, text_file):
    w = text_windows(str(text_file), tokenizer, 32)
    ids = tokenizer(text_file.read_text(), add_special_tokens=False).input_ids
    assert w.shape == (len(ids) // 32, 32)
    assert w[1].tolist() == ids[32:64]
    train, held = split_holdout(w, 3)
    assert torch.equal(held, w[-3:]) and torch.equal(train, w[:-3])
    with pytest.raises(CompressError, match="eval_windows"):
        split_holdout(w, w.shape[0])


def test_step_batch_is_a_pure_function_of_step():
    pool = torch.arange(100).view(50, 2)
    a = step_batch(pool, 7, 0, 4, seed=1)
    assert torch.equal(a, step_batch(pool, 7, 0, 4, seed=1))
    assert not torch.equal(a, step_batch(pool, 8, 0, 4, seed=1))
    assert not torch.equal(a, step_batch(pool, 7, 1, 4, seed=1))
    assert not torch.equal(a, step_batch(pool, 7, 0, 4, seed=1, rank=1))
    assert all(row.tolist() in pool.tolist() for row in a)


def test_teacher_windows_are_sampled_from_the_teacher(tiny_model, tokenizer):
    w = teacher_windows(tiny_model, tokenizer, samples=5, seq_len=12, device=torch.device("cpu"), seed=0, batch=2, progress=False)
    assert w.shape == (5, 12)
    assert (w[:, 0] == tokenizer.eos_token_id).all()  # this tokenizer has no BOS: generation starts at EOS
    assert len({tuple(r) for r in w.tolist()}) == 5   # sampled, not greedy: rows differ
    # each sampled token has non-negligible teacher probability (a random model is near uniform over 300)
    with torch.no_grad():
        probs = tiny_model(w).logits.softmax(-1)[:, :-1].gather(-1, w[:, 1:, None])
    assert probs.min() > 1e-4
