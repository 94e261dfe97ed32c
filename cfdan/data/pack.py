"""One-file lossless FERPlus pack (``python -m cfdan data pack --root PATH --out FILE``).

The majority-vote images of the three splits (31,373 48x48 grey images, 72 MB as raw uint8)
are stored losslessly in one ``.npz``, readable with numpy and the standard library only (no
pickle), within a 55 MB budget (``data pack`` prints the size; a test checks the compression
ratio on real images). Compression: each image is replaced by its prediction residual under
the median edge detector of LOCO-I/JPEG-LS (predict ``x`` from its left ``a``, upper ``b`` and
upper-left ``c`` neighbours), and the residual stream is xz/LZMA-compressed. In our comparison
this was smaller than ``np.savez_compressed``, per-image PNG, LZMA of raw pixels and other
simple predictors, and it decodes in a few seconds (WebP-lossless came close but was slow).

Contents (all plain arrays): ``format`` (str), ``meta`` (JSON str: class names, vote columns,
per-split sizes, source fingerprints, label modes held), ``pixels_xz`` (uint8 bytes),
``names_xz`` (uint8 bytes of a JSON list), ``votes`` (N, 10) uint8, ``split_sizes`` (3,) int64.
With ``include_soft=True`` the training split also holds the extra images kept by the
``crossentropy``/``probability`` rule, so every label mode works from the pack.

``cfdan.data.load_dataset("ferplus", FILE, split)`` reads a pack (through :func:`load_packed`)
exactly as it reads the folder it was made from. This module builds on :mod:`.ferplus`, never
the other way round.
"""

from __future__ import annotations

import json
import lzma
import zipfile
from pathlib import Path

import numpy as np

from cfdan.atomic import atomic_path
from cfdan.data import ferplus
from cfdan.data.types import LABEL_MODES, DataError, FaceTensors, check_split

FORMAT = "cfdan-ferplus-pack/1"
PACK_SPLITS = ("train", "val", "test")
ARRAYS = ("format", "meta", "pixels_xz", "names_xz", "votes", "split_sizes")
"""The arrays every pack holds (see the module docstring)."""


# ----------------------------------------------------------------------------- codec
def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    c = np.zeros_like(x)
    a[:, :, 1:] = x[:, :, :-1]
    b[:, 1:, :] = x[:, :-1, :]
    c[:, 1:, 1:] = x[:, :-1, :-1]
    return a, b, c


def _med(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    # the median edge detector: min(a, b) if c >= max(a, b), max(a, b) if c <= min(a, b),
    # else a + b - c -- which is exactly a + b - c clipped to [min(a, b), max(a, b)]
    return np.clip(a + b - c, np.minimum(a, b), np.maximum(a, b))


def med_encode(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` uint8 -> MED prediction residuals mod 256 (uint8, same shape)."""
    x = images.astype(np.int16)
    return ((x - _med(*_neighbours(x))) & 255).astype(np.uint8)


def med_decode(residuals: np.ndarray) -> np.ndarray:
    """Inverse of :func:`med_encode`, vectorised over images and anti-diagonals.

    A pixel depends on its left, upper and upper-left neighbours only, so all pixels with the
    same ``i + j`` are decoded together (``H + W - 1`` steps).
    """
    n, h, w = residuals.shape
    r = np.ascontiguousarray(residuals.transpose(1, 2, 0)).astype(np.int16)
    x = np.zeros((h + 1, w + 1, n), dtype=np.int16)  # zero top row / left column
    for k in range(h + w - 1):
        i = np.arange(max(0, k - w + 1), min(h - 1, k) + 1)
        j = k - i
        pred = _med(x[i + 1, j], x[i, j + 1], x[i, j])
        x[i + 1, j + 1] = (pred + r[i, j]) & 255
    return np.ascontiguousarray(x[1:, 1:].transpose(2, 0, 1)).astype(np.uint8)


# ----------------------------------------------------------------------------- pack
def pack(root: str | Path, out: str | Path, include_soft: bool = False,
         preset: int = 6, cache_dir: str | Path | None = None) -> dict:
    """Pack a FER+ layout folder into ``out`` (atomic write); returns the pack's meta."""
    root = Path(root)
    parts_img, parts_votes, names, sizes, splits_meta = [], [], [], [], {}
    for split in PACK_SPLITS:
        d = ferplus.decode_folder(ferplus.split_folder(root, split), cache_dir=cache_dir)
        keep, _ = ferplus.majority_labels(d["votes"])
        if include_soft and split == "train":
            keep_soft, _, _ = ferplus.targets(d["votes"], "crossentropy")
            keep = keep | keep_soft
        idx = np.flatnonzero(keep)
        parts_img.append(np.asarray(d["images"])[idx])
        parts_votes.append(d["votes"][idx])
        names.extend(d["names"][i] for i in idx)
        sizes.append(len(idx))
        splits_meta[split] = {"folder": ferplus.SPLIT_FOLDERS[split], "rows": len(d["names"]),
                              "packed": len(idx), "fingerprint": d["fingerprint"]}
    images = np.concatenate(parts_img)
    pixels = lzma.compress(med_encode(images).tobytes(), preset=preset)
    names_xz = lzma.compress(json.dumps(names).encode(), preset=preset)
    meta = {
        "format": FORMAT,
        "class_names": ferplus.CLASS_NAMES,
        "vote_columns": ferplus.VOTE_COLUMNS,
        "image_shape": list(images.shape[1:]),
        "codec": "MED residuals (JPEG-LS predictor), xz",
        "label_modes": list(LABEL_MODES) if include_soft else ["majority"],
        "splits": splits_meta,
        "source": str(root.resolve()),
    }
    out = Path(out)
    with atomic_path(out, suffix=".npz") as tmp, tmp.open("wb") as fh:
        np.savez(
            fh, format=np.array(FORMAT), meta=np.array(json.dumps(meta)),
            pixels_xz=np.frombuffer(pixels, dtype=np.uint8),
            names_xz=np.frombuffer(names_xz, dtype=np.uint8),
            votes=np.concatenate(parts_votes), split_sizes=np.array(sizes, dtype=np.int64),
        )
    return meta


# ----------------------------------------------------------------------------- load
_UNPACKED: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray, list[str], dict, np.ndarray]]
_UNPACKED = {}


def read_pack(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], dict, np.ndarray]:
    """``(images (N,H,W), votes (N,10), names, meta, split_sizes)`` of a pack (memoised).

    Anything that is not a readable pack of :data:`FORMAT` raises :class:`DataError` naming
    ``path`` and what is wrong with it.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read FERPlus pack ({exc.strerror or exc})") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _UNPACKED:
        return _UNPACKED[key]
    what = "a FERPlus pack (the .npz written by `python -m cfdan data pack`)"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not {what}: the file is not an .npz (zip) archive, or it is "
                        f"truncated")
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            missing = [a for a in ARRAYS if a not in z.files]
            if missing:
                raise DataError(f"{path}: not {what}: it lacks the array(s) "
                                f"{', '.join(missing)}")
            fmt = str(z["format"])
            if fmt != FORMAT:
                raise DataError(f"{path}: not a FERPlus pack of format {FORMAT} (found {fmt!r})")
            meta = json.loads(str(z["meta"]))
            sizes = z["split_sizes"]
            votes = z["votes"]
            pixels = lzma.decompress(z["pixels_xz"].tobytes())
            names = json.loads(lzma.decompress(z["names_xz"].tobytes()))
    except DataError:
        raise
    except (OSError, ValueError, KeyError, lzma.LZMAError, EOFError,
            zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable FERPlus pack ({exc})") from exc
    _check_pack(path, meta, sizes, votes, names, len(pixels))
    h, w = meta["image_shape"]
    n = int(sizes.sum())
    images = med_decode(np.frombuffer(pixels, dtype=np.uint8).reshape(n, h, w))
    _UNPACKED.clear()
    _UNPACKED[key] = (images, votes, names, meta, sizes)
    return _UNPACKED[key]


def _check_pack(path: Path, meta: dict, sizes: np.ndarray, votes: np.ndarray, names: list,
                n_pixels: int) -> None:
    """:class:`DataError` unless the arrays and the meta of a pack agree with each other."""
    try:
        h, w = (int(v) for v in meta["image_shape"])
        if not all({"fingerprint", "rows"} <= set(meta["splits"][s]) for s in PACK_SPLITS):
            raise KeyError("splits.<split>.fingerprint / rows")
        if not isinstance(meta["label_modes"], list):
            raise TypeError("label_modes is not a list")
    except (TypeError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: FERPlus pack has malformed meta ({exc!r})") from exc
    if sizes.shape != (len(PACK_SPLITS),) or sizes.dtype.kind not in "iu" or (sizes < 0).any():
        raise DataError(f"{path}: FERPlus pack has bad split sizes {sizes.tolist()}")
    n = int(sizes.sum())
    if (h <= 0 or w <= 0 or n_pixels != n * h * w or not isinstance(names, list)
            or len(names) != n or votes.shape != (n, len(ferplus.VOTE_COLUMNS))):
        raise DataError(f"{path}: pack is inconsistent ({n} images announced, "
                        f"{n_pixels // max(h * w, 1)} stored, {len(votes)} vote rows, "
                        f"{len(names) if isinstance(names, list) else 'no'} names)")


def load_packed(path: str | Path, split: str, label_mode: str = "majority") -> FaceTensors:
    """One split from a pack; identical to the folder loader's result for the same data."""
    check_split(split)
    images, votes, names, meta, sizes = read_pack(path)
    if label_mode not in meta["label_modes"] and not (split != "train" and
                                                       label_mode in LABEL_MODES):
        raise DataError(f"{path}: pack holds the images of label modes {meta['label_modes']}, "
                        f"not {label_mode!r}; re-pack with `data pack --include-soft`")
    i = PACK_SPLITS.index(split)
    lo, hi = int(sizes[:i].sum()), int(sizes[: i + 1].sum())
    sm = meta["splits"][split]
    return ferplus.select(images[lo:hi], votes[lo:hi], names[lo:hi], split, label_mode,
                          sm["fingerprint"], info={"root": str(path), "packed": True,
                                "rows": sm["rows"]})
