"""RAF-DB and AffectNet readers (§4.1) on small fixtures in the publishers' layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_affectnet, make_rafdb
from PIL import Image

from cfdan.data import DataError, load_dataset
from cfdan.data import rafdb as R


# --------------------------------------------------------------------------- RAF-DB
@pytest.fixture
def raf(tmp_path: Path):
    root = tmp_path / "rafdb"
    pixels = make_rafdb(root)
    return root, pixels, tmp_path / "cache"


def test_rafdb_splits(raf):
    root, pixels, cache = raf
    sp = {s: load_dataset("rafdb", root, s, cache_dir=cache) for s in ("train", "val", "test")}
    assert all(i.startswith("test_") for i in sp["test"].ids) and len(sp["test"]) == 14
    train_ids, val_ids = set(sp["train"].ids), set(sp["val"].ids)
    assert not train_ids & val_ids and len(train_ids | val_ids) == 40
    assert all(i.startswith("train_") for i in train_ids | val_ids)
    # stratified: every class with rows appears in val
    assert set(sp["val"].labels.tolist()) == set(range(7))
    assert sp["train"].class_names[0] == "surprise" and sp["train"].class_names[6] == "neutral"
    for ds in sp.values():
        assert ds.images.shape[1:] == (3, 100, 100)
        for i, name in enumerate(ds.ids):
            assert np.array_equal(ds.images[i].permute(1, 2, 0).numpy(), pixels[name])
    again = load_dataset("rafdb", root, "val", cache_dir=cache)
    assert again.ids == sp["val"].ids and again.fingerprint == sp["val"].fingerprint
    other = load_dataset("rafdb", root, "val", seed=1, cache_dir=cache)
    assert other.ids != sp["val"].ids and other.fingerprint != sp["val"].fingerprint


def test_rafdb_label_values(raf):
    root, _, cache = raf
    lines = (root / "EmoLabel" / "list_patition_label.txt").read_text().split()
    expected = {lines[i]: int(lines[i + 1]) - 1 for i in range(0, len(lines), 2)}
    ds = load_dataset("rafdb", root, "test", cache_dir=cache)
    assert ds.labels.tolist() == [expected[i] for i in ds.ids]


@pytest.mark.parametrize("breakage, message", [
    ("label_range", "out of range 1..7"),
    ("label_text", "not an integer"),
    ("fields", "expected 'NAME LABEL'"),
    ("missing_labels", "label file is missing"),
    ("missing_images", "image folder is missing"),
    ("missing_image", "is missing"),
    ("truncated", "unreadable or truncated"),
])
def test_rafdb_errors(raf, breakage, message):
    root, _, cache = raf
    lf = root / "EmoLabel" / "list_patition_label.txt"
    img = root / "Image" / "aligned" / "train_00003_aligned.png"
    if breakage == "label_range":
        lf.write_text(lf.read_text().replace("train_00003.png 3", "train_00003.png 8"))
    elif breakage == "label_text":
        lf.write_text(lf.read_text().replace("train_00003.png 3", "train_00003.png x"))
    elif breakage == "fields":
        lf.write_text(lf.read_text().replace("train_00003.png 3", "train_00003.png 3 1"))
    elif breakage == "missing_labels":
        lf.unlink()
    elif breakage == "missing_images":
        shutil.rmtree(root / "Image" / "aligned")
    elif breakage == "missing_image":
        img.unlink()
    elif breakage == "truncated":
        img.write_bytes(img.read_bytes()[:300])
    with pytest.raises(DataError, match=message) as info:
        load_dataset("rafdb", root, "train", cache_dir=cache)
    text = str(info.value)
    assert ("list_patition_label.txt" in text) or ("train_00003" in text) or ("aligned" in text)
    assert not (cache / "rafdb").exists() or not list((cache / "rafdb").iterdir())


def test_rafdb_changed_image_rebuilds_cache(raf):
    root, _, cache = raf
    a = load_dataset("rafdb", root, "test", cache_dir=cache)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(
        root / "Image" / "aligned" / "test_0001_aligned.png")
    b = load_dataset("rafdb", root, "test", cache_dir=cache)
    assert a.fingerprint != b.fingerprint and int(b.images[0].max()) == 0
    assert len(list((cache / "rafdb").iterdir())) == 1


# --------------------------------------------------------------------------- AffectNet
@pytest.fixture
def aff(tmp_path: Path):
    root = tmp_path / "affectnet"
    rows = make_affectnet(root)
    return root, rows, tmp_path / "cache"


@pytest.mark.parametrize("k", [7, 8])
def test_affectnet_class_subsets(aff, k):
    root, rows, cache = aff
    te = load_dataset("affectnet", root, "test", image_size=32, cache_dir=cache, num_classes=k)
    expected = [r for r in rows["test"] if r[2] < k]
    assert te.ids == [r[0] for r in expected]
    assert te.labels.tolist() == [r[2] for r in expected]
    assert te.num_classes == k and te.images.shape[1:] == (3, 32, 32)
    tr = load_dataset("affectnet", root, "train", image_size=32, cache_dir=cache, num_classes=k)
    va = load_dataset("affectnet", root, "val", image_size=32, cache_dir=cache, num_classes=k)
    assert not set(tr.ids) & set(va.ids)
    assert len(tr) + len(va) == sum(r[2] < k for r in rows["train"])


def test_affectnet_crop_is_the_face_box(aff):
    root, rows, cache = aff
    rel, box, _ = rows["test"][0]
    te = load_dataset("affectnet", root, "test", image_size=40, cache_dir=cache)
    with Image.open(root / "Manually_Annotated_Images" / rel) as im:
        x, y, w, h = box
        ref = np.asarray(im.convert("RGB").crop((x, y, x + w, y + h))
                         .resize((40, 40), Image.Resampling.BICUBIC))
    assert np.array_equal(te.images[0].permute(1, 2, 0).numpy(), ref)


@pytest.mark.parametrize("breakage, message", [
    ("expr_range", "out of range 0..10"),
    ("column", "missing column"),
    ("missing_image", "is missing"),
    ("box_outside", "outside"),
])
def test_affectnet_errors(aff, breakage, message):
    root, rows, cache = aff
    f = root / "validation.csv"
    lines = f.read_text().splitlines()
    if breakage == "expr_range":
        parts = lines[1].split(",")
        parts[6] = "12"
        lines[1] = ",".join(parts)
    elif breakage == "column":
        lines[0] = lines[0].replace("expression", "emotion")
    elif breakage == "missing_image":
        (root / "Manually_Annotated_Images" / rows["test"][0][0]).unlink()
    elif breakage == "box_outside":
        parts = lines[1].split(",")
        parts[1] = "500"
        lines[1] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_dataset("affectnet", root, "test", image_size=32, cache_dir=cache)
    assert "validation.csv" in str(info.value) or rows["test"][0][0] in str(info.value)


@pytest.mark.parametrize("dataset", ["rafdb", "affectnet"])
@pytest.mark.parametrize("breakage, message", [
    ("binary", "not CSV text"),
    ("folder", "label file is missing"),
])
def test_label_file_that_is_not_text(raf, aff, dataset, breakage, message):
    root = raf[0] if dataset == "rafdb" else aff[0]
    f = root / ("EmoLabel/list_patition_label.txt" if dataset == "rafdb" else "validation.csv")
    f.unlink()
    if breakage == "binary":
        f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    else:
        f.mkdir()
    with pytest.raises(DataError, match=message) as info:
        load_dataset(dataset, root, "test", cache_dir=root.parent / "cache")
    assert str(f) in str(info.value)


def test_needs_root():
    with pytest.raises(DataError, match="needs a root"):
        load_dataset("rafdb", None, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar", "x", "train")
    assert R.CLASS_NAMES[3] == "happiness"


def test_affectnet_reads_prepared_crops(aff, tmp_path):
    root, rows, cache = aff
    crops = tmp_path / "crops"
    for rel, _, _ in rows["test"]:
        (crops / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((50, 50, 3), 9, np.uint8)).save(crops / rel)
    te = load_dataset("affectnet", root, "test", image_size=24, cache_dir=cache, image_dir=crops)
    assert te.images.shape[1:] == (3, 24, 24) and int(te.images.max()) == 9
    boxed = load_dataset("affectnet", root, "test", image_size=24, cache_dir=cache)
    assert boxed.fingerprint != te.fingerprint
