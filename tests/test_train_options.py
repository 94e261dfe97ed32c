"""Run options added for cpu v2 and the ablations: amp "auto", paired init, feature snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cfdan import paths, results
from cfdan.training import loop as train
from cfdan.training import provenance, recipe
from cfdan.training.config import ConfigError, from_dict, load_config


def test_amp_auto_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(provenance, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    on = load_config("smoke", ["train.amp=auto", "train.device=cpu"])
    monkeypatch.setattr(provenance, "cpu_flags", lambda: {"avx512f"})
    off = load_config("smoke", ["train.amp=auto", "train.device=cpu"])
    assert on.train.amp is True and off.train.amp is False
    assert on.run_id != off.run_id  # the numerics are part of the run's identity
    assert load_config("smoke", ["train.amp=false"]).run_id == off.run_id


def test_amp_rejects_other_words():
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("smoke", ['train.amp="sometimes"'])


def test_paired_init_gives_shared_components_the_same_weights():
    def model(preset: str, seed: int, paired: bool = True):
        cfg = load_config("smoke", [f"model.preset={preset}", f"train.seed={seed}",
                                    f"train.paired_init={str(paired).lower()}"])
        torch.manual_seed(seed)  # as the training loop does before building
        return recipe.build_model(cfg, 8, cfg.data.image_size).state_dict()

    base, full = model("baseline", 0), model("full", 0)
    trunk = [k for k in base if k.startswith("trunk.")]
    assert all(torch.equal(base[k], full[k]) for k in trunk)
    assert torch.equal(base["head.weight"], full["head.weight"])
    unpaired_base, unpaired_full = model("baseline", 0, False), model("full", 0, False)
    assert not torch.equal(unpaired_base["head.weight"], unpaired_full["head.weight"])


def test_snapshot_epochs_are_evenly_spaced():
    assert train.snapshot_epochs(12, 4) == [3, 6, 9, 12]
    assert train.snapshot_epochs(3, 4) == [1, 2, 3]
    assert train.snapshot_epochs(10, 0) == []


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CFDAN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


def test_feature_snapshots_are_stored_and_leave_training_unchanged(store):
    plain = load_config("smoke", ["train.epochs=2"])
    snap = load_config("smoke", ["train.epochs=2", "eval.feature_snapshots=2",
                                 "eval.snapshot_samples=32"])
    ra, rb = train.train(plain), train.train(snap)
    strip = {"epoch_time_s", "images_per_s", "eval_time_s"}
    ha = [{k: v for k, v in row.items() if k not in strip} for row in ra["history"]]
    hb = [{k: v for k, v in row.items() if k not in strip} for row in rb["history"]]
    assert ha == hb and ra["test"]["accuracy"] == rb["test"]["accuracy"]
    arrays = results.load_arrays(rb["run_id"], experiment="smoke")
    assert arrays["snapshot_features"].shape[:2] == (2, 32)
    assert arrays["snapshot_features"].dtype == np.float16
    assert list(arrays["snapshot_epochs"]) == [1, 2]
    assert "snapshot_features" not in results.load_arrays(ra["run_id"], experiment="smoke")


def test_committed_records_keep_their_run_ids():
    """Fields added later are left out of the hash at their defaults (config.ADDED_LATER)."""
    for path in sorted(paths.results_dir().glob("*/*.json")):
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or "config" not in rec or "run_id" not in rec:
            continue
        assert from_dict(rec["config"]).run_id == rec["run_id"], path


def test_compiled_cf_dan_trains_like_eager():
    """train.compile: Inductor (pattern matcher off, see recipe.compile_model) compiles the full
    model, and one training step's loss and gradients match eager up to float rounding."""
    cfg = load_config("smoke")
    torch.manual_seed(0)
    eager = recipe.build_model(cfg, 8, cfg.data.image_size)
    torch.manual_seed(0)
    twin = recipe.build_model(cfg, 8, cfg.data.image_size)
    compiled = recipe.compile_model(twin)
    x = torch.randn(4, 3, cfg.data.image_size, cfg.data.image_size)
    y = torch.tensor([0, 1, 2, 3])
    losses, grads = [], []
    for m, params in ((eager, eager), (compiled, twin)):
        out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in params.parameters()
                                if p.grad is not None]))
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="compile_mode"):
        recipe.compile_model(twin, "fastest")
