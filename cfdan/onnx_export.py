"""The inference model as ONNX, for the book's in-browser page (issue 29).

:class:`InferenceGraph` wraps a :class:`cfdan.model.CFDAN` so that one call gives what the page
draws: the class logits and Fig. 8's spatial map, the attention each grid cell receives in the
last spatial layer (:func:`cfdan.model.network.received_attention`, summing to 1).
:func:`export` writes it with ``torch.onnx.export`` (the dynamo exporter) and checks ONNX
Runtime's logits against PyTorch's on the same input.
"""

from __future__ import annotations

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
