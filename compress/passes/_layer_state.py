"""Resume state for long layer-by-layer passes: one file per finished decoder layer.

A layer's file holds the tensors of its new modules; a resumed run loads the finished layers instead
of recomputing them (the driver still runs them forward, which is cheap, to rebuild the next layer's
inputs), so it ends exactly where an uninterrupted run would. A fingerprint of the options, the model's
modules and the calibration tokens must match, or the state is refused in one line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from compress.errors import CompressError

FINGERPRINT = "fingerprint.json"


def tokens_digest(ids: torch.Tensor) -> str:
    """A short hash of the calibration tokens (another text or seed is another run)."""
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


class LayerState:
    """Per-layer files under `folder` (None: no state kept); `resume` reads the ones that exist."""

    def __init__(self, folder: str | None, resume: bool, fingerprint: dict[str, Any], where: str) -> None:
        self.folder, self.resume, self.where = (Path(folder) if folder else None), resume, where
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        f = self.folder / FINGERPRINT
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))  # tuples as JSON reads them back
        if resume and f.is_file():
            try:
                saved = json.loads(f.read_text())
            except (OSError, ValueError):
                raise CompressError(f"{where}: resume state {f} is unreadable; delete {self.folder} to start afresh") from None
            if not isinstance(saved, dict):
                saved = {"fingerprint": saved}
            if saved != fingerprint:
                changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
                raise CompressError(f"{where}: resume state {self.folder} was written by a run with other "
                                    f"{', '.join(changed)}; resume with the same options, or delete it to start afresh")
        else:
            for old in self.folder.glob("layer-*.pt"):  # a fresh run: nothing of an older one may be resumed later
                old.unlink()
        _write_atomic(f, json.dumps(fingerprint, sort_keys=True).encode())

    def _file(self, index: int) -> Path:
        assert self.folder is not None
        return self.folder / f"layer-{index:04d}.pt"

    def load(self, index: int) -> dict[str, torch.Tensor] | None:
        """The saved tensors of layer `index`, or None when it has to be computed."""
        if self.folder is None or not self.resume or not self._file(index).is_file():
            return None
        try:
            return torch.load(self._file(index), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, damaged, not ours: one line, never a pickle traceback
            raise CompressError(f"{self.where}: resume state {self._file(index)} is unreadable "
                                f"({type(e).__name__}); delete it to recompute that layer") from None

    def save(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        if self.folder is not None:
            tmp = self._file(index).with_suffix(".tmp")
            torch.save({k: v.detach().cpu() for k, v in tensors.items()}, tmp)
            os.replace(tmp, self._file(index))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
