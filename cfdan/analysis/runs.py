"""Which recorded runs count today: the one place that decides (§4.3-4.5).

A record counts when its experiment file (``configs/experiments/<name>.toml``) plans its run id
today; a record of an older profile or schedule stays in the store (:mod:`cfdan.results`) for
the prose that tells its story, but no table reads it. Experiments without a file (a profile
run such as ``paper``) keep all their runs, except the :data:`RETIRED` ones.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cfdan import results
from cfdan.training.config import ConfigError, load_experiment


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
