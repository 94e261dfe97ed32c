"""The figures that come with the ablation runs (cfdan.analysis.figures, .sensitivity): Fig. 6
validation curves, Fig. 7 over training (t-SNE of stored feature snapshots) and Fig. 10 with its
noise band, on hand-made records and synthetic arrays."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from records import BASE, SEEDS, fig10_name, run_config, save_run

from cfdan import paper
from cfdan.analysis import claims, figures, runs, sensitivity

matplotlib.use("Agg")

CLASSES = ("neutral", "happiness", "surprise")


# --------------------------------------------------------------------------- Fig. 6
def test_val_curves_mean_and_band_over_seeds(store):
    hist = {0: [50.0, 60.0, 65.0], 1: [52.0, 58.0, 67.0], 2: [51.0, 62.0, 66.0]}
    for s, h in hist.items():
        save_run(store, "table3", "baseline", s, 70.0, history=h)
        save_run(store, "cpu_v2", "full", s, 70.0, history=[v + 1 for v in h])
    curves = figures.val_curves()
    assert set(curves["variant"]) == {"baseline", "full"}  # dam, dam_ilm: not run
    b = curves[curves["variant"] == "baseline"].set_index("epoch")
    arr = np.array(list(hist.values()))
    assert np.allclose(b["mean"], arr.mean(0)) and np.allclose(b["std"], arr.std(0, ddof=1))
    assert np.allclose(b["min"], arr.min(0)) and np.allclose(b["max"], arr.max(0))
    assert list(b["seeds"]) == [3, 3, 3]

    fig, ax = plt.subplots()
    figures.plot_val_curves(ax, curves)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["baseline (n=3)", "dam (not run)", "dam_ilm (not run)", "full (n=3)"]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(arr.min()) and band.max() == pytest.approx(arr.max())
    assert "min–max" in ax.get_title()
    ax.clear()
    figures.plot_val_curves(ax, curves, band="std")
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx((arr.mean(0) + arr.std(0, ddof=1)).max())
    with pytest.raises(ValueError, match="band"):
        figures.plot_val_curves(ax, curves, band="iqr")
    plt.close("all")
    assert figures.val_curves_figure() is not None


# --------------------------------------------------------------------------- Fig. 7
@pytest.fixture(autouse=True)
def one_thread():
    """t-SNE on one OpenMP thread: on a busy 2-core machine its threads otherwise spin."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def snapshot_arrays(epochs: list[int], n_test: int = 300, s: int = 90, d: int = 16,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Snapshots of ``s`` test images whose features cluster by their true class."""
    rng = np.random.default_rng(seed)
    test_labels = rng.integers(0, len(CLASSES), n_test)
    index = np.sort(rng.choice(n_test, size=s, replace=False))
    centres = 6.0 * np.eye(len(CLASSES), d)
    feats = np.stack([centres[test_labels[index]] + rng.normal(0, 0.5, (s, d))
                      for _e in epochs])
    return {"snapshot_features": feats.astype(np.float16),
            "snapshot_epochs": np.asarray(epochs), "snapshot_index": index,
            "test_labels": test_labels, "class_names": np.asarray(CLASSES)}


SMALL_TSNE = {**figures.TSNE_SETTING, "perplexity": 10.0, "max_iter": 250}


def embedding_knn(emb: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, :k]
    votes = np.array([np.bincount(labels[r], minlength=len(CLASSES)).argmax() for r in near])
    return float(np.mean(votes == labels))


def test_tsne_snapshots_take_labels_at_the_snapshot_index():
    arrays = snapshot_arrays([2, 4, 6, 8])
    panels = figures.tsne_snapshots(arrays, 8, n=60, setting=SMALL_TSNE)
    assert [p["epoch"] for p in panels] == [2, 4, 6, 8]
    truth = arrays["test_labels"][arrays["snapshot_index"]][:60]
    for p in panels:
        assert p["embedding"].shape == (60, 2)
        assert np.array_equal(p["labels"], truth)
        # features cluster by the true class, so neighbours in the embedding share labels;
        # labels read from the wrong images (e.g. test_labels[:S]) would score about 1/3
        assert embedding_knn(p["embedding"], p["labels"]) > 0.9
    again = figures.tsne_snapshots(arrays, 8, n=60, setting=SMALL_TSNE)
    assert np.array_equal(again[0]["embedding"], panels[0]["embedding"])  # seeded


def test_tsne_columns_follow_the_fraction_of_training():
    from cfdan.training.loop import snapshot_epochs

    for total in (5, 12, 18, 40):  # the epochs train.py stores: k/4 of the schedule
        arrays = snapshot_arrays(snapshot_epochs(total, 4), s=40)
        panels = figures.tsne_snapshots(arrays, total, n=40, setting=SMALL_TSNE)
        assert all(p is not None for p in panels), total
        assert panels[-1]["epoch"] == total
    gap = figures.tsne_snapshots(snapshot_arrays([2, 4, 8], s=40), 8, n=40, setting=SMALL_TSNE)
    assert gap[2] is None and [p["epoch"] for p in gap if p] == [2, 4, 8]


def test_snapshot_runs_and_the_figure(store):
    from cfdan.training.loop import snapshot_epochs

    epochs = snapshot_epochs(3, 4)  # the smoke profile's 3 epochs: snapshots after 1, 2, 3
    for exp, v in (("table3", "baseline"), ("cpu_v2", "full")):
        save_run(store, exp, v, 0, 70.0, history=[60.0] * 3,
                 arrays=snapshot_arrays(epochs, s=40))
        save_run(store, exp, v, 1, 70.0, history=[60.0] * 3)
    found = figures.snapshot_runs()
    assert found["dam"] is None and found["baseline"][0] == "table3"
    assert found["full"] == ("cpu_v2", run_config("cpu_v2", "full", 0).run_id)

    fig, axes = plt.subplots(3, 4, squeeze=False)
    arrays = snapshot_arrays([2, 4, 6, 8], s=40)
    panels = {"baseline": figures.tsne_snapshots(arrays, 8, n=40, setting=SMALL_TSNE),
              "dam": None, "full": [None] * 4}
    figures.plot_tsne_over_training(axes, panels, CLASSES, {"baseline": 8})
    assert [t.get_text() for t in axes[1, 0].texts] == ["not run"]
    assert [t.get_text() for t in axes[2, 3].texts] == ["no snapshot"]
    assert axes[0, 1].get_title().startswith("epoch 4/8; 10-NN ")
    assert len(axes[0, 0].collections) == 3
    assert axes[2, 0].get_ylabel() == "full"
    plt.close("all")
    fig = figures.tsne_training_figure(n=40)
    assert len(fig.axes) == 12 and fig.axes[0].get_title().startswith("epoch 1/3; 10-NN ")
    assert "no snapshot" in [t.get_text() for t in fig.axes[1].texts]  # 50 %: none near
    assert fig.axes[3].get_title().startswith("epoch 3/3")
    assert [t.get_text() for t in fig.axes[4].texts] == ["not run"]  # dam
    plt.close("all")
    facts = figures.snapshot_facts(n=40)
    assert facts["fig7_n"] == 40 and facts["fig7_knn_dam_first"] == "n/a"
    assert float(facts["fig7_knn_baseline_last"]) > 90  # features cluster by class
    assert facts["fig7_disgust"] == "n/a"  # these synthetic classes hold no Disgust


def test_knn_accuracy_reads_separation_not_the_embedding():
    arrays = snapshot_arrays([1], s=90)
    x = arrays["snapshot_features"][0].astype(np.float32)
    y = arrays["test_labels"][arrays["snapshot_index"]]
    assert figures.knn_accuracy(x, y) > 95
    shuffled = np.random.default_rng(1).permutation(y)  # features no longer tell the class
    assert figures.knn_accuracy(x, shuffled) < 60
    assert figures.knn_accuracy(x, shuffled) == figures.knn_accuracy(x, shuffled)  # seeded folds
    assert figures.knn_accuracy(x, shuffled, seed=1) != figures.knn_accuracy(x, shuffled)


def test_book_tsne_figure_is_none_without_snapshots(store):
    save_run(store, "table3", "baseline", 0, 70.0)
    assert figures.tsne_training_figure() is None


# --------------------------------------------------------------------------- Fig. 10
def test_sensitivity_points_and_noise_band(store):
    full = [BASE[s] + 2.0 for s in SEEDS]
    for s in SEEDS:
        save_run(store, "cpu_v2", "full", s, full[s])
    for k, pt in enumerate(runs.fig10_points()):
        if pt != runs.FIG10_CENTRE:
            save_run(store, "fig10", fig10_name(pt), 0, BASE[0] + 0.1 * k)
    pts = sensitivity.sensitivity_points()
    assert len(pts) == 13 and pts["centre"].sum() == 1
    centre = pts[pts["centre"]].iloc[0]
    # the centre shares the grid's seeds (seed 0), not the mean over all of its own
    assert centre["accuracy"] == pytest.approx(full[0]) and centre["seeds"] == 1
    assert centre["source"] == "cpu_v2/full"
    spread = claims.full_seed_spread()
    assert spread[1] == pytest.approx(np.std(full, ddof=1)) and spread[2] == 5

    fig, axes = plt.subplots(1, 2)
    sensitivity.plot_sensitivity(axes, pts, spread)
    for ax in axes:
        band = [p for p in ax.patches if "± 2√2 sd" in p.get_label()]
        assert len(band) == 1 and band[0].get_label().startswith("centre (1 seed)")
        ys = band[0].get_path().transformed(band[0].get_patch_transform()).vertices[:, 1]
        lo, hi = ys.min(), ys.max()
        half = 2 * np.sqrt(2) * spread[1]
        assert (lo, hi) == pytest.approx((full[0] - half, full[0] + half))
    table = sensitivity.sensitivity_table()
    assert len(table) == 13 and (table["seeds"] == 1).all()
    assert table.loc[pts["centre"].to_numpy(), "test accuracy % (FERPlus)"].item() == \
        f"{full[0]:.2f}"
    assert len(axes[0].get_lines()) == 3 and len(axes[1].get_lines()) == 1
    assert len(axes[1].get_lines()[0].get_xdata()) == 5  # P1: five values
    plt.close("all")


def test_sensitivity_figure_when_nothing_ran(store):
    pts = sensitivity.sensitivity_points()
    assert pts["accuracy"].isna().all()
    assert (sensitivity.sensitivity_table()["test accuracy % (FERPlus)"] == "not run").all()
    fig = sensitivity.sensitivity_figure()
    assert [t.get_text() for t in fig.axes[0].texts] == ["not run"]
    assert list(fig.axes[1].get_xticks()) == pytest.approx(sorted(paper.FIG10_GRID["P1"]))
    plt.close("all")
    save_run(store, "cpu_v2", "full", 0, 70.0)
    fig = sensitivity.sensitivity_figure()
    assert fig.axes[0].texts[0].get_text().startswith("grid not run")
    plt.close("all")
