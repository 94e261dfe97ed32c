"""Figures for the data chapter: image grids of datasets (Fig. 4) and augmented batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cfdan.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from cfdan.data.types import FaceTensors


def per_class_indices(ds: FaceTensors, per_class: int) -> list[list[int]]:
    """The first ``per_class`` image indices of every class, in class order."""
    labels = ds.labels.numpy()
    return [np.flatnonzero(labels == c)[:per_class].tolist() for c in range(ds.num_classes)]


def to_display(x: torch.Tensor) -> np.ndarray:
    """uint8 (C,H,W) or normalised float (3,H,W) -> (H,W) or (H,W,3) floats in [0, 1]."""
    if x.dtype == torch.uint8:
        img = x.float() / 255
    else:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        img = (x.detach().cpu().float() * std + mean).clamp(0, 1)
    img = img.cpu().numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def class_grid(ds: FaceTensors, per_class: int = 6, title: str | None = None,
               note: str | None = None):
    """A figure with one row per class and ``per_class`` examples each (and ``note``, a line
    under the grid)."""
    import textwrap

    import matplotlib.pyplot as plt

    rows = per_class_indices(ds, per_class)
    foot = 0.45 if note else 0.0
    fig, axes = plt.subplots(len(rows), per_class,
                             figsize=(per_class * 0.9, len(rows) * 0.95 + foot), squeeze=False)
    for r, idx in enumerate(rows):
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(idx):
                ax.imshow(to_display(ds.images[idx[c]]), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(ds.class_names[r], rotation=0, ha="right", va="center",
                              fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    top = 1 - (0.25 / fig.get_figheight() if title else 0.0)
    fig.tight_layout(pad=0.2, rect=(0, foot / fig.get_figheight(), 1, top))
    if note:
        fig.text(0.01, 0.005, textwrap.fill(note, int(per_class * 14)), ha="left",
                 va="bottom", fontsize=6.5)
    return fig


def fig4_faces(root: str | Path | None = None, synthetic_seed: int = 0,
               show_ferplus: bool = True) -> tuple[FaceTensors, str]:
    """Fig. 4's faces: the FERPlus test split (majority vote, 48 px) read from ``root``
    (default :func:`cfdan.paths.ferplus_root`) at call time, or, when FERPlus is not there,
    the synthetic test set (:mod:`cfdan.data.synthetic`). Returns the split and a note that
    says which, and why. ``show_ferplus=False`` always takes the synthetic set (the book's
    committed outputs: FER2013 images are not redistributed with it)."""
    from cfdan import paths
    from cfdan.data import DataError, load_dataset, synthetic

    where = paths.ferplus_root(root)
    if not show_ferplus:
        why = "FER2013 faces are not redistributed with this book; rerun the chapter with `-p show_ferplus_images True` (papermill) to see them on your machine"
    elif where.exists():
        try:
            return (load_dataset("ferplus", where, "test", image_size=48),
                    "FERPlus test faces (majority vote), read from the dataset when this "
                    "page was built.")
        except DataError as exc:
            why = f"FERPlus could not be read ({exc})"
    else:
        why = f"FERPlus is not at {where}"
    return (synthetic.load("test", seed=synthetic_seed),
            f"Synthetic faces (cfdan.data.synthetic, seed {synthetic_seed}) stand in: {why}.")


def fig4(root: str | Path | None = None, per_class: int = 8, synthetic_seed: int = 0,
         show_ferplus: bool = True):
    """Fig. 4 (samples per class): :func:`fig4_faces` in a :func:`class_grid`, one row per
    class, with the note under it. The layout is the same with either source."""
    faces, note = fig4_faces(root, synthetic_seed, show_ferplus)
    title = ("FERPlus test split, per class" if faces.name == "ferplus"
             else "synthetic set (FERPlus not shown), per class")
    return class_grid(faces, per_class, title=title, note=note)


def batch_rows(rows: dict[str, torch.Tensor], ncols: int = 8):
    """A figure with one row per named batch (uint8 or normalised), ``ncols`` images each."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * 1.0, len(rows) * 1.1),
                             squeeze=False)
    for r, (name, batch) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(batch):
                ax.imshow(to_display(batch[c]), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


def alignment_figure(image, result: dict, size: int):
    """The picture with its detected landmarks next to the aligned crop and the template."""
    import matplotlib.pyplot as plt

    from cfdan.data.align import template

    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 3))
    a.imshow(image)
    if result["landmarks"] is not None:
        a.scatter(result["landmarks"][:, 0], result["landmarks"][:, 1], s=12, c="red")
    a.set_title("MTCNN landmarks", fontsize=9)
    b.imshow(result["aligned"])
    t = template(size)
    b.scatter(t[:, 0], t[:, 1], s=12, c="cyan", marker="x")
    b.set_title(f"aligned {size}x{size} (x = template)", fontsize=9)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
