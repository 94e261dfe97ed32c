"""Decoded-tensor cache: a dataset split is decoded once into ``.npy`` files, then memory-mapped.

An entry lives in ``<cache>/<namespace>/<key>/`` (arrays as ``NAME.npy`` plus ``meta.json``);
``<cache>`` is the caller's ``cache_dir``, else :func:`cfdan.paths.cache_dir`. The key is a
fingerprint of the *source files* (:func:`stat_key`: label-file bytes, names, sizes and
modification times), so editing, adding or replacing an image gives a new key and the entry is
rebuilt. An entry is a folder, written into a temporary folder and renamed into place (the
folder counterpart of :mod:`cfdan.atomic`), so a crash never leaves a half-written entry
behind; a corrupt or mismatching entry is detected on load, reported with a warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from cfdan import paths
from cfdan.data.types import DataError

CACHE_FORMAT = 1


def stat_key(label_files: Iterable[Path], files: Iterable[Path], extra: str = "") -> str:
    """Fingerprint of source files: label-file contents plus each file's name, size and mtime.

    Cheap (no image is read), and changes whenever a file is edited, replaced, added to the
    label list or removed. A missing file raises :class:`DataError` naming it.
    """
    h = hashlib.sha256()
    h.update(f"cache-format {CACHE_FORMAT}\n{extra}\n".encode())
    for lf in label_files:
        try:
            h.update(Path(lf).read_bytes())
        except OSError as exc:
            raise DataError(f"{lf}: cannot read label file ({exc.strerror or exc})") from exc
    for f in files:
        try:
            st = os.stat(f)
        except OSError as exc:
            raise DataError(f"{f}: image listed in the labels is missing") from exc
        h.update(f"{Path(f).name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def content_fingerprint(*parts: bytes | np.ndarray | str) -> str:
    """SHA-256 (first 16 hex digits) of byte strings, arrays and text, in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, str):
            h.update(p.encode())
        else:
            h.update(p)
    return h.hexdigest()[:16]


def entry_dir(cache_dir: str | os.PathLike[str] | None, namespace: str, key: str) -> Path:
    """``<cache>/<namespace>/<key>``; no ``cache_dir`` means :func:`cfdan.paths.cache_dir`."""
    return paths.cache_dir(cache_dir) / namespace / key


def load_entry(
    cache_dir: str | os.PathLike[str] | None, namespace: str, key: str
) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays (memory-mapped, copy-on-write) and meta, or ``None`` on a miss.

    A present but unusable entry (wrong key, missing or mis-shaped array) is removed with a
    warning, and ``None`` is returned so the caller rebuilds it.
    """
    d = entry_dir(cache_dir, namespace, key)
    meta_file = d / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"entry was written for key {meta.get('key')!r}")
        arrays = {}
        for name, spec in meta["arrays"].items():
            arr = np.load(d / f"{name}.npy", mmap_mode="c", allow_pickle=False)
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                raise ValueError(f"{name}.npy has shape {arr.shape} {arr.dtype}, meta says {spec}")
            arrays[name] = arr
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"cache entry {d} does not match its source ({exc}); rebuilding it",
                      stacklevel=2)
        shutil.rmtree(d, ignore_errors=True)
        return None
    return arrays, meta


def store_entry(
    cache_dir: str | os.PathLike[str] | None,
    namespace: str,
    key: str,
    arrays: dict[str, np.ndarray],
    meta: dict,
) -> Path:
    """Write an entry atomically (temporary folder + rename); drop older entries of the source.

    Older entries whose ``meta["source"]`` equals this one's are removed (they were built from
    an earlier version of the same files).
    """
    d = entry_dir(cache_dir, namespace, key)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=d.parent))
    try:
        spec = {}
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            spec[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        full = {**meta, "key": key, "format": CACHE_FORMAT, "arrays": spec}
        (tmp / "meta.json").write_text(json.dumps(full, indent=1))
        try:
            os.replace(tmp, d)
        except OSError:
            # another process (e.g. a second training rank) stored the same key first; the
            # key fixes the content, so its entry is as good as ours
            if not (d / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    source = meta.get("source")
    if source is not None:
        for other in d.parent.iterdir():
            if other == d or not (other / "meta.json").is_file():
                continue
            try:
                if json.loads((other / "meta.json").read_text()).get("source") == source:
                    shutil.rmtree(other, ignore_errors=True)
            except (OSError, ValueError):
                continue
    return d


def cached_decode(
    namespace: str,
    label_files: list[Path],
    files: list[Path],
    decode: Callable[[int, Path], np.ndarray],
    shape: tuple[int, ...],
    cache_dir: str | os.PathLike[str] | None = None,
    extra: str = "",
    source: str = "",
    use_cache: bool = True,
) -> tuple[np.ndarray, str]:
    """Decode ``files`` (``decode(i, path) -> array of shape``) once, through the cache.

    Returns ``(images (N, *shape) uint8, content fingerprint)``; the fingerprint hashes the
    label files, ``extra`` and every pixel, and is re-checked on a cache hit.
    """
    key = stat_key(label_files, files, extra=f"{namespace}:{extra}")
    labels_bytes = b"".join(Path(f).read_bytes() for f in label_files)
    if use_cache:
        hit = load_entry(cache_dir, namespace, key)
        if hit is not None:
            arrays, meta = hit
            fp = content_fingerprint(labels_bytes, extra, arrays["images"])
            if fp == meta.get("fingerprint") and arrays["images"].shape == (len(files), *shape):
                return arrays["images"], fp
            warnings.warn(f"cache entry for {source or namespace} does not match its source "
                          f"(content hash {fp} != {meta.get('fingerprint')}); rebuilding it",
                          stacklevel=2)
    images = np.empty((len(files), *shape), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = decode(i, f)
    fp = content_fingerprint(labels_bytes, extra, images)
    if use_cache:
        store_entry(cache_dir, namespace, key, {"images": images},
                    {"source": source or namespace, "fingerprint": fp})
    return images, fp
