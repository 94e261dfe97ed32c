"""Tables and figures of the results chapter (§4.3-4.5), built from the results store only.

Every number shown comes from a record in ``results/`` (:mod:`cfdan.results`); the paper's
numbers come from :mod:`cfdan.paper` and are labelled ``paper``. Functions return DataFrames
or draw on Matplotlib axes; the notebooks only call them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, results

PROFILE_LABELS = {
    "cpu_v2": "ours: cpu profile (2 CPU cores)",
    "paper": "ours: paper profile (1 GPU)",
}


def planned(experiment: str) -> tuple[tuple[int, ...], frozenset[str]] | None:
    """``(seeds, run_ids)`` of ``configs/experiments/<experiment>.toml`` as it is today; None
    if the experiment has no such file (a profile run such as ``paper``)."""
    from cfdan.config import ConfigError, load_experiment

    try:
        exp = load_experiment(experiment)
    except ConfigError:
        return None
    return tuple(exp.seeds), frozenset(c.run_id for c in exp.configs())


def current_ids(experiment: str) -> frozenset[str] | None:
    """The run ids of ``experiment`` that count today: those its experiment file plans
    (:func:`planned`); None when it has no file and every run counts."""
    plan = planned(experiment)
    return None if plan is None else plan[1]


def current_mask(df: pd.DataFrame) -> pd.Series:
    """Per row of a runs frame: is the run one of its experiment's planned runs today?

    A record of an experiment file's older profile or schedule (its ``run_id`` no longer
    planned) is not current; an experiment without a file keeps all its runs.
    """
    keep = pd.Series(True, index=df.index)
    if df.empty or "experiment" not in df or "run_id" not in df:
        return keep
    for exp in df["experiment"].unique():
        ids = current_ids(str(exp))
        if ids is not None:
            rows = df["experiment"] == exp
            keep[rows] = df.loc[rows, "run_id"].isin(ids)
    return keep


def runs(experiment: str | None = None, current: bool = True, superseded: bool = False,
         **filters: Any) -> pd.DataFrame:
    """The finished runs of ``experiment`` (all experiments if None; empty frame if none).

    With ``current`` (the default) only the runs its experiment file plans today
    (:func:`current_mask`), so a figure never picks a record of an older schedule; runs
    marked ``superseded_by`` only with ``superseded``.
    """
    try:
        df = results.load(experiment, superseded=superseded, **filters)
    except KeyError:
        return pd.DataFrame()
    return df[current_mask(df)].reset_index(drop=True) if current else df


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
        df = runs(exp)
        if not df.empty and variant is not None and "variant" in df:
            df = df[df["variant"] == variant]
        vals = df[metric].tolist() if metric in df else []
        rows.append({"source": label, "FERPlus": mean_std(vals),
                     "RAF-DB": "not run (licensed, not here)",
                     "AffectNet": "not run (licensed, not here)"})
    return pd.DataFrame(rows)


def table1(experiments: dict[str, str] | None = None) -> pd.DataFrame:
    """Table 1: the paper's rows, then ours (test accuracy %, mean ± std over seeds)."""
    p = paper.table("table1")
    p = p.assign(source=p["source"] + ": " + p["method"])[["source", "RAF-DB", "AffectNet",
                                                           "FERPlus"]]
    ours = our_rows(experiments or PROFILE_LABELS, variant="full")
    return pd.concat([p.astype(object), ours], ignore_index=True).fillna("-")


def ablation_table(experiment: str, table: str, dataset_col: str = "FERPlus",
                   metric: str = "test.accuracy", full: tuple[str, str] | None = None,
                   current: bool = True, root: str | os.PathLike[str] | None = None
                   ) -> pd.DataFrame:
    """Tables 3-5: per preset, the paper's numbers beside ours (mean ± std over seeds).

    Our runs are read as the claims ledger reads them (:class:`_Store`): only records of the
    experiment file as it is today, and the full model's rows from :data:`FULL_SOURCE`. The
    ``runs`` column says how many of the planned seeds each row has and where they come from;
    ``hardware`` says what they ran on (a table is one kind of hardware, :mod:`cfdan.sweep`).
    """
    p = paper.table(table)
    store = _Store(root, current, full or FULL_SOURCE, metric)
    ours, counts, hw = [], [], []
    for preset in p["preset"]:
        exp, var, recs, stale = store.variant_records(experiment, preset)
        r = store._runs(f"{exp}/{var}", exp, recs, stale)
        vals = [v for v, _recipe in r.by_seed.values()]
        ours.append(mean_std(vals, scale=1.0) if vals else "not run")
        counts.append(r.count())
        hw.append(_hardware_label(recs))
    keep = [c for c in p.columns if c not in ("source",)]
    out = p[keep].copy()
    out.columns = [f"paper {c}" if c in ("AffectNet", "FERPlus", "RAF-DB") else c for c in keep]
    out[f"ours {dataset_col} ({experiment})"] = ours
    out["runs"] = counts
    out["hardware"] = hw
    return out


def _hardware_label(recs: Sequence[Mapping[str, Any]]) -> str:
    """``"CPU (1, 2 threads)"``, ``"GPU (NVIDIA H200)"``, ``"mixed: ..."`` or ``"-"`` for records.

    CPU records that differ only in their thread count share one label: the count changes the
    speed and the rounding, not the recipe. ``mixed`` means CPU and GPU records together.
    """
    from cfdan.sweep import device_kind

    gpus, threads, cpu = set(), set(), False
    for rec in recs:
        hw = rec.get("hardware") or {}
        if device_kind(hw.get("device", "cpu")) == "cuda":
            gpus.add(f"GPU ({hw.get('gpu') or 'cuda'})")
            continue
        cpu = True
        n = hw.get("torch_threads") or hw.get("cpu_count")
        if n:
            threads.add(int(n))
    kinds = sorted(gpus)
    if cpu:
        counts = ", ".join(str(t) for t in sorted(threads))
        unit = "thread" if threads == {1} else "threads"
        kinds.append(f"CPU ({counts} {unit})" if threads else "CPU")
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
                "layer, scaled to its maximum; channel, fused = each cell's share of the "
                "predicted class's logit (red for, blue against).")
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
    """The map as drawn and its imshow colour scale: sequential for attention received and
    old maps, diverging around 0 for class-activation maps."""
    if definition != ATTENTION_V2:
        return m, {"cmap": "jet", "vmin": 0.0, "vmax": 1.0}
    if name == "spatial":
        top = float(m.max())
        return m / top if top > 0 else m, {"cmap": "inferno", "vmin": 0.0, "vmax": 1.0}
    lim = float(np.abs(m).max()) or 1.0
    return m, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}


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
            ax.imshow(m, alpha=0.5 if face is not None else 1.0, **style)
        true, pred = names[arr["attention_labels"][i]], names[arr["attention_preds"][i]]
        axes[i, 0].set_ylabel(f"{true}\n(pred {pred})", fontsize=8)
    return _attention_caption(note, definition, faces is not None)


def history(experiment: str, current: bool = True) -> pd.DataFrame:
    """Per-epoch histories of the runs of an experiment (only current ones, as :func:`runs`)."""
    try:
        h = results.load_history(experiment=experiment)
    except KeyError:
        return pd.DataFrame()
    if not current or h.empty:
        return h
    return h[current_mask(h.assign(experiment=experiment))].reset_index(drop=True)


def provenance(experiment: str | None = None) -> pd.DataFrame:
    """Where every number comes from: one row per run with commit, data, hardware, date.

    Runs of an experiment file's older profile and superseded runs are listed too;
    ``counted`` says whether the tables and figures use the run (:func:`current_mask`)."""
    df = runs(experiment, current=False, superseded=True)
    if df.empty:
        return df
    counted = current_mask(df).map({True: "yes", False: "no: older config"})
    by = df["superseded_by"] if "superseded_by" in df else pd.Series(None, index=df.index)
    df = df.assign(counted=[f"no: superseded by {b}" if isinstance(b, str) and b else c
                            for c, b in zip(counted, by, strict=True)])
    cols = ["experiment", "variant", "seed", "run_id", "counted", "git_commit", "git_dirty",
            "device", "data_fingerprint", "date", "wall_time_s", "epochs_run", "cut_short",
            "best_epoch", "test.accuracy"]
    out = df[[c for c in cols if c in df]].sort_values(["experiment", "variant", "seed"])
    if "data_fingerprint" in out:  # one short hash per run: of the train split's fingerprint
        out["data_fingerprint"] = out["data_fingerprint"].map(
            lambda f: f.get("train", "") if isinstance(f, dict) else f)
    return out.reset_index(drop=True)


def gap_to_paper(experiment: str, variant: str = "full") -> str:
    """One sentence: our FERPlus test accuracy of ``experiment`` against the paper's 92.02 %."""
    df = runs(experiment)
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
    df = runs(experiment)
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
        df = runs(exp)
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
    return df.pivot_table(index=["class", "support"], columns="run",
                          values=["recall %", "F1 %"], sort=False).round(1)


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
    (read from ``full``, default :data:`FULL_SOURCE`)."""
    pts = sensitivity_points(full or FULL_SOURCE, experiment)
    acc = [f"{v:.2f}" if np.isfinite(v) else "not run" for v in pts["accuracy"]]
    return pd.DataFrame({
        "s_L": pts["s_L"], "x_L": pts["x_L"], "P1": pts["P1"],
        "setting": np.where(pts["centre"], "paper's best (the full model)", "grid"),
        "test accuracy % (FERPlus)": acc, "seeds": pts["seeds"], "runs from": pts["source"]})


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
            "peak host RSS MB": round(mem.get("host_max_rss_mb", float("nan"))),
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
            "seed": rec.get("seed"), "hardware": hw.get("gpu") or hw.get("cpu"),
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


# =========================================================================== claims ledger
# §4.4-4.5 as a ledger: one row per claim of the paper, our paired difference over seeds, its
# 95 % CI, the difference that n seeds could detect, and a verdict computed here.

FULL_SOURCE: tuple[str, str] = ("cpu_v2", "full")
"""Where the full model's runs are read, ``(experiment, variant)``: the cpu v2 records.

The full model is one configuration shared by Table 3 (``full``), Table 5 (*with
distillation*), Table 4 (``act_pcp``: PCP with ILM) and Fig. 10 (the centre point, the paper's
best PCP setting): it is run once, as the cpu v2 profile's seeds (``configs/experiments/
cpu_v2.toml``), and read from there for all four (:data:`FULL_SLOTS`). Pairs whose training
recipe differs (:func:`recipe`) are never formed, so a source of another schedule pairs with
nothing rather than with something else.
"""

FULL_SLOTS = frozenset({("table3", "full"), ("table5", "full"), ("table4", "act_pcp")})
"""The (experiment, variant) names of the full model that :data:`FULL_SOURCE` stands in for."""

TABLE3_VARIANTS = ("baseline", "dam", "dam_ilm", "full")
"""Table 3's rows (and Fig. 6's curves), in the paper's order."""

VERDICTS = ("supported", "contradicted", "not resolved at this n", "not run")
"""The verdicts of :func:`claims_ledger`: CI beyond 0 on the paper's side / on the other side /
CI includes 0 or n < 2 / records missing."""

ALPHA, POWER = 0.05, 0.80
"""Two-sided level of the CIs and tests, and the power of :func:`detectable_difference`."""

_RECIPE_IGNORED = frozenset({
    "train.seed",  # pairs share a seed by construction
    # evaluation-only settings: what is stored besides the metrics, not how the model trains
    "eval.feature_snapshots", "eval.snapshot_samples", "eval.tsne_samples",
    "eval.attention_images", "eval.attention_seed", "eval.bootstrap", "eval.bootstrap_seed",
    "eval.train_subset", "train.eval_batch_size",
})


def recipe(rec: Mapping[str, Any]) -> str:
    """A run's training recipe: its config without the model's variant (``preset``, ``pcp_*``),
    the seed, evaluation-only settings and :data:`cfdan.config.NON_IDENTITY` fields.

    Two runs form a pair only if their recipes are equal (same data, schedule, optimiser,
    augmentation, test-time protocol and trunk), so a difference is the variant's alone.
    """
    import json

    from cfdan.config import ADDED_LATER, NON_IDENTITY

    drop = NON_IDENTITY | _RECIPE_IGNORED
    cfg = rec.get("config") or {}
    out: dict[str, dict[str, Any]] = {}
    for sec in ("model", "data", "train", "eval"):
        d = dict(cfg.get(sec) or {})
        for dotted in drop:
            s, name = dotted.split(".")
            if s == sec:
                d.pop(name, None)
        for dotted, default in ADDED_LATER.items():
            s, name = dotted.split(".")
            if s == sec and d.get(name, default) == default:
                d.pop(name, None)
        if sec == "model":
            d = {k: v for k, v in d.items() if k != "preset" and not k.startswith("pcp_")}
        out[sec] = d
    return json.dumps(out, sort_keys=True, default=str)


def _metric(rec: Mapping[str, Any], metric: str) -> float:
    v: Any = rec
    for part in metric.split("."):
        v = v.get(part) if isinstance(v, Mapping) else None
    return float("nan") if v is None else 100.0 * float(v)


def pcp_point(rec: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(s_L, x_L, P1)`` of a run's PCP (the model's resolved config, else its overrides,
    else the paper's best setting, :data:`cfdan.paper.BEST_PCP`)."""
    resolved = (rec.get("model_info") or {}).get("config") or {}
    over = (rec.get("config") or {}).get("model") or {}
    out = []
    for name in ("s_L", "x_L", "P1"):
        key = f"pcp_{name}"
        out.append(round(float(resolved.get(key, over.get(key, paper.BEST_PCP[name]))), 4))
    return out[0], out[1], out[2]


FIG10_CENTRE = pcp_point({})
"""The paper's best PCP setting, the centre of Fig. 10's grid, as ``(s_L, x_L, P1)``."""


def fig10_points() -> list[tuple[float, float, float]]:
    """Fig. 10's 13 settings (§4.5): s_L x x_L at P1 = -0.24, then P1 at the best s_L, x_L."""
    g, best = paper.FIG10_GRID, paper.BEST_PCP
    pts = [(s, x, best["P1"]) for s in g["s_L"] for x in g["x_L"]]
    pts += [(best["s_L"], best["x_L"], p) for p in g["P1"] if p != best["P1"]]
    return [(round(s, 4), round(x, 4), round(p, 4)) for s, x, p in pts]


@dataclass
class Runs:
    """The usable runs of one configuration: seed -> (metric in points, recipe)."""

    label: str
    by_seed: dict[int, tuple[float, str]] = field(default_factory=dict)
    expected: tuple[int, ...] = ()
    not_current: int = 0

    def count(self) -> str:
        """``"table3/dam: 2 of 3 seeds"`` (runs of another recipe are mentioned, not counted)."""
        have = sorted(self.by_seed)
        if self.expected:
            text = f"{self.label}: {len(set(have) & set(self.expected))} of " \
                   f"{len(self.expected)} seeds"
        else:
            text = f"{self.label}: {len(have)} seed{'s' * (len(have) != 1)}"
        if self.not_current:
            text += f" (+{self.not_current} of an older config, not counted)"
        return text


class _Store:
    """Records of the results store, selected as the ledger and figures use them.

    With ``current`` (the default), a record of an experiment that has a file in
    ``configs/experiments/`` counts only if its ``run_id`` is one of that file's runs today
    (the sweep's own notion of *done*), so runs of an older profile or schedule drop out.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, current: bool = True,
                 full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy") -> None:
        self.root, self.current, self.full, self.metric = root, current, full, metric
        self._plans: dict[str, tuple[tuple[int, ...], set[str]] | None] = {}
        self._recs: dict[str, list[dict]] = {}

    def plan(self, experiment: str) -> tuple[tuple[int, ...], set[str]] | None:
        """``(seeds, run_ids)`` of the experiment's file today; None if it has none."""
        if experiment not in self._plans:
            plan = planned(experiment)
            self._plans[experiment] = None if plan is None else (plan[0], set(plan[1]))
        return self._plans[experiment]

    def records(self, experiment: str) -> list[dict]:
        if experiment not in self._recs:
            self._recs[experiment] = [r for _p, r in results.iter_records(experiment, self.root)]
        return self._recs[experiment]

    def resolve(self, experiment: str, variant: str) -> tuple[str, str]:
        """``(experiment, variant)``, with the full model's slots read from :attr:`full`."""
        return self.full if (experiment, variant) in FULL_SLOTS else (experiment, variant)

    def select(self, experiment: str, keep) -> tuple[list[dict], int]:
        """Records of ``experiment`` for which ``keep(rec)`` holds, one per seed (the latest),
        and how many were left out as not current."""
        plan = self.plan(experiment) if self.current else None
        chosen: dict[int, dict] = {}
        stale = 0
        for rec in self.records(experiment):
            if not keep(rec):
                continue
            if plan is not None and rec.get("run_id") not in plan[1]:
                stale += 1
                continue
            seed = int(rec.get("seed", 0))
            if seed not in chosen or str(rec.get("date", "")) > str(chosen[seed].get("date", "")):
                chosen[seed] = rec
        return [chosen[s] for s in sorted(chosen)], stale

    def variant_records(self, experiment: str, variant: str) -> tuple[str, str, list[dict], int]:
        """``(experiment, variant, records, not current)`` of a variant, full-model slots
        resolved to :attr:`full` (:meth:`resolve`, :meth:`select`)."""
        exp, var = self.resolve(experiment, variant)
        recs, stale = self.select(exp, lambda r: r.get("variant") == var)
        return exp, var, recs, stale

    def runs(self, experiment: str, variant: str) -> Runs:
        """The runs of a variant (full-model slots resolved to :attr:`full`)."""
        exp, var, recs, stale = self.variant_records(experiment, variant)
        return self._runs(f"{exp}/{var}", exp, recs, stale)

    def point(self, point: tuple[float, float, float], experiment: str = "fig10") -> Runs:
        """The runs of one Fig. 10 setting; the centre is the full model (:attr:`full`)."""
        if point == FIG10_CENTRE:
            exp, var = self.full
            recs, stale = self.select(exp, lambda r: r.get("variant") == var)
            return self._runs(f"{exp}/{var}", exp, recs, stale)
        recs, stale = self.select(experiment, lambda r: pcp_point(r) == point)
        return self._runs(f"{experiment} s_L {point[0]:g}, x_L {point[1]:g}, P1 {point[2]:g}",
                          experiment, recs, stale)

    def _runs(self, label: str, experiment: str, recs: list[dict], stale: int) -> Runs:
        plan = self.plan(experiment)
        return Runs(label, {int(r.get("seed", 0)): (_metric(r, self.metric), recipe(r))
                            for r in recs}, plan[0] if plan else (), stale)


def paired_values(slots: Sequence[Runs], stat) -> tuple[np.ndarray, list[int], list[int]]:
    """``stat([v_1, ..., v_k])`` per seed that every slot has, pairing records by ``seed``.

    Returns the values, the seeds used, and the seeds left out because the slots' recipes
    differ (:func:`recipe`).
    """
    common = sorted(set.intersection(*(set(s.by_seed) for s in slots))) if slots else []
    vals, used, mismatched = [], [], []
    for seed in common:
        entries = [s.by_seed[seed] for s in slots]
        if len({rcp for _v, rcp in entries}) > 1:
            mismatched.append(seed)
            continue
        vals.append(float(stat([v for v, _r in entries])))
        used.append(seed)
    return np.asarray(vals, dtype=float), used, mismatched


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA
                          ) -> float:
    """Smallest true mean difference that a two-sided paired t-test on ``n`` pairs detects with
    ``power`` at level ``alpha``, if the paired differences have standard deviation ``sd``.

    Power at standardised effect d is P(|T| > t_crit) with T ~ noncentral t(n - 1, d sqrt(n));
    d is found by root finding and scaled by ``sd``. NaN for n < 2.
    """
    from scipy import optimize, stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    df = n - 1
    tc = stats.t.ppf(1 - alpha / 2, df)

    def excess(d: float) -> float:
        nc = d * np.sqrt(n)  # lower tail P(T < -tc) as P(T > tc) at -nc: stable where cdf is NaN
        return float(stats.nct.sf(tc, df, nc) + stats.nct.sf(tc, df, -nc)) - power

    hi = 1.0
    while excess(hi) < 0:
        hi *= 2
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-10)) * sd


def paired_summary(diffs: Sequence[float], side: float, alpha: float = ALPHA) -> dict[str, Any]:
    """Mean, t-interval, sd, n, detectable difference and verdict of paired differences.

    ``side`` is the sign of the paper's difference. The verdict is *supported* when the
    ``1 - alpha`` CI excludes 0 on that side, *contradicted* when it excludes 0 on the other,
    and *not resolved at this n* when it includes 0 or n < 2.
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean": float(d.mean()) if n else float("nan"),
                           "ci_low": float("nan"), "ci_high": float("nan"),
                           "sd": float("nan"), "detectable": float("nan"),
                           "verdict": "not resolved at this n"}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / np.sqrt(n)
    lo, hi = float(out["mean"] - half), float(out["mean"] + half)
    out.update(ci_low=lo, ci_high=hi, sd=sd, detectable=detectable_difference(sd, n))
    if lo > 0 or hi < 0:
        out["verdict"] = "supported" if (lo > 0) == (side > 0) else "contradicted"
    return out


@dataclass(frozen=True)
class PairClaim:
    """A claim that ``better`` beats ``other`` (``(experiment, variant)`` each) by ``paper``."""

    claim: str
    where: str
    better: tuple[str, str]
    other: tuple[str, str]
    paper: float
    dataset: str


def pair_claims() -> list[PairClaim]:
    """The accuracy claims of §4.4 (Tables 3, 4, 5), with the paper's differences."""
    def t3(p: str) -> float:
        return paper.value("table3", "FERPlus", p, by="preset")

    def t4(p: str) -> float:
        return paper.value("table4", "RAF-DB", p, by="preset")

    def t5(p: str) -> float:
        return paper.value("table5", "FERPlus", p, by="preset")

    out = [
        PairClaim("DAM beats single-dimension attention", "§4.4, Table 3",
                  ("table3", "dam"), ("table3", "baseline"), t3("dam") - t3("baseline"),
                  "FERPlus"),
        PairClaim("ILM adds about 1 point on FERPlus", "§4.4, Table 3",
                  ("table3", "dam_ilm"), ("table3", "dam"), t3("dam_ilm") - t3("dam"), "FERPlus"),
        PairClaim("cross-fusion helps", "§4.4, Table 3",
                  ("table3", "full"), ("table3", "dam_ilm"), t3("full") - t3("dam_ilm"),
                  "FERPlus"),
        PairClaim("distillation helps accuracy", "§4.4, Table 5",
                  ("table5", "full"), ("table5", "no_distill"),
                  t5("full") - t5("no_distill"), "FERPlus"),
    ]
    for suffix, ilm in (("", "with ILM"), ("_no_ilm", "without ILM")):
        for act, name in (("sigmoid", "Sigmoid"), ("relu", "ReLU"), ("tanh", "Tanh")):
            a, b = f"act_pcp{suffix}", f"act_{act}{suffix}"
            out.append(PairClaim(f"PCP beats {name} ({ilm})", "§4.4, Table 4",
                                 ("table4", a), ("table4", b), t4(a) - t4(b), "RAF-DB"))
    return out


def _row(claim: str, where: str, comparison: str, dataset: str, paper_diff: float, side: float,
         summary: Mapping[str, Any], runs_text: str, note: str = "",
         unit: str = "points") -> dict[str, Any]:
    inside = (summary["ci_low"] <= paper_diff <= summary["ci_high"]
              if np.isfinite(paper_diff) and np.isfinite(summary["ci_low"]) else None)
    return {"claim": claim, "where": where, "comparison": comparison, "paper dataset": dataset,
            "unit": unit, "paper": paper_diff, "paper side": side, **summary,
            "paper in CI": inside, "runs": runs_text, "note": note}


def _noise_note(summary: Mapping[str, Any], noise: tuple[float, int] | None) -> str:
    """For n = 1: the single difference in units of the full model's seed-to-seed sd."""
    if summary["n"] != 1 or noise is None or not np.isfinite(summary["mean"]):
        return ""
    sd, k = noise
    return (f"one seed: the difference is {summary['mean'] / sd:+.1f} x the full model's "
            f"seed-to-seed sd ({sd:.2f} points, {k} seeds); not a test")


def _pair_row(store: _Store, c: PairClaim, noise: tuple[float, int] | None) -> dict[str, Any]:
    a, b = store.runs(*c.better), store.runs(*c.other)
    comparison = f"{a.label} − {b.label}"
    runs_text = "; ".join(s.count() for s in (a, b))
    side = float(np.sign(c.paper))
    if not a.by_seed or not b.by_seed:
        empty = paired_summary([], side) | {"verdict": "not run"}
        return _row(c.claim, c.where, comparison, c.dataset, c.paper, side, empty, runs_text)
    diffs, _used, bad = paired_values([a, b], lambda v: v[0] - v[1])
    s = paired_summary(diffs, side)
    notes = [f"seeds {bad} not paired: recipes differ"] if bad else []
    if len(diffs) == 0 and not bad:
        notes.append("no seed in common")
    notes.append(_noise_note(s, noise))
    return _row(c.claim, c.where, comparison, c.dataset, c.paper, side, s, runs_text,
                "; ".join(n for n in notes if n))


def attention_gmacs(store: _Store, experiment: str = "table5", variant: str = "no_distill",
                    presets: Sequence[str] = ("full", "no_distill")) -> dict[str, float] | None:
    """GMACs of the attention stack of each preset at the scale of ``experiment``'s runs
    (its ``variant``'s config with the preset swapped; :func:`cfdan.model.cost.measure`)."""
    from cfdan.config import ConfigError, load_experiment
    from cfdan.model import preset as model_preset
    from cfdan.model.cost import measure

    try:
        cfg = next(c for c in load_experiment(experiment).configs() if c.variant == variant)
    except (ConfigError, StopIteration):
        return None
    fields = {k: v for k, v in cfg.model.items() if k != "preset"}
    if "trunk_blocks" in fields:
        fields["trunk_blocks"] = tuple(fields["trunk_blocks"])
    return {p: measure(model_preset(p, image_size=cfg.data.image_size, **fields))["attention"].gmacs
            for p in presets}


def _cost_row(store: _Store) -> dict[str, Any]:
    """Distillation lowers the attention's FLOPs (Table 5): measured on the architecture,
    exactly (no seed spread), at the scale of the Table 5 runs."""
    p = paper.value("table5", "FLOPs_G", "full", by="preset") - \
        paper.value("table5", "FLOPs_G", "no_distill", by="preset")
    side = float(np.sign(p))
    g = attention_gmacs(store)
    s = paired_summary([], side)
    if g is None:
        s["verdict"] = "not run"
        return _row("distillation lowers cost", "§3.3, §4.4, Table 5",
                    "attention GMACs: full − no_distill", "224 px", p, side, s,
                    "configs/experiments/table5.toml has no no_distill variant", unit="GMACs")
    diff = g["full"] - g["no_distill"]
    s.update(mean=diff, ci_low=diff, ci_high=diff, n=0, sd=0.0,
             verdict="supported" if np.sign(diff) == side else "contradicted")
    row = _row("distillation lowers cost", "§3.3, §4.4, Table 5",
               "attention GMACs: full − no_distill", "224 px", p, side, s,
               "measured on the architecture at the table5 runs' scale; needs no run",
               note=f"exact, no seed spread: {g['full']:.5f} vs {g['no_distill']:.5f} GMACs "
                    "(our scale is not the paper's: compare signs, not sizes)", unit="GMACs")
    row["paper in CI"] = None
    return row


def _fig10_rows(store: _Store, noise: tuple[float, int] | None,
                experiment: str = "fig10") -> list[dict[str, Any]]:
    """§4.5's pattern of Fig. 10, as four measurable statements (paper: text only, RAF-DB).

    1. the best setting (s_L 1.85, x_L 0.19, P1 -0.24) beats each of the other 12 (supported
       only if all 12 paired CIs lie above 0; contradicted if any lies below; the row shows
       the closest competitor);
    2. at s_L = 1.75, x_L = 0.19 is worse than the mean of x_L = 0.20 and 0.21;
    3. at s_L = 1.85, x_L = 0.21 is worse than the mean of x_L = 0.19 and 0.20;
    4. at s_L = 1.95 accuracy is the most stable over x_L: its range over x_L minus the mean
       range at s_L = 1.75 and 1.85 is below 0 (per seed, then paired over seeds).
    """
    where, dataset = "§4.5, Fig. 10", "RAF-DB, text only"
    p1 = paper.BEST_PCP["P1"]
    pts = {pt: store.point(pt, experiment) for pt in fig10_points()}
    centre = pts[FIG10_CENTRE]
    others = [pt for pt in pts if pt != FIG10_CENTRE]
    done = sum(len(pts[pt].by_seed) for pt in others)
    plan = store.plan(experiment)
    seeds = plan[0] if plan else ()
    grid_text = (f"{experiment}: {done} of {len(others) * len(seeds)} runs "
                 f"({len(others)} settings x seeds {list(seeds)})" if seeds
                 else f"{experiment}: {done} runs of {len(others)} settings")
    stale = sum(pts[pt].not_current for pt in others)
    if stale:
        grid_text += f" (+{stale} of an older config, not counted)"
    runs_text = f"{grid_text}; centre = {centre.count()}"
    rows = []

    # 1. the best setting is the best
    comps = []
    for pt in others:
        diffs, _u, _bad = paired_values([centre, pts[pt]], lambda v: v[0] - v[1])
        if len(diffs):
            comps.append((pt, paired_summary(diffs, 1.0)))
    label = "best setting beats the other 12"
    if not comps:
        s = paired_summary([], 1.0) | {"verdict": "not run" if not centre.by_seed or not done
                                       else "not resolved at this n"}
        rows.append(_row(label, where, "centre − each other setting", dataset, float("nan"),
                         1.0, s, runs_text))
    else:
        pt, s = min(comps, key=lambda c: c[1]["mean"])
        verdicts = [c[1]["verdict"] for c in comps]
        s = dict(s)
        if "contradicted" in verdicts:
            s["verdict"] = "contradicted"
        elif len(comps) == len(others) and all(v == "supported" for v in verdicts):
            s["verdict"] = "supported"
        else:
            s["verdict"] = "not resolved at this n"
        note = (f"closest: s_L {pt[0]:g}, x_L {pt[1]:g}, P1 {pt[2]:g}; "
                f"{sum(v == 'supported' for v in verdicts)} of {len(others)} comparisons "
                f"supported, {verdicts.count('contradicted')} contradicted")
        note = "; ".join(n for n in (note, _noise_note(s, noise)) if n)
        rows.append(_row(label, where, "centre − closest other setting", dataset, float("nan"),
                         1.0, s, runs_text, note))

    # 2.-4. the shape around the best setting
    def at(s_l: float, x_l: float) -> Runs:
        return pts[(round(s_l, 4), round(x_l, 4), round(p1, 4))]

    x0, x1, x2 = paper.FIG10_GRID["x_L"]
    s0, s1, s2 = paper.FIG10_GRID["s_L"]
    shape = [
        (f"at s_L = {s0:g}, x_L = {x0:g} is worse than x_L = {x1:g}, {x2:g}",
         f"({s0:g}, {x0:g}) − mean of ({s0:g}, {x1:g}), ({s0:g}, {x2:g})",
         [at(s0, x0), at(s0, x1), at(s0, x2)], lambda v: v[0] - (v[1] + v[2]) / 2),
        (f"at s_L = {s1:g}, x_L = {x2:g} is worse than x_L = {x0:g}, {x1:g}",
         f"({s1:g}, {x2:g}) − mean of ({s1:g}, {x0:g}), ({s1:g}, {x1:g})",
         [at(s1, x2), at(s1, x0), at(s1, x1)], lambda v: v[0] - (v[1] + v[2]) / 2),
        (f"at s_L = {s2:g} accuracy is the most stable over x_L",
         f"range over x_L at s_L {s2:g} − mean range at {s0:g}, {s1:g}",
         [at(s, x) for s in (s2, s0, s1) for x in (x0, x1, x2)],
         lambda v: np.ptp(v[0:3]) - (np.ptp(v[3:6]) + np.ptp(v[6:9])) / 2),
    ]
    for label, comparison, slots, stat in shape:
        if any(not s.by_seed for s in slots):
            s = paired_summary([], -1.0) | {"verdict": "not run"}
            rows.append(_row(label, where, comparison, dataset, float("nan"), -1.0, s,
                             runs_text))
            continue
        diffs, _u, bad = paired_values(slots, stat)
        s = paired_summary(diffs, -1.0)
        notes = [f"seeds {bad} not paired: recipes differ" if bad else "",
                 _noise_note(s, noise)]
        rows.append(_row(label, where, comparison, dataset, float("nan"), -1.0, s, runs_text,
                         "; ".join(n for n in notes if n)))
    return rows


def full_seed_spread(full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                     current: bool = True, root: str | os.PathLike[str] | None = None
                     ) -> tuple[float, float, int]:
    """Mean, sample sd (ddof=1; NaN below 2 seeds) and n of the full model's ``metric`` (points)
    over its seeds: the seed noise of Fig. 10's band and of one-seed differences."""
    runs_ = _Store(root, current, full, metric).runs(*full)
    v = np.asarray([x for x, _r in runs_.by_seed.values()], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def claims_ledger(full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                  current: bool = True, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The claims of §4.4-4.5, one row each, with our paired evidence and a verdict.

    Per row: the paper's difference (``paper``, in points of accuracy; NaN where the paper
    gives only the direction, Fig. 10), ours as the mean of the per-seed paired differences
    (records paired by ``seed``; the sweeps give every variant of seed s the same data order,
    augmentation and shared initial weights) with its t-interval (``ci_low``, ``ci_high``,
    level ``1 - ALPHA``), ``n``, the paired ``sd``, the smallest difference n pairs detect with
    80 % power (:func:`detectable_difference`), the ``verdict`` (:data:`VERDICTS`, see
    :func:`paired_summary`; *not run* when a side has no record), whether the paper's value
    lies inside our CI, and ``runs``: how many of the planned seeds each side has.

    ``full`` is where the full model's runs are read (:data:`FULL_SOURCE`); ``current``
    keeps only records of today's experiment files (:class:`_Store`). The distillation cost
    row is measured on the architecture, exactly, and needs no run.
    """
    store = _Store(root, current, full, metric)
    _m, sd, k = full_seed_spread(full, metric, current, root)
    noise = (sd, k) if np.isfinite(sd) and sd > 0 else None
    claims = pair_claims()
    rows = [_pair_row(store, c, noise) for c in claims[:4]]
    rows.append(_cost_row(store))
    rows += [_pair_row(store, c, noise) for c in claims[4:]]
    rows += _fig10_rows(store, noise)
    return pd.DataFrame(rows)


def ledger_reading(ledger: pd.DataFrame) -> dict[str, Any]:
    """What a reader should take from a :func:`claims_ledger`, for the chapter's prose.

    ``ledger_supported_exact`` / ``_trained``: supported rows measured on the architecture
    (no training) / resting on paired runs. ``ledger_paper_outside_ci``: rows whose CI excludes
    the paper's difference (``_list`` names them). ``ledger_detect_above_paper`` of
    ``ledger_powered_rows`` (rows with n ≥ 2 and a paper difference): rows where the smallest
    difference n could detect exceeds the paper's, so *not resolved* is what n predicts.
    ``ledger_min_detectable``: the smallest such detectable difference (points).
    ``table4_paper_max_gap``: the largest |difference| the paper claims in Table 4.
    """
    sup = ledger[ledger["verdict"] == "supported"]
    out: dict[str, Any] = {"ledger_supported_exact": int((sup["unit"] != "points").sum()),
                           "ledger_supported_trained": int((sup["unit"] == "points").sum())}
    outside = ledger[ledger["paper in CI"].map(lambda v: v is False)]
    out["ledger_paper_outside_ci"] = len(outside)
    out["ledger_paper_outside_list"] = "; ".join(outside["claim"]) or "none"
    powered = ledger[(ledger["unit"] == "points") & (ledger["n"] >= 2)
                     & np.isfinite(ledger["paper"].astype(float))
                     & np.isfinite(ledger["detectable"].astype(float))]
    out["ledger_powered_rows"] = len(powered)
    out["ledger_detect_above_paper"] = int((powered["detectable"]
                                            > powered["paper"].abs()).sum())
    out["ledger_min_detectable"] = (f"{powered['detectable'].min():.2f}" if len(powered)
                                    else "n/a")
    t4 = [abs(c.paper) for c in pair_claims() if c.other[0] == "table4"]
    out["table4_paper_max_gap"] = f"{max(t4):.2f}"
    return out


def variant_order(experiment: str, table: str, full: tuple[str, str] = FULL_SOURCE,
                  metric: str = "test.accuracy", current: bool = True,
                  root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The presets of a paper table ordered by our mean ``metric`` and by the paper's FERPlus
    number, as ``"a > b > c"`` (``ours``, ``paper``); presets without runs are left out of
    ``ours`` and counted in ``missing``."""
    p = paper.table(table).set_index("preset")["FERPlus"]
    store = _Store(root, current, full, metric)
    ours: dict[str, float] = {}
    for preset in p.index:
        vals = [v for v, _r in store.runs(experiment, preset).by_seed.values()]
        if vals:
            ours[preset] = float(np.mean(vals))
    return {"ours": " > ".join(sorted(ours, key=ours.__getitem__, reverse=True)) or "none run",
            "paper": " > ".join(p.sort_values(ascending=False).index),
            "missing": str(len(p) - len(ours))}


def _signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}" if np.isfinite(v) else "-"


def ledger_display(ledger: pd.DataFrame) -> pd.DataFrame:
    """:func:`claims_ledger` as text cells for the book (points of test accuracy)."""
    out = []
    for _i, r in ledger.iterrows():
        unit = "" if r["unit"] == "points" else f" {r['unit']}"
        if np.isfinite(r["paper"]):
            paper_cell = f"{_signed(r['paper'])}{unit} ({r['paper dataset']})"
        else:
            paper_cell = f"{'> 0' if r['paper side'] > 0 else '< 0'} ({r['paper dataset']})"
        run = r["verdict"] != "not run"
        exact = r["unit"] != "points"
        if not run:
            ours = ci = n = det = "-"
        elif exact:
            digits = 4
            ours, ci, n, det = f"{_signed(r['mean'], digits)}{unit}", "exact", "-", "-"
        else:
            ours = _signed(r["mean"])
            ci = (f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
                  if np.isfinite(r["ci_low"]) else "-")
            n = str(int(r["n"]))
            det = f"{r['detectable']:.2f}" if np.isfinite(r["detectable"]) else "n too small"
        out.append({"claim": r["claim"], "where": r["where"], "comparison": r["comparison"],
                    "paper": paper_cell, "ours: FERPlus, paired mean": ours, "95 % CI": ci, "n": n,
                    "detectable at 80 % power": det, "verdict": r["verdict"],
                    "paper in our CI": {True: "yes", False: "no"}.get(r["paper in CI"], "-"),
                    "runs": r["runs"], "note": r["note"]})
    return pd.DataFrame(out)


# =========================================================================== figures of the runs
def val_curves(variants: Sequence[str] = TABLE3_VARIANTS, experiment: str = "table3",
               full: tuple[str, str] = FULL_SOURCE, metric: str = "val_accuracy",
               current: bool = True, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Fig. 6: per variant and epoch, ``metric`` (%) over seeds: mean, std, min, max, seeds.

    The full model's curve comes from ``full`` (:data:`FULL_SOURCE`).
    """
    store = _Store(root, current, full)
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
    store = _Store(root, current, full)
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
                    "labels": labels[keep]})
    return out


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
                ax.set_title(f"epoch {p['epoch']}/{total_epochs.get(variant, '?')}", fontsize=8)
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
    store = _Store(root, current, full, metric)
    pts = {pt: store.point(pt, experiment) for pt in fig10_points()}
    grid_seeds = set().union(*(set(r.by_seed) for pt, r in pts.items() if pt != FIG10_CENTRE))
    rows = []
    for (s_l, x_l, p1), r in pts.items():
        seeds = sorted(r.by_seed) if not grid_seeds or (s_l, x_l, p1) != FIG10_CENTRE \
            else sorted(set(r.by_seed) & grid_seeds)
        vals = [r.by_seed[s][0] for s in seeds]
        rows.append({"s_L": s_l, "x_L": x_l, "P1": p1, "centre": (s_l, x_l, p1) == FIG10_CENTRE,
                     "accuracy": float(np.mean(vals)) if vals else float("nan"),
                     "seeds": len(vals), "source": r.label})
    return pd.DataFrame(rows)


FIG10_BAND = 2 * np.sqrt(2)
"""Half-width of Fig. 10's grey band in units of the full model's seed-to-seed sd: two one-seed
runs of the same setting differ by more than 2√2 sd about 5 % of the time (normal seed noise,
sd taken as known), so a one-seed point outside the band is unlikely to be seed noise alone."""


def plot_sensitivity(axes, points: pd.DataFrame, spread: tuple[float, float, int]) -> None:
    """Fig. 10 in two panels: accuracy over x_L, one line per s_L (P1 at the best), and over P1
    (s_L, x_L at the best). The grey band is the centre point ± :data:`FIG10_BAND` sd, sd of the
    full model's test accuracy over its seeds (``spread`` = mean, sd, n from
    :func:`full_seed_spread`)."""
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
        ax.legend(fontsize=7)
    a.set(xlabel="$x_L$", ylabel="test accuracy (%)", title=f"$P_1$ = {best['P1']:g}")
    b.set(xlabel="$P_1$", title=f"$s_L$ = {best['s_L']:g}, $x_L$ = {best['x_L']:g}")
