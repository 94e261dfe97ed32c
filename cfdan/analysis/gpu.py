"""Table 3 on one GPU beside the CPU tables (§4.4, Table 3; issue 28).

Two experiments, each shown once it has GPU records of its own (:func:`has_records`):

* ``gpu_table3``: Table 3 at 48 px, the cpu v2 recipe on CUDA, all five rows (the full model
  its own, not read from ``cpu_v2``), up to 10 seeds per row;
* ``paper_table3``: Table 3's headline pair (baseline vs full CF-DAN) at the paper's scale
  (the paper profile, 224 px), up to 3 seeds; its full seed 0 is the ``paper`` experiment's
  record when that run has the same config, hence the same run id
  (:func:`cfdan.training.gpu_plan.borrowed`).

Everything reads one GPU run table (:func:`frame`): the rows of the run table
(:func:`cfdan.analysis.runs.frame`) of these experiments, plus the records they borrow from the
experiments they ``pairs_with`` (relabelled as theirs), records not trained on CUDA left out, so
no pair mixes CPU and GPU records. Table 3 is :func:`cfdan.analysis.book.ablation_table` on that
table (:func:`ablation_table`); the verdicts (:func:`claims_ledger`) are the CPU ledger's
Table 3 rows (:func:`cfdan.analysis.claims.pair_claims`) with the experiment swapped, computed by
the same code: paired by seed within the GPU experiment, t-intervals, verdicts against the
paper's δ, TOST against ±1 point, Holm within the table. Without records the tables are empty
and the ledger None; :func:`facts` gives the numbers the chapter's prose glues (sentences live
in the chapter).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan.analysis import book, claims, prose, runs
from cfdan.analysis.tables import hardware_label

GPU_TABLES: dict[str, str] = {
    "gpu_table3": "Table 3 at 48 px on one GPU",
    "paper_table3": "Table 3's headline pair at the paper's scale (224 px) on one GPU",
}
"""The GPU experiments the book shows beside the CPU tables once they have records, and their
titles (in the order shown)."""

Root = str | os.PathLike[str] | None


def is_gpu(rec: Mapping[str, Any]) -> bool:
    """Whether a record trained on CUDA (its ``hardware.device``)."""
    from cfdan.training.sweep import device_kind

    return device_kind((rec.get("hardware") or {}).get("device", "cpu")) == "cuda"


def borrowed(experiment: str, root: Root = None) -> list[dict[str, Any]]:
    """:func:`cfdan.training.gpu_plan.borrowed`: the runs ``experiment`` leaves to an
    experiment it ``pairs_with`` (``experiment`` None where no record has that run id); none
    without an experiment file."""
    from cfdan.training import gpu_plan
    from cfdan.training.config import ConfigError

    try:
        return gpu_plan.borrowed(experiment, root)
    except ConfigError:
        return []


def frame(experiments: Sequence[str] = tuple(GPU_TABLES), root: Root = None) -> pd.DataFrame:
    """The GPU run table: the rows of :func:`cfdan.analysis.runs.frame` of ``experiments`` and
    the records they borrow (:func:`borrowed`; ``experiment`` relabelled, ``borrowed_from``
    naming the lender, '' for their own), only those trained on CUDA (:func:`is_gpu`), whether
    each counts decided again among them (:func:`cfdan.analysis.runs.reasons`)."""
    df = runs.frame(root)
    parts = [df[df["experiment"].isin(list(experiments))].assign(borrowed_from="")]
    for exp in experiments:
        for b in borrowed(exp, root):
            if b["experiment"] is not None:
                hit = df[(df["experiment"] == b["experiment"]) & (df["run_id"] == b["run_id"])]
                parts.append(hit.assign(experiment=exp, borrowed_from=b["experiment"]))
    out = pd.concat(parts, ignore_index=True)
    out = out[out["record"].map(is_gpu).astype(bool)] if len(out) else out
    if len(out):
        why = runs.reasons(out)
        out = out.assign(why=why, counted=why == "")
    return out


def has_records(experiment: str, root: Root = None, df: pd.DataFrame | None = None) -> bool:
    """Whether ``experiment`` has a counted GPU record of its own (a borrowed one is not
    enough): what shows its table and verdicts. ``df``: :func:`frame`, read if None."""
    df = frame(root=root) if df is None else df
    if df.empty:
        return False
    own = (df["experiment"] == experiment) & (df["borrowed_from"] == "")
    return bool((own & df["counted"].astype(bool)).any())


def variants(experiment: str) -> list[str]:
    """The variants ``configs/experiments/<experiment>.toml`` plans (none without the file)."""
    from cfdan.training.config import ConfigError, load_experiment

    try:
        return list(load_experiment(experiment).variants)
    except ConfigError:
        return []


def _borrowed_text(df: pd.DataFrame, experiment: str, variant: str) -> str:
    """``"seed 0 is paper/4f6483f7c4a2"``: the counted records of ``variant`` borrowed."""
    rows = df[(df["experiment"] == experiment) & (df["variant"] == variant)
              & (df["borrowed_from"] != "") & df["counted"].astype(bool)]
    return "; ".join(f"seed {s} is {e}/{r}" for s, e, r in
                     zip(rows["seed"], rows["borrowed_from"], rows["run_id"], strict=True))


def ablation_table(experiment: str, current: bool = True, root: Root = None) -> pd.DataFrame:
    """Table 3 of a GPU experiment in the CPU Table 3's form
    (:func:`cfdan.analysis.book.ablation_table`) on the GPU run table, its rows the variants the
    experiment plans, a borrowed record named in ``runs``; empty until
    :func:`has_records`."""
    df = frame(root=root)
    if not has_records(experiment, df=df):
        return pd.DataFrame()
    out = book.ablation_table(experiment, "table3", current, rows=df, full=(experiment, "full"))
    out = out[out["preset"].isin(variants(experiment))].reset_index(drop=True)
    for i, preset in out["preset"].items():
        if note := _borrowed_text(df, experiment, str(preset)):
            out.loc[i, "runs"] = f"{out.loc[i, 'runs']} ({note})"
    return out


def table3_claims(experiment: str) -> list[claims.PairClaim]:
    """The CPU ledger's Table 3 claims (:func:`cfdan.analysis.claims.pair_claims`) whose two
    variants ``experiment`` plans, read from ``experiment``: all six for ``gpu_table3``, the
    headline (CF-DAN − baseline) for ``paper_table3``; all six without an experiment file."""
    have = set(variants(experiment))
    return [dataclasses.replace(c, better=(experiment, c.better[1]),
                                other=(experiment, c.other[1]))
            for c in claims.pair_claims()
            if c.better[0] == c.other[0] == "table3"
            and (not have or {c.better[1], c.other[1]} <= have)]


def _ledger(experiment: str, df: pd.DataFrame, metric: str = "test.accuracy",
            current: bool = True) -> pd.DataFrame:
    """:func:`claims_ledger` on the GPU run table ``df``, records or not (rows *not run*)."""
    slot = functools.partial(runs.slot, df, full=(experiment, "full"), metric=metric,
                             current=current)
    full = slot(experiment, "full").values.to_numpy(dtype=float)
    sd = float(full.std(ddof=1)) if len(full) > 1 else float("nan")
    noise = (sd, len(full)) if np.isfinite(sd) and sd > 0 else None
    rows = []
    for c in table3_claims(experiment):
        row = claims.pair_row(slot, c, noise)
        lent = [t for t in (_borrowed_text(df, *side) for side in (c.better, c.other)) if t]
        if lent:
            row["runs"] += f" ({'; '.join(lent)})"
        rows.append(row)
    return claims.with_holm(pd.DataFrame(rows))


def claims_ledger(experiment: str, metric: str = "test.accuracy", current: bool = True,
                  root: Root = None) -> pd.DataFrame | None:
    """The ledger rows of Table 3's claims (:func:`table3_claims`) from GPU records only, in
    :func:`cfdan.analysis.claims.claims_ledger`'s columns: each row by the CPU ledger's own code
    (paired by seed within ``experiment``, verdict, TOST, Holm within this table), a one-seed
    value set against this experiment's full-model seed sd; None until :func:`has_records`."""
    df = frame(root=root)
    return _ledger(experiment, df, metric, current) if has_records(experiment, df=df) else None


def ledger_display(experiment: str, root: Root = None) -> pd.DataFrame:
    """:func:`claims_ledger` as chapter 4 shows its ledger
    (:func:`cfdan.analysis.prose.ledger_display`); empty until :func:`has_records`."""
    raw = claims_ledger(experiment, root=root)
    return pd.DataFrame() if raw is None else prose.ledger_display(raw)


def verdict_table(experiment: str, root: Root = None) -> pd.DataFrame:
    """:func:`claims_ledger` on one screen (:func:`cfdan.analysis.prose.verdict_table`); empty
    until :func:`has_records`."""
    raw = claims_ledger(experiment, root=root)
    return pd.DataFrame() if raw is None else prose.verdict_table(raw)


def facts(root: Root = None) -> dict[str, Any]:
    """Numbers for the chapter's prose, every key present with or without records; per GPU
    experiment ``<e>``:

    * ``<e>_shown`` (1 when :func:`has_records`, else 0), ``<e>_records`` (its counted GPU
      records, borrowed ones included), ``<e>_seeds_min`` / ``<e>_seeds_max`` (seeds per row),
      ``<e>_hardware`` (:func:`cfdan.analysis.tables.hardware_label`, "-" without records);
    * ``<e>_headline_...``: :func:`cfdan.analysis.prose.headline` of its ledger (CF-DAN −
      baseline: paper, mean, ci, n, detectable, verdict ...; *not run* without records);
    * ``<e>_ledger_...``: :func:`cfdan.analysis.book.ledger_facts` (how many claims have each
      verdict);
    * ``runs_<e>``: the run ids read, by experiment (``"paper_table3: id, id; paper: id"``),
      "none yet" while it is not shown (as :func:`cfdan.analysis.book.reproduce_facts`).
    """
    df = frame(root=root)
    out: dict[str, Any] = {}
    for exp in GPU_TABLES:
        shown = has_records(exp, df=df)
        mine = df[(df["experiment"] == exp) & df["counted"].astype(bool)] if shown else df[:0]
        per_row = mine.groupby("variant").size() if len(mine) else pd.Series(dtype=int)
        ledger = _ledger(exp, df if shown else df[:0])
        out |= {f"{exp}_shown": int(shown), f"{exp}_records": len(mine),
                f"{exp}_seeds_min": int(per_row.min()) if len(per_row) else 0,
                f"{exp}_seeds_max": int(per_row.max()) if len(per_row) else 0,
                f"{exp}_hardware": hardware_label(list(mine["record"])) if len(mine) else "-"}
        out |= {f"{exp}_{k}": v for k, v in prose.headline(ledger).items()}
        out |= {f"{exp}_{k}": v for k, v in book.ledger_facts(ledger).items()}
        ids: dict[str, list[str]] = {}
        for lender, run_id in zip(mine["borrowed_from"], mine["run_id"], strict=True):
            ids.setdefault(lender or exp, []).append(str(run_id))
        out[f"runs_{exp}"] = "; ".join(f"{e}: {', '.join(sorted(r))}"
                                       for e, r in ids.items()) or "none yet"
    return out
