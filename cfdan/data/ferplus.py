"""FERPlus (§4.1): FER2013 images with the FER+ crowd labels (Barsoum et al., 2016).

Layout (what the FER+ reference ``generate_training_data.py`` writes)::

    ROOT/FER2013Train/label.csv + fer0000000.png ...   -> split "train"
    ROOT/FER2013Valid/label.csv + PNGs                   -> split "val"
    ROOT/FER2013Test/label.csv  + PNGs                   -> split "test"

``label.csv`` rows: image name, face box ``"(0, 0, 48, 48)"``, then 10 vote counts in the order
of :data:`VOTE_COLUMNS`. Images are 48x48 8-bit grey PNGs.

Label modes follow the FER+ reference code (``ferplus.py``, ``_process_data``):

``majority`` (the protocol behind "FERPlus accuracy"; 25,045 / 3,191 / 3,137 images)
    vote counts <= 1 are set to 0; the label is the column with the most remaining votes if it
    holds strictly more than half of them, else the image is unknown; only the 8 emotions are
    kept. ``soft`` is ``None``.
``crossentropy`` / ``probability``
    after the same outlier removal, the columns with the most votes are taken (ties together)
    until they cover 75 % of the votes or three columns are taken; the image is dropped if
    unknown/not-a-face comes first, or if the taken columns hold at most half of the votes.
    ``soft`` is the normalised 8-emotion distribution of the taken columns (the cross-entropy
    target; ``probability`` mode draws a one-hot target from it at every use, see
    :func:`sample_targets`), and ``labels`` its arg-max.
    As in the reference, which always evaluates with ``majority``, the ``val`` and ``test``
    splits keep the majority-vote images and labels, so accuracies stay comparable; their
    ``soft`` is the outlier-filtered vote distribution over the 8 emotions.
"""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cfdan.data import cache as cache_mod
from cfdan.data.types import (
    LABEL_MODES,
    DataError,
    FaceTensors,
    check_split,
    reading_label_file,
)

CLASS_NAMES = [
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
]
VOTE_COLUMNS = [*CLASS_NAMES, "unknown", "NF"]
SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
IMAGE_SIZE = 48
NUM_EMOTIONS = len(CLASS_NAMES)


# ----------------------------------------------------------------------------- label.csv
def read_label_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Image names and the ``(N, 10)`` uint8 vote counts of one ``label.csv``.

    Raises :class:`DataError` naming the file (and line) for a missing or unreadable file, a
    file that is not CSV text, a row without exactly 10 vote counts, a count that is not an
    integer in 0..255, a bad image name, or a file without rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file is missing (expected the FER+ layout "
                        f"{'/'.join(SPLIT_FOLDERS.values())} each with label.csv)")
    names: list[str] = []
    votes: list[list[int]] = []
    with reading_label_file(path), path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            name, counts = _parse_label_row(path, lineno, row)
            names.append(name)
            votes.append(counts)
    if not names:
        raise DataError(f"{path}: label file has no rows")
    return names, np.asarray(votes, dtype=np.uint8)


def _parse_label_row(path: Path, lineno: int, row: list[str]) -> tuple[str, list[int]]:
    """``(image name, 10 vote counts)`` of one ``label.csv`` row, or :class:`DataError`."""
    if len(row) != 2 + len(VOTE_COLUMNS):
        raise DataError(
            f"{path}, line {lineno}: expected image name, face box and "
            f"{len(VOTE_COLUMNS)} vote counts, got {len(row)} fields ({len(row) - 2} votes)"
        )
    try:
        counts = [int(c) for c in row[2:]]
    except ValueError as exc:
        raise DataError(f"{path}, line {lineno}: vote counts must be integers "
                        f"({exc})") from exc
    if min(counts) < 0 or max(counts) > 255:
        raise DataError(f"{path}, line {lineno}: vote count out of range 0..255: {counts}")
    name = row[0].strip()
    if not name or "/" in name or "\\" in name:
        raise DataError(f"{path}, line {lineno}: bad image name {row[0]!r}")
    return name, counts


# ----------------------------------------------------------------------------- label modes
def process_votes(raw: np.ndarray | list[float], mode: str) -> list[float]:
    """One row of vote counts -> normalised 10-column distribution (FER+ ``_process_data``).

    A row that the mode rejects comes back as all mass on ``unknown`` (column 8).
    """
    emotion_raw = [float(v) for v in raw]
    size = len(emotion_raw)
    emotion_unknown = [0.0] * size
    emotion_unknown[-2] = 1.0
    for i in range(size):  # outlier removal: a single vote does not count
        if emotion_raw[i] < 1.0 + sys.float_info.epsilon:
            emotion_raw[i] = 0.0
    sum_list = sum(emotion_raw)
    emotion = [0.0] * size
    if mode == "majority":
        maxval = max(emotion_raw)
        if maxval > 0.5 * sum_list:
            emotion[int(np.argmax(emotion_raw))] = maxval
        else:
            emotion = emotion_unknown
    elif mode in ("probability", "crossentropy"):
        sum_part = 0.0
        count = 0
        valid_emotion = True
        while sum_part < 0.75 * sum_list and count < 3 and valid_emotion:
            maxval = max(emotion_raw)
            for i in range(size):
                if emotion_raw[i] == maxval:
                    emotion[i] = maxval
                    emotion_raw[i] = 0
                    sum_part += emotion[i]
                    count += 1
                    if i >= 8:  # unknown or non-face shares the top count
                        valid_emotion = False
                        if sum(emotion) > maxval:  # other emotions came before it
                            emotion[i] = 0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * sum_list or count > 3:
            emotion = emotion_unknown
    else:
        raise ValueError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    total = sum(emotion)
    return [float(v) / total for v in emotion]


def majority_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised majority rule: (keep mask, label) for ``(N, 10)`` vote counts."""
    v = votes.astype(np.int64)
    v = np.where(v <= 1, 0, v)
    total = v.sum(axis=1)
    top = v.max(axis=1)
    arg = v.argmax(axis=1)
    keep = (2 * top > total) & (arg < NUM_EMOTIONS)
    return keep, arg


def targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(keep, labels, soft)`` for all rows under ``mode`` (labels/soft only of kept rows)."""
    if mode == "majority":
        keep, arg = majority_labels(votes)
        return keep, arg[keep], None
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    dist = np.array([process_votes(row, mode) for row in votes], dtype=np.float64)
    keep = dist.argmax(axis=1) < NUM_EMOTIONS
    soft = dist[keep, :NUM_EMOTIONS]
    soft = soft / soft.sum(axis=1, keepdims=True)
    return keep, soft.argmax(axis=1), soft.astype(np.float32)


def filtered_distribution(votes: np.ndarray) -> np.ndarray:
    """Outlier-filtered (counts <= 1 dropped) vote distribution over the 8 emotions."""
    v = votes[:, :NUM_EMOTIONS].astype(np.float64)
    v = np.where(v <= 1, 0.0, v)
    s = v.sum(axis=1, keepdims=True)
    return (v / np.where(s > 0, s, 1.0)).astype(np.float32)


def sample_targets(soft: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``probability`` mode: draw one class per row from ``soft`` (returns int64 labels)."""
    return torch.multinomial(soft, 1, generator=generator).squeeze(1)


# ----------------------------------------------------------------------------- decoding
def split_folder(root: str | Path, split: str) -> Path:
    """``root/FER2013{Train,Valid,Test}`` of ``split``; :class:`DataError` when it is missing."""
    check_split(split)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: FERPlus root does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: FERPlus root is a file, not a folder in the FER+ layout "
                        f"(a file packed by `python -m cfdan data pack` is read by "
                        f"cfdan.data.load_dataset)")
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DataError(
            f"{folder}: split folder is missing (FERPlus root {root} must hold "
            f"{', '.join(SPLIT_FOLDERS.values())})"
        )
    return folder


def decode_image(path: Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """One FER image as ``(size, size)`` uint8; :class:`DataError` naming a bad file."""
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image listed in label.csv is missing") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc})") from exc
    if arr.shape != (size, size):
        raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")
    return arr


def decode_folder(
    folder: str | Path, cache_dir: str | Path | None = None, use_cache: bool = True
) -> dict:
    """All rows of one split folder: ``images`` (N,48,48) uint8, ``votes`` (N,10), ``names``,
    ``fingerprint`` (content hash of label.csv and pixels). Cached (see :mod:`.cache`)."""
    folder = Path(folder)
    label_file = folder / "label.csv"
    names, votes = read_label_csv(label_file)
    files = [folder / n for n in names]
    key = cache_mod.stat_key([label_file], files, extra="ferplus")
    if use_cache:
        hit = cache_mod.load_entry(cache_dir, "ferplus", key)
        if hit is not None:
            arrays, meta = hit
            # the content hash is re-computed: a swapped or corrupted entry is never used
            fp = cache_mod.content_fingerprint(label_file.read_bytes(), arrays["images"])
            if (meta.get("names") == names and np.array_equal(arrays["votes"], votes)
                    and fp == meta.get("fingerprint")):
                return {"images": arrays["images"], "votes": votes, "names": names,
                        "fingerprint": fp}
            warnings.warn(f"cache entry for {folder} does not match its source (content hash "
                          f"{fp} != {meta.get('fingerprint')}); rebuilding it", stacklevel=2)
    images = np.empty((len(names), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = decode_image(f)
    fp = cache_mod.content_fingerprint(label_file.read_bytes(), images)
    if use_cache:
        cache_mod.store_entry(cache_dir, "ferplus", key, {"images": images, "votes": votes},
                              {"source": str(folder.resolve()), "names": names,
                               "fingerprint": fp})
    return {"images": images, "votes": votes, "names": names, "fingerprint": fp}


def select(
    images: np.ndarray, votes: np.ndarray, names: list[str], split: str, label_mode: str,
    fingerprint: str, info: dict | None = None,
) -> FaceTensors:
    """Apply a label mode to all rows of a split (see the module docstring)."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; expected one of "
                         f"{', '.join(LABEL_MODES)}")
    mode = label_mode if split == "train" else "majority"
    keep, labels, soft = targets(votes, mode)
    if label_mode != "majority" and split != "train":
        soft = filtered_distribution(votes[keep])
    idx = np.flatnonzero(keep)
    imgs = torch.from_numpy(np.ascontiguousarray(images[idx]))[:, None]
    return FaceTensors(
        images=imgs,
        labels=torch.from_numpy(labels.astype(np.int64)),
        soft=None if soft is None else torch.from_numpy(soft),
        class_names=list(CLASS_NAMES),
        fingerprint=fingerprint,
        name="ferplus",
        split=split,
        ids=[names[i] for i in idx],
        info={"label_mode": label_mode, "split_folder": SPLIT_FOLDERS[split],
              "rows": len(names), **(info or {})},
    )


def load(
    root: str | Path, split: str, label_mode: str = "majority",
    cache_dir: str | Path | None = None, use_cache: bool = True,
) -> FaceTensors:
    """One FERPlus split from a folder in the FER+ layout.

    A packed file is read by :func:`cfdan.data.pack.load_packed`;
    :func:`cfdan.data.load_dataset` chooses between the two.
    """
    check_split(split)
    root = Path(root)
    folder = split_folder(root, split)
    d = decode_folder(folder, cache_dir=cache_dir, use_cache=use_cache)
    return select(d["images"], d["votes"], d["names"], split, label_mode, d["fingerprint"],
                  info={"root": str(root)})
