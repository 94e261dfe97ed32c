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


# ----------------------------------------------------------------------- the Try-it page's nets
@pytest.fixture(scope="module")
def mtcnn():
    from cfdan.predict import face_detector

    return face_detector()


@pytest.mark.parametrize("name", list(onnx_export.MTCNN_NETS))
def test_mtcnn_nets_match_facenet_pytorch(mtcnn, name, tmp_path: Path):
    """P-Net, R-Net and O-Net as ONNX give facenet-pytorch's outputs within 1e-4, P-Net on
    image sizes other than the traced one (every level of the pyramid), all on batches other
    than the traced one."""
    net = getattr(mtcnn, name)
    path = tmp_path / f"{name}.onnx"
    info = onnx_export.export_net(net, name, path)
    side, outputs = onnx_export.MTCNN_NETS[name]
    assert info["outputs"] == list(outputs)
    assert max(info["max_abs_diff"].values()) <= TOL
    # a real input: the astronaut photo, normalised as detect_face does
    from skimage import data as skdata

    img = torch.as_tensor(skdata.astronaut()).permute(2, 0, 1)[None].float()
    sizes = [(12, 12), (61, 61), (157, 203), (307, 307)] if side is None else [(side, side)]
    for h, w in sizes:
        x = (torch.nn.functional.interpolate(img, size=(h, w), mode="area") - 127.5) * 0.0078125
        x = x.expand(3 if side else 1, -1, -1, -1).contiguous()
        got = onnx_export.run_net(path, x, outputs)
        with torch.no_grad():
            want = net(x)
        for k, g, wt in zip(outputs, got, want, strict=True):
            assert g.shape == tuple(wt.shape), (k, g.shape, wt.shape)
            assert abs(g - wt.numpy()).max() <= TOL, (name, k, (h, w))


@pytest.mark.slow
def test_export_web_writes_what_the_page_loads(tmp_path: Path):
    """`python -m cfdan export --web DIR` (make demo): the classifier and the three nets, each
    checked against PyTorch, and meta.json with what cfdan.predict does around them."""
    import json
    import subprocess
    import sys

    from cfdan import predict
    from cfdan.data.pipeline import IMAGENET_MEAN, IMAGENET_STD

    if not predict.DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"{predict.DEFAULT_CHECKPOINT} is not shipped")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "cfdan", "export", "--web", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(onnx_export.WEB_FILES)
    meta = json.loads((out / "meta.json").read_text())
    _, ck = predict.load_checkpoint()
    cls, det = meta["classifier"], meta["detector"]
    assert cls["class_names"] == list(ck["class_names"])
    assert cls["image_size"] == ck["image_size"]
    assert cls["in_channels"] == ck.get("in_channels", 3)
    assert cls["mean"] == list(IMAGENET_MEAN) and cls["std"] == list(IMAGENET_STD)
    assert cls["outputs"] == list(onnx_export.OUTPUTS)
    mt = predict.face_detector()
    assert det["thresholds"] == list(mt.thresholds) and det["factor"] == mt.factor
    assert det["min_face"] == mt.min_face_size == predict.MIN_FACE
    diffs = meta["checks"]["max_abs_diff_onnxruntime_vs_pytorch"]
    assert set(diffs) == {"cfdan", *onnx_export.MTCNN_NETS}
    assert max(v for d in diffs.values() for v in d.values()) <= TOL
    assert meta["sizes"] == {f: (out / f).stat().st_size for f in onnx_export.WEB_FILES
                             if f != "meta.json"}
