"""Shared pytest fixtures and the skip rule for tests that need real data.

``pytest --nbval`` from the repository root collects ``tests/`` and ``notebooks/*.ipynb``
(see ``[tool.pytest.ini_options]`` in ``pyproject.toml``).

Tests that read FERPlus take the ``ferplus_root`` fixture (or carry ``@pytest.mark.ferplus``);
both skip with a clear reason when the data folder is absent, so the suite still runs on a
machine without the data. A notebook that needs FERPlus says so in its metadata,
``{"cfdan": {"needs_ferplus": true}}``; its cells are then skipped the same way under
``pytest --nbval``.

The analysis tests share one results store of hand-made records: the ``store`` fixture (an empty
store and temporary experiment files on the smoke profile) and one record factory,
:func:`records.record` (:func:`records.save_run` stores it as a sweep would), in
``tests/records.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cfdan import paths

REPO_ROOT = Path(__file__).resolve().parent.parent
FERPLUS_SPLITS = ("FER2013Train", "FER2013Valid", "FER2013Test")


def ferplus_location() -> Path:
    """Where FERPlus is looked for: :func:`cfdan.paths.ferplus_root` (``$CFDAN_FERPLUS_ROOT``,
    else ``../shared/data/ferplus``), read at call time so a test may change the variable."""
    return paths.ferplus_root().expanduser()


def ferplus_available(root: Path) -> bool:
    """True for a FER+ layout folder (any split folder present) or a packed file."""
    if root.is_file():
        return True
    return root.is_dir() and any((root / split).is_dir() for split in FERPLUS_SPLITS)


def _ferplus_skip_reason(root: Path) -> str:
    return f"FERPlus not found at {root}; set CFDAN_FERPLUS_ROOT"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding ``cfdan/`` and ``pyproject.toml``)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    """Path to the real FERPlus data; skips the test when it is absent."""
    root = ferplus_location()
    if not ferplus_available(root):
        pytest.skip(_ferplus_skip_reason(root))
    return root


def pytest_configure(config: pytest.Config) -> None:
    # The sanitize file is named relative to the repository root in pyproject.toml; make it
    # work when pytest is started from another folder too.
    option = getattr(config.option, "nbval_sanitize_with", None)
    if option and not Path(option).is_file():
        candidate = config.rootpath / option
        if candidate.is_file():
            config.option.nbval_sanitize_with = str(candidate)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = ferplus_location()
    if ferplus_available(root):
        return
    skip = pytest.mark.skip(reason=_ferplus_skip_reason(root))
    for item in items:
        if item.get_closest_marker("ferplus") is not None or _notebook_needs_ferplus(item):
            item.add_marker(skip)


def _notebook_needs_ferplus(item: pytest.Item) -> bool:
    """True for an nbval cell whose notebook metadata has ``cfdan.needs_ferplus``."""
    nb = getattr(item.parent, "nb", None)
    if nb is None:
        return False
    meta = nb.get("metadata", {}).get("cfdan", {})
    return bool(meta.get("needs_ferplus")) if isinstance(meta, dict) else False


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty results store (``CFDAN_RESULTS_DIR``) and temporary experiment files
    (:data:`TOMLS`, Fig. 10's grid on :data:`FIG10_SEEDS`); experiments without a file
    (``paper``, ``cpu``, ``cpu_search``) keep every run."""
    from records import write_plans  # tests/records.py; imported here, not at collection

    from cfdan.training import config

    monkeypatch.setattr(config, "EXPERIMENTS_DIR", write_plans(tmp_path / "experiments"))
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(root))
    return root
