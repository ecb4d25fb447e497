"""Shared fixtures: tiny random Llama models with a real (locally trained) tokenizer; no network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "A language model predicts the next token. "
        "Compression makes models smaller and faster. Perplexity measures how surprised a model is. ") * 40


def make_tokenizer():
    """A byte-level BPE tokenizer trained in milliseconds on a fixed text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def make_model(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 160,
               vocab: int = 300, tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=512,
                      tie_word_embeddings=tied, dtype="float32")
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture()
def tiny_model():
    return make_model()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny Llama + tokenizer: a local Hugging Face model directory."""
    d = tmp_path_factory.mktemp("tiny-llama")
    make_model().save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "text.txt"
    p.write_text(TEXT)
    return p


@pytest.fixture()
def recipe_file(tmp_path):
    """Write a recipe text to a file and return its path."""

    def write(text: str, name: str = "r.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write
