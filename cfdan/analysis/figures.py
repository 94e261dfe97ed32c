"""Figs. 5-7 of the results chapter (§4.4) and the training histories, from the results store.

Fig. 5, the test confusion matrix; Fig. 6, validation accuracy per epoch of Table 3's variants
over seeds; Fig. 7, t-SNE of the stored test features, of the shown runs and over training
(with a k-NN accuracy per panel that does not depend on the embedding's randomness). Each
figure has a function that computes what it draws, one that draws it on Matplotlib axes, and
one that builds the chapter's figure, titled with each run's schedule
(:func:`cfdan.analysis.book.run_label`). Runs are selected as the tables select them: views of
the run table (:func:`cfdan.analysis.runs.counted`, :func:`cfdan.analysis.runs.slot`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import results
from cfdan.analysis import book, runs
from cfdan.analysis.claims import TABLE3_VARIANTS
from cfdan.analysis.runs import FULL_SOURCE
from cfdan.analysis.tables import history, representative_runs


# ---------------------------------------------------------- Fig. 5, Fig. 7 (shown runs), histories
def confusion(run_id: str, experiment: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Row-normalised test confusion matrix (Fig. 5) of a run and its class names."""
    arr = results.load_arrays(run_id, experiment)
    cm = arr["confusion"].astype(float)
    cm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    return cm, [str(c) for c in arr["class_names"]]


def plot_confusion(ax, run_id: str, experiment: str | None = None, title: str = "") -> None:
    import seaborn as sns

    cm, names = confusion(run_id, experiment)
    sns.heatmap(100 * cm, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar=False,
                xticklabels=names, yticklabels=names, ax=ax, annot_kws={"size": 7})
    ax.set(xlabel="predicted", ylabel="true", title=title)


def tsne(run_id: str, experiment: str | None = None, n: int = 1000, seed: int = 0
         ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """2-D t-SNE (scikit-learn, PCA init, seeded) of stored test features (Fig. 7)."""
    from sklearn.manifold import TSNE

    arr = results.load_arrays(run_id, experiment)
    feats = arr["tsne_features"].astype(np.float32)[:n]
    labels = arr["tsne_labels"][:n]
    emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30,
               max_iter=500).fit_transform(feats)
    return emb, labels, [str(c) for c in arr["class_names"]]


def plot_tsne(ax, run_id: str, experiment: str | None = None, title: str = "",
              n: int = 1000) -> None:
    emb, labels, names = tsne(run_id, experiment, n=n)
    for k, name in enumerate(names):
        sel = labels == k
        ax.scatter(emb[sel, 0], emb[sel, 1], s=3, label=name)
    ax.set(title=title, xticks=[], yticks=[])


def tsne_panels() -> dict[str, tuple[str, str]]:
    """Fig. 7 panels available in the store: title -> (experiment, run_id)."""
    wanted = [("spatial attention (Table 3 baseline)", "table3", "baseline"),
              ("cross-fusion DAM + ILM (cpu profile)", "cpu_v2", "full"),
              ("paper profile, 1 GPU (full)", "paper", "full")]
    out = {}
    for title, exp, variant in wanted:
        got = representative_runs({exp: variant})
        if got:
            out[title] = (exp, got[exp])
    return out


def plot_history(ax, experiment: str, metric: str = "val_accuracy", title: str = "") -> None:
    """Per-epoch ``metric`` of every run of ``experiment``, one line per (variant, seed)."""
    h = history(experiment)
    df = runs.counted(experiment=experiment)
    if h.empty:
        ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title)
        return
    meta = df.set_index("run_id")[["variant", "seed"]] if not df.empty else None
    for run_id, g in h.groupby("run_id", sort=True):
        lab = run_id
        if meta is not None and run_id in meta.index:
            lab = f"{meta.loc[run_id, 'variant']} seed {meta.loc[run_id, 'seed']}"
        ax.plot(g["epoch"], 100 * g[metric], marker=".", label=lab)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " ") + " (%)", title=title)
    ax.legend(fontsize=7)


# -------------------------------------------------------------------- Fig. 6, Fig. 7 over training
def val_curves(variants: Sequence[str] = TABLE3_VARIANTS, experiment: str = "table3",
               full: tuple[str, str] = FULL_SOURCE, metric: str = "val_accuracy",
               current: bool = True, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Fig. 6: per variant and epoch, ``metric`` (%) over seeds: mean, std, min, max, seeds.

    The full model's curve comes from ``full`` (:data:`cfdan.analysis.runs.FULL_SOURCE`).
    """
    df = runs.frame(root)
    rows = []
    for v in variants:
        for rec in runs.slot(df, experiment, v, full, current=current).rows["record"]:
            for h in rec.get("history") or []:
                if metric in h and h[metric] is not None:
                    rows.append({"variant": v, "seed": rec.get("seed"), "epoch": h["epoch"],
                                 "value": 100.0 * h[metric]})
    cols = ["variant", "epoch", "mean", "std", "min", "max", "seeds"]
    if not rows:
        return pd.DataFrame(columns=cols)
    g = pd.DataFrame(rows).groupby(["variant", "epoch"], sort=False)["value"]
    out = g.agg(["mean", "std", "min", "max"]).join(g.size().rename("seeds")).reset_index()
    return out[cols]


def plot_val_curves(ax, curves: pd.DataFrame, variants: Sequence[str] = TABLE3_VARIANTS,
                    band: str = "minmax", title: str = "") -> None:
    """Fig. 6: one mean line per variant; the band is min-max over seeds (``band="minmax"``)
    or mean ± 1 sd (``band="std"``). A variant without runs is named "not run" in the legend."""
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', not {band!r}")
    for v in variants:
        c = curves[curves["variant"] == v].sort_values("epoch")
        if c.empty:
            ax.plot([], [], label=f"{v} (not run)")
            continue
        n = int(c["seeds"].max())
        (line,) = ax.plot(c["epoch"], c["mean"], marker=".", label=f"{v} (n={n})")
        lo, hi = ((c["min"], c["max"]) if band == "minmax"
                  else (c["mean"] - c["std"].fillna(0), c["mean"] + c["std"].fillna(0)))
        ax.fill_between(c["epoch"], lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    from matplotlib.ticker import MaxNLocator

    what = "min–max over seeds" if band == "minmax" else "± 1 sd over seeds"
    ax.set(xlabel="epoch", ylabel="val accuracy (%)", title=title or f"band: {what}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)


TSNE_SETTING: dict[str, Any] = {"n_components": 2, "perplexity": 30.0, "init": "pca",
                                "random_state": 0, "max_iter": 500}
"""The one t-SNE setting of every Fig. 7 panel (scikit-learn ``TSNE`` keyword arguments)."""

FIG7_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
"""Fig. 7's columns: fractions of training at which features were stored."""

FIG7_VARIANTS = ("baseline", "dam", "full")
"""Fig. 7's rows: single (spatial) attention, dual attention, the full model."""


def snapshot_runs(variants: Sequence[str] = FIG7_VARIANTS, experiment: str = "table3",
                  seed: int = 0, full: tuple[str, str] = FULL_SOURCE, current: bool = True,
                  root: str | os.PathLike[str] | None = None) -> dict[str, tuple[str, str] | None]:
    """Fig. 7 over training: per variant, ``(experiment, run_id)`` of its ``seed`` run, or None."""
    df = runs.frame(root)
    out: dict[str, tuple[str, str] | None] = {}
    for v in variants:
        exp, _var = runs.resolve(experiment, v, full)
        rows = runs.slot(df, experiment, v, full, current=current).rows
        out[v] = (exp, str(rows.at[seed, "run_id"])) if seed in rows.index else None
    return out


def tsne_snapshots(arrays: Mapping[str, np.ndarray], total_epochs: int,
                   fractions: Sequence[float] = FIG7_FRACTIONS, n: int | None = 1000,
                   setting: Mapping[str, Any] | None = None) -> list[dict[str, Any] | None]:
    """t-SNE of the stored feature snapshots of one run at each fraction of training.

    ``arrays`` holds ``snapshot_features`` (k, S, D), ``snapshot_epochs`` (k,),
    ``snapshot_index`` (S,) into the test split and ``test_labels``; labels are
    ``test_labels[snapshot_index]``. The snapshot nearest to ``fraction * total_epochs`` is
    used (None where none lies within half a column's spacing). The first ``n`` points of the
    fixed subsample are embedded with one ``setting`` (default :data:`TSNE_SETTING`).
    """
    from sklearn.manifold import TSNE

    setting = dict(TSNE_SETTING if setting is None else setting)
    feats = arrays["snapshot_features"]
    epochs = np.asarray(arrays["snapshot_epochs"], dtype=float)
    labels = np.asarray(arrays["test_labels"])[np.asarray(arrays["snapshot_index"])]
    keep = slice(None) if n is None else slice(0, n)
    tol = 0.5 / len(fractions)
    out: list[dict[str, Any] | None] = []
    for f in fractions:
        k = int(np.argmin(np.abs(epochs / total_epochs - f)))
        if abs(epochs[k] / total_epochs - f) > tol + 1e-9:
            out.append(None)
            continue
        x = np.asarray(feats[k], dtype=np.float32)[keep]
        emb = TSNE(**setting).fit_transform(x)
        out.append({"fraction": f, "epoch": int(epochs[k]), "embedding": emb,
                    "labels": labels[keep], "knn": knn_accuracy(x, labels[keep])})
    return out


KNN_K = 10
"""Neighbours of Fig. 7's per-panel separability number (:func:`knn_accuracy`)."""


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = KNN_K, folds: int = 5,
                 seed: int = 0) -> float:
    """How well the classes separate in feature space, as one number per Fig. 7 panel: the
    cross-validated accuracy (%) of a ``k``-nearest-neighbour vote on L2-normalised features
    (``folds`` shuffled folds, seeded). Unlike a t-SNE picture, it does not depend on the
    embedding's randomness."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cv = KFold(folds, shuffle=True, random_state=seed)
    return float(100 * cross_val_score(KNeighborsClassifier(k), x, labels, cv=cv).mean())


def plot_tsne_over_training(axes, panels: Mapping[str, Sequence[dict[str, Any] | None] | None],
                            class_names: Sequence[str], total_epochs: Mapping[str, int],
                            fractions: Sequence[float] = FIG7_FRACTIONS) -> None:
    """Fig. 7 over training: rows are variants, columns fractions of training; an empty panel
    says what is missing."""
    for i, (variant, cols) in enumerate(panels.items()):
        for j, f in enumerate(fractions):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            p = cols[j] if cols else None
            if p is None:
                why = "not run" if cols is None else "no snapshot"
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
            else:
                for c, name in enumerate(class_names):
                    sel = p["labels"] == c
                    ax.scatter(p["embedding"][sel, 0], p["embedding"][sel, 1], s=2, label=name)
                knn = f"; {KNN_K}-NN {p['knn']:.1f} %" if "knn" in p else ""
                ax.set_title(f"epoch {p['epoch']}/{total_epochs.get(variant, '?')}{knn}",
                             fontsize=8)
            if i == 0:
                ax.annotate(f"{100 * f:.0f} % of training", (0.5, 1.18), xycoords="axes fraction",
                            ha="center", fontsize=9)
            if j == 0:
                ax.set_ylabel(variant)


# --------------------------------------------------------------------------- the chapter's figures
def history_figure(experiments: Sequence[str] = book.PROFILE_EXPERIMENTS):
    """Validation accuracy per epoch, one panel per profile, titled with its schedule."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(experiments), figsize=(5.5 * len(experiments), 3.6),
                             squeeze=False)
    for ax, exp in zip(axes[0], experiments, strict=True):
        plot_history(ax, exp, title=book.run_label(exp, short=True))
    fig.tight_layout()
    return fig


def confusion_figure(shown: Mapping[str, str]):
    """Fig. 5: the row-normalised test confusion matrix of each shown run."""
    import matplotlib.pyplot as plt

    n = max(1, len(shown))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.6), squeeze=False)
    for ax, (exp, run_id) in zip(axes[0], shown.items(), strict=False):
        title = book.run_label(exp, book.run_variant(exp, run_id), short=True)
        plot_confusion(ax, run_id, exp, title=title)
    fig.tight_layout()
    return fig


def tsne_figure(n: int = 1000):
    """Fig. 7: the t-SNE panels of :func:`tsne_panels` (None if none is stored)."""
    import matplotlib.pyplot as plt

    panels = tsne_panels()
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (title, (exp, run_id)) in zip(axes[0], panels.items(), strict=True):
        rec = runs.get(run_id, exp)
        which = f"seed {rec.get('seed', 0)}, test {100 * rec['test']['accuracy']:.1f} %"
        note = runs.schedule(rec, short=True)
        plot_tsne(ax, run_id, exp, title=book.marked(f"{title}\n{which}", note, sep="\n"), n=n)
    axes[0, -1].legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def snapshot_facts(n: int = 1000, full: tuple[str, str] = FULL_SOURCE
                   ) -> dict[str, Any]:
    """What Fig. 7 over training can show, for the prose: ``fig7_n`` (images per panel),
    ``fig7_<class>`` (how many of them are Disgust, Contempt, Sadness; from the first run with
    snapshots, all share one subsample) and ``fig7_knn_<variant>_<first|last>`` (the
    :func:`knn_accuracy` of its first and last snapshot, one decimal); "n/a"
    where no run or class gives one."""
    out: dict[str, Any] = {"fig7_n": n}
    out.update({f"fig7_{cls}": "n/a" for cls in ("disgust", "contempt", "sadness")})
    counted = False
    for variant, where in snapshot_runs(full=book.book_source(full)).items():
        for end in ("first", "last"):
            out[f"fig7_knn_{variant}_{end}"] = "n/a"
        if where is None:
            continue
        try:
            arrays = results.load_arrays(where[1], where[0])
        except FileNotFoundError:
            continue
        if "snapshot_features" not in arrays:
            continue
        labels = np.asarray(arrays["test_labels"])[np.asarray(arrays["snapshot_index"])][:n]
        if not counted:
            names = [str(c).lower() for c in arrays["class_names"]]
            for cls in ("disgust", "contempt", "sadness"):
                if cls in names:
                    out[f"fig7_{cls}"] = int((labels == names.index(cls)).sum())
            counted = True
        feats = arrays["snapshot_features"]
        for end, k in (("first", 0), ("last", len(feats) - 1)):
            x = np.asarray(feats[k], dtype=np.float32)[:n]
            out[f"fig7_knn_{variant}_{end}"] = f"{knn_accuracy(x, labels):.1f}"
    return out


def val_curves_figure(band: str = "minmax", full: tuple[str, str] = FULL_SOURCE):
    """Fig. 6: validation accuracy per epoch of Table 3's four variants, mean and band over
    seeds (:func:`plot_val_curves`)."""
    import matplotlib.pyplot as plt

    curves = val_curves(full=book.book_source(full))
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_val_curves(ax, curves, band=band,
                    title=f"Table 3 variants, FERPlus val (band: "
                          f"{'min–max' if band == 'minmax' else '± 1 sd'} over seeds)")
    fig.tight_layout()
    return fig


def tsne_training_figure(n: int = 1000, full: tuple[str, str] = FULL_SOURCE):
    """Fig. 7 over training: t-SNE of the stored test-feature snapshots of baseline, dam and
    full (seed 0) at 25, 50, 75 and 100 % of training, one shared t-SNE setting
    (:data:`TSNE_SETTING`). None when no run has stored snapshots."""
    import matplotlib.pyplot as plt

    found = snapshot_runs(full=book.book_source(full))
    panels: dict[str, list | None] = {}
    epochs: dict[str, int] = {}
    names: list[str] = []
    for variant, where in found.items():
        if where is None:
            panels[variant] = None
            continue
        exp, run_id = where
        rec = runs.get(run_id, exp)
        try:
            arrays = results.load_arrays(run_id, exp)
        except FileNotFoundError:
            arrays = {}
        if "snapshot_features" not in arrays:
            panels[variant] = [None] * len(FIG7_FRACTIONS)
            continue
        epochs[variant] = int(rec.get("epochs_fitted") or rec.get("epochs_planned"))
        panels[variant] = tsne_snapshots(arrays, epochs[variant], n=n)
        names = [str(c) for c in arrays["class_names"]]
    if not epochs:
        return None
    k = len(FIG7_FRACTIONS)
    fig, axes = plt.subplots(len(panels), k, figsize=(3.0 * k, 3.0 * len(panels)),
                             squeeze=False)
    plot_tsne_over_training(axes, panels, names, epochs)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat),
                          key=lambda hl: len(hl[0]))
    axes[0, -1].legend(handles, labels, markerscale=4, fontsize=7, loc="center left",
                       bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig
