"""Provenance stored with every run (cfdan.training.provenance)."""

from __future__ import annotations

import torch

from cfdan.training import provenance


def test_git_info_env_override(monkeypatch):
    monkeypatch.setenv("CFDAN_GIT_COMMIT", "abc123")
    monkeypatch.setenv("CFDAN_GIT_DIRTY", "False")
    assert provenance.git_info() == {"commit": "abc123", "dirty": "False"}


def test_git_info_reads_the_checkout(monkeypatch):
    monkeypatch.delenv("CFDAN_GIT_COMMIT", raising=False)
    info = provenance.git_info()
    assert set(info) == {"commit", "dirty"}
    assert info["commit"] is None or len(info["commit"]) == 40


def test_hardware_versions_and_memory():
    hw = provenance.hardware_info(torch.device("cpu"))
    assert hw["device"] == "cpu" and hw["cpu"] and len(hw["host"]) == 8
    assert hw["torch_threads"] == torch.get_num_threads()
    v = provenance.versions()
    assert v["torch"] == torch.__version__ and {"python", "numpy", "cfdan"} <= set(v)
    assert provenance.peak_memory_mb(torch.device("cpu"))["host_max_rss_mb"] > 0
