"""Seeds each ledger row would need (cfdan.analysis.power), on a hand-made ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
from records import run_config, save_run

from cfdan.analysis import claims, power


def ledger() -> pd.DataFrame:
    return pd.DataFrame([
        {"claim": "a", "unit": "points", "sd": 0.5, "n": 3, "paper": 2.0},
        {"claim": "b", "unit": "points", "sd": 1.0, "n": 3, "paper": float("nan")},
        {"claim": "one seed", "unit": "points", "sd": float("nan"), "n": 1, "paper": 1.0},
        {"claim": "cost", "unit": "GMACs", "sd": 0.0, "n": 0, "paper": -0.07},
    ])


def test_plan_sizes_each_trained_row_with_statsmodels():
    got = power.plan(ledger(), minutes=30.0).set_index("claim")
    assert list(got.index) == ["a", "b"]  # untestable and exact rows need no seeds
    a = got.loc["a"]
    assert a["seeds for the paper's"] == claims.seeds_needed(0.5, 2.0)
    assert a["seeds for 1 point"] == claims.seeds_needed(0.5, 1.0)
    assert a["CPU h for 1 point"] == max(a["seeds for 1 point"] - 3, 0) * 2 * 30 / 60
    assert np.isnan(got.loc["b", "seeds for the paper's"])  # a direction only
    shown = power.shown(power.plan(ledger(), minutes=30.0))
    assert shown.loc["b", "seeds for the paper's"] == "-" and shown.loc["a", "paper's difference"] == "+2.00"


def test_minutes_per_run_is_the_median_of_counted_records(store):
    save_run(store, "table3", "dam", 0, wall_time_s=600.0)
    save_run(store, "table3", "dam", 1, wall_time_s=1200.0)
    save_run(store, "table5", "no_distill", 0, wall_time_s=1800.0)
    old = run_config("table5", "no_distill", 1)
    old.train.epochs += 1  # an older config: not counted
    save_run(store, "table5", "no_distill", 1, cfg=old, wall_time_s=99_000.0)
    assert power.minutes_per_run(("table3", "table5", "fig10")) == 20.0
    assert np.isnan(power.minutes_per_run(("fig10",)))
