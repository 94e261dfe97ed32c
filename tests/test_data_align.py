"""MTCNN detection + 5-point similarity alignment (§4.2) on scikit-image sample pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfdan.data import align


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = scale * src @ rot.T + shift
    m = align.similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)


def test_warp_moves_a_point_where_the_transform_says():
    img = np.zeros((80, 80, 3), np.uint8)
    img[20:23, 30:33] = 255  # a bright dot centred at (31, 21) (x, y)
    m = align.similarity_transform(np.array([[31, 21], [60, 60], [10, 70]]),
                                   np.array([[20, 30], [49, 69], [-1, 79]]))  # pure shift
    out = np.asarray(align.warp(Image.fromarray(img), m, 64))
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert abs(x - 20) <= 1 and abs(y - 30) <= 1


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    skdata = pytest.importorskip("skimage.data")
    src = tmp_path_factory.mktemp("raw")
    Image.fromarray(skdata.astronaut()).save(src / "astronaut.png")
    Image.fromarray(skdata.coins()).save(src / "sub_coins.png")
    (src / "nested").mkdir()
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(src / "nested" / "flat.jpg")
    return src


@pytest.mark.slow
def test_prepare_aligns_astronaut_and_lists_faceless(pictures, tmp_path):
    pytest.importorskip("facenet_pytorch")
    dst = tmp_path / "aligned"
    det = align.make_detector("cpu")
    report = align.prepare("folder", pictures, dst, size=112, progress=False, detector=det)
    assert report["aligned"] == 1 and report["no_face"] == 2 and report["skipped"] == 0
    listed = (dst / "no_face.txt").read_text().split()
    assert listed == ["nested/flat.jpg", "sub_coins.png"]
    for rel in ("astronaut.png", "sub_coins.png", "nested/flat.jpg"):
        with Image.open(dst / rel) as im:
            assert im.size == (112, 112)
    # the astronaut's landmarks land on the template after alignment
    with Image.open(pictures / "astronaut.png") as im:
        pts, prob = align.detect_landmarks(det, im.convert("RGB"))
    assert prob > 0.9
    m = align.similarity_transform(pts, align.template(112))
    mapped = pts @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - align.template(112)).max() < 6
    # a re-detection in the aligned crop finds the eyes near the template's eyes
    with Image.open(dst / "astronaut.png") as im:
        found = align.detect_landmarks(det, im.convert("RGB"))
    assert found is not None
    assert np.abs(found[0][:2] - align.template(112)[:2]).max() < 8
    # resumable: everything is skipped the second time, the manifest is kept
    again = align.prepare("folder", pictures, dst, size=112, progress=False, detector=det)
    assert again["skipped"] == 3 and again["aligned"] == again["no_face"] == 0
    assert (dst / "no_face.txt").read_text().split() == listed
    assert json.loads((dst / "prepare.json").read_text())["no_face_total"] == 2


def test_prepare_errors(tmp_path):
    from cfdan.data import DataError

    with pytest.raises(DataError, match="does not exist"):
        align.prepare("folder", tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        align.prepare("folder", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="already 48x48"):
        align.prepare("ferplus", tmp_path / "empty", tmp_path / "out", progress=False)


class _FakeDetector:
    """Finds a 'face' only in pictures wider than tall (for the CLI plumbing test)."""

    def detect(self, image, landmarks=True):
        if image.width <= image.height:
            return None, [None], None
        pts = align.template(112) * (min(image.size) / 112)
        return np.array([[0, 0, 10, 10]]), np.array([0.99]), pts[None]


def test_prepare_cli_and_resume(tmp_path, monkeypatch, capsys):
    from cfdan.cli import main

    src = tmp_path / "RAF" / "Image" / "original"
    src.mkdir(parents=True)
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(src / "train_00001.jpg")
    Image.fromarray(np.zeros((80, 60, 3), np.uint8)).save(src / "test_0001.jpg")
    monkeypatch.setattr(align, "make_detector", lambda device="cpu", **kw: _FakeDetector())
    dst = tmp_path / "aligned"
    argv = ["prepare", "--dataset", "rafdb", "--src", str(tmp_path / "RAF"), "--dst", str(dst),
            "--size", "64", "--quiet"]
    assert main(argv) == 0
    assert "aligned 1, no face found 1" in capsys.readouterr().out
    assert (dst / "no_face.txt").read_text().split() == ["test_0001.jpg"]
    with Image.open(dst / "train_00001.jpg") as im:
        assert im.size == (64, 64)
    assert main(argv) == 0
    assert "skipped (done) 2" in capsys.readouterr().out
    assert main(["prepare", "--src", str(tmp_path / "missing"), "--dst", str(dst)]) == 2
    assert "missing: source folder does not exist" in capsys.readouterr().err


def test_data_check_synthetic(capsys):
    from cfdan.cli import main

    assert main(["data", "check", "--dataset", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "contempt" in out and "synthetic" in out
