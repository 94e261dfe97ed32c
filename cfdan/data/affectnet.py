"""AffectNet, manually annotated part (§4.1): 7 or 8 expression classes, heavily imbalanced.

Layout (as distributed)::

    ROOT/training.csv, ROOT/validation.csv
        columns subDirectory_filePath, face_x, face_y, face_width, face_height,
                facial_landmarks, expression, valence, arousal
    ROOT/Manually_Annotated_Images/<subDirectory_filePath>

``expression``: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 Non-Face. The 8-class protocol drops 8-10, the 7-class one also drops
Contempt. The face box is cropped and resized to ``image_size``. The official validation set
is the ``test`` split (the test set is not public); ``val`` is a seeded class-stratified
hold-out of ``val_fraction`` of ``training.csv``.
"""

from __future__ import annotations

import csv
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

CLASS_NAMES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
IMAGE_DIR = "Manually_Annotated_Images"
MAX_EXPRESSION = 10


def read_csv(path: Path, num_classes: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Kept rows: relative paths, face boxes ``(N, 4)`` (x, y, w, h) and labels."""
    if not path.is_file():
        raise DataError(f"{path}: AffectNet label file is missing")
    paths, boxes, labels = [], [], []
    with reading_label_file(path), path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: label file is empty")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        col = {c: header.index(c) for c in COLUMNS}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {lineno}: {len(row)} fields, header has "
                                f"{len(header)}")
            try:
                expr = int(row[col["expression"]])
                box = [int(float(row[col[c]])) for c in
                       ("face_x", "face_y", "face_width", "face_height")]
            except ValueError as exc:
                raise DataError(f"{path}, line {lineno}: bad number ({exc})") from exc
            if not 0 <= expr <= MAX_EXPRESSION:
                raise DataError(f"{path}, line {lineno}: expression {expr} out of range 0..10")
            if expr >= num_classes:
                continue
            if box[2] <= 0 or box[3] <= 0:
                raise DataError(f"{path}, line {lineno}: empty face box {box}")
            paths.append(row[col["subDirectory_filePath"]])
            boxes.append(box)
            labels.append(expr)
    if not paths:
        raise DataError(f"{path}: no rows with an expression below {num_classes}")
    return paths, np.asarray(boxes, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def decode_face(path: Path, box: np.ndarray | None, size: int) -> np.ndarray:
    """The face box of an image (the whole image if ``box`` is None) as (3, size, size) uint8."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            x, y, w, h = (0, 0, im.width, im.height) if box is None else (int(v) for v in box)
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(im.width, x + w), min(im.height, y + h)
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"{path}: face box {list(box)} lies outside the "
                                f"{im.width}x{im.height} image")
            face = im.crop((x0, y0, x1, y1)).resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(face, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image listed in the labels is missing") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc})") from exc
    return arr.transpose(2, 0, 1)


def load(root: str | Path, split: str, image_size: int = 112, seed: int = 0,
         cache_dir: str | Path | None = None, num_classes: int = 8, val_fraction: float = 0.1,
         image_dir: str | Path | None = None, use_cache: bool = True,
         **_ignored) -> FaceTensors:
    """One AffectNet split (``num_classes`` 7 or 8) as :class:`FaceTensors` (RGB).

    ``image_dir``: read already aligned crops (``python -m cfdan prepare --dataset affectnet``)
    under the same relative paths instead of cropping the annotated face boxes.
    """
    check_split(split)
    if num_classes not in (7, 8):
        raise ValueError(f"AffectNet num_classes must be 7 or 8, got {num_classes}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: AffectNet root does not exist")
    label_file = root / ("validation.csv" if split == "test" else "training.csv")
    rel, boxes, labels = read_csv(label_file, num_classes)
    idir = Path(image_dir) if image_dir else root / IMAGE_DIR
    if not idir.is_dir():
        raise DataError(f"{idir}: image folder is missing")
    rows = np.arange(len(rel))
    if split != "test":
        hold = stratified_holdout(labels, val_fraction, seed)
        rows = rows[hold] if split == "val" else rows[~hold]
    files = [idir / p for p in rel]
    size = int(image_size)
    aligned = image_dir is not None

    def decode(i: int, f: Path) -> np.ndarray:
        return decode_face(f, None if aligned else boxes[i], size)

    images, fp = cached_decode(
        "affectnet", [label_file], files, decode, (3, size, size), cache_dir=cache_dir,
        extra=f"size={size} k={num_classes} aligned={aligned}",
        source=f"{label_file.resolve()}:{idir.resolve()}:{size}:{num_classes}",
        use_cache=use_cache)
    split_fp = content_fingerprint(fp, f"{split} seed={seed} val_fraction={val_fraction}")
    return FaceTensors(
        images=torch.from_numpy(np.ascontiguousarray(images[rows])),
        labels=torch.from_numpy(labels[rows]),
        soft=None, class_names=CLASS_NAMES[:num_classes], fingerprint=split_fp,
        name="affectnet", split=split, ids=[rel[i] for i in rows],
        info={"root": str(root), "source_fingerprint": fp, "num_classes": num_classes,
              "val_fraction": val_fraction, "seed": seed},
    )

