"""Dry run of scripts/gpu_paper_run.sh on CPU with the smoke profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_paper_run.sh"


def test_gpu_script_dry_run_on_cpu(tmp_path):
    pytest.importorskip("cfdan.data.pipeline", reason="needs the data package")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CFDAN_GPU_PROFILE": "smoke",
        "CFDAN_GPU_DEVICE": "cpu",
        "CFDAN_GPU_BUDGET_S": "240",
        "CFDAN_GPU_SECOND_MIN_S": "30",
        "CFDAN_GPU_SET": "train.epochs=2",
        "CFDAN_RESULTS_DIR": str(tmp_path / "results"),
        "CFDAN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "CFDAN_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "OUT": str(out),
    }
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "packed.npz")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = sorted(out.glob("smoke/*.json"))  # $OUT/<experiment>/<run_id>.json
    assert len(records) == 2, proc.stdout[-3000:]  # the profile's run and the baseline run
    recs = [json.loads(p.read_text()) for p in records]
    assert {r["config"]["model"]["preset"] for r in recs} == {"full", "baseline"}
    for r, p in zip(recs, records, strict=True):
        assert p.with_suffix(".npz").is_file()
        assert r["config"]["train"]["time_budget_s"] > 0
        assert len(r["history"]) == 2 and "images_per_s" in r["history"][0]
        assert "peak_memory" in r and r["test"]["n"] > 0
    assert (tmp_path / "results" / "smoke").is_dir()
    assert len(list(out.glob("train_*.log"))) == 2


def test_gpu_script_falls_back_to_eager_when_compile_fails(tmp_path):
    """A compiled first run that fails still leaves a record: the script trains again without
    compile, refitted to the time left (here the compile mode is invalid, so it fails fast)."""
    pytest.importorskip("cfdan.data.pipeline", reason="needs the data package")
    out = tmp_path / "out"
    env = {
        **os.environ, "PYTHON": sys.executable, "CFDAN_GPU_PROFILE": "smoke",
        "CFDAN_GPU_DEVICE": "cpu", "CFDAN_GPU_BUDGET_S": "240", "CFDAN_GPU_SECOND": "none",
        "CFDAN_GPU_PREFLIGHT": "0", "CFDAN_GPU_FIT_AFTER": "2",
        "CFDAN_GPU_SET": "train.epochs=2 train.compile=true train.compile_mode=no-such-mode",
        "CFDAN_RESULTS_DIR": str(tmp_path / "results"),
        "CFDAN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "CFDAN_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "OUT": str(out),
    }
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "packed.npz")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training again without compile" in proc.stdout
    records = sorted(out.glob("smoke/*.json"))
    assert len(records) == 1, proc.stdout[-3000:]
    train = json.loads(records[0].read_text())["config"]["train"]
    assert train["compile"] is False and train["fit_to_budget"] is True
    assert train["fit_after_epoch"] == 2  # so it is not the earlier record's run id


def test_gpu_script_refuses_tiny_budget(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CFDAN_GPU_BUDGET_S": "5",
           "CFDAN_GPU_DEVICE": "cpu"}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "no time to train" in proc.stderr


def test_gpu_script_preflight_stops_a_broken_device_early(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the preflight fail")
    env = {**os.environ, "PYTHON": sys.executable, "CFDAN_GPU_PROFILE": "cpu",
           "CFDAN_GPU_DEVICE": "cuda", "CFDAN_GPU_BUDGET_S": "200", "OUT": str(tmp_path / "out"),
           "CFDAN_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "preflight failed" in proc.stderr and "CUDA is not available" in proc.stdout
    assert not (tmp_path / "results").exists()


QUEUE = REPO / "scripts" / "gpu_queue.sh"


def test_gpu_queue_dry_run_on_cpu(tmp_path):
    """scripts/gpu_queue.sh on CPU: two workers drain the smoke sweep; the records come back
    in $OUT/records.tgz (paths relative to results/) with a per-run summary."""
    import tarfile

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "CFDAN_GPU_DEVICE": "cpu",
           "CFDAN_GPU_BUDGET_S": "200", "CFDAN_GPU_WORKERS": "2", "CFDAN_GPU_THREADS": "1",
           "CFDAN_RESULTS_DIR": str(tmp_path / "results"),
           "CFDAN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
           "CFDAN_CACHE_DIR": str(tmp_path / "cache"), "OUT": str(out)}
    proc = subprocess.run(["bash", str(QUEUE), "smoke_sweep"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 new records" in proc.stdout
    with tarfile.open(out / "records.tgz") as tar:
        names = sorted(tar.getnames())
    assert len(names) == 4 and all(n.startswith("smoke_sweep/") for n in names)
    summary = (out / "summary.txt").read_text()
    assert "baseline" in summary and "full" in summary and "img/s" in summary
    assert (out / "logs.tgz").is_file()
    # a second call finds nothing to do
    again = subprocess.run(["bash", str(QUEUE), "smoke_sweep"], env=env, capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout


EVIDENCE = REPO / "scripts" / "gpu_evidence.sh"


def test_gpu_evidence_dry_run_on_cpu(tmp_path):
    """scripts/gpu_evidence.sh end to end on CPU with the smoke stand-ins (CFDAN_GPU_DRY_RUN):
    probe -> plan -> runs -> notes -> records.tgz + summary.txt. How many runs fit depends on
    this machine's speed; what is planned, returned and noted must agree."""
    import tarfile

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "CFDAN_GPU_DRY_RUN": "1",
           "CFDAN_RESULTS_DIR": str(tmp_path / "results"),
           "CFDAN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
           "CFDAN_CACHE_DIR": str(tmp_path / "cache"), "CFDAN_GPU_LOGS": str(tmp_path / "logs"),
           "OMP_NUM_THREADS": "1", "OUT": str(out)}
    proc = subprocess.run(["bash", str(EVIDENCE)], env=env, capture_output=True, text=True,
                          timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe["experiments"]) == {"gpu_smoke_table3", "gpu_smoke_paper"}
    for e in probe["experiments"].values():
        assert set(e["aggregate_img_s"]) == {"1", "2"} and min(e["aggregate_img_s"].values()) > 0
    phases = [json.loads(line) for line in (out / "plan.jsonl").read_text().splitlines()]
    assert phases[0]["round"] == 0 and phases[0]["experiment"] == "gpu_smoke_table3"
    assert len(phases[0]["run_ids"]) % 5 == 0  # whole seeds of the five rows
    assert [p["experiment"] for p in phases[:2]] == ["gpu_smoke_table3", "gpu_smoke_paper"]
    planned = {(p["experiment"], r) for p in phases for r in p["run_ids"]}
    with tarfile.open(out / "records.tgz") as tar:
        names = sorted(tar.getnames())
        recs = [json.load(tar.extractfile(n)) for n in names if n.endswith(".json")]
    assert recs, proc.stdout[-4000:]
    photos = {n for n in names if n.endswith(".photo.npz")}
    assert len(names) == 2 * len(recs) + len(photos)  # each record with its arrays
    # each CF-DAN of the paper stand-in brings its Fig. 8 maps over the astronaut (issue 29)
    assert photos == {f"{r['experiment']}/{r['run_id']}.photo.npz" for r in recs
                      if r["experiment"] == "gpu_smoke_paper" and r["variant"] == "full"}
    for r in recs:
        assert (r["experiment"], r["run_id"]) in planned
        assert "scripts/gpu_evidence.sh" in r["provenance_note"]
        assert "round " in r["provenance_note"] and "torch " in r["provenance_note"]
    summary = (out / "summary.txt").read_text()
    assert "img/s" in summary and "gpu_GB" in summary and "phases:" in summary
    assert all(f"{r['experiment']}/{r['run_id']}" in summary for r in recs)
    assert (out / "logs.tgz").is_file() and len(list(out.iterdir())) <= 8  # what comes back
    # the store's copies carry the note too (they are what gets committed)
    stored = json.loads((tmp_path / "results" / recs[0]["experiment"]
                         / f"{recs[0]['run_id']}.json").read_text())
    assert stored["provenance_note"] == recs[0]["provenance_note"]
