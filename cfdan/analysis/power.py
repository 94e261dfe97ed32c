"""How many paired seeds each ledger row would need, and what they would cost (§4.4).

For every trained row of the claims ledger (:func:`cfdan.analysis.claims.claims_ledger`) with a
paired standard deviation, the seeds a two-sided paired t-test needs for 80 % power
(:func:`cfdan.analysis.claims.seeds_needed`: scipy's noncentral t, which statsmodels'
``TTestPower`` computes too) against the paper's
difference and against 1 point, and the CPU hours the missing runs would take at the median
wall time of the recorded runs. The sds rest on few seeds, so these are rough: a reader with
more compute should add seeds in steps and re-estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfdan.analysis import claims, runs

ONE_POINT = 1.0
"""The second effect size planned for: 1 point of test accuracy."""


def minutes_per_run(experiments: tuple[str, ...] = ("cpu_v2", "table3", "table4", "table5",
                                                    "fig10")) -> float:
    """Median wall minutes of the counted runs of ``experiments`` (NaN with none)."""
    df = runs.counted()
    times = df.loc[df["experiment"].isin(experiments), "wall_time_s"] \
        if "wall_time_s" in df else pd.Series(dtype=float)
    return float(times.median() / 60) if len(times) else float("nan")


def plan(ledger: pd.DataFrame, minutes: float | None = None) -> pd.DataFrame:
    """Per trained ledger row with an sd: n now, the paired sd, seeds needed against the
    paper's difference and against :data:`ONE_POINT`, and the CPU hours of the runs missing
    for each (two runs a seed: both sides of the pair; ``minutes`` a run, default
    :func:`minutes_per_run`)."""
    minutes = minutes_per_run() if minutes is None else minutes
    rows = []
    for _i, r in ledger.iterrows():
        if r["unit"] != "points" or not np.isfinite(r["sd"]) or r["n"] < 2:
            continue
        need_paper = claims.seeds_needed(r["sd"], abs(r["paper"])) \
            if np.isfinite(r["paper"]) else float("nan")
        need_one = claims.seeds_needed(r["sd"], ONE_POINT)

        def hours(need: float, n: int = int(r["n"])) -> float:
            return max(need - n, 0) * 2 * minutes / 60 if np.isfinite(need) else float("nan")

        rows.append({"claim": r["claim"], "n now": int(r["n"]), "paired sd": r["sd"],
                     "paper's difference": r["paper"], "seeds for the paper's": need_paper,
                     "CPU h for the paper's": hours(need_paper),
                     "seeds for 1 point": need_one, "CPU h for 1 point": hours(need_one)})
    return pd.DataFrame(rows)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`plan` for the page: indexed by claim, numbers at two decimals (seeds and
    hours whole), "-" where a row has no paper difference to plan for."""
    from cfdan.analysis.tables import rounded

    if table.empty:
        return table
    out = rounded(table.set_index("claim"), 2)
    for col in ("seeds for the paper's", "seeds for 1 point", "CPU h for the paper's",
                "CPU h for 1 point"):
        out[col] = out[col].map(lambda v: "-" if pd.isna(v) else f"{v:.0f}")
    out["paper's difference"] = out["paper's difference"].map(
        lambda v: "-" if pd.isna(v) else f"{v:+.2f}")
    return out
