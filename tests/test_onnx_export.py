"""The inference model as ONNX (issue 29 item 1): ONNX Runtime gives PyTorch's logits and
Fig. 8's spatial map, on random input and on a real face, and the attention's export path
changes no bit of training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfdan.model import CFDAN, preset
from cfdan.model import attention as attention_mod

onnx_export = pytest.importorskip("cfdan.onnx_export")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[test])")

TOL = 1e-4


@pytest.fixture(scope="module")
def small_model() -> CFDAN:
    torch.manual_seed(0)
    return CFDAN(preset("full", image_size=48, trunk_width=8)).eval()


def test_random_model_matches_onnx_runtime(small_model, tmp_path: Path):
    path = tmp_path / "m.onnx"
    info = onnx_export.export(small_model, path, 48)
    assert path.is_file() and info["outputs"] == list(onnx_export.OUTPUTS)
    assert max(info["max_abs_diff"].values()) <= TOL
    # another batch size than the one traced: the batch axis is dynamic
    x = torch.randn(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    logits, spatial = onnx_export.run(path, x)
    with torch.no_grad():
        want, want_map = onnx_export.InferenceGraph(small_model)(x)
    assert logits.shape == (5, small_model.cfg.num_classes)
    assert abs(logits - want.numpy()).max() <= TOL
    assert abs(spatial - want_map.numpy()).max() <= TOL
    assert spatial.sum(axis=(1, 2)) == pytest.approx([1.0] * 5, abs=1e-5)  # a distribution


def test_shipped_model_on_a_real_face(tmp_path: Path):
    from PIL import Image
    from skimage import data as skdata

    from cfdan import predict

    try:
        model, meta = predict.load_checkpoint()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    image = Image.fromarray(skdata.astronaut())
    boxes = predict.detect_faces(image)
    assert boxes, "MTCNN finds the astronaut's face"
    x = predict.face_batch(meta, [image.crop(tuple(int(v) for v in boxes[0][:4]))])
    path = tmp_path / "shipped.onnx"
    onnx_export.export(model, path, int(meta["image_size"]), check=False)
    logits, _spatial = onnx_export.run(path, x)
    with torch.no_grad():
        want = model(x)
    assert abs(logits - want.numpy()).max() <= TOL
    assert logits.argmax() == int(want.argmax())


def test_export_path_is_taken_only_while_exporting(small_model, monkeypatch):
    """Training keeps the 5-D fused call (its bits are the stored results'); the 4-D call the
    exporter needs gives the same attention within float rounding."""
    assert not attention_mod.exporting()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        five = small_model(x)
        monkeypatch.setattr(attention_mod, "exporting", lambda: True)
        four = small_model(x)
    assert torch.allclose(five, four, atol=1e-5)
