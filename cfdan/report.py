"""Tables and figures of the results chapter (§4.3-4.5), built from the results store only.

Every number shown comes from a record in ``results/`` (:mod:`cfdan.results`); the paper's
numbers come from :mod:`cfdan.paper` and are labelled ``paper``. Functions return DataFrames
or draw on Matplotlib axes; the notebooks only call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, results

PROFILE_LABELS = {
    "cpu": "ours: cpu profile (2 CPU cores)",
    "paper": "ours: paper profile (1 GPU)",
}


def runs(experiment: str | None = None, **filters: Any) -> pd.DataFrame:
    """All finished runs of ``experiment`` (empty frame if none)."""
    try:
        return results.load(experiment, **filters)
    except KeyError:
        return pd.DataFrame()


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
                   metric: str = "test.accuracy") -> pd.DataFrame:
    """Tables 3-5: per preset, the paper's accuracy beside ours (mean ± std over seeds)."""
    p = paper.table(table)
    df = runs(experiment)
    if df.empty:
        p = p.assign(ours=f"not run (python -m cfdan sweep {experiment})")
        return p.drop(columns=["source"]).rename(columns={"ours": f"ours ({experiment})"})
    ours = []
    for preset in p["preset"]:
        sel = df[df["variant"] == preset] if not df.empty and "variant" in df else pd.DataFrame()
        ours.append(mean_std(sel[metric].tolist() if metric in sel else []))
    keep = [c for c in p.columns if c not in ("source",)]
    out = p[keep].copy()
    out.columns = [f"paper {c}" if c in ("AffectNet", "FERPlus", "RAF-DB") else c for c in keep]
    out[f"ours {dataset_col} ({experiment})"] = ours
    return out


def noise_check(experiment: str, a: str, b: str, metric: str = "test.accuracy") -> str:
    """Whether the difference of two presets' means exceeds the seed-to-seed noise (Welch t)."""
    df = runs(experiment)
    if df.empty:
        return f"{experiment}: no runs yet"
    xa = df[df["variant"] == a][metric].to_numpy() * 100
    xb = df[df["variant"] == b][metric].to_numpy() * 100
    if len(xa) < 2 or len(xb) < 2:
        return f"{b} - {a}: needs >= 2 seeds each (have {len(xa)}, {len(xb)})"
    from scipy import stats

    t = stats.ttest_ind(xb, xa, equal_var=False)
    diff = xb.mean() - xa.mean()
    verdict = "beyond seed noise" if t.pvalue < 0.05 else "within seed noise"
    return f"{b} - {a}: {diff:+.2f} points (Welch p = {t.pvalue:.2f}, {verdict})"


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


def plot_attention(axes, run_id: str, experiment: str | None = None, k: int = 4) -> None:
    """Fig. 8: input face, spatial, channel and fused maps for ``k`` fixed test images."""
    import torch
    import torch.nn.functional as F

    arr = results.load_arrays(run_id, experiment)
    names = [str(c) for c in arr["class_names"]]
    imgs = arr["attention_images"]
    cols = [("input", None), ("spatial", "attention_spatial"), ("channel", "attention_channel"),
            ("fused", "attention_fused")]
    for i in range(min(k, len(imgs))):
        img = imgs[i].astype(float).mean(0) / 255.0
        for j, (title, key) in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray")
            if key is not None and key in arr:
                m = torch.as_tensor(arr[key][i], dtype=torch.float32)[None, None]
                up = F.interpolate(m, size=img.shape, mode="bilinear", align_corners=False)[0, 0]
                ax.imshow(up.numpy(), cmap="jet", alpha=0.45)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
        true, pred = names[arr["attention_labels"][i]], names[arr["attention_preds"][i]]
        axes[i, 0].set_ylabel(f"{true}\n(pred {pred})", fontsize=8)


def history(experiment: str) -> pd.DataFrame:
    """Per-epoch histories of all runs of an experiment."""
    try:
        return results.load_history(experiment=experiment)
    except KeyError:
        return pd.DataFrame()


def provenance(experiment: str | None = None) -> pd.DataFrame:
    """Where every number comes from: one row per run with commit, data, hardware, date."""
    df = runs(experiment)
    if df.empty:
        return df
    cols = ["experiment", "variant", "seed", "run_id", "git_commit", "git_dirty", "device",
            "data_fingerprint", "date", "wall_time_s", "epochs_run", "cut_short", "best_epoch",
            "test.accuracy"]
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
    wanted = [("spatial attention (baseline, 4 ep.)", "table3", "baseline"),
              ("cross-fusion DAM + ILM (4 ep.)", "table3", "full"),
              ("cpu profile (full)", "cpu", "full"),
              ("paper profile, 1 GPU (full)", "paper", "full")]
    out = {}
    for title, exp, variant in wanted:
        got = representative_runs({exp: variant})
        if got:
            out[title] = (exp, got[exp])
    return out


def sensitivity_table(experiment: str = "fig10") -> pd.DataFrame:
    """Fig. 10: accuracy per (s_L, x_L, P1) setting, mean over seeds (empty note if not run)."""
    df = runs(experiment)
    if df.empty:
        grid = paper.FIG10_GRID
        return pd.DataFrame([{"status": "not run", "paper grid": str(grid),
                              "command": f"python -m cfdan sweep {experiment}"}])
    cols = ["model.pcp_s_L", "model.pcp_x_L", "model.pcp_P1"]
    g = df.groupby(cols)["test.accuracy"].agg(["mean", "std", "count"]).reset_index()
    g[["mean", "std"]] *= 100
    return g.round(2)


def hardware_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: device, GPU/CPU, library versions, world size, wall time, epochs, peak memory."""
    rows = []
    for _p, rec in results.iter_records(experiment):
        hw, ver, mem = rec.get("hardware", {}), rec.get("versions", {}), rec.get("peak_memory", {})
        rows.append({
            "experiment": rec["experiment"], "variant": rec.get("variant"),
            "seed": rec.get("seed"), "run_id": rec["run_id"],
            "hardware": hw.get("gpu") or hw.get("cpu"), "device": hw.get("device"),
            "bf16": hw.get("bf16"), "processes": hw.get("world_size"),
            "torch": ver.get("torch"), "python": ver.get("python"),
            "epochs run / planned": f"{rec.get('epochs_run')} / {rec.get('epochs_planned')}",
            "wall time (min)": round(rec.get("wall_time_s", float("nan")) / 60, 1),
            "peak GPU MB": round(mem["gpu_max_allocated_mb"]) if "gpu_max_allocated_mb" in mem
            else None,
            "peak host RSS MB": round(mem.get("host_max_rss_mb", float("nan"))),
            "date": rec.get("date"),
        })
    return pd.DataFrame(rows)


def speed_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: median training images/s and epoch time over its epochs (from the history)."""
    rows = []
    for _p, rec in results.iter_records(experiment):
        h = pd.DataFrame(rec.get("history", []))
        if h.empty:
            continue
        hw = rec.get("hardware", {})
        rows.append({
            "experiment": rec["experiment"], "variant": rec.get("variant"),
            "seed": rec.get("seed"), "hardware": hw.get("gpu") or hw.get("cpu"),
            "image px": rec["config"]["data"]["image_size"],
            "batch": rec["config"]["train"]["batch_size"],
            "train img/s (median)": round(float(h["images_per_s"].median())),
            "epoch s (median)": round(float(h["epoch_time_s"].median()), 1),
            "first epoch s": round(float(h["epoch_time_s"].iloc[0]), 1),
            "val eval s (median)": round(float(h["eval_time_s"].median()), 1),
        })
    return pd.DataFrame(rows)


def fingerprint_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: the data source kind and the fingerprint of each split it read."""
    rows = []
    for _p, rec in results.iter_records(experiment):
        d = rec.get("data", {})
        fp = d.get("fingerprint", {})
        row = {"experiment": rec["experiment"], "run_id": rec["run_id"],
               "dataset": d.get("dataset") or rec["config"]["data"].get("dataset")}
        if isinstance(fp, dict):
            row.update({f"{k} fingerprint": v for k, v in fp.items()})
        rows.append(row)
    return pd.DataFrame(rows)
