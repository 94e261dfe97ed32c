"""Probes of the data chapter: how hard a set is, and how fast the pipeline and its files are.

* :func:`mean_intensity_accuracy` — a nearest-class-mean classifier on one trivial feature;
* :func:`augment_facts` and :func:`pipeline_throughput` — the augmentation recipe, and its
  images/s per input size;
* :func:`profile_facts` and :func:`training_step_share` — a training profile's model and the
  pipeline's share of one of its training steps;
* :func:`read_pack` — read a FERPlus pack, timed, and compare it with the folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cfdan.data.types import FaceTensors


def mean_intensity_accuracy(train: FaceTensors, test: FaceTensors) -> float:
    """Test accuracy of the nearest class mean on one feature: the image's mean intensity."""
    f_train = train.images.float().mean((1, 2, 3))
    f_test = test.images.float().mean((1, 2, 3))
    centroids = torch.stack([f_train[train.labels == c].mean() for c in range(train.num_classes)])
    pred = (f_test[:, None] - centroids).abs().argmin(1)
    return float((pred == test.labels).float().mean())


def augment_facts(aug: Any) -> dict[str, Any]:
    """The training recipe of an :class:`~cfdan.data.pipeline.Augment`, for the prose; its
    erasing as a clause (``aug_erasing``), since a probability of 0 turns the step off."""
    erasing = (f"then random erasing blanks a box in a share of {aug.erase_p:g} of the images"
               if aug.erase_p > 0 else "random erasing is off in this recipe")
    return {"aug_scale_min": aug.scale[0], "aug_scale_max": aug.scale[1], "aug_flip_p": aug.flip,
            "aug_degrees": aug.degrees, "aug_erase_p": aug.erase_p, "aug_erasing": erasing}


def pipeline_throughput(sizes: Sequence[int] = (48, 64, 224), batch: int = 64,
                        repeats: int = 10) -> pd.DataFrame:
    """Augmentation images/s on the CPU per input size (rows) and mode (columns)."""
    from cfdan.data.pipeline import throughput

    rows = [{"input size": size, "mode": "train" if train else "eval",
             "images/s": round(throughput(size, batch=batch, train=train, repeats=repeats))}
            for size in sizes for train in (True, False)]
    return pd.DataFrame(rows).pivot(index="input size", columns="mode", values="images/s")


def profile_facts(profile: str = "cpu") -> dict[str, Any]:
    """What a training profile trains: preset, trunk width, input size, batch and epochs."""
    from cfdan.model import CFDANConfig
    from cfdan.training.config import load_config

    cfg = load_config(profile, [])
    return {"profile": profile, "preset": cfg.model["preset"],
            "trunk_width": cfg.model.get("trunk_width", CFDANConfig().trunk_width),
            "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs}


def profile_augment(profile: str = "cpu", image_size: int | None = None, seed: int = 0,
                    train: bool = True) -> Any:
    """The :class:`~cfdan.data.pipeline.Augment` that ``profile`` trains with (its
    ``train.aug_*`` settings), at ``image_size`` (default the profile's input size)."""
    from cfdan.training.config import load_config
    from cfdan.training.recipe import make_augment

    cfg = load_config(profile, [])
    return make_augment(image_size or cfg.data.image_size, train, seed, cfg.train)


def training_step_share(profile: str = "cpu", num_classes: int = 8,
                        repeats: int = 5) -> dict[str, float]:
    """The profile's augmentation against one training step of its model (medians,
    milliseconds). See :func:`cfdan.data.pipeline.share_of_step` for what a step holds.
    """
    from cfdan.data.pipeline import share_of_step
    from cfdan.training.config import load_config
    from cfdan.training.recipe import build_model

    cfg = load_config(profile, [])
    model = build_model(cfg, num_classes, cfg.data.image_size)
    return share_of_step(model, cfg.data.image_size, batch_size=cfg.train.batch_size,
                         repeats=repeats, num_classes=num_classes,
                         augment=profile_augment(profile))


def read_pack(packed: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
              splits: Sequence[str] = ("train", "val", "test"),
              cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read every split of a FERPlus pack: its size (MB), the seconds taken, and, when the
    folder ``root`` is given, whether every split equals the folder's (``equal``)."""
    from cfdan.data import load_dataset
    from cfdan.data.commands import compare

    packed = Path(packed)
    t0 = time.perf_counter()
    from_pack = {s: load_dataset("ferplus", packed, s) for s in splits}
    out: dict[str, Any] = {"file": packed.name, "mb": packed.stat().st_size / 1e6,
                           "seconds": time.perf_counter() - t0}
    if root is not None:
        out["equal"] = all(
            compare(d, load_dataset("ferplus", root, s, cache_dir=cache_dir)) == ""
            for s, d in from_pack.items())
    return out
