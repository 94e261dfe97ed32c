"""Well-known locations of the project, each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``cfdan/``)."""

RESULTS_DIR: Path = Path(os.environ.get("CFDAN_RESULTS_DIR", REPO_ROOT / "results"))
"""The committed results store."""

FERPLUS_ROOT: Path = Path(
    os.environ.get("CFDAN_FERPLUS_ROOT", REPO_ROOT.parent / "shared" / "data" / "ferplus")
)
"""Default FERPlus root in the FER+ layout (``FER2013Train/label.csv`` ...)."""

CACHE_DIR: Path = Path(os.environ.get("CFDAN_CACHE_DIR", REPO_ROOT / "cache"))
"""Ignored folder for decoded-tensor caches."""

CHECKPOINT_DIR: Path = Path(os.environ.get("CFDAN_CHECKPOINT_DIR", REPO_ROOT / "checkpoints"))
"""Ignored folder for training checkpoints (never committed)."""
