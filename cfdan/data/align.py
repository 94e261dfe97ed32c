"""Face detection and alignment (§4.2: "face images were detected using the MTCNN network").

:func:`prepare` (``python -m cfdan prepare --dataset NAME --src RAW --dst OUT``) runs MTCNN
(facenet-pytorch 2.5.3, whose weights ship inside the wheel; imported lazily) on every image
under ``SRC``, maps the five landmarks (eyes, nose, mouth corners) of the most confident face
onto a canonical template with a least-squares similarity transform (Umeyama, 1991), and writes
the ``size`` x ``size`` crop to ``DST`` under the same relative path. Images without a detected
face are kept as centre crops and listed in ``DST/no_face.txt``. The run is resumable: outputs
that exist are skipped (each is written atomically).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cfdan.atomic import atomic_path, write_text
from cfdan.data.types import DataError

# Five-point template for a 112x112 crop (eye centres, nose tip, mouth corners) — the widely
# used ArcFace/InsightFace reference; scaled to other sizes.
TEMPLATE_112 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
    [41.5493, 92.3655], [70.7299, 92.2041],
], dtype=np.float64)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST = "no_face.txt"


def template(size: int) -> np.ndarray:
    return TEMPLATE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix ``M`` of the least-squares similarity (rotation, uniform scale, shift)
    with ``dst ≈ M @ [src, 1]`` (Umeyama's closed form, reflections excluded)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp(image: Image.Image, m: np.ndarray, size: int) -> Image.Image:
    """Apply the forward 2x3 similarity ``m`` (input -> output pixels) to get a size^2 crop."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]  # PIL wants output -> input
    return image.transform((size, size), Image.Transform.AFFINE, data=tuple(inv.ravel()),
                           resample=Image.Resampling.BICUBIC)


def align_face(image: Image.Image, landmarks: np.ndarray, size: int = 112) -> Image.Image:
    """The face with these 5 landmarks, aligned to :func:`template` in a ``size`` crop."""
    return warp(image, similarity_transform(landmarks, template(size)), size)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    side = min(image.size)
    x0, y0 = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((x0, y0, x0 + side, y0 + side)).resize((size, size),
                                                             Image.Resampling.BICUBIC)


def make_detector(device: str = "cpu", min_face_size: int = 20):
    """facenet-pytorch's MTCNN (weights from its package folder, no download)."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("face alignment needs facenet-pytorch==2.5.3 "
                          "(pip install facenet-pytorch==2.5.3 --no-deps)") from exc
    return MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False)


def detect_landmarks(detector, image: Image.Image) -> tuple[np.ndarray, float] | None:
    """Landmarks (5, 2) and probability of the most confident face, or ``None``."""
    boxes, probs, points = detector.detect(image, landmarks=True)
    if boxes is None or points is None or len(boxes) == 0:
        return None
    best = int(np.nanargmax(np.asarray(probs, dtype=np.float64)))
    return np.asarray(points[best], dtype=np.float64), float(probs[best])


def source_folder(dataset: str, src: Path) -> Path:
    """Where the raw images are for ``dataset`` given its root (or the folder itself)."""
    if dataset == "ferplus":
        raise ValueError("FERPlus images are already 48x48 face crops; nothing to prepare")
    if dataset == "rafdb" and (src / "Image" / "original").is_dir():
        return src / "Image" / "original"
    if dataset == "affectnet" and (src / "Manually_Annotated_Images").is_dir():
        return src / "Manually_Annotated_Images"
    if dataset not in ("rafdb", "affectnet", "folder"):
        raise ValueError(f"unknown dataset {dataset!r} for prepare; use rafdb, affectnet or "
                         f"folder")
    return src


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _save(image: Image.Image, path: Path) -> None:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), None)
    with atomic_path(path, suffix=path.suffix) as tmp:
        if fmt == "JPEG":
            image.save(tmp, "JPEG", quality=95)
        else:
            image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def prepare(dataset: str, src: str | Path, dst: str | Path, size: int = 112,
            device: str = "cpu", progress: bool = True, detector=None) -> dict:
    """Detect, align and crop every image of ``src`` into ``dst`` (see the module docstring).

    Returns counts ``aligned``, ``no_face``, ``skipped`` and the ``manifest`` path.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"{src}: source folder does not exist")
    folder = source_folder(dataset, src)
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    dst.mkdir(parents=True, exist_ok=True)
    manifest = dst / MANIFEST
    no_face = set(manifest.read_text().split("\n")) - {""} if manifest.is_file() else set()
    todo = [f for f in files if not (dst / f.relative_to(folder)).is_file()]
    counts = {"aligned": 0, "no_face": 0, "skipped": len(files) - len(todo)}
    if todo and detector is None:
        detector = make_detector(device)
    from tqdm.auto import tqdm

    try:
        for f in tqdm(todo, desc="align", unit="img", disable=not progress):
            rel = f.relative_to(folder)
            try:
                with Image.open(f) as im:
                    image = im.convert("RGB")
            except (OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"{f}: unreadable or truncated image ({exc})") from exc
            found = detect_landmarks(detector, image)
            if found is None:
                out = centre_crop(image, size)
                no_face.add(rel.as_posix())
                counts["no_face"] += 1
            else:
                out = align_face(image, found[0], size)
                no_face.discard(rel.as_posix())
                counts["aligned"] += 1
            _save(out, dst / rel)
    finally:
        write_text(manifest, "".join(f"{n}\n" for n in sorted(no_face)))
        summary = {"dataset": dataset, "src": str(folder), "size": size, "images": len(files),
                   "no_face_total": len(no_face), **counts}
        write_text(dst / "prepare.json", json.dumps(summary, indent=1) + "\n")
    return {**counts, "manifest": str(manifest), "no_face_total": len(no_face)}


def align_image(detector, image: Image.Image, size: int = 112) -> dict:
    """Detect and align one picture: ``landmarks``, ``prob``, ``aligned`` (or the centre crop
    when no face is found, with ``landmarks`` None) and ``residual_px``, the largest distance
    between the mapped landmarks and the template."""
    found = detect_landmarks(detector, image)
    if found is None:
        return {"landmarks": None, "prob": None, "aligned": centre_crop(image, size),
                "residual_px": None}
    pts, prob = found
    m = similarity_transform(pts, template(size))
    mapped = pts @ m[:, :2].T + m[:, 2]
    return {"landmarks": pts, "prob": prob, "aligned": warp(image, m, size),
            "residual_px": float(np.abs(mapped - template(size)).max())}
