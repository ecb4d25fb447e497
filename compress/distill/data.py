"""Training windows for distillation: any text source (never the evaluation split) or text sampled
from the teacher; a held-out tail for perplexity during training; a deterministic batch per step."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from compress.data import WIKITEXT, data_dir, read_text, source_path, tokenize
from compress.errors import CompressError

TEACHER = "teacher"
EVAL_SPLIT = "wikitext2-test"


def eval_split_reason(source: str) -> str | None:
    """Why `source` is the evaluation split (training on it would make every reported perplexity a lie), or None."""
    if source == EVAL_SPLIT:
        return f"{source!r} is the evaluation split"
    if source.startswith("hf:"):
        parts = source[3:].split(":")
        if "wikitext" in parts[0].lower() and len(parts) > 2 and parts[2].lower().startswith("test"):
            return f"{source!r} is the evaluation split"
        return None
    test_file = data_dir() / WIKITEXT[EVAL_SPLIT]
    p = Path(source).expanduser()
    if p.is_file() and test_file.is_file() and p.resolve() == test_file.resolve():
        return f"{source!r} is the WikiText-2 test file (the evaluation split)"
    return None


def text_windows(source: str, tokenizer: Any, seq_len: int) -> torch.Tensor:
    """The source's tokens cut into non-overlapping windows [n, seq_len]."""
    source_path(source)
    tokens = tokenize(tokenizer, read_text(source))
    n = tokens.numel() // seq_len
    if n < 2:
        raise CompressError(f"data {source!r}: {tokens.numel()} tokens, fewer than two windows of {seq_len}")
    return tokens[: n * seq_len].view(n, seq_len)


@torch.no_grad()
def teacher_windows(teacher: nn.Module, tokenizer: Any, samples: int, seq_len: int, device: torch.device,
                    seed: int, batch: int = 16, progress: bool = True) -> torch.Tensor:
    """`samples` sequences of `seq_len` tokens sampled from the teacher (T=1, full vocabulary),
    each starting from the BOS token: distillation data with no dataset at all."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise CompressError("data 'teacher': the tokenizer has neither a BOS nor an EOS token to start generation from")
    torch.manual_seed(seed)
    was_training = teacher.training
    teacher.eval()
    rows = []
    for i in tqdm(range(0, samples, batch), desc="generating distillation data", disable=not progress, leave=False):
        b = min(batch, samples - i)
        ids = torch.full((b, 1), start, dtype=torch.long, device=device)
        out = teacher.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                               top_p=1.0, max_new_tokens=seq_len - 1, min_new_tokens=seq_len - 1,
                               pad_token_id=start)
        rows.append(out[:, :seq_len].cpu())
    teacher.train(was_training)
    return torch.cat(rows)


def split_holdout(windows: torch.Tensor, eval_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) windows: the last `eval_windows` are never trained on."""
    if eval_windows >= windows.shape[0]:
        raise CompressError(f"data has {windows.shape[0]} windows; eval_windows={eval_windows} would leave none to train on")
    cut = windows.shape[0] - eval_windows
    return windows[:cut], windows[cut:]


def step_batch(train: torch.Tensor, step: int, micro: int, batch_size: int, seed: int, rank: int = 0) -> torch.Tensor:
    """The windows of micro-batch `micro` of optimizer step `step` on process `rank`.

    A pure function of its arguments, so a resumed run sees exactly the batches the interrupted
    one would have, and each data-parallel process draws its own.
    """
    g = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + micro) * 101 + rank)
    idx = torch.randint(0, train.shape[0], (batch_size,), generator=g)
    return train[idx]
