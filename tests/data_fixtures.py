"""Tiny datasets in each publisher's layout, written into a temporary folder by the tests.

Nothing here is committed as an image: every file is drawn from a seeded generator at test time.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

FER_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}

# Vote rows (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF)
# with what the FER+ majority rule makes of them, worked out by hand from the README's rule.
FER_ROWS: list[tuple[list[int], int | None]] = [
    ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], 0),    # 1s dropped: 6 of 8 -> neutral
    ([0, 10, 0, 0, 0, 0, 0, 0, 0, 0], 1),   # happiness
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], None),  # 4 of 9 is not > half -> unknown
    ([0, 0, 7, 0, 0, 0, 0, 0, 3, 0], 2),    # surprise
    ([0, 0, 0, 0, 0, 0, 0, 0, 2, 8], None),  # NF wins -> dropped
    ([0, 0, 0, 6, 0, 0, 0, 0, 4, 0], 3),    # sadness 6 of 10
    ([0, 0, 0, 0, 9, 1, 0, 0, 0, 0], 4),    # anger (the single disgust vote is dropped)
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),  # every count <= 1 -> nothing left
    ([0, 0, 0, 0, 0, 5, 0, 0, 5, 0], None),  # 5 of 10 is not > half
    ([0, 0, 0, 0, 0, 0, 8, 2, 0, 0], 6),    # fear
    ([0, 0, 0, 0, 0, 0, 0, 10, 0, 0], 7),   # contempt
    ([0, 0, 0, 0, 0, 7, 0, 0, 0, 3], 5),    # disgust
]


def write_png(path: Path, rng: np.random.Generator, size: int = 48, mode: str = "L") -> np.ndarray:
    shape = (size, size) if mode == "L" else (size, size, 3)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr, mode=None).save(path)
    return arr


def make_ferplus(root: Path, seed: int = 0, repeat: int = 1) -> dict[str, dict]:
    """A FER+ layout with the rows of :data:`FER_ROWS` (``repeat`` times) in every split.

    Returns, per split, the written pixels by name and the expected majority labels by name.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    k = 0
    for split, folder in FER_FOLDERS.items():
        d = root / folder
        d.mkdir(parents=True)
        pixels, expected = {}, {}
        with (d / "label.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            for _ in range(repeat):
                for votes, label in FER_ROWS:
                    name = f"fer{k:07d}.png"
                    k += 1
                    pixels[name] = write_png(d / name, rng)
                    w.writerow([name, "(0, 0, 48, 48)", *votes])
                    if label is not None:
                        expected[name] = label
        out[split] = {"pixels": pixels, "expected": expected}
    return out


def make_rafdb(root: Path, n_train: int = 40, n_test: int = 14, seed: int = 0,
               size: int = 100) -> dict[str, np.ndarray]:
    """RAF-DB basic layout: label list, aligned crops (and originals). Returns pixels by name."""
    rng = np.random.default_rng(seed)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    (root / "Image" / "original").mkdir(parents=True)
    lines, pixels = [], {}
    names = [f"train_{i + 1:05d}.jpg" for i in range(n_train)]
    names += [f"test_{i + 1:04d}.jpg" for i in range(n_test)]
    for i, name in enumerate(names):
        stem = name[:-4]
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "Image" / "aligned" / f"{stem}_aligned.png")
        Image.fromarray(arr).save(root / "Image" / "original" / f"{stem}.png")
        pixels[f"{stem}.png"] = arr
        lines.append(f"{stem}.png {i % 7 + 1}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return pixels


AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"]


def make_affectnet(root: Path, n_train: int = 60, n_val: int = 22, seed: int = 0) -> dict:
    """AffectNet manual layout: training.csv / validation.csv and images in sub-folders.

    Expressions cycle through 0..10, so the 7- and 8-class filters have rows to drop.
    Returns ``{"train": [(path, box, expr)], "test": [...]}``.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for csv_name, n, key in (("training.csv", n_train, "train"), ("validation.csv", n_val, "test")):
        rows = []
        for i in range(n):
            sub = f"{i % 3 + 1}"
            rel = f"{sub}/{key}_{i:04d}.png"
            (root / "Manually_Annotated_Images" / sub).mkdir(parents=True, exist_ok=True)
            h, w = int(rng.integers(60, 90)), int(rng.integers(60, 90))
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "Manually_Annotated_Images" / rel)
            box = [int(rng.integers(0, 10)), int(rng.integers(0, 10)), 40, 44]
            rows.append((rel, box, i % 11))
        with (root / csv_name).open("w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(AFFECTNET_HEADER)
            for rel, box, expr in rows:
                wr.writerow([rel, *box, "1;2;3", expr, 0.1, -0.2])
        out[key] = rows
    return out
