"""Learning-rate schedule for short recovery runs: linear warmup, then cosine decay, with no step at lr 0.

transformers' `get_cosine_schedule_with_warmup` gives the first optimizer step lr 0 and the last one nearly 0; in a
30-step CPU recovery run that wastes one of the 30 forward/backward passes (~16 s of a 10-minute budget).
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Multiplier of the peak lr for the 0-based optimizer `step`: (step+1)/warmup while warming up, then a cosine
    from 1 that would reach 0 one step after the last."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> LambdaLR:
    """A LambdaLR over `lr_factor` (its state_dict resumes like any LambdaLR's)."""
    return LambdaLR(opt, lambda step: lr_factor(step, warmup, steps))
