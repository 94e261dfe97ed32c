"""Probes of the data chapter (cfdan.training.probe) on tiny hand-made sets and fixture folders."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import make_ferplus

from cfdan.data.pipeline import Augment
from cfdan.data.types import FaceTensors
from cfdan.training import probe
from cfdan.training.config import load_config


def _faces(levels: list[int], per_class: int = 5, noise: int = 0, seed: int = 0) -> FaceTensors:
    """Grey 8x8 images whose class ``c`` has brightness ``levels[c]`` (plus uniform noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(levels)).repeat_interleave(per_class)
    base = torch.tensor(levels, dtype=torch.int64)[labels].view(-1, 1, 1, 1)
    jitter = torch.randint(-noise, noise + 1, (len(labels), 1, 8, 8), generator=g)
    images = (base + jitter).clamp(0, 255).to(torch.uint8)
    return FaceTensors(images=images, labels=labels, soft=None,
                       class_names=[f"c{i}" for i in range(len(levels))], fingerprint="x",
                       name="toy", split="train")


def test_mean_intensity_separates_brightness_classes():
    train, test = _faces([20, 120, 220], noise=10), _faces([20, 120, 220], noise=10, seed=1)
    assert probe.mean_intensity_accuracy(train, test) == 1.0


def test_mean_intensity_is_at_chance_when_brightness_is_shared():
    same = _faces([100, 100, 100, 100])
    # every centroid is equal: argmin picks class 0 for every image, i.e. 1 / K correct
    assert probe.mean_intensity_accuracy(same, same) == pytest.approx(1 / 4)


def test_pipeline_throughput_has_one_row_per_size_and_both_modes():
    df = probe.pipeline_throughput(sizes=(16, 24), batch=4, repeats=1)
    assert list(df.index) == [16, 24]
    assert sorted(df.columns) == ["eval", "train"]
    assert (df.to_numpy() > 0).all()


def test_augment_facts_read_the_recipe():
    aug = Augment(32, train=True, seed=0, scale=(0.7, 1.0), degrees=5.0, erase_p=0.5)
    facts = probe.augment_facts(aug)
    assert facts == {"aug_scale_min": 0.7, "aug_scale_max": 1.0, "aug_flip_p": aug.flip,
                     "aug_degrees": 5.0, "aug_erase_p": 0.5,
                     "aug_erasing": "then random erasing blanks a box in a share of 0.5 of the "
                                    "images"}
    off = Augment(32, train=True, seed=0, erase_p=0.0)
    assert probe.augment_facts(off)["aug_erasing"] == "random erasing is off in this recipe"


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_profile_facts_come_from_the_profile(profile):
    cfg = load_config(profile, [])
    facts = probe.profile_facts(profile)
    assert facts["trunk_width"] == cfg.model["trunk_width"]
    assert facts["image_size"] == cfg.data.image_size
    assert facts["batch_size"] == cfg.train.batch_size
    assert facts["epochs"] == cfg.train.epochs


def test_profile_augment_is_the_profiles_recipe():
    t = load_config("cpu", []).train
    facts = probe.augment_facts(probe.profile_augment("cpu", 40))
    assert facts["aug_scale_min"] == t.aug_crop_scale and facts["aug_degrees"] == t.aug_degrees
    assert facts["aug_erase_p"] == t.aug_erase_p
    assert probe.profile_augment("cpu").image_size == load_config("cpu", []).data.image_size


def test_training_step_share_of_the_smoke_profile():
    t = probe.training_step_share("smoke", repeats=1)
    assert t["augment_ms"] > 0 and t["step_ms"] > 0
    assert t["augment_share"] == pytest.approx(t["augment_ms"] / (t["augment_ms"] + t["step_ms"]))


def test_read_pack_equals_its_folder(tmp_path):
    from cfdan.data import pack

    root, cache = tmp_path / "ferplus", tmp_path / "cache"
    make_ferplus(root)
    out = tmp_path / "fer.npz"
    pack.pack(root, out, cache_dir=cache, preset=1)
    got = probe.read_pack(out, root, cache_dir=cache)
    assert got["file"] == "fer.npz" and got["equal"] is True
    assert got["mb"] == pytest.approx(out.stat().st_size / 1e6)
    assert "equal" not in probe.read_pack(out)
