"""Datasets of §4.1 as uint8 tensors, and the §4.2 input pipeline.

``load_dataset(name, root, split, ...)`` returns a :class:`FaceTensors` for one split of
``ferplus`` (:mod:`.ferplus`; ``root`` may also be a file made by ``python -m cfdan data pack``,
read by :mod:`.pack`),
``rafdb`` (:mod:`.rafdb`), ``affectnet`` (:mod:`.affectnet`) or ``synthetic`` (:mod:`.synthetic`,
procedurally drawn faces, no files). Images stay at native resolution;
:class:`cfdan.data.pipeline.Augment` resizes, augments and normalises on the training device.
"""

from __future__ import annotations

from pathlib import Path

from cfdan import paths
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
    (RAF-DB, AffectNet) and the synthetic draw. ``cache_dir`` defaults to
    :func:`cfdan.paths.cache_dir`. Extra ``options`` go to the dataset's loader.

    For FERPlus, ``root`` defaults to :func:`cfdan.paths.ferplus_root`; a folder is read by
    :func:`cfdan.data.ferplus.load` and a file by :func:`cfdan.data.pack.load_packed` (which
    needs no cache: ``cache_dir`` and ``use_cache`` are ignored).
    """
    check_split(split)
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; expected one of "
                         f"{', '.join(LABEL_MODES)}")
    if name == "ferplus":
        root = paths.ferplus_root(root)
        if root.is_file():
            from cfdan.data import pack

            unknown = sorted(set(options) - {"use_cache"})  # the folder loader's one option
            if unknown:
                raise TypeError(f"option(s) {', '.join(unknown)} do not apply to FERPlus")
            return pack.load_packed(root, split, label_mode=label_mode)
        from cfdan.data import ferplus

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
