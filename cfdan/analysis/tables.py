"""Tables of the results chapter (§4.3-4.5), built from the results store only.

Every number shown comes from a record in ``results/`` (:mod:`cfdan.results`); the paper's
numbers come from :mod:`cfdan.paper` and are labelled ``paper``. Functions return DataFrames;
the notebooks only call them. Every table is a view of the run table
(:func:`cfdan.analysis.runs.frame`): the runs that count (:func:`cfdan.analysis.runs.counted`),
one configuration's at a time as the claims ledger (:mod:`cfdan.analysis.claims`) reads them
(:func:`cfdan.analysis.runs.slot`), so a table and the ledger never disagree. The figures of the same runs are drawn by
:mod:`cfdan.analysis.figures` (Figs. 5-7), :mod:`cfdan.analysis.attention_maps` (Fig. 8) and
:mod:`cfdan.analysis.sensitivity` (Fig. 10).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper
from cfdan.analysis import runs
from cfdan.analysis.runs import FULL_SOURCE, points, record_threads, seeds_text

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
        df = runs.counted(experiment=exp)
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
                   current: bool = True, root: str | os.PathLike[str] | None = None,
                   df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tables 3-5: per preset, the paper's numbers beside ours (mean ± std over seeds); the
    experiment's variants that the paper's table lacks (Table 3's ``plain_cnn``, no attention)
    follow as rows of ours alone, their paper cells empty.

    Our runs are read as the claims ledger reads them (:func:`cfdan.analysis.runs.slot`): only
    the runs that count, and the full model's rows from
    :data:`cfdan.analysis.runs.FULL_SOURCE`, limited to the seeds this table plans (as the table's
    own rows are; the seeds left out are named in ``runs``). The ``runs`` column says
    how many of the planned seeds each row has and where they come from; ``hardware`` says what
    they ran on (CPU models and thread counts; a pair never mixes CPU and GPU records).
    ``df`` is the run table read (default :func:`cfdan.analysis.runs.frame`; the GPU tables
    pass theirs, :func:`cfdan.analysis.gpu.frame`).
    """
    p = paper.table(table)
    extra = [v for v in _planned_variants(experiment) if v not in set(p["preset"])]
    if extra:  # our own rows (plain_cnn: no attention), which the paper does not report
        p = pd.concat([p, pd.DataFrame({"preset": extra})], ignore_index=True)
    full = full or FULL_SOURCE
    df = runs.frame(root) if df is None else df
    plan = runs.plan(experiment)
    ours, counts, hw, mca, f1, seeds = [], [], [], [], [], []
    for preset in p["preset"]:
        r = runs.slot(df, experiment, preset, full, metric, current)
        left_out = ""
        if runs.resolve(experiment, preset, full)[0] != experiment and plan is not None:
            other = sorted(set(r.rows.index) - set(plan[0]))  # a shared row: our seeds only
            r = r.only(plan[0])
            if other:
                left_out = (f"; {seeds_text(other)} not shown, as this table does not plan "
                            f"{'them' if len(other) > 1 else 'it'}")
        vals, recs = list(r.values), list(r.rows["record"])
        ours.append(mean_std(vals, scale=1.0) if vals else "not run")
        split = metric.split(".")[0]
        mca.append(mean_std([points(x, f"{split}.mean_class_accuracy") for x in recs], 1.0))
        f1.append(mean_std([points(x, f"{split}.macro_f1") for x in recs], 1.0))
        seeds.append(per_seed_text(r.values))
        counts.append(r.count() + left_out)
        hw.append(hardware_label(recs))
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


def per_seed_text(values: pd.Series) -> str:
    """``"s0 83.52, s1 83.74"``: a row's values (points, indexed by seed), or ``-``."""
    return ", ".join(f"s{k} {v:.2f}" for k, v in values.sort_index().items()) or "-"


def _planned_variants(experiment: str) -> list[str]:
    """The variants ``configs/experiments/<experiment>.toml`` plans (none without a file)."""
    from cfdan.training.config import ConfigError, load_experiment

    try:
        return list(load_experiment(experiment).variants)
    except ConfigError:
        return []


def hardware_label(recs: Sequence[Mapping[str, Any]]) -> str:
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


def history(experiment: str, current: bool = True) -> pd.DataFrame:
    """Per-epoch histories of the runs of an experiment that count
    (:func:`cfdan.analysis.runs.counted`; with ``current`` False, every run not superseded):
    columns ``run_id``, ``variant``, ``seed`` and the history's, in the store's order (as
    :func:`cfdan.results.load_history` lays them out)."""
    df = experiment_rows(experiment)
    df = df[~df["superseded"].astype(bool)]
    keep = df.index.isin(runs.counted(df, current).index)
    frames, flags = [], []
    for rec, k in zip(df["record"], keep, strict=True):
        h = pd.DataFrame(rec.get("history", []))
        h.insert(0, "run_id", rec.get("run_id"))
        h.insert(1, "variant", rec.get("variant"))
        h.insert(2, "seed", rec.get("seed"))
        frames.append(h)
        flags += [k] * len(h)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)[np.asarray(flags, dtype=bool)].reset_index(
        drop=True)


def experiment_rows(experiment: str | None = None) -> pd.DataFrame:
    """The rows of the run table of ``experiment`` (every experiment if None), superseded and
    not counted ones too, in the store's order."""
    df = runs.frame()
    if experiment is not None:
        df = df[df["experiment"] == experiment]
    return df.reset_index(drop=True)


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
    says whether the tables and figures use the run (:func:`cfdan.analysis.runs.reasons`)."""
    df = experiment_rows(experiment)
    if df.empty:
        return pd.DataFrame()
    df = df.assign(counted=df["why"].map(runs.counted_label),
                   code=[code_label(r) for _i, r in df.iterrows()])
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
    df = runs.counted(experiment=experiment)
    label = PROFILE_LABELS.get(experiment, experiment)
    if df.empty or "test.accuracy" not in df:
        return f"{label}: not run yet"
    df = df[df["variant"] == variant]
    ours = 100 * df["test.accuracy"]
    ref = paper.table("table1").set_index("method").loc["CF-DAN (Ours)", "FERPlus"]
    mca = 100 * df["test.mean_class_accuracy"].mean()
    return (f"{label}: FERPlus test accuracy {ours.mean():.2f} % (n={len(ours)}; mean-class "
            f"{mca:.2f} %) vs paper {ref:.2f} %: {ours.mean() - ref:+.2f} points")


def representative_runs(wanted: dict[str, str]) -> dict[str, str]:
    """``{experiment: run_id}`` of the lowest-seed run of the given variant, where one exists."""
    out = {}
    for exp, variant in wanted.items():
        df = runs.counted(experiment=exp)
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
        rec = runs.get(run_id, exp)
        for name, st in rec[split]["per_class"].items():
            rows.append({"run": PROFILE_LABELS.get(exp, exp), "class": name,
                         "support": st["support"], "recall %": 100 * st["recall"],
                         "F1 %": 100 * st["f1"]})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return rounded(df.pivot_table(index=["class", "support"], columns="run",
                                  values=["recall %", "F1 %"], sort=False), 1)


def hardware_table(experiment: str | None = None) -> pd.DataFrame:
    """Per run: device, GPU/CPU, library versions, world size, wall time, epochs, peak memory;
    superseded runs too, with the run that replaced them."""
    rows = []
    for rec in experiment_rows(experiment)["record"]:
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
    for rec in experiment_rows(experiment)["record"]:
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
    for rec in experiment_rows(experiment)["record"]:
        d = rec.get("data", {})
        fp = d.get("fingerprint", {})
        row = {"experiment": rec["experiment"], "variant": rec.get("variant"),
               "seed": rec.get("seed"), "run_id": rec["run_id"],
               "dataset": d.get("dataset") or rec["config"]["data"].get("dataset")}
        if isinstance(fp, dict):
            row.update({f"{k} fingerprint": v for k, v in fp.items()})
        rows.append(row)
    return _by_run(rows)
