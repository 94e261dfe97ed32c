"""Split loading for training (cfdan.data.splits): roots, seeded subsets, fingerprints."""

from __future__ import annotations

import pytest
import torch

from cfdan.data.splits import DataRootError, data_root, load_splits, subsample
from cfdan.data.types import FaceTensors
from cfdan.training.config import load_config


def _faces(n, split="train"):
    labels = torch.arange(n) % 3
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 4, 4).clone()
    return FaceTensors(images, labels, None, ["a", "b", "c"], "fp0", "toy", split)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_subsample_is_seeded_by_split_and_marks_the_fingerprint(split):
    ft = _faces(50, split)
    sub = subsample(ft, 20)
    g = torch.Generator().manual_seed(1234 + len(split))
    idx = torch.randperm(50, generator=g)[:20].sort().values
    assert torch.equal(sub.images, ft.images[idx]) and torch.equal(sub.labels, ft.labels[idx])
    assert sub.fingerprint == "fp0[subset 20]" and ft.fingerprint == "fp0"
    assert subsample(ft, 0) is ft and subsample(ft, 50) is ft


def test_load_splits_synthetic_subsets(tmp_path):
    cfg = load_config("smoke", {"data.max_train": 40, "data.max_eval": 30,
                                "data.cache_dir": str(tmp_path)})
    splits = load_splits(cfg)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [40, 30, 30]
    for name, s in splits.items():
        assert isinstance(s, FaceTensors) and s.split == name and s.labels.dtype == torch.int64
        assert s.fingerprint.endswith("[subset 40]" if name == "train" else "[subset 30]")
    only_val = load_splits(cfg, splits=("val",))
    assert list(only_val) == ["val"] and torch.equal(only_val["val"].images, splits["val"].images)


def test_data_root_is_read_at_call_time(monkeypatch, tmp_path):
    cfg = load_config("smoke", {"data.dataset": "ferplus"})
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(tmp_path / "fer"))
    assert data_root(cfg) == str(tmp_path / "fer")
    cfg.data.root = "/elsewhere"
    assert data_root(cfg) == "/elsewhere"
    assert data_root(load_config("smoke")) == ""
    with pytest.raises(DataRootError, match="rafdb"):
        data_root(load_config("smoke", {"data.dataset": "rafdb"}))


def test_missing_root_names_the_folder(tmp_path):
    cfg = load_config("smoke", {"data.dataset": "ferplus", "data.root": str(tmp_path / "nope")})
    with pytest.raises(DataRootError, match="nope.*does not exist"):
        load_splits(cfg)
