"""How the presets of one paper table compare as a group (§4.4, Tables 3-4), beside the claims
ledger's pairwise rows (:mod:`cfdan.claims`): their order by our mean and by the paper, their
spread at one seed against what seed noise alone would give, whether their order repeats
across seeds (exact Spearman permutation test), and whether the activation matters at all (a
least-squares F test with seeds as blocks and ILM's own effect taken out)."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfdan import paper
from cfdan.claims import FULL_SOURCE, RunStore


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
    store = RunStore(root, current, full, metric)
    ours: dict[str, float] = {}
    for preset in p.index:
        vals = [v for v, _r in store.runs(experiment, preset).by_seed.values()]
        if vals:
            ours[preset] = float(np.mean(vals))
    return {"ours": " > ".join(sorted(ours, key=ours.__getitem__, reverse=True)) or "none run",
            "paper": " > ".join(p.sort_values(ascending=False).index),
            "missing": str(len(p) - len(ours)), "paper_column": column}


def expected_range(k: int) -> float:
    """Expected range (max - min) of ``k`` independent standard normal draws (``d2`` of
    quality control: about 1.13 for 2, 2.85 for 8), so that ``sd * expected_range(k)`` is the
    spread that ``k`` runs differing by seed noise alone would show on average."""
    from scipy import integrate, stats

    if k < 2:
        return 0.0
    val, _err = integrate.quad(
        lambda x: 1 - stats.norm.sf(x) ** k - stats.norm.cdf(x) ** k, -np.inf, np.inf)
    return float(val)


def presets_at_seed(experiment: str, table: str, seed: int = 0,
                    full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                    current: bool = True, root: str | os.PathLike[str] | None = None
                    ) -> dict[str, float]:
    """``metric`` (points) at ``seed`` of each preset of a paper table that has that seed (the
    full model's slot read from ``full``), in the paper table's order."""
    store = RunStore(root, current, full, metric)
    out: dict[str, float] = {}
    for preset in paper.table(table)["preset"]:
        got = store.runs(experiment, preset).by_seed.get(seed)
        if got is not None:
            out[preset] = got[0]
    return out


MAX_ORDERINGS = 200_000
"""Above this many within-group reorderings, :func:`preset_rank_agreement` samples its null."""


def ilm_group(preset: str) -> bool:
    """A Table 4 preset's ILM group: True for the presets without ILM (``*_no_ilm``)."""
    return preset.endswith("_no_ilm")


def _ranks_within_groups(values: Sequence[float], groups: Sequence[bool]) -> np.ndarray:
    """Each value's rank within its group (ties averaged), minus its group's mean rank."""
    from scipy import stats

    v, g = np.asarray(values, dtype=float), np.asarray(groups)
    out = np.zeros(len(v))
    for flag in set(groups):
        r = stats.rankdata(v[g == flag])
        out[g == flag] = r - r.mean()
    return out


def _within_group_orderings(groups: Sequence[bool], rng: np.random.Generator) -> np.ndarray:
    """Index arrays that reorder positions only within their group: all of them, or
    :data:`MAX_ORDERINGS` drawn at random when there are more."""
    members = [np.flatnonzero(np.asarray(groups) == flag) for flag in sorted(set(groups))]
    total = int(np.prod([math.factorial(len(m)) for m in members]))
    if total > MAX_ORDERINGS:
        out = np.tile(np.arange(len(groups)), (MAX_ORDERINGS, 1))
        for m in members:
            out[:, m] = rng.permuted(np.tile(m, (MAX_ORDERINGS, 1)), axis=1)
        return out
    out = np.tile(np.arange(len(groups)), (total, 1))
    for row, combo in enumerate(itertools.product(
            *(itertools.permutations(m) for m in members))):
        for m, perm in zip(members, combo, strict=True):
            out[row, m] = perm
    return out


def preset_rank_agreement(experiment: str, table: str, seeds: tuple[int, int] = (0, 1),
                          full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                          current: bool = True, root: str | os.PathLike[str] | None = None
                          ) -> tuple[float, float, int]:
    """Whether a table's activations keep their order from one seed to another, ILM's own
    effect taken out (as :func:`preset_block_test`): the presets are ranked within their ILM
    group at each seed, and rho is the correlation of these ranks between the two ``seeds``
    (a Spearman correlation stratified by ILM group; plain Spearman with one group). Its
    one-sided p (the order repeats: rho > 0) comes from a null that reorders presets only
    within their group, so ILM alone cannot make an order repeat; it is exact (every
    within-group reordering) up to :data:`MAX_ORDERINGS`, else sampled with a fixed seed.
    Returns (rho, p, presets with both seeds); NaN below three presets or when a seed's
    presets are all tied within their groups."""
    a, b = (presets_at_seed(experiment, table, s, full, metric, current, root) for s in seeds)
    both = [p for p in a if p in b]
    groups = [ilm_group(p) for p in both]
    u = _ranks_within_groups([a[p] for p in both], groups)
    w = _ranks_within_groups([b[p] for p in both], groups)
    if len(both) < 3 or not u.any() or not w.any():
        return float("nan"), float("nan"), len(both)

    def corr(rows: np.ndarray) -> np.ndarray:  # rows have mean 0, as u
        return (rows @ u) / np.sqrt((u @ u) * (rows * rows).sum(axis=1))

    null = corr(w[_within_group_orderings(groups, np.random.default_rng(0))])
    rho = float(corr(w[None])[0])
    return rho, float(np.mean(null >= rho - 1e-12)), len(both)


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


def _rss(y: np.ndarray, columns: list[np.ndarray]) -> float:
    x = np.column_stack([np.ones(len(y)), *columns])
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(((y - x @ beta) ** 2).sum())


def _dummies(labels: Sequence[Any]) -> list[np.ndarray]:
    levels = sorted(set(labels), key=str)
    return [np.asarray([lab == lv for lab in labels], dtype=float) for lv in levels[1:]]


def preset_block_test(experiment: str, table: str, full: tuple[str, str] = FULL_SOURCE,
                      metric: str = "test.accuracy", current: bool = True,
                      root: str | os.PathLike[str] | None = None) -> BlockTest | None:
    """Does the activation matter at all, once ILM's own effect and the seed are out? The F
    test of the presets beyond ILM in a randomized block design, seeds as blocks (paired seeds
    share data order, augmentation and initial weights), by least squares: the full model
    ``seed + preset`` against ``seed + ILM`` (a preset is an activation with or without ILM,
    ``act_<name>[_no_ilm]``), so the effect tested is the activation's, in either ILM setting.

    It reads the largest complete presets x seeds grid (the seed set, of two or more seeds,
    that the most cells fill; ties to more seeds) and returns None below two presets on it or
    without residual degrees of freedom.
    """
    from scipy import stats

    store = RunStore(root, current, full, metric)
    by_seed = {p: store.runs(experiment, p).by_seed for p in paper.table(table)["preset"]}
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
    cells = [(p, s) for p in rows for s in chosen]
    y = np.asarray([by_seed[p][s][0] for p, s in cells], dtype=float)
    seed_cols = _dummies([s for _p, s in cells])
    ilm_cols = _dummies([ilm_group(p) for p, _s in cells])
    full_cols = seed_cols + _dummies([p for p, _s in cells])
    rss_full, rss_reduced = _rss(y, full_cols), _rss(y, seed_cols + ilm_cols)
    df_effect = len(full_cols) - len(seed_cols) - len(ilm_cols)
    df_resid = len(y) - 1 - len(full_cols)
    if df_effect < 1 or df_resid < 1:
        return None
    ms_r = rss_full / df_resid
    gain = max(rss_reduced - rss_full, 0.0) / df_effect
    if ms_r <= 1e-12 * max(float(np.var(y)), 1.0):
        f = float("nan") if gain <= 1e-12 else float("inf")
    else:
        f = gain / ms_r
    p_val = float(stats.f.sf(f, df_effect, df_resid)) if np.isfinite(f) else \
        (0.0 if f == float("inf") else float("nan"))
    return BlockTest(tuple(rows), tuple(chosen), float(f), df_effect, df_resid, p_val,
                     float(np.sqrt(ms_r)))
