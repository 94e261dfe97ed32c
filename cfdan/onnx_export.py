"""The inference model and the face detector as ONNX, for the book's in-browser page (issue 29).

:class:`InferenceGraph` wraps a :class:`cfdan.model.CFDAN` so that one call gives what the page
draws: the class logits and Fig. 8's spatial map, the attention each grid cell receives in the
last spatial layer (:func:`cfdan.model.network.received_attention`, summing to 1).
:func:`export` writes it with ``torch.onnx.export`` (the dynamo exporter) and checks ONNX
Runtime's logits against PyTorch's on the same input.

:func:`export_mtcnn` writes facenet-pytorch's three MTCNN nets (P-Net, R-Net, O-Net: the
detector :func:`cfdan.predict.detect_faces` runs) the same way, and :func:`export_web` puts
everything the book's *Try it* page loads into one folder (``make demo``, or
``python -m cfdan export --web DIR``): ``cfdan.onnx``, ``pnet.onnx``, ``rnet.onnx``,
``onet.onnx`` and ``meta.json`` (class names, input size and normalisation, the detector's
settings, and the checks). The cascade around the nets (image pyramid, NMS, box regression)
is JavaScript, ``book/_extra/_static/demo/try.js``, a line-by-line port of facenet-pytorch's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfdan import atomic

OUTPUTS = ("logits", "spatial_attention")
"""The graph's outputs: (N, classes) logits, and (N, H, W) received attention (zeros for a
model without spatial attention)."""


class InferenceGraph(nn.Module):
    """``x`` (N, 3, S, S), normalised as :func:`cfdan.predict` feeds the model -> (logits,
    spatial attention map on the token grid)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x, return_attention=True)
        spatial = out["attention"]["spatial"]
        if spatial is None:
            _, hw = self.model.tokens(x[:1])
            spatial = out["logits"].new_zeros(x.shape[0], *hw)
        return out["logits"], spatial


def export(model: nn.Module, dst: str | os.PathLike, image_size: int,
           check: bool = True) -> dict[str, Any]:
    """Write ``model`` (eval mode, float32) as ONNX to ``dst`` (atomically) with a dynamic batch;
    with ``check``, run ONNX Runtime on a random batch and return the largest absolute
    difference from PyTorch per output (``max_abs_diff``)."""
    graph = InferenceGraph(model.float().eval()).eval()
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=64)
    with atomic.atomic_path(dst) as tmp, torch.no_grad():
        torch.onnx.export(graph, (x,), str(tmp), dynamo=True, input_names=["image"],
                          output_names=list(OUTPUTS), dynamic_shapes=({0: batch},),
                          external_data=False, verbose=False)
    info: dict[str, Any] = {"path": str(dst), "image_size": image_size,
                            "outputs": list(OUTPUTS)}
    if check:
        info["max_abs_diff"] = compare(graph, dst, x)
    return info


def run(path: str | os.PathLike, x: torch.Tensor) -> list[Any]:
    """ONNX Runtime's outputs (:data:`OUTPUTS`, NumPy arrays) for the batch ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(Path(path)), providers=["CPUExecutionProvider"])
    return sess.run(list(OUTPUTS), {"image": x.detach().cpu().numpy()})


def compare(graph: nn.Module, path: str | os.PathLike, x: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs, per output."""
    with torch.no_grad():
        want = [t.numpy() for t in graph(x)]
    got = run(path, x)
    return {name: float(abs(w - g).max()) for name, w, g in zip(OUTPUTS, want, got,
                                                                 strict=True)}


# --------------------------------------------------------------------------- face detector
MTCNN_NETS: dict[str, tuple[int | None, tuple[str, ...]]] = {
    "pnet": (None, ("reg", "prob")),
    "rnet": (24, ("reg", "prob")),
    "onet": (48, ("reg", "landmarks", "prob")),
}
"""Input side (``None``: any height and width of at least 12, P-Net is fully convolutional)
and output names of each MTCNN net, in the order facenet-pytorch's modules return them:
box regression (N, 4[, h, w]), O-Net's five landmarks (N, 10), face probability
(N, 2[, h, w]; column 1 is "face"). The input is (N, 3, H, W), RGB, ``(pixel - 127.5) / 128``."""


def _net_input(side: int | tuple[int, int], batch: int, seed: int) -> torch.Tensor:
    h, w = (side, side) if isinstance(side, int) else side
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g) * 2 - 1  # the range (pixel - 127.5) / 128 has


def export_net(net: nn.Module, name: str, dst: str | os.PathLike,
               check: bool = True) -> dict[str, Any]:
    """Write one MTCNN net (``name`` in :data:`MTCNN_NETS`) as ONNX with a dynamic batch
    (and, for P-Net, dynamic height and width); with ``check``, the largest absolute
    difference between ONNX Runtime's and PyTorch's outputs on random input, including a
    batch and (P-Net) an image size other than the traced ones."""
    side, outputs = MTCNN_NETS[name]
    net = net.float().eval()
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=4096)}
    if side is None:  # P-Net runs on every level of the image pyramid
        dims[2] = torch.export.Dim("height", min=12, max=8192)
        dims[3] = torch.export.Dim("width", min=12, max=8192)
    x = _net_input(side or (37, 52), 2, 0)
    with atomic.atomic_path(dst) as tmp, torch.no_grad():
        torch.onnx.export(net, (x,), str(tmp), dynamo=True, input_names=["image"],
                          output_names=list(outputs), dynamic_shapes=(dims,),
                          external_data=False, verbose=False)
    info: dict[str, Any] = {"path": str(dst), "input_side": side, "outputs": list(outputs)}
    if check:
        probes = [x, _net_input(side or (12, 12), 1, 1),
                  _net_input(side or (101, 67), 5, 2)]
        diffs = [compare_net(net, dst, probe, outputs) for probe in probes]
        info["max_abs_diff"] = {k: max(d[k] for d in diffs) for k in outputs}
    return info


def run_net(path: str | os.PathLike, x: torch.Tensor, outputs: tuple[str, ...]) -> list[Any]:
    """ONNX Runtime's outputs (NumPy arrays, in the order of ``outputs``) of one net."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(Path(path)), providers=["CPUExecutionProvider"])
    return sess.run(list(outputs), {"image": x.detach().cpu().numpy()})


def compare_net(net: nn.Module, path: str | os.PathLike, x: torch.Tensor,
                outputs: tuple[str, ...]) -> dict[str, float]:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs of a net."""
    with torch.no_grad():
        want = [t.numpy() for t in net(x)]
    got = run_net(path, x, outputs)
    return {k: float(abs(w - g).max()) for k, w, g in zip(outputs, want, got, strict=True)}


def export_mtcnn(dst_dir: str | os.PathLike, mtcnn: Any = None,
                 check: bool = True) -> dict[str, dict[str, Any]]:
    """Write ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` into ``dst_dir`` from ``mtcnn``
    (default: :func:`cfdan.predict.face_detector`, facenet-pytorch's shipped weights)."""
    from cfdan.predict import face_detector

    mtcnn = mtcnn if mtcnn is not None else face_detector()
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    return {name: export_net(getattr(mtcnn, name), name, dst_dir / f"{name}.onnx", check)
            for name in MTCNN_NETS}


# --------------------------------------------------------------------------- the book's page
WEB_FILES = ("cfdan.onnx", "pnet.onnx", "rnet.onnx", "onet.onnx", "meta.json")
"""What :func:`export_web` writes; ``meta.json`` last, so its presence means a whole set."""

DETECTOR_NMS = {"pnet_scale": 0.5, "pnet_all": 0.7, "rnet": 0.7, "onet_min": 0.7}
"""facenet-pytorch's fixed NMS thresholds (``detect_face``): IoU within each pyramid level,
IoU over all levels, IoU after R-Net, and intersection over the smaller box after O-Net."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_web(dst_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               check: bool = True) -> dict[str, Any]:
    """Everything the book's *Try it* page loads, into ``dst_dir`` (:data:`WEB_FILES`): the
    classifier of ``checkpoint`` (default: the shipped model), the three MTCNN nets, and
    ``meta.json``, which tells the page what :func:`cfdan.predict.predict_photo` does around
    the nets. Returns that metadata."""
    from cfdan import predict

    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / "meta.json").unlink(missing_ok=True)  # no stale set while the files change
    model, meta = predict.load_checkpoint(checkpoint)
    size = int(meta["image_size"])
    classifier = export(model, dst_dir / "cfdan.onnx", size, check=check)
    mtcnn = predict.face_detector()
    nets = export_mtcnn(dst_dir, mtcnn, check=check)
    norm = predict._eval_transform(size)
    src = Path(checkpoint) if checkpoint else predict.DEFAULT_CHECKPOINT
    web: dict[str, Any] = {
        "classifier": {
            "file": "cfdan.onnx", "input": "image", "outputs": list(OUTPUTS),
            "class_names": list(meta["class_names"]), "image_size": size,
            "in_channels": int(meta.get("in_channels", 3)),
            # predict.face_batch: the square crop (predict._crop), Pillow's convert("L") when
            # in_channels is 1, Pillow's resize to image_size (bicubic), /255, then
            # (x - mean) / std per RGB channel (a grey image is repeated over the three).
            "crop": "square around the box, side max(w, h), outside the photo black",
            "resize": "pillow-bicubic", "mean": list(norm.mean), "std": list(norm.std),
            "checkpoint": src.name, "checkpoint_sha256": _sha256(src),
            "dataset": meta.get("dataset"), "source": meta.get("source"),
        },
        "detector": {
            "files": {name: f"{name}.onnx" for name in MTCNN_NETS},
            "outputs": {name: list(outs) for name, (_, outs) in MTCNN_NETS.items()},
            "min_face": int(mtcnn.min_face_size), "factor": float(mtcnn.factor),
            "thresholds": [float(t) for t in mtcnn.thresholds], "nms": DETECTOR_NMS,
            "resize": "area", "offset": 127.5, "scale": 0.0078125,
            "order": "largest first" if mtcnn.select_largest else "most probable first",
        },
    }
    if check:
        web["checks"] = {"max_abs_diff_onnxruntime_vs_pytorch": {
            "cfdan": classifier["max_abs_diff"],
            **{name: info["max_abs_diff"] for name, info in nets.items()}}}
    web["sizes"] = {f: (dst_dir / f).stat().st_size for f in WEB_FILES if f != "meta.json"}
    with atomic.atomic_path(dst_dir / "meta.json") as tmp:
        Path(tmp).write_text(json.dumps(web, indent=1) + "\n", encoding="utf-8")
    return web
