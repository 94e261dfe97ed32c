"""The notebooks' stored outputs do not depend on the CPU that executed them.

A float sum's last bits differ between CPUs (SIMD width, summation order), so a glued float
with 15-17 significant digits can make ``pytest --nbval`` fail on a reader's machine. These
tests fail when a stored glue value carries more digits than :data:`MAX_DIGITS`, and when a
chapter re-executed from records whose metrics are perturbed by a relative 1e-12 (far more
than any CPU difference in a sum of a few hundred terms) no longer matches its stored outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfdan import paths
from cfdan.analysis import tables as report

# The chapters (01_...) and the appendix notebooks (A1_...), as the Makefile's NOTEBOOKS.
NOTEBOOKS = sorted((paths.REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")) + sorted(
    (paths.REPO_ROOT / "notebooks").glob("A[0-9]*.ipynb"))
MAX_DIGITS = 8
FLOAT = re.compile(r"-?(\d+)\.(\d+)(?:e[+-]?\d+)?")
METRIC_KEYS = ("history", "val", "test", "train_subset", "train_time_s", "wall_time_s")


def significant_digits(text: str) -> int:
    """Significant digits of a float literal such as ``'0.04000000000000031'`` (16)."""
    m = FLOAT.fullmatch(text.strip())
    assert m, text
    return len((m.group(1) + m.group(2)).lstrip("0")) or 1


def glued(nb: Path) -> dict[str, str]:
    """``name -> text/plain`` of every value ``nb``'s stored outputs glue."""
    out = {}
    for cell in json.loads(nb.read_text())["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = o.get("data", {})
                out[name] = data.get("application/papermill.record/text/plain",
                                     data.get("text/plain", ""))
    return out


CUT_CELL = re.compile(r"<t[dh][^>]*>([^<]*\.\.\.)</t[dh]>")
"""A table cell pandas cut at ``display.max_colwidth`` (it ends in "...")."""


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_table_cell_is_cut_short(nb):
    """A cell cut at pandas' column width hides its end from the reader (it once hid "(n = 1)"
    of the 224-px run and "not counted" of older runs)."""
    cut = []
    for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
        for o in cell.get("outputs", []):
            for key in ("text/html", "application/papermill.record/text/html"):
                html = o.get("data", {}).get(key, "")
                cut += [f"cell {i}: {c}" for c in CUT_CELL.findall("".join(html))]
    assert not cut, f"{nb.name}: table cells cut short:\n" + "\n".join(cut)


def test_significant_digits_counts():
    assert significant_digits("0.04000000000000031") == 16
    assert significant_digits("82.72") == 4
    assert significant_digits("-0.00109078") == 6


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_glued_floats_are_short(nb: Path):
    values = glued(nb)
    if "{glue" in nb.read_text():
        assert values, f"{nb.name} cites glued values, yet none were read from its outputs"
    long = {k: v for k, v in values.items()
            if FLOAT.fullmatch(v.strip()) and significant_digits(v) > MAX_DIGITS}
    assert not long, f"{nb.name}: glued floats with more than {MAX_DIGITS} digits: {long}"


def test_stable_rounds_floats_only():
    assert report.stable(0.04000000000000031) == report.stable(0.03999999999999987) == 0.04
    assert report.stable(np.float64(1 / 3)) == 0.333333
    assert report.stable(np.int64(7)) == 7 and isinstance(report.stable(np.int64(7)), int)
    assert report.stable("82.7") == "82.7"
    assert np.isnan(report.stable(float("nan")))
    assert report.stable(123456789.0) == 123457000.0


def _perturb(value, factor: float):
    if isinstance(value, float):
        return value * factor
    if isinstance(value, dict):
        return {k: _perturb(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_perturb(v, factor) for v in value]
    return value


def perturbed_store(dst: Path, factor: float = 1 + 1e-12) -> Path:
    """A copy of the results store with every float metric of every record times ``factor``."""
    shutil.copytree(paths.results_dir(), dst)
    n = 0
    for p in dst.glob("*/*.json"):
        rec = json.loads(p.read_text())
        if "run_id" not in rec:
            continue
        for k in METRIC_KEYS:
            if k in rec:
                rec[k] = _perturb(rec[k], factor)
        p.write_text(json.dumps(rec))
        n += 1
    assert n > 40, f"only {n} records perturbed"
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("name", ["04_results.ipynb", "05_reproducibility.ipynb"])
def test_chapter_matches_from_perturbed_records(tmp_path: Path, name: str):
    """Re-executed on records perturbed by 1e-12, the chapter still matches its stored outputs
    (``pytest --nbval`` with ``CFDAN_RESULTS_DIR`` pointing at the perturbed copy)."""
    nb = paths.REPO_ROOT / "notebooks" / name
    if json.loads(nb.read_text())["metadata"].get("cfdan", {}).get("needs_ferplus") \
            and not paths.ferplus_root().exists():
        pytest.skip(f"FERPlus not found at {paths.ferplus_root()}; set CFDAN_FERPLUS_ROOT")
    store = perturbed_store(tmp_path / "results")
    env = {**os.environ, "CFDAN_RESULTS_DIR": str(store)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider",
         str(nb.relative_to(paths.REPO_ROOT))],
        cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
