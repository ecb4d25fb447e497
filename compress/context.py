"""What the driver hands each pass: tokenizer, device, calibration data, teacher, a place for stats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from compress.data import calibration_windows, read_text, tokenize
from compress.recipe import CalibrationConfig


@dataclass
class Context:
    """Per-run state shared by passes. Calibration windows and the teacher are built lazily, once."""

    tokenizer: Any
    device: torch.device
    calibration_cfg: CalibrationConfig = field(default_factory=CalibrationConfig)
    teacher_fn: Callable[[], nn.Module] | None = None
    where: str = "<recipe>"
    stats: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    _calib: torch.Tensor | None = None
    _teacher: nn.Module | None = None

    def calibration(self) -> torch.Tensor:
        """Calibration token windows [samples, seq_len] (CPU; passes move what they need)."""
        if self._calib is None:
            c = self.calibration_cfg
            tokens = tokenize(self.tokenizer, read_text(c.source))
            self._calib = calibration_windows(tokens, c.samples, c.seq_len, c.seed)
        return self._calib

    def teacher(self) -> nn.Module:
        """The model as it was before the recipe's passes (or the one the recipe names)."""
        if self._teacher is None:
            if self.teacher_fn is None:
                raise RuntimeError("this run has no teacher")
            self._teacher = self.teacher_fn()
        return self._teacher
