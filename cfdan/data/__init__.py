"""Datasets of §4.1 as uint8 tensors, and the §4.2 input pipeline.

``load_dataset(name, root, split, ...)`` returns a :class:`FaceTensors` for one split of
``ferplus`` (:mod:`.ferplus`; ``root`` may also be a file made by ``python -m cfdan data pack``),
``rafdb`` (:mod:`.rafdb`), ``affectnet`` (:mod:`.affectnet`) or ``synthetic`` (:mod:`.synthetic`,
procedurally drawn faces, no files). Images stay at native resolution;
:class:`cfdan.data.pipeline.Augment` resizes, augments and normalises on the training device.
"""

from __future__ import annotations

from pathlib import Path

from cfdan.data.types import LABEL_MODES, SPLITS, DataError, FaceTensors, check_split

DATASETS = ("ferplus", "rafdb", "affectnet", "synthetic")

__all__ = ["DATASETS", "LABEL_MODES", "SPLITS", "DataError", "FaceTensors", "load_dataset"]


def load_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    image_size: int = 224,
    label_mode: str = "majority",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    **options,
) -> FaceTensors:
    """One split (``train``/``val``/``test``) of dataset ``name`` as :class:`FaceTensors`.

    ``image_size`` is the model's input size; FERPlus (48 px), RAF-DB (100 px aligned) and the
    synthetic set (48 px) are returned at native size and only AffectNet's variable-size face
    crops are stored at ``image_size``. ``label_mode`` applies to FERPlus
    (``majority``/``probability``/``crossentropy``). ``seed`` fixes hold-out validation splits
    (RAF-DB, AffectNet) and the synthetic draw. ``cache_dir`` defaults to ``CFDAN_CACHE_DIR``
    or ``cache/``. Extra ``options`` go to the dataset's loader.
    """
    check_split(split)
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; expected one of "
                         f"{', '.join(LABEL_MODES)}")
    if name == "ferplus":
        from cfdan.data import ferplus

        if not root:
            from cfdan import paths

            root = paths.FERPLUS_ROOT
        return ferplus.load(root, split, label_mode=label_mode, cache_dir=cache_dir, **options)
    if name == "synthetic":
        from cfdan.data import synthetic

        return synthetic.load(split, seed=seed, **options)
    if name in ("rafdb", "affectnet") and not root:
        raise DataError(f"dataset {name!r} needs a root folder")
    if name == "rafdb":
        from cfdan.data import rafdb

        return rafdb.load(root, split, seed=seed, cache_dir=cache_dir, **options)
    if name == "affectnet":
        from cfdan.data import affectnet

        return affectnet.load(root, split, image_size=image_size, seed=seed,
                              cache_dir=cache_dir, **options)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
