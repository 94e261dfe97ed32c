"""What the book's chapters 4 and 5 show, built on :mod:`cfdan.analysis.tables`: views of the run
table (:func:`cfdan.analysis.runs.frame`), which decides which runs count
(:func:`cfdan.analysis.runs.counted`).

Three rules hold for everything here:

* only the book's experiments (:data:`EXPERIMENTS`) are shown; other experiments in the store
  (searches in progress, smoke runs) are not;
* every number the paper reports carries the label ``paper``;
* every run that was refitted to a time budget or cut short says so beside its number
  (:func:`cfdan.analysis.runs.schedule`).

:func:`facts` collects the numbers that the chapters' prose quotes, and :func:`glue_all` hands
them to myst-nb, so the prose never types a measurement. The figures follow the same rules in
:mod:`cfdan.analysis.figures` (Figs. 5-7), :mod:`cfdan.analysis.attention_maps` (Fig. 8) and
:mod:`cfdan.analysis.sensitivity` (Fig. 10); chapter 5's search is
:mod:`cfdan.analysis.search`.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper
from cfdan.analysis import claims, presets, prose, runs
from cfdan.analysis import tables as report
from cfdan.analysis.runs import FULL_SOURCE

EXPERIMENTS = ("cpu", "cpu_v2", "paper", "table3", "table4", "table5", "fig10")
"""The experiments whose records the book shows (in the store's folder order)."""

PROFILE_EXPERIMENTS = ("paper", "cpu_v2")
"""The two training profiles of Table 1, in the order the chapters draw them."""


def book_source(full: tuple[str, str]) -> tuple[str, str]:
    """``full`` (where the full model's runs are read), checked to be one of the book's
    experiments (:data:`EXPERIMENTS`): a ``ValueError`` otherwise."""
    if full[0] not in EXPERIMENTS:
        raise ValueError(f"the full model's source {full[0]!r} is not one of the book's "
                         f"experiments {EXPERIMENTS}")
    return full


# --------------------------------------------------------------------------- runs
def _own(experiment: str) -> pd.DataFrame:
    """``experiment``'s own runs today, superseded ones too: the rows of the run table that its
    file plans (column ``planned``). A retired experiment's runs are its own though they do not
    count (:data:`cfdan.analysis.runs.RETIRED`): the facts of the prose tell their story."""
    df = runs.frame()
    return df[(df["experiment"] == experiment) & df["planned"].astype(bool)]


def record(experiment: str, variant: str = "full") -> dict | None:
    """The lowest-seed record of ``variant`` among ``experiment``'s own runs (:func:`_own`, not
    superseded; None if there is none)."""
    own = _own(experiment)
    rows = own[(own["variant"] == variant) & ~own["superseded"].astype(bool)]
    return min(rows["record"], key=lambda r: r.get("seed", 0)) if len(rows) else None


def schedule_note(experiment: str, variant: str | None = None,
                  df: pd.DataFrame | None = None) -> str:
    """The schedule notes (:func:`cfdan.analysis.runs.schedule`) of the counted runs of
    ``experiment`` (and ``variant``) in the run table ``df`` (default the whole), merged."""
    rows = runs.counted(df, experiment=experiment)
    if variant is not None:
        rows = rows[rows["variant"] == variant]
    notes = dict(zip(rows["seed"], rows["schedule"], strict=True))
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
    return marked(label, runs.schedule(rec, short=short) if rec else "")


# --------------------------------------------------------------------------- tables
def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _per_experiment(fn, experiment: str | None) -> pd.DataFrame:
    return _concat(fn(e) for e in (EXPERIMENTS if experiment is None else (experiment,)))


def _book_rows(experiment: str | None) -> pd.DataFrame:
    """Every row of the run table of ``experiment``, or of the book's experiments."""
    df = runs.frame()
    exps = EXPERIMENTS if experiment is None else (experiment,)
    return df[df["experiment"].isin(exps)]


def _schedule_by_run(experiment: str | None) -> dict[str, str]:
    rows = _book_rows(experiment)
    return dict(zip(rows["run_id"], rows["schedule"].replace("", "as planned"), strict=True))


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


def ablation_table(experiment: str, table: str, current: bool = True,
                   rows: pd.DataFrame | None = None, full: tuple[str, str] | None = None
                   ) -> pd.DataFrame:
    """Tables 3-5: every paper column labelled ``paper``, our cells marked with schedules;
    ``rows`` and ``full`` as :func:`cfdan.analysis.tables.ablation_table`'s ``df`` and
    ``full`` (the GPU tables, :mod:`cfdan.analysis.gpu`, pass their own)."""
    df = paper.label_columns(report.ablation_table(experiment, table, current=current,
                                                   full=full, df=rows), table)
    ours = [c for c in df.columns if str(c).startswith("ours")]
    if "preset" in df:
        notes = df["preset"].map(lambda p: schedule_note(experiment, p, rows))
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
    """``df`` (rows of runs, with ``experiment`` and ``run_id``) with ``counted`` inserted
    after ``run_id``: whether the tables and figures read each run, and if not why
    (:func:`cfdan.analysis.runs.reasons`, :func:`cfdan.analysis.runs.counted_label`)."""
    if df.empty:
        return df
    rows = runs.frame()
    rows = rows[rows["experiment"].isin(df["experiment"].unique())]
    labels = dict(zip(rows["run_id"], rows["why"].map(runs.counted_label), strict=True))
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
    names = {report.PROFILE_LABELS.get(e, e): run_label(e, run_variant(e, r))
             for e, r in shown.items()}
    return df.rename(columns=names, level="run") if not df.empty else df


def run_variant(experiment: str, run_id: str) -> str:
    """The variant of the record ``run_id`` of ``experiment``."""
    return str(runs.get(run_id, experiment).get("variant"))


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
        "schedule": runs.schedule(rec) or "as planned",
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
    :func:`cfdan.analysis.runs.counted`), as ``"table3: id, id; cpu_v2: id"``, for the chapter's
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
                df = runs.counted(experiment=exp)
                ids[exp] = sorted(df["run_id"]) if "run_id" in df else []
            if ids[exp]:
                parts.append(f"{exp}: {', '.join(ids[exp])}")
        out[f"runs_{view}"] = "; ".join(parts) or "none yet"
    return out


FACT_PREFIX = {"cpu_v2": "cpu", "cpu": "cpu_v1"}
"""Glue prefixes that differ from the experiment's name: ``cpu_*`` facts are the cpu profile
as it is (v2); the superseded v1 record's are ``cpu_v1_*``."""


def facts(experiments: Sequence[str] = ("cpu_v2", "cpu", "paper", "table3")) -> dict[str, Any]:
    """:func:`run_facts` of each experiment's lowest-seed ``full`` run (:func:`record`), keys
    prefixed by it (:data:`FACT_PREFIX`).

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
        own = _own(exp)
        out[f"{pre}_seeds"] = int(((own["variant"] == "full")
                                   & ~own["superseded"].astype(bool)).sum())
        for old in own["record"]:
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


def selection_facts(experiments: Sequence[str] = ("cpu_v2", "table3", "table4", "table5",
                                                  "fig10")) -> dict[str, Any]:
    """How often validation selected the last epoch, for the prose: ``selected_runs`` (counted
    runs of ``experiments``) and ``selected_last`` (those whose best validation epoch is their
    last; with a learning rate decaying to its minimum, that need not mean still improving)."""
    recs = [r for e in experiments for r in runs.counted(experiment=e)["record"]]
    last = sum(1 for r in recs if r.get("best_epoch") is not None
               and r.get("best_epoch") == r.get("epochs_run"))
    return {"selected_runs": len(recs), "selected_last": last}


THREAD_EXPERIMENTS = ("cpu_v2", "table3", "table5", "table4", "fig10")


def thread_table(experiments: Sequence[str] = THREAD_EXPERIMENTS) -> pd.DataFrame:
    """How many counted runs of each experiment ran with each torch thread count (rows:
    experiments; columns: thread counts, 0 where unrecorded; a thread count changes how sums
    round, not the recipe). Threads as :func:`cfdan.analysis.runs.record_threads` reads them,
    like the tables' hardware label."""
    rows = {e: collections.Counter(int(t or 0) for t in runs.counted(experiment=e)["threads"])
            for e in experiments}
    out = pd.DataFrame(rows).T.reindex(list(experiments)).fillna(0).astype(int)
    out = out[sorted(out.columns)]
    out.columns = [f"{t} thread{'s' * (t != 1)}" if t else "unrecorded" for t in out.columns]
    out.index.name = "experiment"
    return out.assign(runs=out.sum(axis=1))


# --------------------------------------------------------------------------- §4.4-4.5 ledger
def claims_ledger(full: tuple[str, str] = FULL_SOURCE) -> pd.DataFrame:
    """The claims ledger of §4.4-4.5 (:func:`cfdan.analysis.claims.claims_ledger`) as the chapter
    shows it; ``full`` is where the full model's runs are read (default Table 3's)."""
    return prose.ledger_display(claims.claims_ledger(book_source(full)))


def verdict_table(full: tuple[str, str] = FULL_SOURCE) -> pd.DataFrame:
    """The ledger on one screen (:func:`cfdan.analysis.prose.verdict_table`), then chapter 1's
    PCP claims (:func:`cfdan.analysis.prose.pcp_rows`) and the absolute level against the
    paper's (:func:`cfdan.analysis.prose.level_row`): what the landing page and the top of
    chapter 4 show."""
    from cfdan.pcp import report as pcp_report

    ledger = prose.verdict_table(claims.claims_ledger(book_source(full)))
    pcp = prose.pcp_rows(pcp_report.check_claims(), pcp_report.stored_speed_claims())
    level = prose.level_row(paper.value("table1", "FERPlus"),
                            [_level(exp, where) for exp, where in (("cpu_v2", "CPU"),
                                                                   ("paper", "GPU"))])
    return pd.concat([ledger.iloc[:1], level, ledger.iloc[1:], pcp])


def _level(experiment: str, where: str) -> tuple[str, list[float]]:
    """``("at 48 px, CPU", test accuracies in points)`` of an experiment's counted full runs."""
    rec = record(experiment)
    px = run_facts(rec)["image_px"] if rec else "?"
    full = runs.counted(experiment=experiment).query("variant == 'full'")
    return f"at {px} px, {where}", [100 * v for v in full.get("test.accuracy", [])]


def ledger_and_facts(full: tuple[str, str] = FULL_SOURCE
                     ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The claims ledger as the chapter shows it and every fact its prose glues
    (:func:`ledger_facts`, :func:`ledger_reading`, :func:`cfdan.analysis.prose.headline` of the
    headline row and, as ``noattn_...``, of the no-attention row), the ledger computed once."""
    full = book_source(full)
    raw = claims.claims_ledger(full)
    shown = prose.ledger_display(raw)
    return shown, {**ledger_facts(raw), **ledger_reading(full, raw), **prose.headline(raw),
                   **prose.headline(raw, claims.NO_ATTENTION, "noattn")}


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


def ledger_reading(full: tuple[str, str] = FULL_SOURCE,
                   ledger: pd.DataFrame | None = None) -> dict[str, Any]:
    """:func:`cfdan.analysis.claims.ledger_reading` of the book's ledger (``ledger``: the raw
    :func:`cfdan.analysis.claims.claims_ledger`, computed if None), and Table 3's presets ordered
    by our mean and by the paper (``table3_order_ours``, ``table3_order_paper``)."""
    full = book_source(full)
    out = claims.ledger_reading(claims.claims_ledger(full) if ledger is None else ledger)
    order = presets.variant_order("table3", "table3", full)
    out.update({f"table3_order_{k}": v for k, v in order.items()})
    return out


def presets_block_test(experiment: str = "table4", table: str = "table4",
                       full: tuple[str, str] = FULL_SOURCE) -> dict[str, Any]:
    """Whether the activations of a table differ beyond seed noise, for the prose (keys
    ``<experiment>_block_...``): the test of :func:`cfdan.analysis.presets.preset_block_test` as
    ``presets`` (how many on the complete grid) and ``names``, ``seeds``, ``F``, ``df1``,
    ``df2``, ``p`` (with its relation: ``= 0.39``, ``< 0.001``), ``resid_sd`` (points) and
    ``reading`` (*differ beyond* / *cannot be told apart from*; *cannot yet be tested
    against* without a complete grid of two presets and two seeds)."""
    got = presets.preset_block_test(experiment, table, book_source(full))
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
