"""Tables and figures of the results chapter (§4.3-4.5), built from the results store only.

Every number shown comes from a record in ``results/`` (:mod:`cfdan.results`); the paper's
numbers come from :mod:`cfdan.paper` and are labelled ``paper``. Functions return DataFrames
or draw on Matplotlib axes; the notebooks only call them. Runs are paired and counted as the
claims ledger (:mod:`cfdan.analysis.claims`) reads them, so a table and the ledger never disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, results
from cfdan.analysis import runs
from cfdan.analysis.claims import (
    FIG10_CENTRE,
    FULL_SOURCE,
    TABLE3_VARIANTS,
    RunStore,
    fig10_points,
    pcp_point,
    points,
    seeds_text,
)

PROFILE_LABELS = {
    "cpu_v2": "ours: cpu profile (2 CPU cores)",
    "paper": "ours: paper profile (1 GPU)",
}



GLUE_DIGITS = 6
"""Significant digits a shown float keeps before its display rounding: more than any chapter
shows (at most four), far fewer than the 15-17 where a float sum's last bits differ between
CPUs (SIMD widths, summation order), so the stored outputs are the same on every machine."""


def stable(v: Any, digits: int = GLUE_DIGITS) -> Any:
    """``v`` as a plain Python scalar, a float rounded to ``digits`` significant digits
    (NaN and infinities unchanged); anything else as it is."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isfinite(v):
        return float(f"{v:.{digits}g}")
    return v


def rounded(df: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """``df.round(decimals)`` after :func:`stable`: a value at a rounding tie (5/16 = 31.25 %)
    rounds the same whatever its last bits."""
    return df.map(stable).round(decimals)


def mean_std(values: Sequence[float], scale: float = 100.0) -> str:
    """``"mean ± std (n=k)"`` of accuracies in percent; std over seeds (ddof=1)."""
    v = np.asarray([x for x in values if x == x], dtype=float) * scale
    if len(v) == 0:
        return "not run"
    if len(v) == 1:
        return f"{v[0]:.2f} (n=1)"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} (n={len(v)})"


def our_rows(experiments: dict[str, str], variant: str | None = None,
             metric: str = "test.accuracy") -> pd.DataFrame:
    """One row per experiment: mean ± std over seeds of ``metric`` (FERPlus only here)."""
    rows = []
    for exp, label in experiments.items():
        df = runs.load(exp)
        if not df.empty and variant is not None and "variant" in df:
            df = df[df["variant"] == variant]
        vals = df[metric].tolist() if metric in df else []
        split = metric.split(".")[0]
        extra = {f"FERPlus {name}": mean_std(df[f"{split}.{col}"].tolist()
                                             if f"{split}.{col}" in df else [])
                 for name, col in (("mean-class acc", "mean_class_accuracy"),
                                   ("macro-F1", "macro_f1"))}
        rows.append({"source": label, "FERPlus": mean_std(vals), **extra,
                     "RAF-DB": "not run (licensed, not here)",
                     "AffectNet": "not run (licensed, not here)",
                     "test protocol": test_protocol(df, metric)})
    return pd.DataFrame(rows)


def test_protocol(df: pd.DataFrame, metric: str = "test.accuracy") -> str:
    """How a row of our runs was scored: flip test-time augmentation on or off
    (``eval.tta_flip``) and, for a single run, its test-set bootstrap 95 % interval
    (``<metric>_ci95``), the sampling error of 3,137 test images that no seed spread shows."""
    if df.empty:
        return "-"
    flags = df["eval.tta_flip"].fillna(False) if "eval.tta_flip" in df else [False] * len(df)
    tta = {bool(v) for v in flags}  # a record from before the option: no TTA
    parts = [{frozenset({True}): "flip TTA", frozenset({False}): "no TTA"}.get(
        frozenset(tta), "flip TTA in some runs")]
    ci = df.get(f"{metric}_ci95")
    if len(df) == 1 and ci is not None and isinstance(ci.iloc[0], (list, tuple)):
        lo, hi = (100 * float(x) for x in ci.iloc[0])
        parts.append(f"test-set 95 % CI {lo:.2f}–{hi:.2f} (bootstrap)")
    return "; ".join(parts)


def table1(experiments: dict[str, str] | None = None) -> pd.DataFrame:
    """Table 1: the paper's rows, then ours (test accuracy %, mean ± std over seeds)."""
    p = paper.table("table1")
    method = p["method"].str.replace(" (Ours)", "", regex=False)  # "ours" is our runs here
    p = p.assign(source=p["source"] + ": " + method)[["source", "RAF-DB", "AffectNet",
                                                      "FERPlus"]]
    ours = our_rows(experiments or PROFILE_LABELS, variant="full")
    return pd.concat([p.astype(object), ours], ignore_index=True).fillna("-")


def ablation_table(experiment: str, table: str, dataset_col: str = "FERPlus",
                   metric: str = "test.accuracy", full: tuple[str, str] | None = None,
                   current: bool = True, root: str | os.PathLike[str] | None = None
                   ) -> pd.DataFrame:
    """Tables 3-5: per preset, the paper's numbers beside ours (mean ± std over seeds); the
    experiment's variants that the paper's table lacks (Table 3's ``plain_cnn``, no attention)
    follow as rows of ours alone, their paper cells empty.

    Our runs are read as the claims ledger reads them (:class:`cfdan.analysis.claims.RunStore`): only
    records of the experiment file as it is today, and the full model's rows from
    :data:`cfdan.analysis.claims.FULL_SOURCE`, limited to the seeds this table plans (as the table's
    own rows are; the seeds left out are named in ``runs``). The ``runs`` column says
    how many of the planned seeds each row has and where they come from; ``hardware`` says what
    they ran on (CPU models and thread counts; a pair never mixes CPU and GPU records).
    """
    p = paper.table(table)
    extra = [v for v in _planned_variants(experiment) if v not in set(p["preset"])]
    if extra:  # our own rows (plain_cnn: no attention), which the paper does not report
        p = pd.concat([p, pd.DataFrame({"preset": extra})], ignore_index=True)
    store = RunStore(root, current, full or FULL_SOURCE, metric)
    plan = store.plan(experiment)
    ours, counts, hw, mca, f1, seeds = [], [], [], [], [], []
    for preset in p["preset"]:
        exp, var, recs, stale = store.variant_records(experiment, preset)
        r = store._runs(f"{exp}/{var}", exp, recs, stale)
        left_out = ""
        if exp != experiment and plan is not None:  # a shared row: this table's seeds only
            other = sorted(set(r.by_seed) - set(plan[0]))
            r = r.only(plan[0])
            recs = [rec for rec in recs if int(rec.get("seed", 0)) in plan[0]]
            if other:
                left_out = (f"; {seeds_text(other)} not shown, as this table does not plan "
                            f"{'them' if len(other) > 1 else 'it'}")
        vals = [v for v, _recipe in r.by_seed.values()]
        ours.append(mean_std(vals, scale=1.0) if vals else "not run")
        split = metric.split(".")[0]
        mca.append(mean_std([points(x, f"{split}.mean_class_accuracy") for x in recs], 1.0))
        f1.append(mean_std([points(x, f"{split}.macro_f1") for x in recs], 1.0))
        seeds.append(per_seed_text(r.by_seed))
        counts.append(r.count() + left_out)
        hw.append(_hardware_label(recs))
    keep = [c for c in p.columns if c not in ("source",)]
    out = p[keep].copy()
    out.columns = [f"paper {c}" if c in ("AffectNet", "FERPlus", "RAF-DB") else c for c in keep]
    datasets = [c for c in ("RAF-DB", "AffectNet", "FERPlus") if c in p.columns]
    stand_in = f" (stand-in for {datasets[0]})" if datasets and dataset_col not in datasets else ""
    out[f"ours {dataset_col}{stand_in}"] = ours
    out["ours per seed"] = seeds
    out["ours mean-class acc"] = mca
    out["ours macro-F1"] = f1
    out["runs"] = counts
    out["hardware"] = hw
    return out


def per_seed_text(by_seed: Mapping[int, tuple[float, str]]) -> str:
    """``"s0 83.52, s1 83.74"``: a row's values seed by seed (points), or ``-``."""
    return ", ".join(f"s{k} {v:.2f}" for k, (v, _r) in sorted(by_seed.items())) or "-"


def _planned_variants(experiment: str) -> list[str]:
    """The variants ``configs/experiments/<experiment>.toml`` plans (none without a file)."""
    from cfdan.training.config import ConfigError, load_experiment

    try:
        return list(load_experiment(experiment).variants)
    except ConfigError:
        return []


def record_threads(rec: Mapping[str, Any]) -> int:
    """The torch threads a record trained with (its ``cpu_count`` where ``torch_threads`` is
    missing; 0 if neither is recorded)."""
    hw = rec.get("hardware") or {}
    return int(hw.get("torch_threads") or hw.get("cpu_count") or 0)


def _hardware_label(recs: Sequence[Mapping[str, Any]]) -> str:
    """``"CPU (1, 2 threads)"``, ``"GPU (NVIDIA H200)"``, ``"mixed: ..."`` or ``"-"`` for records.

    CPU records that differ only in their thread count share one label: the count changes the
    speed and the rounding, not the recipe. ``mixed`` means CPU and GPU records together.
    """
    from cfdan.training.sweep import device_kind

    gpus, threads, models, cpu = set(), set(), set(), False
    for rec in recs:
        hw = rec.get("hardware") or {}
        if device_kind(hw.get("device", "cpu")) == "cuda":
            gpus.add(f"GPU ({hw.get('gpu') or 'cuda'})")
            continue
        cpu = True
        if hw.get("cpu"):
            models.add(str(hw["cpu"]))
        if n := record_threads(rec):
            threads.add(n)
    kinds = sorted(gpus)
    if cpu:
        counts = ", ".join(str(t) for t in sorted(threads))
        unit = "thread" if threads == {1} else "threads"
        what = "; ".join(sorted(models))
        inside = "; ".join(x for x in (what, f"{counts} {unit}" if threads else "") if x)
        kinds.append(f"CPU ({inside})" if inside else "CPU")
    if not kinds:
        return "-"
    return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)


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


ATTENTION_V2 = "v2"
"""The Fig. 8 definition of :func:`cfdan.model.network.attention_maps` (chapter 2)."""
ATTENTION_OLD = "token norms (old records)"
"""What records without ``attention_definition`` hold: min-max-scaled token norms."""
DATASET_NAMES = {"ferplus": "FERPlus", "rafdb": "RAF-DB", "affectnet": "AffectNet",
                 "synthetic": "the synthetic set"}


def attention_definition(arrays: Mapping[str, np.ndarray]) -> str:
    """Which definition made a record's Fig. 8 maps: ``"v2"`` or :data:`ATTENTION_OLD`."""
    d = arrays.get("attention_definition")
    return str(d) if d is not None else ATTENTION_OLD


def _test_split(rec: Mapping[str, Any], root: str | os.PathLike[str] | None):
    """The run's test split as it was evaluated (dataset, label mode, ``max_eval`` subset)."""
    from pathlib import Path

    from cfdan import paths
    from cfdan.data import load_dataset
    from cfdan.data.splits import subsample

    dcfg = (rec.get("config") or {}).get("data") or {}
    dataset = (rec.get("data") or {}).get("dataset") or dcfg.get("dataset", "")
    name = DATASET_NAMES.get(dataset, dataset)
    if dataset == "ferplus":
        where: Path | None = paths.ferplus_root(root)
    elif dataset == "synthetic":
        where = None
    else:
        given = root or dcfg.get("root")
        where = Path(given) if given else None
        if where is None:
            return None, f"{name} has no root folder here"
    if where is not None and not where.exists():
        return None, f"{name} is not at {where}"
    ft = load_dataset(dataset, where, "test", image_size=int(dcfg.get("image_size", 224)),
                      label_mode=dcfg.get("label_mode", "majority"), seed=0,
                      **(dcfg.get("options") or {}))
    return subsample(ft, int(dcfg.get("max_eval") or 0)), name


def attention_faces(run_id: str, experiment: str | None = None,
                    root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray | None, str]:
    """Fig. 8's faces: the ``attention_index`` rows of the run's test split, read from its
    dataset now (records hold indices, never pixels), as uint8 (k, C, H, W).

    Returns ``(faces, note)``; ``faces`` is None, and ``note`` says why, when the dataset is
    not here or its test split differs from the run's (fingerprint or labels). ``root``
    overrides where the dataset is read (default: :func:`cfdan.paths.ferplus_root` for
    FERPlus, the record's ``data.root`` otherwise).
    """
    from cfdan.data.types import DataError

    rec = results.get_record(run_id, experiment)
    arr = results.load_arrays(run_id, experiment)
    if "attention_index" not in arr:
        return None, "the record names no faces (no attention_index)"
    dataset = (rec.get("data") or {}).get("dataset", "")
    name = DATASET_NAMES.get(dataset, dataset)
    try:
        split, why = _test_split(rec, root)
    except (DataError, OSError, ValueError, TypeError) as exc:
        return None, f"{name} could not be read ({exc})"
    if split is None:
        return None, why
    want = ((rec.get("data") or {}).get("fingerprint") or {}).get("test")
    if want is not None and str(split.fingerprint) != str(want):
        return None, (f"the {name} test split here (fingerprint {split.fingerprint}) is not "
                      f"the run's ({want})")
    idx = np.asarray(arr["attention_index"], dtype=np.int64)
    if len(idx) and idx.max() >= len(split):
        return None, f"the {name} test split here has {len(split)} images, fewer than the run's"
    labels = arr.get("attention_labels")
    if labels is not None and not np.array_equal(split.labels.numpy()[idx], labels):
        return None, f"the labels of the {name} test faces here differ from the run's"
    return split.images[idx].numpy(), f"read from the {name} test split at build time"


def _attention_caption(faces_note: str, definition: str, has_faces: bool) -> str:
    """The line under Fig. 8: where the faces come from and what the maps are."""
    where = (f"Faces {faces_note} (records keep their indices, never pixels)." if has_faces
             else f"Maps alone: {faces_note}; records keep the faces' indices, never pixels.")
    if definition == ATTENTION_V2:
        what = ("Maps (v2, chapter 2): spatial = attention each cell receives in the last "
                "layer; channel, fused = each cell's share of the predicted class's logit (red "
                "for, blue against). Each map is scaled to its own largest |value|, so colours "
                "compare cells within a face, not faces.")
    else:
        what = ("Maps: token norms after the residual, min-max scaled per face (old records, "
                "made before the v2 definition of chapter 2; not attention).")
    return f"{where} {what}"


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _map_style(name: str, m: np.ndarray, definition: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The map as drawn and its imshow colour scale, the same for every face of a column, so
    one colour bar reads them all: v2 maps are scaled to their own largest (absolute) value,
    sequential for attention received, diverging around 0 for class-activation maps; old maps
    were stored min-max scaled per face and are drawn as stored."""
    if definition != ATTENTION_V2:
        return m, {"cmap": "jet", "vmin": 0.0, "vmax": 1.0}
    if name == "spatial":
        top = float(m.max())
        return m / top if top > 0 else m, {"cmap": "inferno", "vmin": 0.0, "vmax": 1.0}
    lim = float(np.abs(m).max()) or 1.0
    return m / lim, {"cmap": "RdBu_r", "vmin": -1.0, "vmax": 1.0}


def _colour_bar_label(name: str, definition: str) -> str:
    """What a column's colour bar measures (:func:`_map_style`'s per-face scaling)."""
    if definition != ATTENTION_V2:
        return "min-max per face"
    if name == "spatial":
        return "÷ the face's max"
    return "against (−) / for (+) the class\n÷ the face's max |value|"


def _add_colour_bar(ax, style: Mapping[str, Any], label: str, alpha: float = 1.0) -> None:
    """A horizontal colour bar under ``ax`` (a child axes: ``fig.axes`` keeps its grid order),
    as translucent as the maps it reads."""
    import matplotlib as mpl

    cax = ax.inset_axes((0.05, -0.2, 0.9, 0.07))
    norm = mpl.colors.Normalize(vmin=style["vmin"], vmax=style["vmax"])
    bar = ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=style["cmap"]), cax=cax,
                             orientation="horizontal", alpha=alpha)
    bar.set_ticks([style["vmin"], (style["vmin"] + style["vmax"]) / 2, style["vmax"]])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.set_label(label, fontsize=6, labelpad=1)


def plot_attention(axes, run_id: str, experiment: str | None = None, k: int = 4,
                   root: str | os.PathLike[str] | None = None, show_faces: bool = True) -> str:
    """Fig. 8 on a (k, 4) grid of axes: face, spatial, channel and fused maps of ``k`` fixed
    test faces, the maps upsampled onto the face. The faces are read from the dataset now
    (:func:`attention_faces`); without it the maps are drawn alone. Returns the caption line
    (where the faces come from, which map definition the record holds). ``show_faces=False``
    draws the maps alone (the book's committed outputs: dataset faces are not redistributed)."""
    rec = results.get_record(run_id, experiment)
    arr = results.load_arrays(run_id, experiment)
    names = [str(c) for c in arr["class_names"]]
    definition = attention_definition(arr)
    if show_faces:
        faces, note = attention_faces(run_id, experiment, root)
    else:
        faces, note = None, "dataset faces are not redistributed with this book; rerun the chapter with `-p show_ferplus_images True` (papermill) to see them on your machine"
    side = int(((rec.get("config") or {}).get("data") or {}).get("image_size", 48))
    v2 = definition == ATTENTION_V2
    cols = [("face", None),
            ("spatial", "attention_spatial"), ("channel", "attention_channel"),
            ("fused", "attention_fused")]
    titles = {"face": "face", "spatial": "spatial" + (": received" if v2 else " (norm)"),
              "channel": "channel" + (": CAM" if v2 else " (norm)"),
              "fused": "fused" + (": CAM" if v2 else " (norm)")}
    n = len(arr.get("attention_index", arr.get("attention_labels", [])))
    for i in range(min(k, n)):
        face = None
        if faces is not None:
            face = faces[i].astype(float).mean(0) / 255.0
        size = face.shape if face is not None else (side, side)
        for j, (name, key) in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[name], fontsize=8)
            if face is not None:
                ax.imshow(face, cmap="gray", vmin=0, vmax=1)
            if key is None:
                if face is None:
                    ax.text(0.5, 0.5, "face not\nread here", ha="center", va="center",
                            fontsize=7, transform=ax.transAxes)
                continue
            if key not in arr:
                ax.text(0.5, 0.5, f"no {name}\nbranch", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                continue
            m, style = _map_style(name, _upsample(arr[key][i], size), definition)
            alpha = 0.5 if face is not None else 1.0
            ax.imshow(m, alpha=alpha, **style)
            if i == min(k, n) - 1:
                _add_colour_bar(ax, style, _colour_bar_label(name, definition), alpha)
        true, pred = names[arr["attention_labels"][i]], names[arr["attention_preds"][i]]
        axes[i, 0].set_ylabel(f"{true}\n(pred {pred})", fontsize=8)
    return _attention_caption(note, definition, faces is not None)


def attention_similarity(run_id: str, experiment: str | None = None) -> dict[str, float]:
    """How much Fig. 8's maps depend on the face, for a record's stored maps
    (:func:`map_similarity` of its arrays)."""
    return map_similarity(results.load_arrays(run_id, experiment))


def map_similarity(arr: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per map kind (spatial, channel, fused), the mean Pearson correlation between the
    ``attention_<kind>`` maps of every pair of stored faces (near 1: nearly the same map for
    every face; constant maps are left out; NaN if fewer than two remain)."""
    out: dict[str, float] = {}
    for name in ("spatial", "channel", "fused"):
        maps = arr.get(f"attention_{name}")
        if maps is None or len(maps) < 2:
            out[name] = float("nan")
            continue
        flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
        flat = flat[flat.std(axis=1) > 0]  # a constant map has no correlation
        if len(flat) < 2:
            out[name] = float("nan")
            continue
        r = np.corrcoef(flat)
        out[name] = float(r[np.triu_indices(len(flat), k=1)].mean())
    return out


def history(experiment: str, current: bool = True) -> pd.DataFrame:
    """Per-epoch histories of the runs of an experiment (only current ones, as :func:`runs`)."""
    try:
        h = results.load_history(experiment=experiment)
    except KeyError:
        return pd.DataFrame()
    if not current or h.empty:
        return h
    return h[runs.current_mask(h.assign(experiment=experiment))].reset_index(drop=True)


def counted(df: pd.DataFrame) -> pd.Series:
    """Per row of a runs frame (``experiment``, ``run_id``, optional ``superseded_by``): does
    a table or figure read the run, and if not, why (*older config*, *superseded by*, or
    *retired*: :data:`cfdan.analysis.runs.RETIRED`)."""
    out = runs.current_mask(df).map({True: "yes", False: "no: older config"})
    by = df["superseded_by"] if "superseded_by" in df else pd.Series(None, index=df.index)
    for i in df.index:
        if isinstance(by[i], str) and by[i]:
            out[i] = f"no: superseded by {by[i]}"
        elif df.at[i, "experiment"] in runs.RETIRED:
            out[i] = f"no: retired ({runs.RETIRED[df.at[i, 'experiment']]})"
    return out


def code_label(row: Mapping[str, Any]) -> str:
    """The commit whose code produced a run (a runs-frame row): ``git_commit``, or, when the
    tree was dirty, the ``code_commit`` that committed its changes (noted when missing)."""
    commit = str(row.get("git_commit") or "unknown")[:7]
    if not row.get("git_dirty"):
        return commit
    code = row.get("code_commit")
    if isinstance(code, str) and code:
        return f"{code[:7]} (ran as uncommitted changes on {commit})"
    return f"{commit} + uncommitted changes"


def provenance(experiment: str | None = None) -> pd.DataFrame:
    """Where every number comes from: one row per run with commit, data, hardware, date.

    Runs of an experiment file's older profile and superseded runs are listed too; ``counted``
    says whether the tables and figures use the run (:func:`cfdan.analysis.runs.current_mask`)."""
    df = runs.load(experiment, current=False, superseded=True)
    if df.empty:
        return df
    df = df.assign(counted=counted(df), code=[code_label(r) for _i, r in df.iterrows()])
    cols = ["experiment", "variant", "seed", "run_id", "counted", "code", "device",
            "data_fingerprint", "date", "wall_time_s", "epochs_run", "cut_short", "best_epoch",
            "test.accuracy"]
    out = df[[c for c in cols if c in df]].sort_values(["experiment", "variant", "seed"])
    if "data_fingerprint" in out:  # one short hash per run: of the train split's fingerprint
        out["data_fingerprint"] = out["data_fingerprint"].map(
            lambda f: f.get("train", "") if isinstance(f, dict) else f)
    return out.reset_index(drop=True)


def gap_to_paper(experiment: str, variant: str = "full") -> str:
    """One sentence: our FERPlus test accuracy of ``experiment`` against the paper's 92.02 %."""
    df = runs.load(experiment)
    label = PROFILE_LABELS.get(experiment, experiment)
    if df.empty or "test.accuracy" not in df:
        return f"{label}: not run yet"
    df = df[df["variant"] == variant]
    ours = 100 * df["test.accuracy"]
    ref = paper.table("table1").set_index("method").loc["CF-DAN (Ours)", "FERPlus"]
    mca = 100 * df["test.mean_class_accuracy"].mean()
    return (f"{label}: FERPlus test accuracy {ours.mean():.2f} % (n={len(ours)}; mean-class "
            f"{mca:.2f} %) vs paper {ref:.2f} %: {ours.mean() - ref:+.2f} points")


def plot_history(ax, experiment: str, metric: str = "val_accuracy", title: str = "") -> None:
    """Per-epoch ``metric`` of every run of ``experiment``, one line per (variant, seed)."""
    h = history(experiment)
    df = runs.load(experiment)
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


def representative_runs(wanted: dict[str, str]) -> dict[str, str]:
    """``{experiment: run_id}`` of the lowest-seed run of the given variant, where one exists."""
    out = {}
    for exp, variant in wanted.items():
        df = runs.load(exp)
        if df.empty:
            continue
        df = df[df["variant"] == variant].sort_values("seed")
        if len(df):
            out[exp] = str(df["run_id"].iloc[0])
    return out


def per_class_table(shown: dict[str, str], split: str = "test") -> pd.DataFrame:
    """Per-class recall and F1 (%) of the given runs, with the support of each class."""
    rows = []
    for exp, run_id in shown.items():
        rec = results.get_record(run_id, exp)
        for name, st in rec[split]["per_class"].items():
            rows.append({"run": PROFILE_LABELS.get(exp, exp), "class": name,
                         "support": st["support"], "recall %": 100 * st["recall"],
                         "F1 %": 100 * st["f1"]})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return rounded(df.pivot_table(index=["class", "support"], columns="run",
                                  values=["recall %", "F1 %"], sort=False), 1)


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


def sensitivity_table(experiment: str = "fig10", full: tuple[str, str] | None = None
                      ) -> pd.DataFrame:
    """Fig. 10 as a table: every setting of the grid (:func:`sensitivity_points`), its test
    accuracy (%) averaged over the seeds it has, and how many; the centre is the full model
    (read from ``full``, default :data:`cfdan.analysis.claims.FULL_SOURCE`)."""
    pts = sensitivity_points(full or FULL_SOURCE, experiment)
    acc = [f"{v:.2f}" if np.isfinite(v) else "not run" for v in pts["accuracy"]]
    return pd.DataFrame({
        "s_L": pts["s_L"], "x_L": pts["x_L"], "P1": pts["P1"],
        "setting": np.where(pts["centre"], "paper's best (the full model)", "grid"),
        "test accuracy % (FERPlus)": acc, "seeds": pts["seeds"], "runs from": pts["source"],
        "hardware": pts["hardware"]})


def hardware_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: device, GPU/CPU, library versions, world size, wall time, epochs, peak memory;
    superseded runs too, with the run that replaced them."""
    rows = []
    for _p, rec in results.iter_records(experiment, superseded=True):
        hw, ver, mem = rec.get("hardware", {}), rec.get("versions", {}), rec.get("peak_memory", {})
        rows.append({
            "experiment": rec["experiment"], "variant": rec.get("variant"),
            "seed": rec.get("seed"), "run_id": rec["run_id"],
            "hardware": hw.get("gpu") or hw.get("cpu"), "device": hw.get("device"),
            "bf16": hw.get("bf16"), "threads": _threads(hw),
            "processes (DDP ranks)": hw.get("world_size"),
            "torch": ver.get("torch"), "python": ver.get("python"),
            "epochs run / planned": f"{rec.get('epochs_run')} / {rec.get('epochs_planned')}",
            "wall time (min)": round(rec.get("wall_time_s", float("nan")) / 60, 1),
            "peak GPU MB": round(mem["gpu_max_allocated_mb"]) if "gpu_max_allocated_mb" in mem
            else None,
            "peak host RSS MB": round(mem["host_max_rss_mb"]) if "host_max_rss_mb" in mem
            else None,
            "date": rec.get("date"),
            "superseded by": rec.get("superseded_by", ""),
        })
    return _by_run(rows)


def _threads(hw: Mapping[str, Any]) -> Any:
    """Torch threads of a CPU run ("-" for a GPU run)."""
    return "-" if hw.get("gpu") else hw.get("torch_threads") or hw.get("cpu_count")


def _by_run(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows ordered by experiment, variant and seed (the store's order is by run id)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["experiment", "variant", "seed"], kind="stable").reset_index(drop=True)


def speed_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run, superseded ones included: median training images/s and epoch time over its
    epochs (from the history), and whether the model was compiled (``torch.compile`` mode)."""
    rows = []
    for _p, rec in results.iter_records(experiment, superseded=True):
        h = pd.DataFrame(rec.get("history", []))
        if h.empty:
            continue
        hw = rec.get("hardware", {})
        rows.append({
            "experiment": rec["experiment"], "variant": rec.get("variant"),
            "seed": rec.get("seed"), "run_id": rec["run_id"],
            "hardware": hw.get("gpu") or hw.get("cpu"),
            "threads": _threads(hw), "image px": rec["config"]["data"]["image_size"],
            "batch": rec["config"]["train"]["batch_size"],
            "compiled": compiled_label(rec["config"]["train"]),
            "train img/s (median)": round(float(h["images_per_s"].median())),
            "epoch s (median)": round(float(h["epoch_time_s"].median()), 1),
            "first epoch s": round(float(h["epoch_time_s"].iloc[0]), 1),
            "val eval s (median)": round(float(h["eval_time_s"].median()), 1),
        })
    return _by_run(rows)


def compiled_label(train: dict) -> str:
    """``torch.compile`` of a run's config as a table cell: "no", "default" or the mode."""
    return (train.get("compile_mode") or "default") if train.get("compile") else "no"


def fingerprint_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: the data source kind and the fingerprint of each split it read."""
    rows = []
    for _p, rec in results.iter_records(experiment, superseded=True):
        d = rec.get("data", {})
        fp = d.get("fingerprint", {})
        row = {"experiment": rec["experiment"], "variant": rec.get("variant"),
               "seed": rec.get("seed"), "run_id": rec["run_id"],
               "dataset": d.get("dataset") or rec["config"]["data"].get("dataset")}
        if isinstance(fp, dict):
            row.update({f"{k} fingerprint": v for k, v in fp.items()})
        rows.append(row)
    return _by_run(rows)


# =========================================================================== figures of the runs
def val_curves(variants: Sequence[str] = TABLE3_VARIANTS, experiment: str = "table3",
               full: tuple[str, str] = FULL_SOURCE, metric: str = "val_accuracy",
               current: bool = True, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Fig. 6: per variant and epoch, ``metric`` (%) over seeds: mean, std, min, max, seeds.

    The full model's curve comes from ``full`` (:data:`cfdan.analysis.claims.FULL_SOURCE`).
    """
    store = RunStore(root, current, full)
    rows = []
    for v in variants:
        exp, var = store.resolve(experiment, v)
        recs, _stale = store.select(exp, lambda r, var=var: r.get("variant") == var)
        for rec in recs:
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
    store = RunStore(root, current, full)
    out: dict[str, tuple[str, str] | None] = {}
    for v in variants:
        exp, var = store.resolve(experiment, v)
        recs, _stale = store.select(
            exp, lambda r, var=var: r.get("variant") == var and r.get("seed") == seed)
        out[v] = (exp, str(recs[0]["run_id"])) if recs else None
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


def sensitivity_points(full: tuple[str, str] = FULL_SOURCE, experiment: str = "fig10",
                       metric: str = "test.accuracy", current: bool = True,
                       root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Fig. 10: per setting, ``metric`` (%) averaged over the seeds of ``experiment``.

    The centre (the full model, from ``full``) is averaged over the same seeds as the grid, so
    that every point shares them (all the full model's seeds while the grid has none).
    """
    store = RunStore(root, current, full, metric)
    pts = {pt: store.point(pt, experiment) for pt in fig10_points()}
    grid_seeds = set().union(*(set(r.by_seed) for pt, r in pts.items() if pt != FIG10_CENTRE))
    rows = []
    for (s_l, x_l, p1), r in pts.items():
        seeds = sorted(r.by_seed) if not grid_seeds or (s_l, x_l, p1) != FIG10_CENTRE \
            else sorted(set(r.by_seed) & grid_seeds)
        vals = [r.by_seed[s][0] for s in seeds]
        centre = (s_l, x_l, p1) == FIG10_CENTRE
        recs = (store.select(store.full[0], lambda x: x.get("variant") == store.full[1])[0]
                if centre else store.select(experiment, lambda x, p=(s_l, x_l, p1):
                                            pcp_point(x) == p)[0])
        rows.append({"s_L": s_l, "x_L": x_l, "P1": p1, "centre": centre,
                     "accuracy": float(np.mean(vals)) if vals else float("nan"),
                     "seeds": len(vals), "source": r.label,
                     "hardware": _hardware_label([x for x in recs
                                                  if int(x.get("seed", 0)) in seeds])})
    return pd.DataFrame(rows)


FIG10_BAND = 2 * np.sqrt(2)
"""Half-width of Fig. 10's grey band in units of the full model's seed-to-seed sd: two one-seed
runs of the same setting differ by more than 2√2 sd about 5 % of the time (normal seed noise,
sd taken as known), so a one-seed point outside the band is unlikely to be seed noise alone."""


def sensitivity_screen(points: pd.DataFrame, spread: tuple[float, float, int]) -> pd.DataFrame:
    """Fig. 10's band as a screen: per grid setting with a run, its accuracy minus the centre's
    (points) and ``position`` against the band (``inside`` / ``above`` / ``below`` the centre ±
    :data:`FIG10_BAND` sd; ``n/a`` without an sd). ``points`` from :func:`sensitivity_points`,
    ``spread`` = mean, sd, n from :func:`cfdan.analysis.claims.full_seed_spread`."""
    centre = points.loc[points["centre"], "accuracy"]
    c = float(centre.iloc[0]) if len(centre) else float("nan")
    half = FIG10_BAND * spread[1]
    grid = points[~points["centre"] & points["accuracy"].notna()]
    diff = grid["accuracy"] - c
    position = np.where(~np.isfinite(diff) | ~np.isfinite(half), "n/a",
                        np.where(diff > half, "above", np.where(diff < -half, "below", "inside")))
    return pd.DataFrame({"s_L": grid["s_L"], "x_L": grid["x_L"], "P1": grid["P1"],
                         "accuracy": grid["accuracy"], "minus centre": diff,
                         "position": position}).reset_index(drop=True)


def plot_sensitivity(axes, points: pd.DataFrame, spread: tuple[float, float, int]) -> None:
    """Fig. 10 in two panels: accuracy over x_L, one line per s_L (P1 at the best), and over P1
    (s_L, x_L at the best). The grey band is the centre point ± :data:`FIG10_BAND` sd, sd of the
    full model's test accuracy over its seeds (``spread`` = mean, sd, n from
    :func:`cfdan.analysis.claims.full_seed_spread`)."""
    best = paper.BEST_PCP
    _mean, sd, k = spread
    centre = points[points["centre"]]
    c = float(centre["accuracy"].iloc[0]) if len(centre) else float("nan")
    c_seeds = int(centre["seeds"].iloc[0]) if len(centre) else 0
    a, b = axes
    on_p1 = np.isclose(points["P1"], best["P1"])
    for s_l, g in points[on_p1].groupby("s_L"):
        g = g.sort_values("x_L")
        a.plot(g["x_L"], g["accuracy"], marker="o", label=f"$s_L$ = {s_l:g}")
    line = points[np.isclose(points["s_L"], best["s_L"]) & np.isclose(points["x_L"], best["x_L"])]
    line = line.sort_values("P1")
    b.plot(line["P1"], line["accuracy"], marker="o", color="C3",
           label=f"$s_L$ = {best['s_L']:g}, $x_L$ = {best['x_L']:g}")
    grid_run = points.loc[~points["centre"], "accuracy"].notna().any()
    missing = "" if grid_run else ("not run" if not np.isfinite(c) else
                                   "grid not run\n(centre only: the full model)")
    for ax, name in ((a, "x_L"), (b, "P1")):
        if np.isfinite(c) and np.isfinite(sd):
            ax.axhspan(c - FIG10_BAND * sd, c + FIG10_BAND * sd, color="grey", alpha=0.2, lw=0,
                       label=f"centre ({c_seeds} seed{'s' * (c_seeds != 1)}) ± 2√2 sd "
                             f"(sd over the full model's {k} seeds)")
        if missing:
            ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes)
        values = sorted(paper.FIG10_GRID[name])
        pad = 0.3 * (values[1] - values[0])
        ax.set_xticks(values)
        ax.set_xlim(values[0] - pad, values[-1] + pad)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)  # under the panel: the points fill the plot as the grid runs
    a.set(xlabel="$x_L$", ylabel="test accuracy (%)", title=f"$P_1$ = {best['P1']:g}")
    b.set(xlabel="$P_1$", title=f"$s_L$ = {best['s_L']:g}, $x_L$ = {best['x_L']:g}")
