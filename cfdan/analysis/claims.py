"""The claims ledger of §4.4-4.5: one row per claim of the paper, our paired difference over
seeds, its 95 % CI, the difference that n seeds could detect, and a verdict computed here.

Runs are the rows of the run table (:func:`cfdan.analysis.runs.frame`) that count
(:func:`cfdan.analysis.runs.counted`), one configuration's at a time
(:func:`cfdan.analysis.runs.slot`, :func:`~cfdan.analysis.runs.point`), paired by seed and
training recipe (:func:`cfdan.analysis.runs.paired`); the paper's numbers come from
:mod:`cfdan.paper`. :mod:`cfdan.analysis.tables` and the figures are views of the same table.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfdan import paper
from cfdan.analysis import runs
from cfdan.analysis.runs import (
    FIG10_CENTRE,
    FULL_SOURCE,
    Runs,
    fig10_points,
    paired_values,
    seeds_text,
)

if TYPE_CHECKING:
    from cfdan.model.cost import Cost

TABLE3_VARIANTS = ("baseline", "dam", "dam_ilm", "full")
"""Table 3's rows (and Fig. 6's curves), in the paper's order."""

VERDICTS = ("supported", "contradicted", "paper's effect excluded", "not resolved at this n",
            "untestable (n = 1)", "not run")
"""The verdicts of :func:`claims_ledger` (:func:`verdict`): the 95 % CI beyond 0 on the paper's
side / on the other side / includes 0 but lies below the paper's difference / includes 0 and
the paper's difference / one seed / records missing."""

ALPHA, POWER = 0.05, 0.80
"""Two-sided level of the CIs and tests, and the power of :func:`detectable_difference`."""

MARGIN = 1.0
"""Equivalence margin of the TOST (points of accuracy): "no effect of 1 point or more"."""

def paired_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test on ``n`` pairs at standardised effect ``effect``:
    P(|T| > t_crit), T ~ noncentral t(n - 1, effect·√n), from scipy's ``nct.sf`` on both tails.
    The same quantity as statsmodels' ``TTestPower().power``, which returns NaN at large
    noncentrality for some last bits of its input (e.g. effect 6.37 at n = 3, our headline
    row), so the answer would depend on the CPU; the tests compare the two where statsmodels
    is finite."""
    from scipy import stats

    if n < 2:
        return float("nan")
    df, nc = n - 1, effect * np.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(tc, df, nc) + stats.nct.sf(tc, df, -nc))


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA
                          ) -> float:
    """Smallest true mean difference that a two-sided paired t-test on ``n`` pairs detects with
    ``power`` at level ``alpha`` when the paired differences have standard deviation ``sd``
    (:func:`paired_power` solved for the effect by ``scipy.optimize.brentq``). NaN for n < 2."""
    from scipy import optimize

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    hi = 1.0
    while paired_power(hi, n, alpha) < power:
        hi *= 2
    d = optimize.brentq(lambda e: paired_power(e, n, alpha) - power, 0.0, hi, xtol=1e-10)
    return float(d) * sd


def seeds_needed(sd: float, effect: float, power: float = POWER, alpha: float = ALPHA
                 ) -> float:
    """Paired seeds a two-sided t-test needs to detect ``effect`` with ``power`` when the
    paired differences have sd ``sd``: the least n ≥ 2 where :func:`paired_power` reaches it (NaN
    when either is unknown, inf beyond 100,000 seeds)."""
    if not (np.isfinite(sd) and np.isfinite(effect)) or sd <= 0 or effect == 0:
        return float("nan")
    for n in range(2, 100_001):
        if paired_power(abs(effect) / sd, n, alpha) >= power:
            return float(n)
    return float("inf")


def verdict(lo: float, hi: float, n: int, delta: float = float("nan")) -> str:
    """A row's verdict from its two-sided 95 % t-interval ``[lo, hi]``, oriented so that the
    paper's difference ``delta`` is positive (NaN when the paper gives a direction only):

    * n = 0: not run; n = 1: untestable;
    * L > 0: supported; U < 0: contradicted;
    * 0 inside and U < δ: the paper's effect is excluded (at this scale): the interval
      already carries the sd's uncertainty, so this rejects an effect of the paper's size
      whatever the power;
    * otherwise not resolved at this n.
    """
    if n == 0:
        return "not run"
    if n == 1 or not np.isfinite(lo):
        return "untestable (n = 1)"
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    if np.isfinite(delta) and hi < delta:
        return "paper's effect excluded"
    return "not resolved at this n"


def paired_summary(diffs: Sequence[float], side: float, paper_diff: float = float("nan"),
                   alpha: float = ALPHA, margin: float = MARGIN) -> dict[str, Any]:
    """Mean, ``1 - alpha`` t-interval (``scipy.stats.ttest_1samp``), sd, n, detectable
    difference, :func:`verdict`, and three p-values (NaN where they do not apply):

    * ``p_zero``: two-sided, against no difference;
    * ``p_vs_paper``: one-sided, of "the true difference is at least the paper's"
      (``ttest_1samp(..., alternative="less")`` in the paper's direction);
    * ``p_tost``: the two one-sided tests against ±``margin`` points (equivalence: "no effect
      of ``margin`` or more"), the larger of the two p's.

    ``side`` is the sign of the paper's difference, ``paper_diff`` its size (NaN: a direction
    only)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean": float(d.mean()) if n else float("nan"),
                           "ci_low": float("nan"), "ci_high": float("nan"),
                           "sd": float("nan"), "detectable": float("nan"),
                           "p_zero": float("nan"), "p_vs_paper": float("nan"),
                           "p_tost": float("nan")}
    sign = side if side else 1.0
    delta = abs(float(paper_diff)) if np.isfinite(paper_diff) else float("nan")
    lo = hi = float("nan")
    if n >= 2:
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(1 - alpha)
        sd = float(d.std(ddof=1))
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), sd=sd,
                   detectable=detectable_difference(sd, n))
        lo, hi = sorted((sign * out["ci_low"], sign * out["ci_high"]))
        if sd > 0:
            out["p_zero"] = float(stats.ttest_1samp(d, 0.0).pvalue)
            out["p_tost"] = max(float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue),
                                float(stats.ttest_1samp(d, margin, alternative="less").pvalue))
        if np.isfinite(delta) and sd > 0:
            out["p_vs_paper"] = float(stats.ttest_1samp(sign * d, delta,
                                                        alternative="less").pvalue)
    out["verdict"] = verdict(lo, hi, n, delta)
    return out


@dataclass(frozen=True)
class PairClaim:
    """A claim that ``better`` beats ``other`` (``(experiment, variant)`` each) by ``paper``."""

    claim: str
    where: str
    better: tuple[str, str]
    other: tuple[str, str]
    paper: float
    dataset: str


def pair_claims() -> list[PairClaim]:
    """The accuracy claims of §4.4 (Tables 3, 4, 5), with the paper's differences."""
    def t3(p: str) -> float:
        return paper.value("table3", "FERPlus", p, by="preset")

    def t4(p: str) -> float:
        return paper.value("table4", "RAF-DB", p, by="preset")

    def t5(p: str) -> float:
        return paper.value("table5", "FERPlus", p, by="preset")

    out = [
        PairClaim("DAM beats single-dimension attention", "§4.4, Table 3",
                  ("table3", "dam"), ("table3", "baseline"), t3("dam") - t3("baseline"),
                  "FERPlus"),
        PairClaim("ILM adds about 1 point on FERPlus", "§4.4, Table 3",
                  ("table3", "dam_ilm"), ("table3", "dam"), t3("dam_ilm") - t3("dam"), "FERPlus"),
        PairClaim("cross-fusion helps", "§4.4, Table 3",
                  ("table3", "full"), ("table3", "dam_ilm"), t3("full") - t3("dam_ilm"),
                  "FERPlus"),
        PairClaim("CF-DAN beats the baseline (all of Table 3)", "§4.4, Table 3",
                  ("table3", "full"), ("table3", "baseline"), t3("full") - t3("baseline"),
                  "FERPlus"),
        PairClaim(NO_ATTENTION, "ours, Table 3",
                  ("table3", "full"), ("table3", "plain_cnn"), float("nan"), "implied, not reported"),
        PairClaim("spatial attention helps (baseline vs no attention)", "ours, Table 3",
                  ("table3", "baseline"), ("table3", "plain_cnn"), float("nan"),
                  "implied, not reported"),
        PairClaim("distillation helps accuracy", "§4.4, Table 5",
                  ("table5", "full"), ("table5", "no_distill"),
                  t5("full") - t5("no_distill"), "FERPlus"),
    ]
    for suffix, ilm in (("", "with ILM"), ("_no_ilm", "without ILM")):
        for act, name in (("sigmoid", "Sigmoid"), ("relu", "ReLU"), ("tanh", "Tanh")):
            a, b = f"act_pcp{suffix}", f"act_{act}{suffix}"
            out.append(PairClaim(f"PCP beats {name} ({ilm})", "§4.4, Table 4",
                                 ("table4", a), ("table4", b), t4(a) - t4(b), "RAF-DB"))
    return out


def _row(claim: str, where: str, comparison: str, dataset: str, paper_diff: float, side: float,
         summary: Mapping[str, Any], runs_text: str, note: str = "",
         unit: str = "points", noise: Mapping[str, Any] | None = None) -> dict[str, Any]:
    inside = (summary["ci_low"] <= paper_diff <= summary["ci_high"]
              if np.isfinite(paper_diff) and np.isfinite(summary["ci_low"]) else None)
    return {"claim": claim, "where": where, "comparison": comparison, "paper dataset": dataset,
            "unit": unit, "paper": paper_diff, "paper side": side, **summary,
            "paper in CI": inside, "runs": runs_text, "note": note, **(noise or {})}


def _noise(summary: Mapping[str, Any], noise: tuple[float, int] | None,
           scale: float = float(np.sqrt(2.0)), what: str = "a difference of two runs",
           factor: str = "√2") -> dict[str, Any]:
    """For n = 1: the single value in units of its sd under seed noise alone, that sd being
    ``scale`` (shown as ``factor``) x the full model's seed-to-seed sd (√2 for a difference of
    two one-seed runs, unpaired; pairing by seed can shrink it). Columns ``noise z``,
    ``noise sd``, ``noise of`` (``what``), ``noise factor``, ``seed sd`` and ``noise seeds``
    (:func:`cfdan.analysis.prose.note_cell` writes them as a note); empty for n != 1."""
    if summary["n"] != 1 or noise is None or not np.isfinite(summary["mean"]):
        return {}
    sd, k = noise
    diff_sd = float(scale * sd)
    return {"noise z": float(summary["mean"]) / diff_sd, "noise sd": diff_sd, "noise of": what,
            "noise factor": factor, "seed sd": float(sd), "noise seeds": int(k)}


@functools.cache  # a fixed-seed Monte Carlo: same answer every ledger
def range_difference_sd(k: int = 3, draws: int = 200_000) -> float:
    """sd, in units of the runs' sd, of range(k runs) - mean of two other ranges(k runs) under
    independent normal noise (Fig. 10's stability statement; Monte Carlo, fixed seed)."""
    z = np.random.default_rng(0).standard_normal((draws, 3, k))
    r = np.ptp(z, axis=2)
    return float(np.std(r[:, 0] - (r[:, 1] + r[:, 2]) / 2, ddof=1))


def unpaired_sd(a: Runs, b: Runs, seeds: Sequence[int]) -> float:
    """The sd a difference a − b would have if the two sides' runs were independent,
    √(sd_a² + sd_b²) over ``seeds``, which both sides must have (ddof=1; NaN below 2 seeds):
    what pairing by seed is compared with (a paired sd below it means the seed's shared part
    cancelled)."""
    if len(seeds) < 2:
        return float("nan")
    va = np.asarray([a.values[k] for k in seeds], dtype=float)
    vb = np.asarray([b.values[k] for k in seeds], dtype=float)
    return float(np.sqrt(va.var(ddof=1) + vb.var(ddof=1)))


def pair_row(slot: Callable[[str, str], Runs], c: PairClaim, noise: tuple[float, int] | None
             ) -> dict[str, Any]:
    """One ledger row of a paired claim: ``slot(experiment, variant)`` gives each side's runs,
    paired by seed (:func:`cfdan.analysis.runs.paired_values`); ``noise`` (sd, seeds) sizes a
    one-seed value (:func:`_noise`)."""
    a, b = slot(*c.better), slot(*c.other)
    comparison = f"{a.label} − {b.label}"
    runs_text = "; ".join(s.count() for s in (a, b))
    side = float(np.sign(c.paper)) if np.isfinite(c.paper) else 1.0  # NaN: "helps", implied
    if a.rows.empty or b.rows.empty:
        empty = paired_summary([], side) | {"verdict": "not run", "unpaired sd": float("nan")}
        return _row(c.claim, c.where, comparison, c.dataset, c.paper, side, empty, runs_text)
    diffs, used, bad = paired_values([a, b], lambda v: v[0] - v[1])
    s = paired_summary(diffs, side, c.paper) | {"unpaired sd": unpaired_sd(a, b, used),
                                                "per seed": dict(zip(used, map(float, diffs),
                                                                     strict=True))}
    notes = [f"seeds {bad} not paired: recipes differ"] if bad else []
    if len(diffs) == 0 and not bad:
        notes.append("no seed in common")
    return _row(c.claim, c.where, comparison, c.dataset, c.paper, side, s, runs_text,
                "; ".join(notes), noise=_noise(s, noise))


def attention_cost(experiment: str = "table5", variant: str = "no_distill",
                   presets: Sequence[str] = ("full", "no_distill")
                   ) -> tuple[int, dict[str, Cost]] | None:
    """Image size and :class:`cfdan.model.cost.Cost` (params, MACs per image) of the attention
    stack of each preset at the scale of ``experiment``'s runs (its ``variant``'s config with
    the preset swapped; :func:`cfdan.model.cost.measure`); None without that variant."""
    from cfdan.model import preset as model_preset
    from cfdan.model.cost import measure
    from cfdan.training.config import ConfigError, load_experiment

    try:
        cfg = next(c for c in load_experiment(experiment).configs() if c.variant == variant)
    except (ConfigError, StopIteration):
        return None
    fields = {k: v for k, v in cfg.model.items() if k != "preset"}
    if "trunk_blocks" in fields:
        fields["trunk_blocks"] = tuple(fields["trunk_blocks"])
    px = cfg.data.image_size
    return px, {p: measure(model_preset(p, image_size=px, **fields))["attention"]
                for p in presets}


def attention_gmacs(experiment: str = "table5", variant: str = "no_distill",
                    presets: Sequence[str] = ("full", "no_distill")) -> dict[str, float] | None:
    """GMACs of the attention stack of each preset at the scale of ``experiment``'s runs
    (:func:`attention_cost`)."""
    got = attention_cost(experiment, variant, presets)
    return None if got is None else {p: c.gmacs for p, c in got[1].items()}


def _cost_row() -> dict[str, Any]:
    """Distillation lowers the attention's FLOPs (Table 5): measured on the architecture,
    exactly (no seed spread), at the scale of the Table 5 runs."""
    p = paper.value("table5", "FLOPs_G", "full", by="preset") - \
        paper.value("table5", "FLOPs_G", "no_distill", by="preset")
    side = float(np.sign(p))
    g = attention_gmacs()
    s = paired_summary([], side)
    paper_scale = "224 px; the paper's FLOPs read as MACs"
    if g is None:
        s["verdict"] = "not run"
        return _row("distillation lowers cost", "§3.3, §4.4, Table 5",
                    "attention GMACs: full − no_distill", paper_scale, p, side, s,
                    "configs/experiments/table5.toml has no no_distill variant", unit="GMACs")
    diff = g["full"] - g["no_distill"]
    p_base = paper.value("table5", "FLOPs_G", "no_distill", by="preset")
    # "by construction": chapter 2 places distillation where it replaces attention work
    s.update(mean=diff, ci_low=diff, ci_high=diff, n=0, sd=0.0,
             verdict="supported" if np.sign(diff) == side else "contradicted",
             relative=diff / g["no_distill"], paper_relative=p / p_base, by_construction=True)
    row = _row("distillation lowers cost", "§3.3, §4.4, Table 5",
               "attention GMACs: full − no_distill", paper_scale, p, side, s,
               "measured on the architecture at the table5 runs' scale; needs no run",
               note=f"exact, no seed spread: {g['full']:.5f} vs {g['no_distill']:.5f} GMACs "
                    "(our scale is not the paper's: compare signs, not sizes)", unit="GMACs")
    row["paper in CI"] = None
    return row


def _fig10_rows(at: Callable[[tuple[float, float, float], str], Runs],
                noise: tuple[float, int] | None, experiment: str = "fig10"
                ) -> list[dict[str, Any]]:
    """§4.5's pattern of Fig. 10, as four measurable statements (paper: text only, RAF-DB).

    1. the best setting (s_L 1.85, x_L 0.19, P1 -0.24) beats each of the other 12 (supported
       only if all 12 paired CIs lie above 0; contradicted if any lies below; the row shows
       the best-scoring other setting, the centre's smallest lead);
    2. at s_L = 1.75, x_L = 0.19 is worse than the mean of x_L = 0.20 and 0.21;
    3. at s_L = 1.85, x_L = 0.21 is worse than the mean of x_L = 0.19 and 0.20;
    4. at s_L = 1.95 accuracy is the most stable over x_L: its range over x_L minus the mean
       range at s_L = 1.75 and 1.85 is below 0 (per seed, then paired over seeds).
    """
    where, dataset = "§4.5, Fig. 10", "RAF-DB, text only"
    p1 = paper.BEST_PCP["P1"]
    pts = {pt: at(pt, experiment) for pt in fig10_points()}
    centre = pts[FIG10_CENTRE]
    others = [pt for pt in pts if pt != FIG10_CENTRE]
    done = sum(len(pts[pt].rows) for pt in others)
    seeds = runs.plan_seeds(experiment)
    grid_text = (f"{experiment}: {done} of {len(others) * len(seeds)} runs "
                 f"({len(others)} settings x seeds {list(seeds)})" if seeds
                 else f"{experiment}: {done} runs of {len(others)} settings")
    stale = sum(pts[pt].not_current for pt in others)
    if stale:
        grid_text += f" (+{stale} of an older config, not counted)"
    runs_text = f"{grid_text}; centre = {centre.count()}"
    if seeds and not set(centre.rows.index) <= set(seeds):  # say which of its seeds can pair
        paired = sorted(set(centre.rows.index) & set(seeds))
        runs_text += (f" (the grid plans {seeds_text(paired)})" if paired else
                      " (the grid plans none of them)")
    rows = []

    # 1. the best setting is the best
    comps = []
    for pt in others:
        diffs, _u, _bad = paired_values([centre, pts[pt]], lambda v: v[0] - v[1])
        if len(diffs):
            comps.append((pt, paired_summary(diffs, 1.0)))
    label = "best setting beats the other 12"
    if not comps:
        s = paired_summary([], 1.0) | {"verdict": "not run" if centre.rows.empty or not done
                                       else "not resolved at this n"}
        rows.append(_row(label, where, "centre − each other setting", dataset, float("nan"),
                         1.0, s, runs_text))
    else:
        pt, s = min(comps, key=lambda c: c[1]["mean"])
        verdicts = [c[1]["verdict"] for c in comps]
        s = dict(s)
        if "contradicted" in verdicts:
            s["verdict"] = "contradicted"
        elif len(comps) == len(others) and all(v == "supported" for v in verdicts):
            s["verdict"] = "supported"
        elif all(c[1]["n"] < 2 for c in comps):
            s["verdict"] = verdict(float("nan"), float("nan"), 1)
        else:
            s["verdict"] = "not resolved at this n"
        extra = {"best other": pt, "compared": len(comps),
                 "compared supported": sum(v == "supported" for v in verdicts),
                 "compared contradicted": verdicts.count("contradicted"),
                 "compared not run": len(others) - len(comps)}
        noise_extra = _noise(s, noise)
        if noise_extra:
            extra |= noise_extra | {"noise min of": len(comps)}
        rows.append(_row(label, where, "centre − best other setting", dataset, float("nan"),
                         1.0, s, runs_text, noise=extra))

    # 2.-4. the shape around the best setting
    def grid(s_l: float, x_l: float) -> Runs:
        return pts[(round(s_l, 4), round(x_l, 4), round(p1, 4))]

    x0, x1, x2 = paper.FIG10_GRID["x_L"]
    s0, s1, s2 = paper.FIG10_GRID["s_L"]
    one_vs_two = (float(np.sqrt(1.5)), "one run minus the mean of two", "√1.5")
    range_sd = range_difference_sd()
    shape = [
        (f"at s_L = {s0:g}, x_L = {x0:g} is worse than x_L = {x1:g}, {x2:g}",
         f"({s0:g}, {x0:g}) − mean of ({s0:g}, {x1:g}), ({s0:g}, {x2:g})",
         [grid(s0, x0), grid(s0, x1), grid(s0, x2)], lambda v: v[0] - (v[1] + v[2]) / 2,
         one_vs_two),
        (f"at s_L = {s1:g}, x_L = {x2:g} is worse than x_L = {x0:g}, {x1:g}",
         f"({s1:g}, {x2:g}) − mean of ({s1:g}, {x0:g}), ({s1:g}, {x1:g})",
         [grid(s1, x2), grid(s1, x0), grid(s1, x1)], lambda v: v[0] - (v[1] + v[2]) / 2,
         one_vs_two),
        (f"at s_L = {s2:g} accuracy is the most stable over x_L",
         f"range over x_L at s_L {s2:g} − mean range at {s0:g}, {s1:g}",
         [grid(s, x) for s in (s2, s0, s1) for x in (x0, x1, x2)],
         lambda v: np.ptp(v[0:3]) - (np.ptp(v[3:6]) + np.ptp(v[6:9])) / 2,
         (range_sd, "this range difference", f"{range_sd:.2f}")),
    ]
    for label, comparison, slots, stat, scale in shape:
        if any(s.rows.empty for s in slots):
            s = paired_summary([], -1.0) | {"verdict": "not run"}
            rows.append(_row(label, where, comparison, dataset, float("nan"), -1.0, s,
                             runs_text))
            continue
        diffs, _u, bad = paired_values(slots, stat)
        s = paired_summary(diffs, -1.0)
        note = f"seeds {bad} not paired: recipes differ" if bad else ""
        rows.append(_row(label, where, comparison, dataset, float("nan"), -1.0, s, runs_text,
                         note, noise=_noise(s, noise, *scale)))
    return rows


def full_seed_spread(full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                     current: bool = True, root: str | os.PathLike[str] | None = None
                     ) -> tuple[float, float, int]:
    """Mean, sample sd (ddof=1; NaN below 2 seeds) and n of the full model's ``metric`` (points)
    over its seeds: the seed noise of Fig. 10's band and of one-seed differences."""
    v = runs.slot(runs.frame(root), *full, full=full, metric=metric,
                  current=current).values.to_numpy(dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def claims_ledger(full: tuple[str, str] = FULL_SOURCE, metric: str = "test.accuracy",
                  current: bool = True, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The claims of §4.4-4.5, one row each, with our paired evidence and a verdict.

    Per row: the paper's difference (``paper``, in points of accuracy; NaN where the paper
    gives only the direction, Fig. 10), ours as the mean of the per-seed paired differences
    (records paired by ``seed``; the sweeps give every variant of seed s the same data order,
    augmentation and shared initial weights) with its t-interval (``ci_low``, ``ci_high``,
    level ``1 - ALPHA``), ``n``, the paired ``sd``, the smallest difference n pairs detect with
    80 % power (:func:`detectable_difference`), the ``verdict`` (:data:`VERDICTS`, see
    :func:`paired_summary`; *not run* when a side has no record), whether the paper's value
    lies inside our CI, and ``runs``: how many of the planned seeds each side has.

    ``full`` is where the full model's runs are read (:data:`cfdan.analysis.runs.FULL_SOURCE`);
    ``current`` keeps only the runs that count (:func:`cfdan.analysis.runs.counted`). The
    distillation cost row is measured on the architecture, exactly, and needs no run.
    """
    df = runs.frame(root)
    opts = {"full": full, "metric": metric, "current": current}
    _m, sd, k = full_seed_spread(full, metric, current, root)
    noise = (sd, k) if np.isfinite(sd) and sd > 0 else None
    rows = []
    for c in pair_claims():
        rows.append(pair_row(functools.partial(runs.slot, df, **opts), c, noise))
        if c.claim == "distillation helps accuracy":
            rows.append(_cost_row())  # Table 5's other claim, beside its accuracy row
    rows += _fig10_rows(functools.partial(runs.point, df, **opts), noise)
    return with_holm(pd.DataFrame(rows))


P_COLUMNS = ("p_zero", "p_vs_paper", "p_tost")
"""The ledger's p-values, each adjusted by :func:`with_holm` into ``<name>_holm``."""


def family(where: str) -> str:
    """The table or figure a ledger row belongs to (``"§4.4, Table 3"`` and ``"ours, Table 3"``
    are one family, ``"Table 3"``): the rows among which :func:`with_holm` corrects."""
    return where.rsplit(", ", 1)[-1]


def with_holm(ledger: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """``ledger`` with ``family`` (:func:`family`) and, for each of :data:`P_COLUMNS`, a
    ``<name>_holm`` column: Holm's step-down adjustment
    (``statsmodels.stats.multitest.multipletests(p, method="holm")``) over the rows of the same
    table that have that p (NaN elsewhere)."""
    from statsmodels.stats.multitest import multipletests

    out = ledger.copy()
    out["family"] = out["where"].map(family) if len(out) else []
    for col in P_COLUMNS:
        adj = pd.Series(np.nan, index=out.index, dtype=float)
        if col in out:
            for _fam, idx in out.groupby("family").groups.items():
                p = out.loc[idx, col].astype(float).dropna()
                if len(p):
                    adj[p.index] = multipletests(p.to_numpy(), alpha=alpha, method="holm")[1]
        out[f"{col}_holm"] = adj
    return out


def ledger_reading(ledger: pd.DataFrame) -> dict[str, Any]:
    """What a reader should take from a :func:`claims_ledger`, for the chapter's prose.

    ``ledger_supported_exact`` / ``_trained``: supported rows measured on the architecture
    (no training) / resting on paired runs. ``ledger_paper_outside_ci``: rows whose CI excludes
    the paper's difference (``_list`` names them). ``ledger_detect_above_paper`` of
    ``ledger_powered_rows`` (rows with n ≥ 2 and a paper difference): rows where the smallest
    difference n could detect exceeds the paper's, so *not resolved* is what n predicts.
    ``ledger_min_detectable``: the smallest such detectable difference (points).
    ``ledger_ci_rows``: trained rows with a confidence interval (n ≥ 2).
    ``pairing_rows`` (paired rows with n ≥ 2), ``pairing_smaller`` (those whose paired sd is
    below :func:`unpaired_sd`) and ``pairing_median_ratio`` (median paired / unpaired sd):
    how much pairing by seed removed.
    ``table4_paper_max_gap``: the largest |difference| the paper claims in Table 4;
    ``table4_min_detectable``: the smallest detectable difference of its rows with n ≥ 2.
    """
    sup = ledger[ledger["verdict"] == "supported"]
    out: dict[str, Any] = {"ledger_supported_exact": int((sup["unit"] != "points").sum()),
                           "ledger_supported_trained": int((sup["unit"] == "points").sum())}
    outside = ledger[ledger["paper in CI"].map(lambda v: v is False)]
    out["ledger_paper_outside_ci"] = len(outside)
    out["ledger_paper_outside_list"] = "; ".join(outside["claim"]) or "none"
    powered = ledger[(ledger["unit"] == "points") & (ledger["n"] >= 2)
                     & np.isfinite(ledger["paper"].astype(float))
                     & np.isfinite(ledger["detectable"].astype(float))]
    out["ledger_powered_rows"] = len(powered)
    out["ledger_detect_above_paper"] = int((powered["detectable"]
                                            > powered["paper"].abs()).sum())
    out["ledger_min_detectable"] = (f"{powered['detectable'].min():.2f}" if len(powered)
                                    else "n/a")
    out["ledger_ci_rows"] = int(((ledger["unit"] == "points")
                                 & np.isfinite(ledger["ci_low"].astype(float))).sum())
    ratio = (ledger["sd"].astype(float) / ledger["unpaired sd"].astype(float)).dropna()
    out["pairing_rows"] = len(ratio)
    out["pairing_smaller"] = int((ratio < 1).sum())
    out["pairing_median_ratio"] = f"{ratio.median():.2f}" if len(ratio) else "n/a"
    cost = ledger[ledger["unit"] != "points"]
    if len(cost) and "relative" in cost and np.isfinite(float(cost["relative"].iloc[0])):
        out["cost_saving_ours"] = f"{-float(cost['relative'].iloc[0]):.0%}"
        out["cost_saving_paper"] = f"{-float(cost['paper_relative'].iloc[0]):.0%}"
    else:
        out["cost_saving_ours"] = out["cost_saving_paper"] = "n/a"
    t4 = [abs(c.paper) for c in pair_claims() if c.other[0] == "table4"]
    out["table4_paper_max_gap"] = f"{max(t4):.2f}"
    t4_rows = powered[powered["where"] == "§4.4, Table 4"]
    out["table4_min_detectable"] = (f"{t4_rows['detectable'].min():.2f}" if len(t4_rows)
                                    else "n/a")
    return out


HEADLINE = "CF-DAN beats the baseline (all of Table 3)"
"""The ledger row that sums up Table 3: the full model against the baseline."""

NO_ATTENTION = "attention helps at all (CF-DAN vs no attention)"
"""The ledger row that asks whether any attention helps: the full model against a plain CNN
of the same trunk (our yardstick; the paper reports none)."""


def sd_upper(sd: float, n: int, alpha: float = ALPHA) -> float:
    """Upper end of the two-sided ``1 - alpha`` confidence interval of a normal sd estimated
    from ``n`` values: sd · sqrt((n - 1) / chi2(alpha / 2, n - 1)). NaN for n < 2."""
    from scipy import stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float(sd * np.sqrt((n - 1) / stats.chi2.ppf(alpha / 2, n - 1)))
