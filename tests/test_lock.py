"""The lock (constraints.txt) pins every dependency pyproject.toml names, and installs use it.

pyproject.toml and environment.yml keep ranges for those who install the package alone;
`make venv` installs with ``-c constraints.txt``, the exact versions (pip freeze of .venv,
written by `make lock`) that made the stored outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK = REPO_ROOT / "constraints.txt"


def _project() -> dict:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _named_requirements() -> list[Requirement]:
    """[project] dependencies and every optional-dependencies extra."""
    project = _project()
    entries = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        entries += extra
    return [Requirement(e) for e in entries]


def _lock() -> dict[str, Version]:
    """{canonical name: pinned version}; fails on anything that is not `name==version`."""
    assert LOCK.is_file(), "constraints.txt is missing; run `make lock`"
    pins: dict[str, Version] = {}
    for number, raw in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            pytest.fail(f"constraints.txt:{number}: not a requirement: {line!r} ({err})")
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"constraints.txt:{number}: {line!r} is not an exact pin (name==version)")
        assert not req.url and not req.extras, f"constraints.txt:{number}: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt:{number}: {req.name} is pinned twice"
        pins[name] = Version(specs[0].version)
    return pins


def test_lock_pins_exact_versions_only() -> None:
    pins = _lock()
    assert len(pins) > 20, "the lock should hold the whole environment, not only the top level"
    assert canonicalize_name(_project()["name"]) not in pins, "the package itself is not locked"


def test_lock_covers_every_dependency_pyproject_names() -> None:
    pins = _lock()
    missing, outside = [], []
    for req in _named_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(req.name)
        elif not req.specifier.contains(pins[name], prereleases=True):
            outside.append(f"{req.name}: locked {pins[name]}, pyproject.toml asks {req.specifier}")
    assert not missing, f"pyproject.toml names these, constraints.txt does not: {missing}; run `make lock`"
    assert not outside, "locked versions outside pyproject.toml's ranges:\n" + "\n".join(outside)


def test_make_venv_installs_through_the_lock() -> None:
    """`make -n` prints the install commands without running them."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "-C", str(REPO_ROOT), ".venv/.cfdan-installed"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    installs = [line for line in proc.stdout.splitlines() if "pip install" in line]
    assert len(installs) == 2, proc.stdout
    assert all("-c constraints.txt" in line for line in installs), installs
    assert "torch==" in installs[0] and '-e ".[book,test]"' in installs[1], installs


def test_lock_matches_this_environment_where_it_names_the_package() -> None:
    """Where the lock's top-level dependencies are installed here, they are the locked version.

    A mismatch means .venv moved on without `make lock` (or the lock without `make venv`)."""
    from importlib.metadata import PackageNotFoundError, version

    pins, differ = _lock(), []
    for req in _named_requirements():
        name = canonicalize_name(req.name)
        try:
            have = Version(version(req.name))
        except PackageNotFoundError:
            continue
        # Local labels (torch's "+cpu"/"+cu130") do not change which release it is.
        if name in pins and Version(have.public) != pins[name]:
            differ.append(f"{req.name}: installed {have}, locked {pins[name]}")
    if differ and not sys.prefix.endswith(".venv"):
        pytest.skip("not the project's .venv: " + "; ".join(differ))
    assert not differ, "run `make venv` (or `make lock`):\n" + "\n".join(differ)
