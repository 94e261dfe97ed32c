"""Checkpoints are read with ``torch.load(weights_only=True)`` only: a model file never runs code.

Unpickling can call any importable function (a ``__reduce__`` that runs a shell command), so
every checkpoint the package reads goes through :func:`load`, which accepts tensors and plain
Python types, plus exactly the globals a caller names (``allow``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint the safe loader refuses: loading it would call code."""


def load(path: str | os.PathLike, map_location: Any = "cpu", allow: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``, with ``allow`` added to the safe globals for
    this call only; :class:`UnsafeCheckpointError` (naming the file and the globals it would
    call) when refused. Other read errors (not a checkpoint, truncated) pass through."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # the scan itself failed: the refusal stands
            names = []
        raise UnsafeCheckpointError(
            f"{path}: not a plain checkpoint: loading it would call "
            f"{', '.join(names) or 'code'}; refused (only tensors and plain types are read)"
        ) from None
