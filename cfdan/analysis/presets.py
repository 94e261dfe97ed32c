"""How the presets of one paper table compare as a group (§4.4, Tables 3-4), beside the claims
ledger's pairwise rows (:mod:`cfdan.analysis.claims`): their order by our mean and by the paper, and
the one group test of Table 4, whether the activation matters at all (an F test of nested
least-squares fits, seeds as blocks, ILM's own effect taken out)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

from cfdan import paper
from cfdan.analysis import runs
from cfdan.analysis.runs import FULL_SOURCE


def variant_order(experiment: str, table: str, full: tuple[str, str] = FULL_SOURCE,
                  metric: str = "test.accuracy", current: bool = True,
                  root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The presets of a paper table ordered by our mean ``metric`` and by the paper's number
    (its FERPlus column where it has one, else its first, e.g. Table 4's RAF-DB), as
    ``"a > b > c"`` (``ours``, ``paper``, and ``paper_column``: the column read); presets
    without runs are left out of ``ours`` and counted in ``missing``."""
    columns = paper.value_columns(table)
    column = "FERPlus" if "FERPlus" in columns else columns[0]
    p = paper.table(table).set_index("preset")[column]
    df = runs.frame(root)
    ours: dict[str, float] = {}
    for preset in p.index:
        vals = list(runs.slot(df, experiment, preset, full, metric, current).values)
        if vals:
            ours[preset] = float(np.mean(vals))
    return {"ours": " > ".join(sorted(ours, key=ours.__getitem__, reverse=True)) or "none run",
            "paper": " > ".join(p.sort_values(ascending=False).index),
            "missing": str(len(p) - len(ours)), "paper_column": column}


def ilm_group(preset: str) -> bool:
    """A Table 4 preset's ILM group: True for the presets without ILM (``*_no_ilm``)."""
    return preset.endswith("_no_ilm")


@dataclass(frozen=True)
class BlockTest:
    """The F test of a table's activation effect, seeds as blocks (:func:`preset_block_test`)."""

    presets: tuple[str, ...]
    seeds: tuple[int, ...]
    f: float
    df_effect: int
    df_resid: int
    p: float
    resid_sd: float
    """sqrt of the residual mean square: run-to-run noise once seed and preset effects are out."""


def preset_block_test(experiment: str, table: str, full: tuple[str, str] = FULL_SOURCE,
                      metric: str = "test.accuracy", current: bool = True,
                      root: str | os.PathLike[str] | None = None) -> BlockTest | None:
    """Does the activation matter at all, once ILM's own effect and the seed are out? The F
    test of the presets beyond ILM in a randomized block design, seeds as blocks (paired seeds
    share data order, augmentation and initial weights): statsmodels' ``anova_lm`` of two
    ``ols`` fits, ``y ~ seed + preset`` against ``y ~ seed + ILM`` (a preset is an activation
    with or without ILM, ``act_<name>[_no_ilm]``), so the effect tested is the activation's, in
    either ILM setting.

    It reads the largest complete presets x seeds grid (the seed set, of two or more seeds,
    that the most cells fill; ties to more seeds) and returns None below two presets on it or
    without residual degrees of freedom.
    """
    df = runs.frame(root)
    by_seed = {p: {int(k): float(v) for k, v in
                   runs.slot(df, experiment, p, full, metric, current).values.items()}
               for p in paper.table(table)["preset"]}
    seeds = sorted({s for got in by_seed.values() for s in got})
    best: tuple[int, int, tuple[int, ...], list[str]] | None = None
    for k in range(2, len(seeds) + 1):
        for chosen in itertools.combinations(seeds, k):
            rows = [p for p, got in by_seed.items() if all(s in got for s in chosen)]
            cand = (len(rows) * k, k, chosen, rows)
            if len(rows) >= 2 and (best is None or cand[:2] > best[:2]):
                best = cand
    if best is None:
        return None
    _cells, _k, chosen, rows = best
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame([{"y": by_seed[p][s], "seed": str(s), "preset": p,
                          "ilm": str(not ilm_group(p))} for p in rows for s in chosen])
    reduced = ols("y ~ C(seed) + C(ilm)", data).fit()
    full_fit = ols("y ~ C(seed) + C(preset)", data).fit()  # C(preset) nests C(ilm)
    df_effect = int(round(reduced.df_resid - full_fit.df_resid))
    df_resid = int(round(full_fit.df_resid))
    if df_effect < 1 or df_resid < 1:
        return None
    ms_r = full_fit.ssr / df_resid
    if ms_r <= 1e-12 * max(float(data["y"].var()), 1.0):  # identical cells: F undefined
        gain = max(reduced.ssr - full_fit.ssr, 0.0) / df_effect
        f = float("nan") if gain <= 1e-12 else float("inf")
        p_val = float("nan") if np.isnan(f) else 0.0
    else:
        table = anova_lm(reduced, full_fit)  # the F test of the nested pair
        f, p_val = float(table["F"].iloc[1]), float(table["Pr(>F)"].iloc[1])
    return BlockTest(tuple(rows), tuple(chosen), float(f), df_effect, df_resid, p_val,
                     float(np.sqrt(ms_r)))
