"""Provenance of a run: the code (git), the machine, the library versions and peak memory.

Every training record carries these so that a number can be traced to what produced it
(:func:`cfdan.results.build_record`). The host name is stored only as a short hash.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdan import paths


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the source tree (env ``CFDAN_GIT_COMMIT`` overrides)."""
    env = os.environ.get("CFDAN_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": os.environ.get("CFDAN_GIT_DIRTY", "unknown")}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.REPO_ROOT,
            capture_output=True, text=True, timeout=20,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: on CUDA, what torch reports; on a CPU, the
    ``avx512_bf16`` or ``amx_bf16`` flag (without them bf16 autocast is emulated and was
    measured 3x slower than fp32 on 2 cores)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def hardware_info(device: torch.device) -> dict[str, Any]:
    """Device type, CPU, thread counts, a hash of the host name and, on CUDA, the GPU."""
    info: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": hashlib.sha256(platform.node().encode()).hexdigest()[:8],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy, cfdan and (when installed) torchvision, sklearn, pandas."""
    import cfdan

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "cfdan": cfdan.__version__}
    for mod in ("torchvision", "sklearn", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak GPU memory (MiB)."""
    out = {"host_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["gpu_max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out
