"""The procedurally drawn synthetic expression set."""

from __future__ import annotations

import pytest
import torch

from cfdan.data import load_dataset
from cfdan.data import synthetic as S


def test_deterministic_and_split_specific():
    a = load_dataset("synthetic", None, "val", seed=3)
    b = load_dataset("synthetic", None, "val", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.fingerprint == b.fingerprint
    c = load_dataset("synthetic", None, "test", seed=3)
    d = load_dataset("synthetic", None, "val", seed=4)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, d.images)
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


def test_shapes_sizes_and_balance():
    ds = load_dataset("synthetic", None, "train", sizes=(160, 40, 40), size=32)
    assert ds.images.shape == (160, 1, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.class_names == S.CLASS_NAMES
    assert set(ds.class_counts().values()) == {20}
    five = S.load("test", sizes=(10, 10, 50), num_classes=5)
    assert five.num_classes == 5 and int(five.labels.max()) == 4
    with pytest.raises(ValueError, match="num_classes"):
        S.generate(10, num_classes=9)


def test_images_use_the_range_and_vary():
    ds = S.load("val")
    x = ds.images.float()
    assert x.std() > 20  # not flat
    assert x.min() == 0 or x.max() == 255 or (x.max() - x.min()) > 150


def test_not_separable_by_mean_intensity():
    tr, te = S.load("train"), S.load("test")
    f = tr.images.float().mean((1, 2, 3))
    ft = te.images.float().mean((1, 2, 3))
    centroids = torch.stack([f[tr.labels == c].mean() for c in range(tr.num_classes)])
    acc = float(((ft[:, None] - centroids).abs().argmin(1) == te.labels).float().mean())
    assert acc < 0.25  # chance is 0.125


@pytest.mark.slow
def test_tiny_cnn_learns_it_but_not_trivially():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tr, te = S.load("train"), S.load("test")
    accs = S.probe_accuracy(tr, te, epochs=7)
    assert accs[-1] > 0.35, accs  # chance is 1/8
    assert accs[0] < 0.9, accs  # not solved after one epoch
