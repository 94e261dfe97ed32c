"""Fig. 10 of the results chapter (§4.5): how accuracy depends on PCP's parameters.

The grid of 13 PCP settings around the paper's best (:func:`cfdan.analysis.runs.fig10_points`):
the PCP curves it spans (:func:`pcp_grid_curves`), the accuracy of each setting averaged over
its seeds (:func:`sensitivity_points`, the centre being the full model), the band of the full
model's seed noise that a one-seed point is read against (:data:`FIG10_BAND`,
:func:`sensitivity_screen`), the figure, and the facts the chapter's prose quotes. The claims
of §4.5 about the same grid are rows of the ledger (:mod:`cfdan.analysis.claims`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan import paper
from cfdan.analysis import book, claims, runs
from cfdan.analysis.runs import FIG10_CENTRE, FULL_SOURCE, fig10_points
from cfdan.analysis.tables import hardware_label


# --------------------------------------------------------------------------- the grid's PCP curves
def pcp_grid_curves(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None,
                    x: np.ndarray | None = None) -> dict[str, dict[float, np.ndarray]]:
    """PCP over the Fig. 10 grid: per parameter, the curve of each of its values with the other
    two parameters at the paper's best setting (on ``x``, default 601 points in [-1.5, 1.5])."""
    import torch

    from cfdan.pcp import pcp

    grid = paper.FIG10_GRID if grid is None else grid
    best = paper.BEST_PCP if best is None else best
    xs = torch.as_tensor(np.linspace(-1.5, 1.5, 601) if x is None else x, dtype=torch.float64)
    out: dict[str, dict[float, np.ndarray]] = {}
    for name, values in grid.items():
        out[name] = {}
        for v in values:
            prm = {**best, name: v}
            out[name][v] = pcp(xs, prm["x_L"], prm["P1"], prm["s_L"]).numpy()
    return out


def pcp_grid_spread(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per parameter of the Fig. 10 grid: the largest gap between two of its PCP curves."""
    curves = pcp_grid_curves(grid, best)
    return {name: float(np.ptp(np.stack(list(c.values())), axis=0).max())
            for name, c in curves.items()}


def pcp_grid_figure(grid: Mapping[str, Sequence[float]] | None = None,
                    best: Mapping[str, float] | None = None):
    """PCP over the Fig. 10 grid: one panel per parameter, the others at the paper's best."""
    import matplotlib.pyplot as plt

    best = paper.BEST_PCP if best is None else best
    x = np.linspace(-1.5, 1.5, 601)
    curves = pcp_grid_curves(grid, best, x)
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), sharey=True)
    for ax, (name, by_value) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for v, y in by_value.items():
            ax.plot(x, y, lw=1.4,
                    label=f"{name} = {v:g}" + (" (best)" if v == best[name] else ""))
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"varying {name}", xlabel="x")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("PCP(x)")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------- accuracy over the grid
def sensitivity_points(full: tuple[str, str] = FULL_SOURCE, experiment: str = "fig10",
                       metric: str = "test.accuracy", current: bool = True,
                       root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Fig. 10: per setting, ``metric`` (%) averaged over the seeds of ``experiment``.

    The centre (the full model, from ``full``) is averaged over the same seeds as the grid, so
    that every point shares them (all the full model's seeds while the grid has none).
    """
    df = runs.frame(root)
    pts = {pt: runs.point(df, pt, experiment, full, metric, current) for pt in fig10_points()}
    grid_seeds = set().union(*(set(r.rows.index) for pt, r in pts.items()
                               if pt != FIG10_CENTRE))
    rows = []
    for (s_l, x_l, p1), r in pts.items():
        centre = (s_l, x_l, p1) == FIG10_CENTRE
        seeds = sorted(set(r.rows.index) & grid_seeds) if grid_seeds and centre \
            else sorted(r.rows.index)
        vals = [r.values[s] for s in seeds]
        rows.append({"s_L": s_l, "x_L": x_l, "P1": p1, "centre": centre,
                     "accuracy": float(np.mean(vals)) if vals else float("nan"),
                     "seeds": len(vals), "source": r.label,
                     "hardware": hardware_label([r.rows.at[s, "record"] for s in seeds])})
    return pd.DataFrame(rows)


FIG10_BAND = 2 * np.sqrt(2)
"""Half-width of Fig. 10's grey band in units of the full model's seed-to-seed sd: two one-seed
runs of the same setting differ by more than 2√2 sd about 5 % of the time (normal seed noise,
sd taken as known), so a one-seed point outside the band is unlikely to be seed noise alone."""


def sensitivity_screen(points: pd.DataFrame, spread: tuple[float, float, int]) -> pd.DataFrame:
    """Fig. 10's band as a screen: per grid setting with a run, its accuracy minus the centre's
    (points) and ``position`` against the band (``inside`` / ``above`` / ``below`` the centre ±
    :data:`FIG10_BAND` sd; ``n/a`` without an sd). ``points`` from :func:`sensitivity_points`,
    ``spread`` = mean, sd, n from :func:`cfdan.analysis.claims.full_seed_spread`."""
    centre = points.loc[points["centre"], "accuracy"]
    c = float(centre.iloc[0]) if len(centre) else float("nan")
    half = FIG10_BAND * spread[1]
    grid = points[~points["centre"] & points["accuracy"].notna()]
    diff = grid["accuracy"] - c
    position = np.where(~np.isfinite(diff) | ~np.isfinite(half), "n/a",
                        np.where(diff > half, "above", np.where(diff < -half, "below", "inside")))
    return pd.DataFrame({"s_L": grid["s_L"], "x_L": grid["x_L"], "P1": grid["P1"],
                         "accuracy": grid["accuracy"], "minus centre": diff,
                         "position": position}).reset_index(drop=True)


def plot_sensitivity(axes, points: pd.DataFrame, spread: tuple[float, float, int]) -> None:
    """Fig. 10 in two panels: accuracy over x_L, one line per s_L (P1 at the best), and over P1
    (s_L, x_L at the best). The grey band is the centre point ± :data:`FIG10_BAND` sd, sd of the
    full model's test accuracy over its seeds (``spread`` = mean, sd, n from
    :func:`cfdan.analysis.claims.full_seed_spread`)."""
    best = paper.BEST_PCP
    _mean, sd, k = spread
    centre = points[points["centre"]]
    c = float(centre["accuracy"].iloc[0]) if len(centre) else float("nan")
    c_seeds = int(centre["seeds"].iloc[0]) if len(centre) else 0
    a, b = axes
    on_p1 = np.isclose(points["P1"], best["P1"])
    for s_l, g in points[on_p1].groupby("s_L"):
        g = g.sort_values("x_L")
        a.plot(g["x_L"], g["accuracy"], marker="o", label=f"$s_L$ = {s_l:g}")
    line = points[np.isclose(points["s_L"], best["s_L"]) & np.isclose(points["x_L"], best["x_L"])]
    line = line.sort_values("P1")
    b.plot(line["P1"], line["accuracy"], marker="o", color="C3",
           label=f"$s_L$ = {best['s_L']:g}, $x_L$ = {best['x_L']:g}")
    grid_run = points.loc[~points["centre"], "accuracy"].notna().any()
    missing = "" if grid_run else ("not run" if not np.isfinite(c) else
                                   "grid not run\n(centre only: the full model)")
    for ax, name in ((a, "x_L"), (b, "P1")):
        if np.isfinite(c) and np.isfinite(sd):
            ax.axhspan(c - FIG10_BAND * sd, c + FIG10_BAND * sd, color="grey", alpha=0.2, lw=0,
                       label=f"centre ({c_seeds} seed{'s' * (c_seeds != 1)}) ± 2√2 sd "
                             f"(sd over the full model's {k} seeds)")
        if missing:
            ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes)
        values = sorted(paper.FIG10_GRID[name])
        pad = 0.3 * (values[1] - values[0])
        ax.set_xticks(values)
        ax.set_xlim(values[0] - pad, values[-1] + pad)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)  # under the panel: the points fill the plot as the grid runs
    a.set(xlabel="$x_L$", ylabel="test accuracy (%)", title=f"$P_1$ = {best['P1']:g}")
    b.set(xlabel="$P_1$", title=f"$s_L$ = {best['s_L']:g}, $x_L$ = {best['x_L']:g}")


def sensitivity_table(experiment: str = "fig10", full: tuple[str, str] | None = None
                      ) -> pd.DataFrame:
    """Fig. 10 as a table: every setting of the grid (:func:`sensitivity_points`), its test
    accuracy (%) averaged over the seeds it has, and how many; the centre is the full model
    (read from ``full``, default :data:`cfdan.analysis.runs.FULL_SOURCE`)."""
    pts = sensitivity_points(full or FULL_SOURCE, experiment)
    acc = [f"{v:.2f}" if np.isfinite(v) else "not run" for v in pts["accuracy"]]
    return pd.DataFrame({
        "s_L": pts["s_L"], "x_L": pts["x_L"], "P1": pts["P1"],
        "setting": np.where(pts["centre"], "paper's best (the full model)", "grid"),
        "test accuracy % (FERPlus)": acc, "seeds": pts["seeds"], "runs from": pts["source"],
        "hardware": pts["hardware"]})


# ------------------------------------------------------------------ the chapter's figure and facts
def fig10_facts(full: tuple[str, str] = FULL_SOURCE) -> dict[str, Any]:
    """Fig. 10's state and band, for the prose: ``fig10_grid_runs`` / ``fig10_grid_planned``
    (settings other than the centre with a run / planned), ``fig10_sd_seeds`` (seeds behind the
    band's sd) and ``fig10_exact_wider`` (how many times wider than ± 2√2 sd an exact 95 %
    prediction range for the difference of two one-seed runs is, the sd being estimated from
    those seeds: t(0.975, n - 1) / 2; "n/a" below 2 seeds)."""
    from scipy import stats

    full = book.book_source(full)
    pts = sensitivity_points(full)
    grid = pts[~pts["centre"]]
    _m, _sd, k = claims.full_seed_spread(full)
    wider = f"{stats.t.ppf(0.975, k - 1) / 2:.1f}" if k >= 2 else "n/a"
    ran, planned = int((grid["seeds"] > 0).sum()), len(grid)
    return {"fig10_grid_runs": ran, "fig10_grid_planned": planned, "fig10_sd_seeds": k,
            "fig10_exact_wider": wider}


def ordinal(k: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def setting_text(s_l: float, x_l: float, p1: float) -> str:
    """A Fig. 10 setting as the prose names it: "s_L 1.85, x_L 0.19, P1 -0.24"."""
    return f"s_L {s_l:g}, x_L {x_l:g}, P1 {p1:g}"


def fig10_screen(full: tuple[str, str] = FULL_SOURCE) -> dict[str, Any]:
    """Fig. 10 read through its band (:func:`sensitivity_screen`), for the prose:
    ``fig10_band_half`` (points), ``fig10_inside`` / ``fig10_above`` / ``fig10_below``
    (grid settings with a run), ``fig10_centre_rank`` of ``fig10_ranked`` (settings with a
    value, the centre included; an ordinal, "1st" = highest, :func:`ordinal`), ``fig10_best``
    / ``fig10_best_gap`` (the highest setting and its lead over the centre), ``fig10_span``
    (highest − lowest) and ``fig10_outside``, the settings outside the band with their
    position and difference from the centre ("none" when all are inside)."""
    full = book.book_source(full)
    pts = sensitivity_points(full)
    spread = claims.full_seed_spread(full)
    screen = sensitivity_screen(pts, spread)
    half = FIG10_BAND * spread[1]
    ran = pts[pts["accuracy"].notna()]
    counts = screen["position"].value_counts()
    facts: dict[str, Any] = {
        "fig10_band_half": f"{half:.2f}" if np.isfinite(half) else "n/a",
        **{f"fig10_{k}": int(counts.get(k, 0)) for k in ("inside", "above", "below")},
        "fig10_ranked": len(ran)}
    centre = ran[ran["centre"]]
    if len(screen) == 0 or len(centre) == 0:
        return facts | {"fig10_centre_rank": "n/a", "fig10_best": "n/a", "fig10_best_gap": "n/a",
                        "fig10_span": "n/a", "fig10_outside": "n/a"}
    c = float(centre["accuracy"].iloc[0])
    top = ran.loc[ran["accuracy"].idxmax()]
    facts |= {"fig10_centre_rank": ordinal(int((ran["accuracy"] > c).sum()) + 1),
              "fig10_best": setting_text(top["s_L"], top["x_L"], top["P1"]),
              "fig10_best_gap": f"{top['accuracy'] - c:+.2f}",
              "fig10_span": f"{np.ptp(ran['accuracy']):.2f}"}
    out = screen[screen["position"] != "inside"]
    outside = "; ".join(f"{setting_text(r['s_L'], r['x_L'], r['P1'])} {r['position']} "
                        f"({r['minus centre']:+.2f})" for _i, r in out.iterrows())
    return facts | {"fig10_outside": (outside or "none") if np.isfinite(half) else "n/a"}


def sensitivity_figure(full: tuple[str, str] = FULL_SOURCE):
    """Fig. 10: accuracy over the PCP grid with the full model's seed spread as a band
    (:func:`plot_sensitivity`)."""
    import matplotlib.pyplot as plt

    full = book.book_source(full)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    plot_sensitivity(axes, sensitivity_points(full), claims.full_seed_spread(full))
    fig.tight_layout()
    return fig
