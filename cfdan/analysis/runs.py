"""Which recorded runs count today, and how they pair: the one place that decides (§4.3-4.5).

A record counts when its experiment file (``configs/experiments/<name>.toml``) plans its run id
today; a record of an older profile or schedule stays in the store (:mod:`cfdan.results`) for
the prose that tells its story, but no table reads it. Experiments without a file (a profile
run such as ``paper``) keep all their runs, except the :data:`RETIRED` ones.

:func:`load` reads the counted runs as one frame. :class:`RunStore` selects them as the claims
ledger (:mod:`cfdan.analysis.claims`), the tables and the figures use them: one record per seed
(the latest), the full model's slots read from :data:`FULL_SOURCE`; :func:`paired_values`
pairs them by seed and training recipe (:func:`recipe`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper, results
from cfdan.training.config import ADDED_LATER, NON_IDENTITY, ConfigError, load_experiment


def planned(experiment: str) -> tuple[tuple[int, ...], frozenset[str]] | None:
    """``(seeds, run_ids)`` of ``configs/experiments/<experiment>.toml`` as it is today; None
    if the experiment has no such file (a profile run such as ``paper``)."""
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


RETIRED: dict[str, str] = {"cpu": "cpu v1 profile, replaced by cpu_v2"}
"""Experiments without a file whose runs no table or figure reads any more, and why: they stay
in the store for the prose that tells their story (chapter 5 quotes the cpu v1 run)."""


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


def load(experiment: str | None = None, current: bool = True, superseded: bool = False,
         **filters: Any) -> pd.DataFrame:
    """The finished runs of ``experiment`` (all experiments if None; empty frame if none), one
    row a record (:func:`cfdan.results.load`).

    With ``current`` (the default) only the runs its experiment file plans today
    (:func:`current_mask`), so a figure never picks a record of an older schedule; runs marked
    ``superseded_by`` only with ``superseded``.
    """
    try:
        df = results.load(experiment, superseded=superseded, **filters)
    except KeyError:
        return pd.DataFrame()
    return df[current_mask(df)].reset_index(drop=True) if current else df


# --------------------------------------------------------------------------- selection and pairing
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

    def only(self, seeds: Sequence[int]) -> Runs:
        """These runs limited to ``seeds``, which become the planned seeds (a shared
        configuration read by an experiment that plans fewer seeds)."""
        return Runs(self.label, {k: v for k, v in self.by_seed.items() if k in seeds},
                    tuple(seeds), self.not_current)


def seeds_text(seeds: Sequence[int]) -> str:
    """``[2]`` -> "seed 2", ``[0, 1]`` -> "seeds 0, 1"."""
    return f"seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}"


class RunStore:
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
        return Runs(label, {int(r.get("seed", 0)): (points(r, self.metric), recipe(r))
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
