"""What the book's chapters 4 and 5 show, built on :mod:`cfdan.analysis.tables` and the results store.

Three rules hold for everything here:

* only the book's experiments (:data:`EXPERIMENTS`) are shown; other experiments in the store
  (searches in progress, smoke runs) are not;
* every number the paper reports carries the label ``paper``;
* every run that was refitted to a time budget or cut short says so beside its number
  (:func:`schedule`).

:func:`facts` collects the numbers that the chapters' prose quotes, and :func:`glue_all` hands
them to myst-nb, so the prose never types a measurement.
"""

from __future__ import annotations

import collections
import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, results
from cfdan.analysis import claims, presets, prose, runs
from cfdan.analysis import tables as report

EXPERIMENTS = ("cpu", "cpu_v2", "paper", "table3", "table4", "table5", "fig10")
"""The experiments whose records the book shows (in the store's folder order)."""

PROFILE_EXPERIMENTS = ("paper", "cpu_v2")
"""The two training profiles of Table 1, in the order the chapters draw them."""


# --------------------------------------------------------------------------- records
def records(experiment: str | None = None, superseded: bool = False,
            current: bool = True) -> list[dict]:
    """The records of ``experiment``, or of every experiment in :data:`EXPERIMENTS` (those
    superseded by a later run too, with ``superseded``; with ``current``, only runs that the
    experiment's file plans today, :func:`cfdan.analysis.runs.current_ids`)."""
    exps = EXPERIMENTS if experiment is None else (experiment,)
    out = []
    for exp in exps:
        ids = runs.current_ids(exp) if current else None
        out += [rec for _p, rec in results.iter_records(exp, superseded=superseded)
                if ids is None or rec.get("run_id") in ids]
    return out


def record(experiment: str, variant: str = "full") -> dict | None:
    """The lowest-seed record of ``variant`` in ``experiment`` (None if there is none)."""
    recs = [r for r in records(experiment) if r.get("variant") == variant]
    return min(recs, key=lambda r: r.get("seed", 0)) if recs else None


def schedule(rec: Mapping[str, Any], short: bool = False) -> str:
    """How a run's schedule was shortened ('' if it ran the epochs it planned).

    A run is *refitted* when ``epochs_fitted < epochs_planned`` (``train.fit_to_budget``) and
    *cut short* when it stopped before its fitted schedule ended (``cut_short``).
    """
    planned, run = rec.get("epochs_planned"), rec.get("epochs_run")
    fitted = rec.get("epochs_fitted", planned)
    budget = (rec.get("config", {}).get("train", {}) or {}).get("time_budget_s")
    notes = []
    if planned and fitted and fitted < planned:
        if short:
            notes.append(f"{fitted}/{planned} epochs, time budget")
        else:
            per = f" to a {budget:.0f} s time budget" if budget else " to a time budget"
            notes.append(f"refitted{per}: {fitted} of {planned} planned epochs")
    if rec.get("cut_short") or (run is not None and fitted and run < fitted):
        why = rec.get("stop_reason") or "stopped"
        notes.append(f"cut short: {run}/{fitted} epochs" if short
                     else f"cut short ({why}) after {run} of {fitted} epochs")
    return "; ".join(notes)


def schedule_note(experiment: str, variant: str | None = None) -> str:
    """The :func:`schedule` notes of the runs of ``experiment`` (and ``variant``), merged."""
    recs = [r for r in records(experiment) if variant is None or r.get("variant") == variant]
    notes = {r.get("seed"): schedule(r) for r in recs}
    distinct = {n for n in notes.values() if n}
    if not distinct:
        return ""
    if len(distinct) == 1 and all(notes.values()):
        return distinct.pop()
    return "; ".join(f"seed {s}: {n}" for s, n in sorted(notes.items()) if n)


def marked(text: str, note: str, sep: str = " ") -> str:
    """``text`` with ``note`` appended in brackets (``text`` alone when there is no note)."""
    return f"{text}{sep}[{note}]" if note else text


def run_label(experiment: str, variant: str = "full", short: bool = False) -> str:
    """The report's label of a profile, marked with its run's schedule when it was shortened."""
    rec = record(experiment, variant)
    label = report.PROFILE_LABELS.get(experiment, experiment)
    return marked(label, schedule(rec, short=short) if rec else "")


# --------------------------------------------------------------------------- tables
def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _per_experiment(fn, experiment: str | None) -> pd.DataFrame:
    return _concat(fn(e) for e in (EXPERIMENTS if experiment is None else (experiment,)))


def _schedule_by_run(experiment: str | None) -> dict[str, str]:
    return {r["run_id"]: schedule(r) or "as planned"
            for r in records(experiment, superseded=True, current=False)}


def table1() -> pd.DataFrame:
    """Table 1 (test accuracy %): the paper's rows, then ours marked with their schedules."""
    df = report.table1()
    for exp, label in report.PROFILE_LABELS.items():
        note = schedule_note(exp, "full")
        rows = df["source"] == label
        df.loc[rows, "FERPlus"] = df.loc[rows, "FERPlus"].map(lambda v, n=note: marked(v, n))
    return df


def gap_to_paper(experiment: str, variant: str = "full") -> str:
    """:func:`cfdan.analysis.tables.gap_to_paper`, marked with the run's schedule."""
    return marked(report.gap_to_paper(experiment, variant), schedule_note(experiment, variant))


def ablation_table(experiment: str, table: str, current: bool = True) -> pd.DataFrame:
    """Tables 3-5: every paper column labelled ``paper``, our cells marked with schedules."""
    df = paper.label_columns(report.ablation_table(experiment, table, current=current), table)
    ours = [c for c in df.columns if str(c).startswith("ours")]
    if "preset" in df:
        notes = df["preset"].map(lambda p: schedule_note(experiment, p))
        for col in ours:
            df[col] = [marked(str(v), n) for v, n in zip(df[col], notes, strict=True)]
    return df


def table5() -> pd.DataFrame:
    """Table 5: :func:`ablation_table` with our attention cost beside the paper's, measured on
    the architecture at the scale of the Table 5 runs (:func:`cfdan.analysis.claims.attention_cost`)."""
    df = ablation_table("table5", "table5")
    got = claims.attention_cost()
    if got is None or "preset" not in df:
        return df
    px, cost = got
    at = list(df.columns).index("runs")
    df.insert(at, "ours attention params_M",  # parameters do not depend on the input size
              df["preset"].map(lambda p: round(cost[p].params_m, 3) if p in cost else "-"))
    df.insert(at + 1, f"ours attention GMACs ({px} px)",
              df["preset"].map(lambda p: round(cost[p].gmacs, 5) if p in cost else "-"))
    return df


def _with_counted(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (rows of runs, with ``experiment`` and ``run_id``) with :func:`cfdan.analysis.tables.
    counted` inserted after ``run_id``: whether the tables and figures read each run."""
    if df.empty:
        return df
    runs_ = _concat(runs.load(e, current=False, superseded=True)
                    for e in df["experiment"].unique())
    labels = dict(zip(runs_["run_id"], report.counted(runs_), strict=True))
    df.insert(list(df.columns).index("run_id") + 1, "counted", df["run_id"].map(labels))
    return df


def provenance(experiment: str | None = None) -> pd.DataFrame:
    """:func:`cfdan.analysis.tables.provenance` of the book's runs, with each run's schedule."""
    df = _per_experiment(report.provenance, experiment)
    if not df.empty:
        df["schedule"] = df["run_id"].map(_schedule_by_run(experiment))
    return df


def hardware_table(experiment: str | None = None) -> pd.DataFrame:
    """:func:`cfdan.analysis.tables.hardware_table` of the book's runs, with each run's schedule and
    whether it is counted."""
    df = _per_experiment(report.hardware_table, experiment)
    if df.empty:
        return df
    cols = list(df.columns)
    at = cols.index("epochs run / planned") + 1 if "epochs run / planned" in cols else len(cols)
    df.insert(at, "schedule", df["run_id"].map(_schedule_by_run(experiment)))
    return _with_counted(df)


def speed_table(experiment: str | None = None) -> pd.DataFrame:
    """:func:`cfdan.analysis.tables.speed_table` of the book's runs, with whether each is counted."""
    return _with_counted(_per_experiment(report.speed_table, experiment))


def fingerprint_table(experiment: str | None = None) -> pd.DataFrame:
    """:func:`cfdan.analysis.tables.fingerprint_table` of the book's runs, with whether each is
    counted."""
    return _with_counted(_per_experiment(report.fingerprint_table, experiment))


def per_class_table(shown: Mapping[str, str]) -> pd.DataFrame:
    """:func:`cfdan.analysis.tables.per_class_table` with each run's label marked by its schedule."""
    df = report.per_class_table(shown)
    names = {report.PROFILE_LABELS.get(e, e): run_label(e, _variant(e, r))
             for e, r in shown.items()}
    return df.rename(columns=names, level="run") if not df.empty else df


def _variant(experiment: str, run_id: str) -> str:
    rec = results.get_record(run_id, experiment)
    return str(rec.get("variant"))


# --------------------------------------------------------------------------- facts for prose
def run_facts(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers of one record the prose quotes: time, test %, M params, schedule, input, speed."""
    cfg, hw = rec.get("config", {}), rec.get("hardware", {})
    hist = rec.get("history") or []
    out: dict[str, Any] = {
        "wall_min": rec["wall_time_s"] / 60, "test_pct": 100 * rec["test"]["accuracy"],
        "params_M": (rec.get("model_info") or {}).get("params", float("nan")) / 1e6,
        "epochs_run": rec.get("epochs_run"), "epochs_planned": rec.get("epochs_planned"),
        "epochs_fitted": rec.get("epochs_fitted", rec.get("epochs_planned")),
        "budget_s": (cfg.get("train") or {}).get("time_budget_s") or 0.0,
        "image_px": (cfg.get("data") or {}).get("image_size"),
        "batch": (cfg.get("train") or {}).get("batch_size"),
        "trunk_width": (cfg.get("model") or {}).get("trunk_width", 64),
        "hardware": hw.get("gpu") or hw.get("cpu"),
        "cpu_count": hw.get("cpu_count"),
        "train_s": rec.get("train_time_s"),
        "schedule": schedule(rec) or "as planned",
        "compiled": report.compiled_label(cfg.get("train") or {}),
        "tta_flip": "on" if (cfg.get("eval") or {}).get("tta_flip") else "off",
        "token_grid": _token_grid(rec),
    }
    if hist:
        out["img_per_s"] = statistics.median(h["images_per_s"] for h in hist)
        out["first_epoch_s"] = hist[0]["epoch_time_s"]
        out["epoch_s"] = statistics.median(h["epoch_time_s"] for h in hist)
    for name, st in ((rec.get("test") or {}).get("per_class") or {}).items():
        out[f"test_support_{name}"] = st["support"]
    return out


def _token_grid(rec: Mapping[str, Any]) -> str:
    """``"6×6"``: the attention's token grid of a record's model (``model_info.config``)."""
    from cfdan.model import CFDANConfig

    mcfg = (rec.get("model_info") or {}).get("config")
    if not mcfg:
        return "n/a"
    g = CFDANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in mcfg.items()}).grid
    return f"{g}×{g}"


REPRODUCE = {
    "table1": ("cpu_v2", "paper"), "table3": ("table3", "cpu_v2"),
    "table4": ("table4", "cpu_v2"), "table5": ("table5", "cpu_v2"),
    "fig10": ("fig10", "cpu_v2"),
}
"""What each table or figure of chapter 4 reads: the experiments whose counted runs it uses."""


def reproduce_facts(views: Mapping[str, Sequence[str]] = REPRODUCE,
                    shown: Mapping[str, str] | None = None) -> dict[str, str]:
    """``runs_<view>``: the run ids each view reads (counted runs of its experiments,
    :func:`cfdan.analysis.runs.load`), as ``"table3: id, id; cpu_v2: id"``, for the chapter's
    one-line *Reproduce:* notes (each record is ``results/<experiment>/<id>.json``); with
    ``shown`` (experiment -> run id, :func:`cfdan.analysis.tables.representative_runs`) also
    ``runs_shown``."""
    ids: dict[str, list[str]] = {}
    out = {} if shown is None else {
        "runs_shown": "; ".join(f"{e}: {r}" for e, r in shown.items()) or "none yet"}
    for view, exps in views.items():
        parts = []
        for exp in exps:
            if exp not in ids:
                df = runs.load(exp)
                ids[exp] = sorted(df["run_id"]) if "run_id" in df else []
            if ids[exp]:
                parts.append(f"{exp}: {', '.join(ids[exp])}")
        out[f"runs_{view}"] = "; ".join(parts) or "none yet"
    return out


FACT_PREFIX = {"cpu_v2": "cpu", "cpu": "cpu_v1"}
"""Glue prefixes that differ from the experiment's name: ``cpu_*`` facts are the cpu profile
as it is (v2); the superseded v1 record's are ``cpu_v1_*``."""


def facts(experiments: Sequence[str] = ("cpu_v2", "cpu", "paper", "table3")) -> dict[str, Any]:
    """:func:`run_facts` of each experiment's lowest-seed ``full`` run, keys prefixed by it
    (:data:`FACT_PREFIX`).

    ``<prefix>_seeds`` counts the seeds of that run's variant; experiments without runs are left
    out. A run it superseded (``superseded_by``) gives ``<prefix>_previous_*`` facts.
    """
    out: dict[str, Any] = {"paper_reported_params_M": paper.value("table2", "params_M"),
                           "paper_reported_gflops": paper.value("table2", "FLOPs_G")}
    for exp in experiments:
        rec = record(exp, "full")
        if rec is None:
            continue
        pre = FACT_PREFIX.get(exp, exp)
        out.update({f"{pre}_{k}": v for k, v in run_facts(rec).items()})
        recs = records(exp, superseded=True)  # one read serves both counts
        out[f"{pre}_seeds"] = len([r for r in recs if r.get("variant") == "full"
                                   and not r.get("superseded_by")])
        for old in recs:
            if old.get("superseded_by") == rec["run_id"]:
                out.update({f"{pre}_previous_{k}": v for k, v in run_facts(old).items()})
                out[f"{pre}_previous_run_id"] = old["run_id"]
    return out


def glue_all(values: Mapping[str, Any], prefix: str = "") -> None:
    """Glue every value for myst-nb's ``{glue:text}`` roles, floats at
    :data:`cfdan.analysis.tables.GLUE_DIGITS` significant digits (:func:`cfdan.analysis.tables.stable`), never a
    raw float sum's last bits."""
    from myst_nb import glue

    for key, v in values.items():
        glue(prefix + key, report.stable(v), display=False)


# --------------------------------------------------------------------------- figures
def history_figure(experiments: Sequence[str] = PROFILE_EXPERIMENTS):
    """Validation accuracy per epoch, one panel per profile, titled with its schedule."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(experiments), figsize=(5.5 * len(experiments), 3.6),
                             squeeze=False)
    for ax, exp in zip(axes[0], experiments, strict=True):
        report.plot_history(ax, exp, title=run_label(exp, short=True))
    fig.tight_layout()
    return fig


def confusion_figure(shown: Mapping[str, str]):
    """Fig. 5: the row-normalised test confusion matrix of each shown run."""
    import matplotlib.pyplot as plt

    n = max(1, len(shown))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.6), squeeze=False)
    for ax, (exp, run_id) in zip(axes[0], shown.items(), strict=False):
        report.plot_confusion(ax, run_id, exp, title=run_label(exp, _variant(exp, run_id),
                                                               short=True))
    fig.tight_layout()
    return fig


def tsne_figure(n: int = 1000):
    """Fig. 7: the t-SNE panels of :func:`cfdan.analysis.tables.tsne_panels` (None if none is stored)."""
    import matplotlib.pyplot as plt

    panels = report.tsne_panels()
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (title, (exp, run_id)) in zip(axes[0], panels.items(), strict=True):
        rec = results.get_record(run_id, exp)
        which = f"seed {rec.get('seed', 0)}, test {100 * rec['test']['accuracy']:.1f} %"
        note = schedule(rec, short=True)
        report.plot_tsne(ax, run_id, exp, title=marked(f"{title}\n{which}", note, sep="\n"),
                         n=n)
    axes[0, -1].legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def attention_figures(shown: Mapping[str, str], k: int = 4,
                      root: str | None = None, show_faces: bool = True) -> list:
    """Fig. 8: one figure per shown run (face, spatial, channel and fused maps of ``k`` faces,
    :func:`cfdan.analysis.tables.plot_attention`), with a line under it that says where the faces come
    from (read from the dataset at build time, or absent and why) and which map definition
    the record holds. The layout is the same with and without the faces."""
    import textwrap

    import matplotlib.pyplot as plt

    figs = []
    for exp, run_id in shown.items():
        height = 1.85 * k + 0.9  # rows, title, and the caption under the colour bars
        fig, axes = plt.subplots(k, 4, figsize=(7, height), squeeze=False)
        caption = report.plot_attention(axes, run_id, exp, k=k, root=root,
                                        show_faces=show_faces)
        fig.suptitle(run_label(exp, _variant(exp, run_id), short=True))
        fig.tight_layout(rect=(0, 0.8 / height, 1, 1))
        fig.text(0.01, 0.005, textwrap.fill(caption, 120), ha="left", va="bottom", fontsize=6.5)
        figs.append(fig)
    return figs


def attention_facts(shown: Mapping[str, str],
                    expected: Sequence[str] = PROFILE_EXPERIMENTS) -> dict[str, Any]:
    """:func:`cfdan.analysis.tables.attention_similarity` of each shown run, for the prose: keys
    ``attention_r_<prefix>_<map>`` (``<prefix>``: :data:`FACT_PREFIX`, e.g. ``cpu``,
    ``paper``) as two-decimal strings, and ``attention_faces_<prefix>`` (faces stored); "n/a"
    for an ``expected`` experiment without a shown run or stored maps."""
    out: dict[str, Any] = {}
    for exp in (*expected, *(e for e in shown if e not in expected)):
        pre = FACT_PREFIX.get(exp, exp)
        sim: dict[str, float] = {}
        faces: Any = "n/a"
        if exp in shown:
            try:
                arrays = results.load_arrays(shown[exp], exp)
                sim = report.map_similarity(arrays)
                faces = len(arrays.get("attention_index", []))
            except (FileNotFoundError, KeyError):
                pass
        for name in ("spatial", "channel", "fused"):
            r = sim.get(name, float("nan"))
            out[f"attention_r_{pre}_{name}"] = f"{r:.2f}" if np.isfinite(r) else "n/a"
        out[f"attention_faces_{pre}"] = faces
    return out


def pcp_grid_curves(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None,
                    x: np.ndarray | None = None) -> dict[str, dict[float, np.ndarray]]:
    """PCP over the Fig. 10 grid: per parameter, the curve of each of its values with the other
    two parameters at the paper's best setting (on ``x``, default 601 points in [-1.5, 1.5])."""
    import torch

    from cfdan.pcp import pcp

    grid = paper.FIG10_GRID if grid is None else grid
    best = paper.BEST_PCP if best is None else best
    xs = torch.as_tensor(np.linspace(-1.5, 1.5, 601) if x is None else x, dtype=torch.float64)
    out: dict[str, dict[float, np.ndarray]] = {}
    for name, values in grid.items():
        out[name] = {}
        for v in values:
            prm = {**best, name: v}
            out[name][v] = pcp(xs, prm["x_L"], prm["P1"], prm["s_L"]).numpy()
    return out


def pcp_grid_spread(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per parameter of the Fig. 10 grid: the largest gap between two of its PCP curves."""
    curves = pcp_grid_curves(grid, best)
    return {name: float(np.ptp(np.stack(list(c.values())), axis=0).max())
            for name, c in curves.items()}


def pcp_grid_figure(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None):
    """PCP over the Fig. 10 grid: one panel per parameter, the others at the paper's best."""
    import matplotlib.pyplot as plt

    best = paper.BEST_PCP if best is None else best
    x = np.linspace(-1.5, 1.5, 601)
    curves = pcp_grid_curves(grid, best, x)
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), sharey=True)
    for ax, (name, by_value) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for v, y in by_value.items():
            ax.plot(x, y, lw=1.4,
                    label=f"{name} = {v:g}" + (" (best)" if v == best[name] else ""))
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"varying {name}", xlabel="x")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("PCP(x)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- §4.4-4.5 ledger
def _book_source(full: tuple[str, str]) -> tuple[str, str]:
    if full[0] not in EXPERIMENTS:
        raise ValueError(f"the full model's source {full[0]!r} is not one of the book's "
                         f"experiments {EXPERIMENTS}")
    return full


def claims_ledger(full: tuple[str, str] = claims.FULL_SOURCE) -> pd.DataFrame:
    """The claims ledger of §4.4-4.5 (:func:`cfdan.analysis.claims.claims_ledger`) as the chapter
    shows it; ``full`` is where the full model's runs are read (default Table 3's)."""
    return prose.ledger_display(claims.claims_ledger(_book_source(full)))


def verdict_table(full: tuple[str, str] = claims.FULL_SOURCE) -> pd.DataFrame:
    """The ledger on one screen (:func:`cfdan.analysis.prose.verdict_table`), then chapter 1's
    PCP claims (:func:`cfdan.analysis.prose.pcp_rows`) and the absolute level against the
    paper's (:func:`cfdan.analysis.prose.level_row`): what the landing page and the top of
    chapter 4 show."""
    from cfdan.pcp import report as pcp_report

    ledger = prose.verdict_table(claims.claims_ledger(_book_source(full)))
    pcp = prose.pcp_rows(pcp_report.check_claims(), pcp_report.stored_speed_claims())
    level = prose.level_row(paper.value("table1", "FERPlus"), [
        (f"at {px} px, {where}", [100 * v for v in runs.load(exp).query("variant == 'full'")
                                  .get("test.accuracy", pd.Series(dtype=float))])
        for exp, px, where in (("cpu_v2", _image_px("cpu_v2"), "CPU"),
                               ("paper", _image_px("paper"), "GPU"))])
    return pd.concat([ledger.iloc[:1], level, ledger.iloc[1:], pcp])


def _image_px(experiment: str) -> str:
    rec = record(experiment)
    return str(((rec or {}).get("config") or {}).get("data", {}).get("image_size", "?"))


def ledger_and_facts(full: tuple[str, str] = claims.FULL_SOURCE
                     ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The claims ledger as the chapter shows it and every fact its prose glues
    (:func:`ledger_facts`, :func:`ledger_reading`, :func:`cfdan.analysis.prose.headline`), the ledger
    computed once."""
    full = _book_source(full)
    raw = claims.claims_ledger(full)
    shown = prose.ledger_display(raw)
    return shown, {**ledger_facts(raw), **ledger_reading(full, raw), **prose.headline(raw)}


def ledger_facts(ledger: pd.DataFrame) -> dict[str, int]:
    """How many claims of a ledger (:func:`cfdan.analysis.claims.claims_ledger`) have each
    verdict, for the prose
    (``ledger_claims``, ``ledger_supported``, ``ledger_contradicted``,
    ``ledger_paper_excluded``, ``ledger_not_resolved``, ``ledger_untestable``,
    ``ledger_not_run``)."""
    counts = ledger["verdict"].value_counts()
    keys = {"supported": "supported", "contradicted": "contradicted",
            "paper's effect excluded": "paper_excluded",
            "not resolved at this n": "not_resolved", "untestable (n = 1)": "untestable",
            "not run": "not_run"}
    out = {"ledger_claims": len(ledger)}
    out.update({f"ledger_{k}": int(counts.get(v, 0)) for v, k in keys.items()})
    cells = ledger.apply(prose.verdict_cell, axis=1) if len(ledger) else pd.Series(dtype=str)
    out["ledger_raw_only"] = int(cells.str.contains(prose.RAW_ONLY, regex=False).sum())
    out["ledger_equivalent"] = int(cells.str.contains("no effect", regex=False).sum())
    return out


def ledger_reading(full: tuple[str, str] = claims.FULL_SOURCE,
                   ledger: pd.DataFrame | None = None) -> dict[str, Any]:
    """:func:`cfdan.analysis.claims.ledger_reading` of the book's ledger (``ledger``: the raw
    :func:`cfdan.analysis.claims.claims_ledger`, computed if None), and Table 3's presets ordered
    by our mean and by the paper (``table3_order_ours``, ``table3_order_paper``)."""
    full = _book_source(full)
    out = claims.ledger_reading(claims.claims_ledger(full) if ledger is None else ledger)
    order = presets.variant_order("table3", "table3", full)
    out.update({f"table3_order_{k}": v for k, v in order.items()})
    return out


def presets_block_test(experiment: str = "table4", table: str = "table4",
                       full: tuple[str, str] = claims.FULL_SOURCE) -> dict[str, Any]:
    """Whether the activations of a table differ beyond seed noise, for the prose (keys
    ``<experiment>_block_...``): the test of :func:`cfdan.analysis.presets.preset_block_test` as
    ``presets`` (how many on the complete grid) and ``names``, ``seeds``, ``F``, ``df1``,
    ``df2``, ``p`` (with its relation: ``= 0.39``, ``< 0.001``), ``resid_sd`` (points) and
    ``reading`` (*differ beyond* / *cannot be told apart from*; *cannot yet be tested
    against* without a complete grid of two presets and two seeds)."""
    got = presets.preset_block_test(experiment, table, _book_source(full))
    key = f"{experiment}_block_"
    if got is None or not np.isfinite(got.p):
        return {key + k: "n/a" for k in ("presets", "names", "seeds", "F", "df1", "df2", "p",
                                          "resid_sd")} | {key + "reading":
                                                          "cannot yet be tested against"}
    return {key + "presets": len(got.presets), key + "names": ", ".join(got.presets),
            key + "seeds": len(got.seeds), key + "F": f"{got.f:.2f}",
            key + "df1": got.df_effect, key + "df2": got.df_resid, key + "p": prose.p_text(got.p),
            key + "resid_sd": f"{got.resid_sd:.2f}",
            key + "reading": ("differ beyond" if got.p < claims.ALPHA
                              else "cannot be told apart from")}


def snapshot_facts(n: int = 1000, full: tuple[str, str] = claims.FULL_SOURCE
                   ) -> dict[str, Any]:
    """What Fig. 7 over training can show, for the prose: ``fig7_n`` (images per panel),
    ``fig7_<class>`` (how many of them are Disgust, Contempt, Sadness; from the first run with
    snapshots, all share one subsample) and ``fig7_knn_<variant>_<first|last>`` (the
    :func:`cfdan.analysis.tables.knn_accuracy` of its first and last snapshot, one decimal); "n/a"
    where no run or class gives one."""
    out: dict[str, Any] = {"fig7_n": n}
    out.update({f"fig7_{cls}": "n/a" for cls in ("disgust", "contempt", "sadness")})
    counted = False
    for variant, where in report.snapshot_runs(full=_book_source(full)).items():
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
            out[f"fig7_knn_{variant}_{end}"] = f"{report.knn_accuracy(x, labels):.1f}"
    return out


def val_curves_figure(band: str = "minmax", full: tuple[str, str] = claims.FULL_SOURCE):
    """Fig. 6: validation accuracy per epoch of Table 3's four variants, mean and band over
    seeds (:func:`cfdan.analysis.tables.plot_val_curves`)."""
    import matplotlib.pyplot as plt

    curves = report.val_curves(full=_book_source(full))
    fig, ax = plt.subplots(figsize=(7, 4))
    report.plot_val_curves(ax, curves, band=band,
                           title=f"Table 3 variants, FERPlus val (band: "
                                 f"{'min–max' if band == 'minmax' else '± 1 sd'} over seeds)")
    fig.tight_layout()
    return fig


def tsne_training_figure(n: int = 1000, full: tuple[str, str] = claims.FULL_SOURCE):
    """Fig. 7 over training: t-SNE of the stored test-feature snapshots of baseline, dam and
    full (seed 0) at 25, 50, 75 and 100 % of training, one shared t-SNE setting
    (:data:`cfdan.analysis.tables.TSNE_SETTING`). None when no run has stored snapshots."""
    import matplotlib.pyplot as plt

    found = report.snapshot_runs(full=_book_source(full))
    panels: dict[str, list | None] = {}
    epochs: dict[str, int] = {}
    names: list[str] = []
    for variant, where in found.items():
        if where is None:
            panels[variant] = None
            continue
        exp, run_id = where
        rec = results.get_record(run_id, exp)
        try:
            arrays = results.load_arrays(run_id, exp)
        except FileNotFoundError:
            arrays = {}
        if "snapshot_features" not in arrays:
            panels[variant] = [None] * len(report.FIG7_FRACTIONS)
            continue
        epochs[variant] = int(rec.get("epochs_fitted") or rec.get("epochs_planned"))
        panels[variant] = report.tsne_snapshots(arrays, epochs[variant], n=n)
        names = [str(c) for c in arrays["class_names"]]
    if not epochs:
        return None
    k = len(report.FIG7_FRACTIONS)
    fig, axes = plt.subplots(len(panels), k, figsize=(3.0 * k, 3.0 * len(panels)),
                             squeeze=False)
    report.plot_tsne_over_training(axes, panels, names, epochs)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat),
                          key=lambda hl: len(hl[0]))
    axes[0, -1].legend(handles, labels, markerscale=4, fontsize=7, loc="center left",
                       bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def selection_facts(experiments: Sequence[str] = ("cpu_v2", "table3", "table4", "table5",
                                                  "fig10")) -> dict[str, Any]:
    """How often validation selected the last epoch, for the prose: ``selected_runs`` (counted
    runs of ``experiments``) and ``selected_last`` (those whose best validation epoch is their
    last; with a learning rate decaying to its minimum, that need not mean still improving)."""
    recs = [r for e in experiments for r in records(e)]
    last = sum(1 for r in recs if r.get("best_epoch") is not None
               and r.get("best_epoch") == r.get("epochs_run"))
    return {"selected_runs": len(recs), "selected_last": last}


def thread_facts(experiments: Sequence[str] = ("cpu_v2", "table3", "table5", "table4", "fig10")
                 ) -> dict[str, str]:
    """The torch thread counts of each experiment's counted runs, for the prose:
    ``threads_<experiment>``, e.g. "all 3 runs with 2 threads" or "9 runs, 8 with 1 thread and
    1 with 2 threads" (the thread count changes rounding, not the recipe: chapter 4). Threads as
    :func:`cfdan.analysis.tables.record_threads` reads them, like the tables' hardware label."""
    out = {}
    for e in experiments:
        counts = collections.Counter(report.record_threads(r) for r in records(e))
        n = counts.total()
        how = {t: f"{t} thread{'s' * (t != 1)}" if t else "an unrecorded thread count"
               for t in counts}
        if not counts:
            text = "no runs"
        elif len(counts) == 1:
            (t,) = counts
            text = f"{'all ' * (n > 1)}{n} run{'s' * (n > 1)} with {how[t]}"
        else:
            parts = [f"{k} with {how[t]}" for t, k in sorted(counts.items())]
            text = f"{n} runs, " + ", ".join(parts[:-1]) + f" and {parts[-1]}"
        out[f"threads_{e}"] = text
    return out


def fig10_facts(full: tuple[str, str] = claims.FULL_SOURCE) -> dict[str, Any]:
    """Fig. 10's state and band, for the prose: ``fig10_grid_runs`` / ``fig10_grid_planned``
    (settings other than the centre with a run / planned), ``fig10_sd_seeds`` (seeds behind the
    band's sd) and ``fig10_exact_wider`` (how many times wider than ± 2√2 sd an exact 95 %
    prediction range for the difference of two one-seed runs is, the sd being estimated from
    those seeds: t(0.975, n - 1) / 2; "n/a" below 2 seeds) and ``fig10_progress``, a sentence
    saying how much of the grid has run."""
    from scipy import stats

    full = _book_source(full)
    pts = report.sensitivity_points(full)
    grid = pts[~pts["centre"]]
    _m, _sd, k = claims.full_seed_spread(full)
    wider = f"{stats.t.ppf(0.975, k - 1) / 2:.1f}" if k >= 2 else "n/a"
    ran, planned = int((grid["seeds"] > 0).sum()), len(grid)
    if ran == 0:
        progress = f"None of the grid's {planned} settings other than the centre has a run yet"
    elif ran == planned:
        progress = f"All {planned} of the grid's settings other than the centre have a run"
    else:
        progress = (f"So far {ran} of the grid's {planned} settings other than the centre "
                    f"ha{'s' if ran == 1 else 've'} a run")
    return {"fig10_grid_runs": ran, "fig10_grid_planned": planned, "fig10_sd_seeds": k,
            "fig10_exact_wider": wider, "fig10_progress": progress}


def _ordinal(k: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _setting_text(s_l: float, x_l: float, p1: float) -> str:
    return f"s_L {s_l:g}, x_L {x_l:g}, P1 {p1:g}"


def fig10_screen(full: tuple[str, str] = claims.FULL_SOURCE) -> dict[str, Any]:
    """Fig. 10 read through its band (:func:`cfdan.analysis.tables.sensitivity_screen`), for the prose:
    ``fig10_band_half`` (points), ``fig10_inside`` / ``fig10_above`` / ``fig10_below``
    (grid settings with a run), ``fig10_centre_rank`` of ``fig10_ranked`` (settings with a
    value, the centre included; an ordinal, "1st" = highest), ``fig10_best`` / ``fig10_best_gap`` (the highest
    setting and its lead over the centre), ``fig10_span`` (highest − lowest) and
    ``fig10_reading``, a sentence saying what the screen finds."""
    full = _book_source(full)
    pts = report.sensitivity_points(full)
    spread = claims.full_seed_spread(full)
    screen = report.sensitivity_screen(pts, spread)
    half = report.FIG10_BAND * spread[1]
    ran = pts[pts["accuracy"].notna()]
    counts = screen["position"].value_counts()
    facts: dict[str, Any] = {
        "fig10_band_half": f"{half:.2f}" if np.isfinite(half) else "n/a",
        **{f"fig10_{k}": int(counts.get(k, 0)) for k in ("inside", "above", "below")},
        "fig10_ranked": len(ran)}
    centre = ran[ran["centre"]]
    if len(screen) == 0 or len(centre) == 0:
        return facts | {"fig10_centre_rank": "n/a", "fig10_best": "n/a", "fig10_best_gap": "n/a",
                        "fig10_span": "n/a", "fig10_reading": "The grid has not run yet."}
    c = float(centre["accuracy"].iloc[0])
    top = ran.loc[ran["accuracy"].idxmax()]
    facts |= {"fig10_centre_rank": _ordinal(int((ran["accuracy"] > c).sum()) + 1),
              "fig10_best": _setting_text(top["s_L"], top["x_L"], top["P1"]),
              "fig10_best_gap": f"{top['accuracy'] - c:+.2f}",
              "fig10_span": f"{np.ptp(ran['accuracy']):.2f}"}
    if not np.isfinite(half):
        reading = "Without a seed spread of the full model there is no band to screen against."
    elif counts.get("inside", 0) == len(screen):
        reading = "At one seed each, none can be told apart from the paper's best."
    else:
        out = screen[screen["position"] != "inside"]
        named = "; ".join(f"{_setting_text(r['s_L'], r['x_L'], r['P1'])} {r['position']} "
                          f"({r['minus centre']:+.2f})" for _i, r in out.iterrows())
        reading = (f"Outside the band: {named}; each is worth a second seed before it is read "
                   "as a real difference.")
    return facts | {"fig10_reading": reading}


def sensitivity_figure(full: tuple[str, str] = claims.FULL_SOURCE):
    """Fig. 10: accuracy over the PCP grid with the full model's seed spread as a band
    (:func:`cfdan.analysis.tables.plot_sensitivity`)."""
    import matplotlib.pyplot as plt

    full = _book_source(full)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    report.plot_sensitivity(axes, report.sensitivity_points(full),
                            claims.full_seed_spread(full))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- chapter 4, 5 runs
def predict_example() -> tuple[Any, pd.DataFrame]:
    """``python -m cfdan predict`` on scikit-image's astronaut: the annotated picture and, per
    face, its box and three most probable classes."""
    import tempfile
    from pathlib import Path

    import skimage.data
    from PIL import Image

    from cfdan.predict import predict_photo

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).save(photo)
        faces = predict_photo(photo, out=Path(tmp) / "annotated.png")
        annotated = Image.open(Path(tmp) / "annotated.png").copy()
    rows = []
    for face in faces:
        top = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        rows.append({"box": [round(v) for v in face["box"]],
                     **{f"top {i + 1}": f"{k} {p:.2f}" for i, (k, p) in enumerate(top)}})
    return annotated, pd.DataFrame(rows)


def bench_training(profile: str = "cpu", steps: int = 4) -> str:
    """The report of ``benchmarks/bench_training.py`` for ``profile``, run now on this machine."""
    import subprocess
    import sys

    from cfdan.paths import REPO_ROOT

    out = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_training.py"),
                          "--profile", profile, "--steps", str(steps)],
                         capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return out.stdout


# ---- the cpu v2 search (chapter 5): validation only
SEARCH_EXPERIMENT = "cpu_search"


FROZEN_ROLE = "candidate: frozen as cpu v2"
"""The search table's role of the candidate with the best validation accuracy."""


def search_table(experiment: str = SEARCH_EXPERIMENT) -> pd.DataFrame:
    """Every candidate of the cpu-profile search with what it changes, its validation
    accuracy (the selection criterion), train-subset accuracy and time; test is not shown.

    Candidates listed in ``configs/experiments/<experiment>.toml`` without a record of their
    current config are shown as "not run". ``wall min`` is the run's wall time as it ran
    (other jobs may have shared the CPU); ``epoch s (fastest)`` is its fastest epoch,
    training plus validation, the best estimate of an uncontended epoch.
    """
    from cfdan.training.config import load_experiment

    exp = load_experiment(experiment)
    stored = {rec["run_id"]: rec for _, rec in results.iter_records(experiment)}
    rows = []
    for cfg in exp.configs():
        changes = exp.variants.get(cfg.variant, {})
        rec = stored.get(cfg.run_id)
        row: dict[str, Any] = {
            "candidate": cfg.variant,
            "role": "yardstick" if cfg.model.get("preset") == "plain_cnn" else "candidate",
            "changes": ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in changes.items())
            or "(common settings only)",
            "epochs": cfg.train.epochs,
        }
        if rec is None:
            row.update({"val acc %": "not run"})
        else:
            hist = rec.get("history", [])
            fastest = min((h["epoch_time_s"] + h.get("eval_time_s", 0.0) for h in hist),
                          default=float("nan"))
            sub = rec.get("train_subset") or {}
            row.update({
                "val acc %": round(100 * rec["val"]["accuracy"], 2),
                "best epoch": rec.get("best_epoch"),
                "train-subset acc %": (round(100 * sub["accuracy"], 2) if sub else None),
                "wall min": round(rec["wall_time_s"] / 60, 1),
                "epoch s (fastest)": round(fastest, 1),
                "threads": rec.get("hardware", {}).get("torch_threads"),
                "commit": str(rec.get("git", {}).get("commit") or "")[:7],
            })
        rows.append(row)
    df = pd.DataFrame(rows, dtype=object).fillna("")
    done = df[(df["role"] == "candidate") & (df["val acc %"] != "not run")]
    if len(done):  # the rule of the search: the best validation accuracy is frozen as cpu v2
        df.loc[done["val acc %"].astype(float).idxmax(), "role"] = FROZEN_ROLE
    return df


def search_facts(experiment: str = SEARCH_EXPERIMENT) -> dict[str, Any]:
    """Counts and the leader of the search, for the chapter's prose (by val accuracy only;
    the plain-CNN yardstick is not a candidate); the uncontended run time of the runs (their
    epochs at their fastest epoch's pace); the yardstick against the candidates; and how the
    cpu v1 record ended (the reason for the search)."""
    table = search_table(experiment)
    ran = table[table["val acc %"] != "not run"]
    t = table[table["role"].str.startswith("candidate")]
    done = t[t["val acc %"] != "not run"]
    out: dict[str, Any] = {"search_candidates": len(t), "search_done": len(done)}
    if len(done):  # search_table marks the leader by validation accuracy as frozen
        best = done[done["role"] == FROZEN_ROLE].iloc[0]
        out.update(search_leader=best["candidate"], search_leader_val=f"{best['val acc %']:.2f}")
    else:
        out.update(search_leader="none yet", search_leader_val="n/a")
    if len(ran):
        idle = ran["epochs"].astype(float) * ran["epoch s (fastest)"].astype(float) / 60
        out.update(search_idle_min_low=float(idle.min()), search_idle_min_high=float(idle.max()))
    yard = ran[ran["role"] == "yardstick"]
    if len(yard) and len(done):
        v = float(yard["val acc %"].iloc[0])
        vals = done["val acc %"].astype(float)
        out.update(search_yardstick_val=f"{v:.2f}",
                   search_yardstick_vs_best=f"{v - float(vals.max()):+.2f}",
                   search_yardstick_beats=int((vals < v).sum()))
        # the candidate that shares the yardstick's training recipe (only the model differs)
        recipes = {r["variant"]: claims.recipe(r) for _p, r in results.iter_records(experiment)}
        name = yard["candidate"].iloc[0]
        same = done[done["candidate"].map(lambda c: recipes.get(c) == recipes.get(name))]
        if len(same):
            out.update(search_yardstick_recipe=same["candidate"].iloc[0],
                       search_yardstick_vs_same=f"{v - float(same['val acc %'].iloc[0]):+.2f}")
        else:
            out.update(search_yardstick_recipe="none of the candidates",
                       search_yardstick_vs_same="n/a")
    v1 = record("cpu")
    if v1 and v1.get("history"):
        hist = v1["history"]
        acc = [h["train_accuracy"] for h in hist]
        rose = all(b > a for a, b in itertools.pairwise(acc))
        out.update(cpu_v1_train_acc_last=f"{100 * hist[-1]['train_accuracy']:.1f}",
                   cpu_v1_val_acc_last=f"{100 * hist[-1]['val_accuracy']:.1f}",
                   cpu_v1_best_epoch=v1.get("best_epoch"), cpu_v1_epochs=len(hist),
                   cpu_v1_train_rose="rose every epoch" if rose else "did not rise every epoch")
    return out
