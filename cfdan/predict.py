"""Inference: self-describing checkpoints, photo -> faces (MTCNN, §4.2) -> expressions.

An inference checkpoint (written by :func:`cfdan.training.loop.inference_checkpoint` as ``best.pt``,
or shipped as ``models/cfdan_cpu_ferplus.pt`` after :func:`export_checkpoint`) embeds the
model config, the run config, the class names and the input format, so it loads without any
profile. facenet-pytorch (MTCNN) is imported only when a photo is processed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdan import atomic, paths, safe_load

DEFAULT_CHECKPOINT: Path = paths.REPO_ROOT / "models" / "cfdan_cpu_ferplus.pt"


class InputError(ValueError):
    """A file given to a command is not what the command needs (not an inference checkpoint,
    not an image); the message names the file."""


def read_inference_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict stored in an inference checkpoint file; :class:`InputError` for anything else.

    Read with :func:`cfdan.safe_load.load` (``weights_only=True``): tensors and plain types
    only, so a file that would run code when unpickled is refused before any of it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = safe_load.load(path)
    except safe_load.UnsafeCheckpointError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # text, truncated or foreign files fail in many ways
        raise InputError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})"
                         ) from exc
    if not isinstance(ck, dict) or ck.get("kind") != "cfdan-inference":
        raise InputError(
            f"{path}: not an inference checkpoint (expected best.pt written by `cfdan train` or "
            f"a file made by export_checkpoint; last.pt holds training state only)"
        )
    return ck


def _eval_transform(image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resize + normalise, as at validation (§4.2); no augmentation."""
    from cfdan.data.pipeline import Augment

    return Augment(image_size, train=False, seed=0)


def load_checkpoint(path: str | os.PathLike | None = None, device: str = "cpu"):
    """Load an inference checkpoint; returns ``(model in eval mode, metadata dict)``."""
    from cfdan.model import CFDAN, CFDANConfig

    path = Path(path) if path else DEFAULT_CHECKPOINT
    if path == DEFAULT_CHECKPOINT and not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (the default model is not "
                                f"shipped yet; pass --checkpoint)")
    ck = read_inference_checkpoint(path)
    try:
        model = CFDAN(CFDANConfig.from_dict(ck["model_config"]))
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: the checkpoint's model does not load in this version of "
                         f"cfdan ({exc})") from exc
    model.to(device).eval()
    meta = {k: v for k, v in ck.items() if k != "model"}
    return model, meta


def best_val_record(experiment: str, variant: str = "full",
                    root: str | os.PathLike | None = None) -> dict:
    """The record of ``experiment``/``variant`` with the best validation accuracy (ties: lower
    val loss), among the runs of its experiment file today; the shipped model is chosen so,
    never on test."""
    from cfdan.training.sweep import current_records

    recs = [r for r in current_records(experiment, root) if r.get("variant") == variant]
    if not recs:
        raise FileNotFoundError(f"no finished run of {experiment}/{variant} in the results store")
    return max(recs, key=lambda r: (r["val"]["accuracy"], -r["val"].get("loss", 0.0)))


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
                      source: dict | None = None) -> Path:
    """Copy an inference checkpoint, storing float weights as fp16 when ``half`` (small files);
    ``source`` (experiment, run id, seed, how it was chosen) is stored beside the weights."""
    ck = read_inference_checkpoint(src)
    if source:
        ck["source"] = dict(source)
    if half:
        ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
        ck["weights_dtype"] = "float16"
    with atomic.atomic_path(dst) as tmp:
        torch.save(ck, tmp)
    return Path(dst)


def evaluate_checkpoint(
    path: str | os.PathLike,
    split: str = "val",
    overrides: list[str] | None = None,
    tta_flip: bool | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` of the dataset it was trained on, under the
    checkpoint's own protocol: flip TTA as its config's ``eval.tta_flip`` says, unless
    ``tta_flip`` is given (``protocol`` in the result says which was used).

    ``overrides`` (``data.root=...``) adjust the stored config, e.g. another data location.
    """
    from cfdan.data.splits import load_splits
    from cfdan.training import evaluate
    from cfdan.training.config import apply_overrides, from_dict, validate

    model, meta = load_checkpoint(path, device)
    cfg = from_dict(meta["config"])
    apply_overrides(cfg, overrides)
    validate(cfg)
    data = load_splits(cfg, splits=(split,))[split]
    tf = _eval_transform(cfg.data.image_size)
    own = bool(cfg.eval.tta_flip)
    tta = own if tta_flip is None else bool(tta_flip)
    out = evaluate.infer(model, data.images, tf, batch_size=cfg.train.eval_batch_size,
                         device=device, tta_flip=tta)
    m = evaluate.split_metrics(out["logits"], data.labels, data.class_names)
    m["tta_flip"] = tta
    m["protocol"] = (("flip TTA" if tta else "no TTA") + (
        " (the checkpoint's eval.tta_flip)" if tta == own else
        f" (overriding the checkpoint's eval.tta_flip = {str(own).lower()})"))
    m["checkpoint"] = str(path)
    return m


MIN_FACE = 20
"""Smallest face side (pixels) the detector looks for, by default (MTCNN's own default)."""


def face_detector(min_face: int = MIN_FACE, device: str = "cpu"):
    """facenet-pytorch's MTCNN as :func:`detect_faces` runs it: every face, its default
    thresholds and pyramid factor, bundled weights (nothing downloaded). The book's in-browser
    page runs the same three nets (:func:`cfdan.onnx_export.export_web`)."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise RuntimeError(
            "face detection needs facenet-pytorch (pip install facenet-pytorch)"
        ) from exc
    return MTCNN(keep_all=True, min_face_size=min_face, device=device)


def detect_faces(image, min_face: int = MIN_FACE, device: str = "cpu") -> list[tuple[float, ...]]:
    """Face boxes ``(x0, y0, x1, y1, score)`` in a PIL image, via facenet-pytorch's MTCNN
    (§4.2; bundled weights, nothing downloaded), largest first."""
    boxes, probs = face_detector(min_face, device).detect(image)
    if boxes is None:
        return []
    return [(*map(float, b), float(p)) for b, p in zip(boxes, probs, strict=True)]


def _crop(image, box, margin: float = 0.0):
    x0, y0, x1, y1 = box[:4]
    w, h = x1 - x0, y1 - y0
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return image.crop((int(cx - side / 2), int(cy - side / 2),
                       int(cx + side / 2), int(cy + side / 2)))


def face_batch(meta: dict[str, Any], crops: list, device: str = "cpu") -> torch.Tensor:
    """Face crops (PIL images) as the model's input batch: resized to the checkpoint's image
    size, its channels, normalised as at validation (§4.2)."""
    size, chans = int(meta["image_size"]), int(meta.get("in_channels", 3))
    mode = "L" if chans == 1 else "RGB"
    arrs = []
    for c in crops:
        a = np.asarray(c.convert(mode).resize((size, size)), dtype=np.uint8)
        arrs.append(a[None] if chans == 1 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrs))
    return _eval_transform(size)(x.to(device))


@torch.no_grad()
def classify_faces(model, meta: dict[str, Any], crops: list, device: str = "cpu") -> list[dict]:
    """Class probabilities of face crops (PIL images), sorted high to low per face."""
    if not crops:
        return []
    probs = torch.softmax(model(face_batch(meta, crops, device)).float(), dim=1).cpu().numpy()
    names = list(meta["class_names"])
    out = []
    for p in probs:
        order = np.argsort(-p)
        out.append({"label": names[order[0]],
                    "probabilities": {names[i]: float(p[i]) for i in order}})
    return out


def read_photo(photo: str | os.PathLike):
    """``photo`` as an RGB PIL image; a clear error naming the file when it is missing or not
    an image."""
    from PIL import Image

    photo = Path(photo)
    if not photo.is_file():
        raise FileNotFoundError(f"photo {photo} does not exist")
    try:
        with Image.open(photo) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{photo}: not a readable image ({exc})") from exc


def predict_photo(
    photo: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    min_face: int = MIN_FACE,
) -> list[dict[str, Any]]:
    """Detect faces in ``photo``, classify each; optionally write an annotated copy to ``out``."""
    from PIL import Image, ImageDraw

    if out and Path(out).suffix.lower() not in Image.registered_extensions():
        raise InputError(f"{out}: unknown image type {Path(out).suffix!r} (use .png or .jpg)")
    image = read_photo(photo)
    model, meta = load_checkpoint(checkpoint, device)
    boxes = detect_faces(image, min_face=min_face, device=device)
    preds = classify_faces(model, meta, [_crop(image, b) for b in boxes], device)
    faces = [
        {"box": [round(v, 1) for v in b[:4]], "detector_score": b[4] if len(b) > 4 else None, **p}
        for b, p in zip(boxes, preds, strict=True)
    ]
    if out:
        draw = ImageDraw.Draw(image)
        for f in faces:
            x0, y0, x1, y1 = f["box"]
            draw.rectangle((x0, y0, x1, y1), outline=(255, 64, 64), width=max(2, image.width // 300))
            text = f"{f['label']} {f['probabilities'][f['label']]:.2f}"
            draw.text((x0 + 3, max(0, y0 - 14)), text, fill=(255, 64, 64))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    return faces
