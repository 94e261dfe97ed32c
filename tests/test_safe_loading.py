"""A model file never runs code: every checkpoint the package reads goes through
``torch.load(..., weights_only=True)``.

A malicious checkpoint (a pickled ``__reduce__`` that would create a marker file) is handed to
every command that reads a model file and to a resume; each refuses it with a one-line error
naming the file, and the marker never appears. The shipped model and a fresh ``best.pt`` /
``last.pt`` still load.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cfdan import paths
from cfdan.cli import main

SHIPPED = paths.REPO_ROOT / "models" / "cfdan_cpu_ferplus.pt"


class _Payload:
    """Unpickling this calls ``io.open(marker, "w")``: the file appears if code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (io.open, (self.marker, "w"))


def malicious_checkpoint(path: Path, marker: Path, **fields) -> Path:
    """A checkpoint that looks like cfdan's (``kind``, ``model``) and carries the payload."""
    torch.save({"kind": "cfdan-inference", "model": {}, "payload": _Payload(marker), **fields},
               path)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return malicious_checkpoint(tmp_path / "best.pt", marker), marker


def test_the_payload_would_run_under_a_plain_load(bad):
    """The test's own check: an unsafe load does create the marker."""
    path, marker = bad
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_commands_refuse_a_malicious_checkpoint(command, bad, tmp_path, capsys):
    path, marker = bad
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(photo)
    argv = {"evaluate": ["evaluate", str(path), "--split", "val"],
            "export": ["export", str(path), str(tmp_path / "out.pt")],
            "predict": ["predict", str(photo), "--checkpoint", str(path)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cfdan: error: {path}: not a plain checkpoint"), err
    assert err.count("\n") == 1
    assert not marker.exists()


def test_cli_process_refuses_it_in_one_line(bad):
    path, marker = bad
    proc = subprocess.run([sys.executable, "-m", "cfdan", "evaluate", str(path)],
                          cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cfdan: error: {path}: not a plain checkpoint")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_resume_refuses_a_malicious_last_pt_and_restarts(tmp_path, monkeypatch):
    """A ``last.pt`` the safe loader refuses is not run: the run restarts from scratch and
    says why; the queue's epoch count reads it as no progress."""
    from cfdan.training import loop as train
    from cfdan.training import sweep
    from cfdan.training.config import load_config

    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CFDAN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    cfg = load_config("smoke", {"train.epochs": 1})
    ckdir = train.run_checkpoint_dir(cfg)
    ckdir.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    malicious_checkpoint(ckdir / "last.pt", marker, run_id=cfg.run_id, epoch=0)
    assert sweep.epochs_done(ckdir / "last.pt") == 0
    msgs: list[str] = []
    rec = train.train(cfg, log=msgs.append)
    assert not marker.exists()
    assert rec["resumed_at_epochs"] == []
    assert any("not a plain checkpoint" in m and "from scratch" in m for m in msgs), msgs
    # what this run wrote loads safely: its best.pt for inference, its last.pt for a resume
    from cfdan.predict import read_inference_checkpoint

    assert read_inference_checkpoint(ckdir / "best.pt")["run_id"] == cfg.run_id
    last = torch.load(ckdir / "last.pt", map_location="cpu", weights_only=True)
    assert last["run_id"] == cfg.run_id and last["epoch"] == 0


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} is not in this checkout")
def test_the_shipped_model_loads_safely():
    from cfdan.predict import load_checkpoint

    torch.load(SHIPPED, map_location="cpu", weights_only=True)
    model, meta = load_checkpoint(SHIPPED)
    assert meta["kind"] == "cfdan-inference" and sum(p.numel() for p in model.parameters()) > 0


def test_a_last_pt_from_before_safe_loading_still_resumes(tmp_path):
    """Old ``last.pt`` files hold NumPy arrays (the RNG key, float16 snapshots): exactly those
    types are allowed on resume, and the RNG state restores."""
    import numpy as np

    from cfdan.training import loop as train

    np.random.seed(3)
    legacy = {"run_id": "x", "epoch": 2, "rng": {"numpy": np.random.get_state()},
              "snapshots": {5: np.ones((2, 3), dtype=np.float16)}}
    expected = np.random.random_sample()
    torch.save(legacy, tmp_path / "last.pt")
    ck = train.load_training_state(tmp_path / "last.pt")
    np.random.set_state(ck["rng"]["numpy"])
    assert np.random.random_sample() == expected
    assert ck["snapshots"][5].dtype == np.float16


def test_rng_state_is_plain_and_round_trips(tmp_path):
    import random

    import numpy as np

    from cfdan.training import loop as train

    st = train.rng_state(torch.device("cpu"))
    torch.save(st, tmp_path / "rng.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "rng.pt") == []
    want = (random.random(), np.random.random_sample(), torch.rand(1).item())
    train.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert (random.random(), np.random.random_sample(), torch.rand(1).item()) == want
