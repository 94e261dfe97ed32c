"""The run table: every record of the results store as one row, and the one rule that decides
which runs count (§4.3-4.5).

:func:`frame` reads the store (:mod:`cfdan.results`) once into a DataFrame, one row per record,
superseded ones too: the record's tidy columns (:func:`cfdan.results.record_row`: experiment,
variant, seed, run id, date, flattened config, metrics), the record itself (``record``), its
training ``recipe`` (:func:`recipe`), PCP ``point`` (:func:`pcp_point`), ``schedule``
(:func:`schedule`), ``hardware`` and ``threads`` (:func:`record_threads`), and whether it
counts: ``planned`` (its experiment file plans its run id today,
:func:`cfdan.training.config.is_planned`, the queue's own rule), ``superseded``, ``counted`` and
``why`` not (:func:`reasons`). The frame is cached on the store's files and the experiment
files, so a chapter reads the store once however many tables it shows.

Every table, figure and ledger row is a view of it: :func:`counted` keeps the runs that count,
one per (experiment, variant, seed), the latest; :func:`slot` and :func:`point` select one
configuration's runs (the full model's slots read from :data:`FULL_SOURCE`); :func:`paired`
lines them up by seed (a pivot: index seed, one column per slot) where their recipes agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, paths, results
from cfdan.training import config
from cfdan.training.config import ADDED_LATER, NON_IDENTITY

RETIRED: dict[str, str] = {"cpu": "cpu v1 profile, replaced by cpu_v2"}
"""Experiments without a file whose runs no table or figure reads any more, and why: they stay
in the store for the prose that tells their story (chapter 5 quotes the cpu v1 run)."""

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

_RECIPE_IGNORED = frozenset({
    "train.seed",  # pairs share a seed by construction
    # evaluation-only settings: what is stored besides the metrics, not how the model trains
    "eval.feature_snapshots", "eval.snapshot_samples", "eval.tsne_samples",
    "eval.attention_images", "eval.attention_seed", "eval.bootstrap", "eval.bootstrap_seed",
    "eval.train_subset", "train.eval_batch_size",
})


# --------------------------------------------------------------------------- facts of one record
def recipe(rec: Mapping[str, Any]) -> str:
    """A run's training recipe: its config without the model's variant (``preset``, ``pcp_*``),
    the seed, evaluation-only settings and :data:`cfdan.training.config.NON_IDENTITY` fields.

    Two runs form a pair only if their recipes are equal (same data, schedule, optimiser,
    augmentation, test-time protocol and trunk), so a difference is the variant's alone.
    """
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


def points(rec: Mapping[str, Any], metric: str) -> float:
    """A record's ``metric`` (a dotted path, e.g. ``test.macro_f1``) in points (x 100); NaN if
    absent."""
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


def record_threads(rec: Mapping[str, Any]) -> int:
    """The torch threads a record trained with (its ``cpu_count`` where ``torch_threads`` is
    missing; 0 if neither is recorded)."""
    hw = rec.get("hardware") or {}
    return int(hw.get("torch_threads") or hw.get("cpu_count") or 0)


def seeds_text(seeds: Sequence[int]) -> str:
    """``[2]`` -> "seed 2", ``[0, 1]`` -> "seeds 0, 1"."""
    return f"seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}"


# --------------------------------------------------------------------------- the run table
_FRAME: dict[str, Any] = {}
_PLANS: dict[tuple, Any] = {}
_BASE_COLUMNS = ("experiment", "run_id", "variant", "seed", "date", "superseded_by", "record",
                 "recipe", "point", "schedule", "hardware", "threads", "planned", "superseded",
                 "why", "counted")


def _stats(files: Sequence[Any]) -> tuple:
    out = []
    for p in files:
        try:
            st = os.stat(p)
        except FileNotFoundError:  # replaced while we looked
            continue
        out.append((str(p), st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _config_stamp() -> tuple:
    """What the experiment files' plans depend on: the profiles and experiment files."""
    dirs = (config.CONFIGS_DIR, config.EXPERIMENTS_DIR)
    return tuple(str(d) for d in dirs) + _stats([p for d in dirs for p in sorted(d.glob("*.toml"))])


def plan(experiment: str) -> tuple[tuple[int, ...], frozenset[str]] | None:
    """:func:`cfdan.training.config.planned` of ``experiment``, cached on the config files."""
    key = (_config_stamp(), experiment)
    if key not in _PLANS:
        _PLANS[key] = config.planned(experiment)
    return _PLANS[key]


def plan_seeds(experiment: str) -> tuple[int, ...]:
    """The seeds ``experiment``'s file plans today (none without a file)."""
    got = plan(experiment)
    return got[0] if got else ()


def frame(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every record of the store, one row each, in the store's order (see the module's
    docstring for the columns); cached until a record, a profile or an experiment file changes
    (or :data:`RETIRED` does)."""
    base = paths.results_dir(root)
    key = (str(base), _stats(sorted(base.glob("*/*.json"))), _config_stamp(),
           tuple(sorted(RETIRED.items())))
    if _FRAME.get("key") != key:
        _FRAME.update(key=key, frame=_build(root))
    return _FRAME["frame"].copy(deep=False)


def _build(root: str | os.PathLike[str] | None) -> pd.DataFrame:
    rows = []
    for _p, rec in results.iter_records(None, root, superseded=True):
        hw = rec.get("hardware") or {}
        rows.append({**results.record_row(rec), "record": rec, "recipe": recipe(rec),
                     "point": pcp_point(rec), "schedule": schedule(rec),
                     "hardware": hw.get("gpu") or hw.get("cpu"), "threads": record_threads(rec),
                     "planned": config.is_planned(rec.get("run_id"),
                                                  plan(str(rec.get("experiment")))),
                     "superseded": bool(rec.get("superseded_by"))})
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(_BASE_COLUMNS))
    if rows:
        why = reasons(df)
        df["why"], df["counted"] = why, why == ""
    return df


def reasons(df: pd.DataFrame, current: bool = True) -> pd.Series:
    """Why each run of the table does not count ('' where it does): the one rule.

    * ``superseded by <run id>``: a later run of the same profile and seed replaces it;
    * ``retired (...)``: its experiment is one of :data:`RETIRED`;
    * ``older config``: its experiment file no longer plans its run id (an older profile or
      schedule; ``planned``, the queue's own rule);
    * ``a later record of its seed counts``: of several records of one (experiment, variant,
      seed) the latest (by ``date``; the first in the store's order on a tie) counts. In
      Fig. 10's grid each variant is one PCP point.

    With ``current`` False the plan and the retirement are not asked (every record not
    superseded, the latest of a seed)."""
    why = pd.Series("", index=df.index, dtype=object)
    if current:
        why[~df["planned"].astype(bool)] = "older config"
        retired = df["experiment"].map(RETIRED)
        why[retired.notna()] = "retired (" + retired[retired.notna()] + ")"
    sup = df["superseded"].astype(bool)
    why[sup] = "superseded by " + df.loc[sup, "superseded_by"].astype(str)
    live = df[why == ""]
    date = live["record"].map(lambda r: str(r.get("date", "")))
    order = live.loc[date.sort_values(ascending=False, kind="stable").index]
    later = order.duplicated(["experiment", "variant", "seed"])
    why[later[later].index] = "a later record of its seed counts"
    return why


def counted(df: pd.DataFrame | None = None, current: bool = True,
            root: str | os.PathLike[str] | None = None, experiment: str | None = None
            ) -> pd.DataFrame:
    """The runs that count (:func:`reasons`): rows of ``df`` (default the whole :func:`frame`),
    of ``experiment`` if given; with ``current`` False, every run not superseded (the latest
    of a seed)."""
    df = frame(root) if df is None else df
    if experiment is not None:
        df = df[df["experiment"] == experiment]
    if df.empty:
        return df
    return df[df["counted"] if current else reasons(df, current=False) == ""]


def get(run_id: str, experiment: str | None = None,
        root: str | os.PathLike[str] | None = None) -> dict:
    """The record of ``run_id`` (of ``experiment``; any when None), counted or not: a
    :class:`KeyError` naming the store when there is none."""
    df = frame(root)
    hit = df[(df["run_id"] == run_id) & ((df["experiment"] == experiment) if experiment
                                         else True)]
    if hit.empty:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise KeyError(f"no run {run_id!r} in {where} under {paths.results_dir(root)}")
    return hit["record"].iloc[0]


def counted_label(why: str) -> str:
    """A table's ``counted`` cell: "yes", or "no: " and why not (:func:`reasons`)."""
    return f"no: {why}" if why else "yes"


# --------------------------------------------------------------------------- slots and pairing
@dataclass
class Runs:
    """The runs that count of one configuration: ``rows`` of the run table indexed by seed
    (sorted) with ``value`` (the metric in points) and ``recipe``; the seeds its experiment
    plans, and how many records of an older config were left out."""

    label: str
    rows: pd.DataFrame
    expected: tuple[int, ...] = ()
    not_current: int = 0

    @property
    def values(self) -> pd.Series:
        """The metric in points, per seed."""
        return self.rows["value"]

    def count(self) -> str:
        """``"table3/dam: 2 of 3 seeds"`` (runs of another recipe are mentioned, not counted)."""
        have = sorted(self.rows.index)
        if self.expected:
            text = f"{self.label}: {len(set(have) & set(self.expected))} of " \
                   f"{len(self.expected)} seeds"
        else:
            text = f"{self.label}: {len(have)} seed{'s' * (len(have) != 1)}"
        if self.not_current:
            text += f" (+{self.not_current} of an older config, not counted)"
        return text

    def only(self, seeds: Sequence[int]) -> Runs:
        """These runs limited to ``seeds``, which become the planned seeds (a shared
        configuration read by an experiment that plans fewer seeds)."""
        return replace(self, rows=self.rows[self.rows.index.isin(list(seeds))],
                       expected=tuple(seeds))


def resolve(experiment: str, variant: str, full: tuple[str, str] = FULL_SOURCE
            ) -> tuple[str, str]:
    """``(experiment, variant)``, with the full model's slots (:data:`FULL_SLOTS`) read from
    ``full``."""
    return full if (experiment, variant) in FULL_SLOTS else (experiment, variant)


def _runs(df: pd.DataFrame, label: str, experiment: str, mask: pd.Series, metric: str,
          current: bool) -> Runs:
    ok = counted(df, current)
    rows = ok[mask[ok.index]]
    seeds = pd.Index([int(r.get("seed", 0)) for r in rows["record"]], dtype=int, name="seed")
    rows = rows.assign(value=[points(r, metric) for r in rows["record"]]).set_axis(
        seeds).sort_index()
    stale = int((mask & ~df["superseded"].astype(bool) & ~df["planned"].astype(bool)).sum()) \
        if current else 0
    return Runs(label, rows, plan_seeds(experiment), stale)


def slot(df: pd.DataFrame, experiment: str, variant: str, full: tuple[str, str] = FULL_SOURCE,
         metric: str = "test.accuracy", current: bool = True) -> Runs:
    """The runs of a variant that count (:func:`counted`), the full model's slots resolved to
    ``full`` (:func:`resolve`); ``df`` is the run table (:func:`frame`)."""
    exp, var = resolve(experiment, variant, full)
    mask = (df["experiment"] == exp) & (df["variant"] == var)
    return _runs(df, f"{exp}/{var}", exp, mask, metric, current)


def point(df: pd.DataFrame, pt: tuple[float, float, float], experiment: str = "fig10",
          full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
          current: bool = True) -> Runs:
    """The runs of one Fig. 10 setting; the centre is the full model (``full``)."""
    if pt == FIG10_CENTRE:
        return slot(df, *full, full=full, metric=metric, current=current)
    mask = (df["experiment"] == experiment) & df["point"].map(lambda p: p == pt).astype(bool)
    return _runs(df, f"{experiment} s_L {pt[0]:g}, x_L {pt[1]:g}, P1 {pt[2]:g}", experiment,
                 mask, metric, current)


def paired(slots: Sequence[Runs]) -> tuple[pd.DataFrame, list[int]]:
    """The slots' values side by side, pairing records by ``seed``: index seed, one column per
    slot (in order), for the seeds every slot has and whose recipes agree (:func:`recipe`); and
    the seeds left out because the recipes differ."""
    if not slots:
        return pd.DataFrame(), []
    keys = list(range(len(slots)))
    vals = pd.concat([s.values for s in slots], axis=1, keys=keys, join="inner").sort_index()
    rcp = pd.concat([s.rows["recipe"] for s in slots], axis=1, keys=keys, join="inner")
    same = rcp.loc[vals.index].nunique(axis=1) == 1
    return vals[same], [int(s) for s in vals.index[~same]]


def paired_values(slots: Sequence[Runs], stat) -> tuple[np.ndarray, list[int], list[int]]:
    """``stat([v_1, ..., v_k])`` per seed of :func:`paired`: the values, the seeds used, and
    the seeds left out because the slots' recipes differ."""
    vals, mismatched = paired(slots)
    out = [float(stat(v)) for v in vals.to_numpy(dtype=float)]
    return np.asarray(out, dtype=float), [int(s) for s in vals.index], mismatched
