"""Fig. 4 (cfdan.data.viz): faces per class, read from FERPlus at build time, synthetic ones
when FERPlus is absent; on a fake FER+ folder, on none, and on the real data when present."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from data_fixtures import make_ferplus

from cfdan.data import viz

matplotlib.use("Agg")


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-split caches go to ``tmp_path``, never to the project's ``cache/``."""
    monkeypatch.setenv("CFDAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fig4_reads_ferplus_faces_per_class(tmp_path: Path, tmp_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    written = make_ferplus(tmp_path / "fer", repeat=2)["test"]
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(tmp_path / "fer"))
    faces, note = viz.fig4_faces()
    assert faces.name == "ferplus" and faces.split == "test"
    assert note.startswith("FERPlus test faces")
    rows = viz.per_class_indices(faces, 2)
    first_neutral = faces.ids[rows[0][0]]
    assert np.array_equal(faces.images[rows[0][0], 0].numpy(), written["pixels"][first_neutral])
    assert written["expected"][first_neutral] == 0
    fig = viz.fig4(per_class=2)
    assert len(fig.axes) == 8 * 2
    assert fig.texts[-1].get_text().replace("\n", " ") == note
    assert fig.axes[0].get_ylabel() == "neutral" and len(fig.axes[0].images) == 1
    plt.close("all")


def test_fig4_falls_back_to_synthetic_faces_and_says_why(tmp_path: Path, tmp_cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(tmp_path / "absent"))
    faces, note = viz.fig4_faces(synthetic_seed=3)
    assert faces.name == "synthetic"
    assert "Synthetic faces" in note and "FERPlus is not at" in note and "seed 3" in note
    fig = viz.fig4(per_class=2)
    assert "FERPlus is not at" in fig.texts[-1].get_text().replace("\n", " ")
    # same layout as with FERPlus: 8 classes x 2, so the notebook's text output is the same
    assert len(fig.axes) == 16
    plt.close("all")


def test_fig4_on_the_real_ferplus(ferplus_root: Path, tmp_cache: Path) -> None:
    faces, note = viz.fig4_faces(ferplus_root)
    assert faces.name == "ferplus" and len(faces) > 3000
    assert faces.images.shape[1:] == (1, 48, 48)
    assert all(len(r) == 4 for r in viz.per_class_indices(faces, 4))  # every class has faces
    plt.close(viz.fig4(ferplus_root, per_class=2))


def test_fig4_committed_default_shows_no_ferplus_face(tmp_path):
    """With show_ferplus=False (the book's committed outputs) the synthetic set stands in even
    when a FERPlus folder exists at the root."""
    from cfdan.data import viz

    (tmp_path / "FER2013Test").mkdir()
    faces, note = viz.fig4_faces(tmp_path, show_ferplus=False)
    assert faces.name != "ferplus" and "not redistributed" in note
