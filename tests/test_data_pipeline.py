"""The batched augmentation pipeline (§4.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cfdan.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, Augment


def _batch(n=6, c=1, s=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    x = x.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("train", [True, False])
def test_shapes_and_dtype(channels, train):
    y = Augment(64, train=train, seed=0)(_batch(c=channels))
    assert y.shape == (6, 3, 64, 64) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_eval_at_native_size_is_normalisation_only():
    x = _batch(c=3)
    y = Augment(48, train=False)(x)
    assert torch.allclose(y, _normalised(x), atol=1e-5)


def test_eval_resize_of_constant_image_is_constant():
    x = torch.full((2, 1, 48, 48), 200, dtype=torch.uint8)
    y = Augment(224, train=False)(x)
    assert torch.allclose(y, _normalised(x)[:, :, :1, :1].expand(-1, -1, 224, 224), atol=1e-5)


def test_train_is_seeded_and_varies():
    x = _batch()
    a = Augment(64, seed=3)
    b = Augment(64, seed=3)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), Augment(64, seed=4)(x))
    first, second = a(x), a(x)  # the generator advances between batches
    assert not torch.equal(first, second)


def test_identity_parameters_reproduce_eval():
    x = _batch()
    ident = Augment(48, seed=0, scale=(1, 1), ratio=(1, 1), flip=0.0, degrees=0.0, erase_p=0.0)
    assert torch.allclose(ident(x), Augment(48, train=False)(x), atol=1e-4)


def test_flip_mirrors():
    x = _batch()
    flip = Augment(48, seed=0, scale=(1, 1), ratio=(1, 1), flip=1.0, degrees=0.0, erase_p=0.0)
    assert torch.allclose(flip(x), Augment(48, train=False)(x).flip(-1), atol=1e-4)


def test_rotation_moves_pixels_but_keeps_centre():
    x = torch.zeros(1, 1, 49, 49, dtype=torch.uint8)
    x[..., 24, 24] = 255
    x[..., 24, 40] = 255
    rot = Augment(49, seed=0, scale=(1, 1), ratio=(1, 1), flip=0.0, degrees=10.0, erase_p=0.0)
    y = rot(x)[0, 0]
    ref = Augment(49, train=False)(x)[0, 0]
    assert torch.allclose(y[24, 24], ref[24, 24], atol=1e-3)  # the centre stays
    assert not torch.allclose(y, ref, atol=1e-2)


def test_random_erasing_sets_boxes_to_mean():
    x = torch.full((32, 1, 48, 48), 255, dtype=torch.uint8)
    er = Augment(48, seed=0, scale=(1, 1), ratio=(1, 1), flip=0.0, degrees=0.0, erase_p=1.0)
    y = er(x)
    erased = (y == 0).all(dim=1)  # all three channels at the normalised mean
    per_image = erased.flatten(1).float().mean(1)
    assert (per_image > 0.01).all() and (per_image < 0.5).all()
    none = Augment(48, seed=0, scale=(1, 1), ratio=(1, 1), flip=0.0, degrees=0.0, erase_p=0.0)
    assert not (none(x) == 0).all(dim=1).any()


def test_fast_grid_equals_affine_grid():
    aug = Augment(37, seed=5)
    theta = aug._theta(4)
    ref = F.affine_grid(theta, [4, 1, 37, 37], align_corners=False)
    assert torch.allclose(aug._grid(theta, 37), ref, atol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="C in"):
        Augment(32)(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = _batch()
    cpu = Augment(64, seed=1)(x)
    gpu = Augment(64, seed=1)(x.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)
