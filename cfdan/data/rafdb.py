"""RAF-DB basic (§4.1): 7 classes, 12,271 training and 3,068 test images.

Layout (as distributed)::

    ROOT/EmoLabel/list_patition_label.txt      lines "train_00001.jpg 5", "test_0001.jpg 7"
    ROOT/Image/aligned/train_00001_aligned.jpg  100x100 RGB, aligned by the publishers
    ROOT/Image/original/train_00001.jpg         the uncropped photos (for ``cfdan prepare``)

Labels 1-7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (stored as 0-6).
``train``/``test`` come from the file names; ``val`` is a seeded, class-stratified hold-out of
``val_fraction`` of the training images (removed from ``train``), so no test image selects a
model. ``image_dir`` reads other crops of the same names instead (e.g. the output of
``python -m cfdan prepare``, named like the originals).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cfdan.data.cache import cached_decode, content_fingerprint
from cfdan.data.types import (
    DataError,
    FaceTensors,
    check_split,
    reading_label_file,
    stratified_holdout,
)

CLASS_NAMES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
ALIGNED_DIR = Path("Image") / "aligned"
NATIVE_SIZE = 100


def read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """Image names and 0-based labels of ``list_patition_label.txt``."""
    if not path.is_file():
        raise DataError(f"{path}: RAF-DB label file is missing (expected ROOT/{LABEL_FILE})")
    names, labels = [], []
    with reading_label_file(path):
        text = path.read_text()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}, line {lineno}: expected 'NAME LABEL', got {line!r}")
        name, lab = parts
        if not (name.startswith("train_") or name.startswith("test_")):
            raise DataError(f"{path}, line {lineno}: image name {name!r} starts neither with "
                            f"train_ nor test_")
        try:
            value = int(lab)
        except ValueError as exc:
            raise DataError(f"{path}, line {lineno}: label {lab!r} is not an integer") from exc
        if not 1 <= value <= len(CLASS_NAMES):
            raise DataError(f"{path}, line {lineno}: label {value} out of range 1..7")
        names.append(name)
        labels.append(value - 1)
    if not names:
        raise DataError(f"{path}: label file has no rows")
    return names, np.asarray(labels, dtype=np.int64)


def decode_rgb(path: Path, size: int) -> np.ndarray:
    """An image as ``(3, size, size)`` uint8 (resized if it has another size)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image listed in the labels is missing") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc})") from exc
    return arr.transpose(2, 0, 1)


def image_path(root: Path, name: str, image_dir: Path | None) -> Path:
    if image_dir is not None:
        return image_dir / name
    stem, ext = name.rsplit(".", 1)
    return root / ALIGNED_DIR / f"{stem}_aligned.{ext}"


def load(root: str | Path, split: str, seed: int = 0, cache_dir: str | Path | None = None,
         val_fraction: float = 0.1, image_dir: str | Path | None = None,
         size: int = NATIVE_SIZE, use_cache: bool = True, **_ignored) -> FaceTensors:
    """One RAF-DB split as :class:`FaceTensors` (RGB, ``size`` px, default native 100)."""
    check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: RAF-DB root does not exist")
    names, labels = read_labels(root / LABEL_FILE)
    idir = Path(image_dir) if image_dir else None
    if idir is None and not (root / ALIGNED_DIR).is_dir():
        raise DataError(f"{root / ALIGNED_DIR}: image folder is missing")
    is_test = np.array([n.startswith("test_") for n in names])
    want = is_test if split == "test" else ~is_test
    rows = np.flatnonzero(want)
    if len(rows) == 0:
        raise DataError(f"{root / LABEL_FILE}: no {'test' if split == 'test' else 'train'}_ "
                        f"images listed")
    if split != "test":
        hold = stratified_holdout(labels[rows], val_fraction, seed)
        rows = rows[hold] if split == "val" else rows[~hold]
    files = [image_path(root, n, idir) for n in names]
    images, fp = cached_decode("rafdb", [root / LABEL_FILE], files,
                               lambda i, f: decode_rgb(f, size), (3, size, size),
                               cache_dir=cache_dir, extra=f"size={size}",
                               source=str((idir or root / ALIGNED_DIR).resolve()),
                               use_cache=use_cache)
    split_fp = content_fingerprint(fp, f"{split} seed={seed} val_fraction={val_fraction}")
    return FaceTensors(
        images=torch.from_numpy(np.ascontiguousarray(images[rows])),
        labels=torch.from_numpy(labels[rows]),
        soft=None, class_names=list(CLASS_NAMES), fingerprint=split_fp, name="rafdb",
        split=split, ids=[names[i] for i in rows],
        info={"root": str(root), "source_fingerprint": fp, "val_fraction": val_fraction,
              "seed": seed},
    )
