"""The splits a run trains and evaluates on (§4.1), as :class:`FaceTensors`.

:func:`load_splits` reads the configured dataset through :func:`cfdan.data.load_dataset` and,
when ``data.max_train`` / ``data.max_eval`` are set, keeps a seeded random subset; the subset's
fingerprint then reads ``"<fingerprint>[subset N]"`` so that a record never passes a subset off
as the full split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cfdan import paths
from cfdan.data.types import FaceTensors

__all__ = ["DataRootError", "data_root", "load_splits", "subsample"]


class DataRootError(FileNotFoundError):
    """The configured dataset root does not exist."""


def data_root(cfg: Any) -> str:
    """The dataset root: ``data.root``, else the default location for FERPlus."""
    if cfg.data.root:
        return cfg.data.root
    if cfg.data.dataset == "ferplus":
        return str(paths.ferplus_root())
    if cfg.data.dataset == "synthetic":
        return ""
    raise DataRootError(f"data.root is not set for dataset {cfg.data.dataset!r}")


def subsample(split: FaceTensors, limit: int) -> FaceTensors:
    """A seeded random subset of at most ``limit`` images, in the split's order.

    The seed depends only on the split's name, so every run (and every commit) draws the same
    subset of the same data.
    """
    if not limit or len(split) <= limit:
        return split
    g = torch.Generator().manual_seed(1234 + len(split.split))
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    sub = split.subset(idx)
    sub.fingerprint = f"{split.fingerprint}[subset {len(idx)}]"
    return sub


def load_splits(
    cfg: Any, splits: Sequence[str] = ("train", "val", "test")
) -> dict[str, FaceTensors]:
    """Load ``splits`` of ``cfg.data`` (subsampled if ``data.max_*``); labels are int64."""
    from cfdan.data import load_dataset

    root = data_root(cfg)
    if cfg.data.dataset == "synthetic":
        root = ""
    elif not Path(root).exists():
        raise DataRootError(
            f"data root {root} for dataset {cfg.data.dataset!r} does not exist "
            f"(set data.root=PATH, or CFDAN_FERPLUS_ROOT for FERPlus)"
        )
    cache = paths.cache_dir(cfg.data.cache_dir or None)
    out: dict[str, FaceTensors] = {}
    for split in splits:
        ft = load_dataset(
            cfg.data.dataset, root, split, image_size=cfg.data.image_size,
            label_mode=cfg.data.label_mode, seed=0, cache_dir=cache, **cfg.data.options,
        )
        ft = dataclasses.replace(
            ft, labels=ft.labels.long(), class_names=list(ft.class_names),
            fingerprint=str(ft.fingerprint), name=ft.name or cfg.data.dataset, split=split,
        )
        limit = cfg.data.max_train if split == "train" else cfg.data.max_eval
        out[split] = subsample(ft, limit)
    return out
