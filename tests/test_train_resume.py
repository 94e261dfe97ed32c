"""Resumability: a smoke run killed with SIGKILL resumes and ends with the same record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cfdan.training.loop import TIMING_KEYS

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("cfdan.data.pipeline", reason="needs the data package (synthetic dataset)")

# timing and provenance fields legitimately differ between two runs of the same config
VOLATILE = {"date", "wall_time_s", "train_time_s", "peak_memory", "resumed_at_epochs", "hardware",
            "checkpoint", "data"}


def _env(tmp: Path, name: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "CFDAN_RESULTS_DIR": str(tmp / name / "results"),
            "CFDAN_CHECKPOINT_DIR": str(tmp / name / "checkpoints"),
            "CFDAN_CACHE_DIR": str(tmp / "cache")}


ARGS = [sys.executable, "-m", "cfdan", "train", "--profile", "smoke", "--set", "train.epochs=6"]


def _record(tmp: Path, name: str) -> tuple[dict, dict]:
    (path,) = (tmp / name / "results" / "smoke").glob("*.json")
    with np.load(path.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(path.read_text()), arrays


def _comparable(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS}
                      for h in rec["history"]]
    out["data_sizes"] = rec["data"]["sizes"]
    out["data_fingerprint"] = rec["data"]["fingerprint"]
    return out


def test_killed_run_resumes_to_identical_record(tmp_path):
    subprocess.run(ARGS, env=_env(tmp_path, "straight"), check=True, timeout=300,
                   capture_output=True)

    env = _env(tmp_path, "killed")
    proc = subprocess.Popen(ARGS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckroot = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        lasts = list(ckroot.glob("smoke/*/last.pt"))
        if lasts:
            try:
                killed_after = torch.load(lasts[0], weights_only=True)["epoch"] + 1
            except Exception:  # being replaced right now: try again
                continue
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_after is not None and killed_after < 6, "the run ended before it was killed"
    assert proc.returncode == -signal.SIGKILL
    assert not list((tmp_path / "killed" / "results").glob("smoke/*.json"))

    out = subprocess.run(ARGS, env=env, check=True, timeout=300, capture_output=True, text=True)
    assert "resumed from" in out.stdout

    rec_a, arr_a = _record(tmp_path, "straight")
    rec_b, arr_b = _record(tmp_path, "killed")
    assert rec_b["resumed_at_epochs"] and rec_b["resumed_at_epochs"][0] >= killed_after
    assert _comparable(rec_a) == _comparable(rec_b)
    assert arr_a.keys() == arr_b.keys()
    for k in arr_a:
        assert np.array_equal(arr_a[k], arr_b[k]), k
