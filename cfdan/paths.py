"""Well-known locations of the project: the one place that reads the environment for them.

Each location is a function evaluated at call time, so that tests and scripts can redirect it
by setting the environment variable after ``cfdan`` has been imported.

=====================  =========================  ==================================
function               environment variable       default
=====================  =========================  ==================================
``results_dir()``      ``CFDAN_RESULTS_DIR``      ``<repo>/results`` (committed)
``ferplus_root()``     ``CFDAN_FERPLUS_ROOT``     ``<repo>/../shared/data/ferplus``
``cache_dir()``        ``CFDAN_CACHE_DIR``        ``<repo>/cache`` (ignored)
``checkpoint_dir()``   ``CFDAN_CHECKPOINT_DIR``   ``<repo>/checkpoints`` (ignored)
=====================  =========================  ==================================
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``cfdan/``); fixed, not configurable."""


def _from_env(var: str, default: Path, override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get(var)
    return Path(env) if env else default


def results_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The results store: ``override``, else ``CFDAN_RESULTS_DIR``, else ``<repo>/results``."""
    return _from_env("CFDAN_RESULTS_DIR", REPO_ROOT / "results", override)


def ferplus_root(override: str | os.PathLike[str] | None = None) -> Path:
    """FERPlus folder (FER+ layout) or packed ``.npz``: ``override``, env, or ``../shared``."""
    return _from_env("CFDAN_FERPLUS_ROOT", REPO_ROOT.parent / "shared" / "data" / "ferplus",
                     override)


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Decoded-tensor caches: ``override``, else ``CFDAN_CACHE_DIR``, else ``<repo>/cache``."""
    return _from_env("CFDAN_CACHE_DIR", REPO_ROOT / "cache", override)


def checkpoint_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Training checkpoints: ``override``, else ``CFDAN_CHECKPOINT_DIR``, else ``checkpoints``."""
    return _from_env("CFDAN_CHECKPOINT_DIR", REPO_ROOT / "checkpoints", override)

