"""The ledger in words and short cells, for the chapters (§4.4-4.5).

:mod:`cfdan.analysis.claims` computes numbers and verdicts; this module holds the few
formatters whose wording changes with a verdict: a row's one-clause *reading*, the headline's
facts, the ledger as text cells and the one-screen verdict table of the landing page. Whole
sentences live in the chapters' Markdown, with these glued in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cfdan.analysis.claims import ALPHA, HEADLINE, detectable_difference, sd_upper


def row_reading(row: Mapping[str, Any]) -> str:
    """One clause on what a trained ledger row says, from its :func:`verdict`, interval and the
    one-sided p against the paper's difference."""
    v = row["verdict"]
    if v == "not run":
        return "waits for runs it needs"
    if row["unit"] != "points":
        return "measured exactly on the architecture"
    if v == "untestable (n = 1)":
        return "rests on one seed: no test at this n"
    paper_diff = float(row["paper"])
    if v == "supported":
        if not np.isfinite(paper_diff):
            return "supports the paper's direction"
        inside = row["ci_low"] <= paper_diff <= row["ci_high"]
        return "supports the paper's direction" + (
            ", and the paper's size lies in our interval" if inside else
            ", though not the paper's size")
    if v == "contradicted":
        return "points the other way than the paper, beyond seed noise"
    if v == "paper's effect excluded":
        return (f"excludes an effect of the paper's size at this scale: our interval ends "
                f"below it (one-sided p = {row['p_vs_paper']:.3f})")
    if not np.isfinite(paper_diff):
        return "cannot tell at this n"
    return "cannot tell: both no effect and the paper's lie within our interval"


def headline(ledger: pd.DataFrame, claim: str = HEADLINE) -> dict[str, Any]:
    """The facts of one ledger row for the prose (keys ``headline_...``): ``paper``, ``mean``,
    ``ci`` (as ``[lo, hi]``), ``n``, ``detectable``, ``detectable_upper`` (the detectable
    difference were the paired sd at the upper end of its 95 % interval, :func:`sd_upper`:
    how rough the power statement is; ``power_range`` sets it against the paper's difference),
    ``verdict`` and ``reading`` (:func:`row_reading`),
    numbers as signed two-decimal strings."""
    row = ledger[ledger["claim"] == claim].iloc[0]
    ci = _ci(row) or "none"
    det = f"{row['detectable']:.2f}" if np.isfinite(row["detectable"]) else "n/a"
    n = int(row["n"])
    upper = detectable_difference(sd_upper(float(row["sd"]), n), n)
    gap = abs(float(row["paper"]))
    if not (np.isfinite(upper) and np.isfinite(gap)):
        power_range = "which cannot be set against the paper's difference"
    elif upper <= gap:
        power_range = (f"which is still below the paper's {_signed(row['paper'])}, so the "
                       "power statement holds across that range")
    elif row["detectable"] <= gap:
        power_range = (f"which is above the paper's {_signed(row['paper'])}, so at this n the "
                       "power statement is not established")
    else:
        power_range = (f"which, like the estimate itself, is above the paper's "
                       f"{_signed(row['paper'])}")
    return {"headline_paper": _signed(row["paper"]), "headline_mean": _signed(row["mean"]),
            "headline_ci": ci, "headline_n": n, "headline_detectable": det,
            "headline_detectable_upper": f"{upper:.2f}" if np.isfinite(upper) else "n/a",
            "headline_power_range": power_range,
            "headline_verdict": row["verdict"], "headline_reading": row_reading(row)}


def _signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}" if np.isfinite(v) else "-"


def _ci(row: Mapping[str, Any]) -> str | None:
    """``"[lo, hi]"`` of a ledger row's interval, None without one."""
    if not np.isfinite(row["ci_low"]):
        return None
    return f"[{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"


def ledger_display(ledger: pd.DataFrame) -> pd.DataFrame:
    """:func:`claims_ledger` as text cells for the book (points of test accuracy)."""
    out = []
    for _i, r in ledger.iterrows():
        unit = "" if r["unit"] == "points" else f" {r['unit']}"
        if np.isfinite(r["paper"]):
            paper_cell = f"{_signed(r['paper'])}{unit} ({r['paper dataset']})"
        else:
            paper_cell = f"{'> 0' if r['paper side'] > 0 else '< 0'} ({r['paper dataset']})"
        run = r["verdict"] != "not run"
        exact = r["unit"] != "points"
        if not run:
            ours = ci = n = det = "-"
        elif exact:
            digits = 4
            ours, ci, n, det = f"{_signed(r['mean'], digits)}{unit}", "exact", "-", "-"
        else:
            ours = _signed(r["mean"])
            ci = _ci(r) or "-"
            n = str(int(r["n"]))
            det = f"{r['detectable']:.2f}" if np.isfinite(r["detectable"]) else "n too small"
        out.append({"claim": r["claim"], "where": r["where"], "comparison": r["comparison"],
                    "paper": paper_cell, "ours: FERPlus, paired mean": ours, "95 % CI": ci, "n": n,
                    "detectable at 80 % power": det, "verdict": r["verdict"],
                    "paper in our CI": {True: "yes", False: "no"}.get(r["paper in CI"], "-"),
                    "reading": row_reading(r), "runs": r["runs"], "note": r["note"]})
    return pd.DataFrame(out)


VERDICT_COLUMNS = ("claim", "paper", "ours: paired difference [95 % CI]", "n", "verdict")


def verdict_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """The claims ledger (:func:`cfdan.analysis.claims.claims_ledger`) on one screen: the claim,
    the paper's difference (a direction where it gives none), our paired mean with its 95 %
    t-interval, n and the verdict, indexed by the claim; the headline row first, then the
    ledger's order."""
    rows = []
    first = ledger["claim"] != HEADLINE  # False sorts first; a stable sort keeps the rest
    for _i, r in ledger.iloc[np.argsort(first.to_numpy(), kind="stable")].iterrows():
        exact = r["unit"] != "points"
        unit = "" if r["unit"] == "points" else f" {r['unit']}"
        if np.isfinite(r["paper"]):
            paper = f"{_signed(r['paper'])}{unit}"
        else:  # a direction the paper states in words, or one its design implies
            sign = "> 0" if r["paper side"] > 0 else "< 0"
            paper = (f"not reported ({sign} implied)" if "not reported" in r["paper dataset"]
                     else f"{sign} (in words)")
        if r["verdict"] == "not run":
            ours, n = "not run yet", "-"
        elif exact:
            ours, n = f"{_signed(r['mean'], 4)}{unit} (exact)", "-"
        else:
            ours = " ".join(filter(None, (_signed(r["mean"]), _ci(r))))
            n = str(int(r["n"]))
        rows.append(dict(zip(VERDICT_COLUMNS, (r["claim"], paper, ours, n, r["verdict"]),
                             strict=True)))
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS)).set_index("claim")


def glue_table(name: str, table: pd.DataFrame) -> None:
    """Glue ``table`` (not displayed here) for a ``{glue}`` directive on another page, as the
    landing page shows the verdict table."""
    from myst_nb import glue

    glue(name, table, display=False)


def p_text(p: float) -> str:
    """A p-value with its relation, for the prose: ``< 0.001``, ``= 0.048``, ``= 0.39`` (three
    decimals below 0.1; a p just under :data:`cfdan.analysis.ALPHA` never prints as equal to it)."""
    if p < 0.001:
        return "< 0.001"
    text = f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    return f"< {text}" if p < ALPHA <= float(text) else f"= {text}"
