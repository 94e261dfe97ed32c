"""A run's checkpoints: the resumable ``last.pt`` and the val-selected ``best.pt`` (§4.3).

``last.pt`` is a plain dict, written after every epoch: ``run_id``, ``epoch`` (0-based, the
last one trained), ``model``, ``optimizer``, ``scheduler``, ``rng`` (:func:`rng_state`),
``history``, ``best``, ``wall_time_s`` (the run's clock when it was written, see
:mod:`cfdan.training.loop`; files written before that clock hold the time since their epoch
loop began, seconds less), ``resumed_at``, ``config``, ``plan_epochs`` and ``snapshots``.
It holds tensors and plain types only, so it loads with ``weights_only=True``
(:func:`load_training_state`). ``best.pt`` is self-describing, for :mod:`cfdan.predict`
(:func:`inference_checkpoint`). Writes are atomic (:mod:`cfdan.atomic`).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdan import atomic, paths, safe_load
from cfdan.training import distributed
from cfdan.training.config import Config
from cfdan.training.recipe import model_config_dict

__all__ = [
    "LEGACY_GLOBALS", "Progress", "inference_checkpoint", "last_checkpoint",
    "load_training_state", "relative_checkpoint", "resumable", "rng_state",
    "run_checkpoint_dir", "save", "set_rng_state",
]


# --------------------------------------------------------------------------- random state
def rng_state(device: torch.device) -> dict[str, Any]:
    """The global random states (python, numpy, torch, this CUDA device), as tensors and plain
    types only, so that a checkpoint holding them loads with ``weights_only=True``."""
    npst = np.random.get_state(legacy=False)
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
                  "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]),
                  "gauss": float(npst["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved (or a legacy checkpoint's NumPy state tuple)."""
    random.setstate(st["python"])
    npst = st["numpy"]
    if isinstance(npst, dict):
        npst = {"bit_generator": "MT19937",
                "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]}
    np.random.set_state(npst)
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


# --------------------------------------------------------------------------- files
LEGACY_GLOBALS = (np.dtype, np.ndarray, np._core.multiarray._reconstruct,
                  np.dtypes.UInt32DType, np.dtypes.Float16DType)
"""What a ``last.pt`` written before safe loading holds beyond tensors and plain types (NumPy
arrays: the uint32 RNG key and float16 feature snapshots); allowed only when such a file is
resumed."""


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A ``last.pt`` read by :func:`cfdan.safe_load.load`, NumPy arrays of files written before
    safe loading allowed (:data:`LEGACY_GLOBALS`), nothing else;
    :class:`cfdan.safe_load.UnsafeCheckpointError` when refused."""
    ck = safe_load.load(path, device, allow=LEGACY_GLOBALS)
    if not isinstance(ck, dict):
        raise safe_load.UnsafeCheckpointError(f"{path}: not a training checkpoint")
    return ck


def run_checkpoint_dir(cfg: Config, root: str | os.PathLike | None = None) -> Path:
    """``<checkpoint root>/<experiment>/<run_id>``: the run's ``last.pt`` and ``best.pt``."""
    return paths.checkpoint_dir(root) / cfg.experiment / cfg.run_id


def relative_checkpoint(path: Path, root: str | os.PathLike | None) -> str:
    """The checkpoint's path relative to the checkpoint folder (no machine paths in records)."""
    try:
        return str(path.relative_to(paths.checkpoint_dir(root)))
    except ValueError:
        return path.name


def save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def inference_checkpoint(
    model: torch.nn.Module, cfg: Config, class_names: list[str], in_channels: int
) -> dict[str, Any]:
    """A self-describing checkpoint for :mod:`cfdan.predict` (weights + configs + class names)."""
    return {
        "kind": "cfdan-inference",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model_config_dict(model),
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        "image_size": cfg.data.image_size,
        "in_channels": int(in_channels),
        "dataset": cfg.data.dataset,
        "run_id": cfg.run_id,
    }


# --------------------------------------------------------------------------- resume
def _no_best() -> dict[str, Any]:
    return {"epoch": -1, "val_accuracy": -1.0, "val_loss": math.inf}


@dataclass(frozen=True)
class Progress:
    """What a resume restores beyond the model, optimiser, scheduler and random states: the
    epoch to start at and what the epochs so far produced. Its lists and dicts grow in place;
    no field is reassigned."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)
    """The selected epoch (1-based) and its val accuracy and loss (§4.3)."""
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    """Epoch -> float16 pooled test features of the fixed subsample (``eval.feature_snapshots``)."""
    resumed_at: list[int] = field(default_factory=list)
    prior_s: float = 0.0
    """The run's clock when ``last.pt`` was written (its ``wall_time_s``)."""

    @classmethod
    def of(cls, ck: dict[str, Any]) -> Progress:
        """The progress saved in ``last.pt``."""
        start = ck["epoch"] + 1
        snapshots = {int(e): np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
                     for e, v in ck.get("snapshots", {}).items()}
        return cls(start_epoch=start, history=ck["history"], best=ck["best"],
                   snapshots=snapshots, resumed_at=ck.get("resumed_at", []) + [start],
                   prior_s=ck["wall_time_s"])

    def add_epoch(self, row: dict[str, Any]) -> bool:
        """Append the epoch's history row; whether it is the best so far (val accuracy, ties
        broken by lower val loss), ``best`` updated if so."""
        self.history.append(row)
        best = self.best
        improved = (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"],
                                                              -best["val_loss"])
        if improved:
            best.update(epoch=row["epoch"], val_accuracy=row["val_accuracy"],
                        val_loss=row["val_loss"])
        return improved


def last_checkpoint(
    cfg: Config, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device,
    progress: Progress, plan_epochs: int, wall_time_s: float,
) -> dict[str, Any]:
    """``last.pt``'s plain dict after ``epoch`` (keys in the module docstring)."""
    return {
        "run_id": cfg.run_id, "epoch": epoch, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": rng_state(device), "history": progress.history, "best": progress.best,
        "wall_time_s": wall_time_s, "resumed_at": progress.resumed_at, "config": cfg.to_dict(),
        "plan_epochs": plan_epochs,
        "snapshots": {e: torch.from_numpy(v) for e, v in progress.snapshots.items()},
    }


def resumable(ckdir: Path, run_id: str, device: torch.device, *, fresh: bool,
              info: distributed.DistInfo, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The run's ``last.pt`` to resume from, or ``None`` to start from scratch.

    Removes temporary files of a process killed while saving; ``fresh`` deletes an earlier
    attempt's checkpoints, as does a ``last.pt`` the safe loader refuses (said in ``log``).
    Raises :class:`RuntimeError` for a ``last.pt`` of another run.
    """
    last, best = ckdir / "last.pt", ckdir / "best.pt"
    if info.is_main and ckdir.is_dir():
        for tmp in ckdir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if fresh:
        if info.is_main:
            for p in (last, best):
                p.unlink(missing_ok=True)
        distributed.barrier(info)
        return None
    if not last.is_file():
        return None
    try:
        ck = load_training_state(last, device)
    except safe_load.UnsafeCheckpointError as exc:
        log(f"{exc}; starting this run from scratch")
        if info.is_main:
            last.unlink(missing_ok=True)
            best.unlink(missing_ok=True)
        distributed.barrier(info)
        return None
    if ck.get("run_id") != run_id:
        raise RuntimeError(f"{last}: checkpoint of run {ck.get('run_id')}, not {run_id}")
    return ck
