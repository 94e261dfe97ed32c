"""Common types of :mod:`cfdan.data`: :class:`FaceTensors`, :class:`DataError` and small helpers."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "val", "test")
LABEL_MODES = ("majority", "probability", "crossentropy")


class DataError(Exception):
    """A dataset on disk is missing, malformed or inconsistent; the message names the file."""


@dataclass
class FaceTensors:
    """One split of a dataset, decoded once into tensors.

    ``images`` is uint8 ``(N, C, H, W)`` at the dataset's native resolution (C = 1 for grey
    FERPlus, 3 for colour); resizing to the model's input size happens in
    :class:`cfdan.data.pipeline.Augment`. ``labels`` is int64 ``(N,)``; ``soft`` (float32
    ``(N, K)``) holds per-image target distributions (FER+ vote modes) or is ``None``.
    ``fingerprint`` identifies the source content (training records store it).
    """

    images: torch.Tensor
    labels: torch.Tensor
    soft: torch.Tensor | None
    class_names: list[str]
    fingerprint: str
    name: str
    split: str
    ids: list[str] | None = None
    """Per-image source names (e.g. ``fer0000000.png``), when known."""
    info: dict = field(default_factory=dict)
    """Free-form provenance (root, label mode, protocol notes)."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        return dict(zip(self.class_names, counts, strict=True))

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> FaceTensors:
        """The images at ``idx`` (a copy of the selected rows)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return FaceTensors(
            images=self.images[idx_t],
            labels=self.labels[idx_t],
            soft=None if self.soft is None else self.soft[idx_t],
            class_names=list(self.class_names),
            fingerprint=self.fingerprint,
            name=self.name,
            split=self.split,
            ids=None if self.ids is None else [self.ids[i] for i in idx_t.tolist()],
            info=dict(self.info),
        )


@contextmanager
def reading_label_file(path: Path) -> Iterator[None]:
    """Turn a failure to read ``path`` as a text label file into a :class:`DataError` naming it.

    Covers an unreadable file (permissions, a folder) and one that is not text (e.g. an image
    saved under the label file's name); errors raised inside the block pass through unchanged.
    """
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: label file is not CSV text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file ({exc.strerror or exc})") from exc


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, class-stratified hold-out of ``fraction`` of the rows.

    Each class contributes ``round(fraction * n_class)`` rows (at least one when the class has
    two or more rows), so a validation split never starves a rare class.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * len(rows)))
        if k == 0 and len(rows) >= 2:
            k = 1
        mask[rng.choice(rows, size=k, replace=False)] = True
    return mask
