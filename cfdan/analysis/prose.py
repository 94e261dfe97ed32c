"""The ledger in words and short cells, for the chapters (§4.4-4.5).

:mod:`cfdan.analysis.claims` computes numbers and verdicts; this module holds the few
formatters whose wording changes with a verdict: a row's one-clause *reading*, the headline's
facts, the ledger as text cells and the one-screen verdict table of the landing page. Whole
sentences live in the chapters' Markdown, with these glued in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfdan.analysis.claims import ALPHA, HEADLINE, MARGIN, detectable_difference, sd_upper

READINGS = {
    "not run": "waits for runs it needs",
    "exact": "measured exactly on the architecture",
    "one seed": "rests on one seed: no test at this n",
    "direction": "supports the paper's direction",
    "size inside": "supports the paper's direction, and the paper's size lies in our interval",
    "size outside": "supports the paper's direction, though not the paper's size",
    "other way": "points the other way than the paper, beyond seed noise",
    "other way, raw": ("points the other way than the paper: below 0 on its own "
                       "(p = {p_zero:.3f}), though not after Holm's correction within its table "
                       "(p = {p_zero_holm:.2f})"),
    "other way, raw, size excluded": (
        "excludes the paper's size even after Holm's correction (one-sided p = "
        "{p_vs_paper_holm:.4f}) and points the other way: below 0 on its own (p = {p_zero:.3f}), "
        "though not after Holm's correction within its table (p = {p_zero_holm:.2f})"),
    "direction, raw": ("supports the paper's direction on its own (p = {p_zero:.3f}), though "
                       "not after Holm's correction within its table (p = {p_zero_holm:.2f})"),
    "excluded": ("excludes an effect of the paper's size at this scale: our interval ends below "
                 "it (one-sided p = {p_vs_paper:.3f})"),
    "cannot tell": "cannot tell at this n",
    "both inside": "cannot tell: both no effect and the paper's lie within our interval",
}
"""The one-clause readings of a ledger row, by :func:`reading_key`."""


def reading_key(row: Mapping[str, Any]) -> str:
    """Which of :data:`READINGS` a trained ledger row gets, from its verdict, its interval,
    whether the paper gives a size and whether the test against 0 survives Holm's correction
    within its table (``", raw"`` where it does not)."""
    v = row["verdict"]
    if v == "not run":
        return "not run"
    if row["unit"] != "points":
        return "exact"
    if v == "untestable (n = 1)":
        return "one seed"
    paper_diff = float(row["paper"])
    raw = not _holds_after_holm(row, "p_zero")
    if v == "supported":
        if raw:
            return "direction, raw"
        if not np.isfinite(paper_diff):
            return "direction"
        inside = row["ci_low"] <= paper_diff <= row["ci_high"]
        return "size inside" if inside else "size outside"
    if v == "contradicted":
        if not raw:
            return "other way"
        return ("other way, raw, size excluded" if _rejects_after_holm(row, "p_vs_paper")
                else "other way, raw")
    if v == "paper's effect excluded":
        return "excluded"
    return "cannot tell" if not np.isfinite(paper_diff) else "both inside"


def row_reading(row: Mapping[str, Any]) -> str:
    """One clause on what a ledger row says: :data:`READINGS` of :func:`reading_key`."""
    return READINGS[reading_key(row)].format(**row)


def headline(ledger: pd.DataFrame, claim: str = HEADLINE,
             prefix: str = "headline") -> dict[str, Any]:
    """The facts of one ledger row for the prose (keys ``<prefix>_...``): ``paper``, ``mean``,
    ``ci`` (as ``[lo, hi]``), ``n``, ``detectable``, ``detectable_upper`` (the detectable
    difference were the paired sd at the upper end of its 95 % interval, :func:`sd_upper`:
    how rough the power statement is), ``verdict``, ``verdict_cell`` (:func:`verdict_cell`:
    with † and the equivalence test) and ``reading`` (:func:`row_reading`),
    numbers as signed two-decimal strings."""
    row = ledger[ledger["claim"] == claim].iloc[0]
    ci = _ci(row) or "none"
    det = f"{row['detectable']:.2f}" if np.isfinite(row["detectable"]) else "n/a"
    n = int(row["n"])
    upper = detectable_difference(sd_upper(float(row["sd"]), n), n)
    facts = {"paper": _signed(row["paper"]), "mean": _signed(row["mean"]), "ci": ci, "n": n,
             "detectable": det,
             "detectable_upper": f"{upper:.2f}" if np.isfinite(upper) else "n/a",
             "verdict": row["verdict"], "verdict_cell": verdict_cell(row),
             "reading": row_reading(row)}
    return {f"{prefix}_{k}": v for k, v in facts.items()}


def _signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}" if np.isfinite(v) else "-"


def _ci(row: Mapping[str, Any]) -> str | None:
    """``"[lo, hi]"`` of a ledger row's interval, None without one."""
    if not np.isfinite(row["ci_low"]):
        return None
    return f"[{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"


def _paper_cell(r: Mapping[str, Any]) -> str:
    """The paper's difference (with its unit and, for the cost row, its relative saving), or
    the direction it states in words or its design implies."""
    unit = "" if r["unit"] == "points" else f" {r['unit']}"
    if np.isfinite(r["paper"]):
        rel = r.get("paper_relative", float("nan"))
        return f"{_signed(r['paper'])}{unit}" + (f" ({rel:+.0%})" if _finite(rel) else "")
    sign = "> 0" if r["paper side"] > 0 else "< 0"
    return (f"not reported ({sign} implied)" if "not reported" in r["paper dataset"]
            else f"{sign} (in words)")


def _ours_cell(r: Mapping[str, Any]) -> str:
    """Our paired mean and 95 % t-interval; an exact measurement as such."""
    if r["verdict"] == "not run":
        return "not run yet"
    if r["unit"] != "points":
        rel = r.get("relative", float("nan"))
        how = "by construction" if r.get("by_construction") else "exact"
        return (f"{_signed(r['mean'], 4)} {r['unit']}"
                + (f" ({rel:+.0%}, {how})" if _finite(rel) else f" ({how})"))
    return " ".join(filter(None, (_signed(r["mean"]), _ci(r))))


def _n_cell(r: Mapping[str, Any]) -> str:
    return "-" if r["verdict"] == "not run" or r["unit"] != "points" else str(int(r["n"]))


def per_seed(r: Mapping[str, Any]) -> str:
    """A row's paired differences, seed by seed (``"s0 -0.83, s1 -0.22"``), or ``-``."""
    d = r.get("per seed")
    if not isinstance(d, Mapping) or not d:
        return "-"
    return ", ".join(f"s{k} {_signed(v)}" for k, v in sorted(d.items()))


RAW_ONLY = "†"
"""Marks a verdict that holds at the raw level but not after Holm's correction in its table."""

_VERDICT_P = {"supported": "p_zero", "contradicted": "p_zero",
              "paper's effect excluded": "p_vs_paper"}
"""Which p-value each verdict of :func:`cfdan.analysis.claims.verdict` rests on."""


def _holds_after_holm(r: Mapping[str, Any], col: str) -> bool:
    p = r.get(f"{col}_holm", float("nan"))
    return not _finite(p) or p < ALPHA  # no p (exact, or no test): nothing to correct


def _rejects_after_holm(r: Mapping[str, Any], col: str) -> bool:
    """The row has a Holm-adjusted ``col`` p-value, and it is below α."""
    p = r.get(f"{col}_holm", float("nan"))
    return _finite(p) and p < ALPHA


def verdict_cell(r: Mapping[str, Any]) -> str:
    """The verdict, with "no effect ≥ 1 pt" where the TOST against ±:data:`MARGIN` holds;
    each marked :data:`RAW_ONLY` when Holm's adjusted p within its table is not below α. A
    *contradicted†* row whose test against the paper's size survives Holm adds "paper's size
    excluded": the part of the verdict that does hold."""
    col = _VERDICT_P.get(r["verdict"])
    raw_only = col is not None and not _holds_after_holm(r, col)
    out = r["verdict"] + (RAW_ONLY if raw_only else "")
    if raw_only and r["verdict"] == "contradicted" and _rejects_after_holm(r, "p_vs_paper"):
        out += "; paper's size excluded"
    tost = r.get("p_tost", float("nan"))
    if _finite(tost) and tost < ALPHA:
        out += f"; no effect ≥ {MARGIN:g} pt" + ("" if _holds_after_holm(r, "p_tost")
                                                  else RAW_ONLY)
    return out


def p_cell(r: Mapping[str, Any]) -> str:
    """The row's p-values, raw (Holm within its table): against 0, against the paper's
    difference, and the TOST against ±1 point; ``-`` where none applies."""
    parts = []
    for col, label in (("p_zero", "vs 0"), ("p_vs_paper", "vs paper"), ("p_tost", "±1")):
        p = r.get(col, float("nan"))
        if _finite(p):
            parts.append(f"{label} {_p_short(p)} ({_p_short(r.get(col + '_holm', p))})")
    return "; ".join(parts) or "-"


def _p_short(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _finite(v: Any) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def _ordered(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger with the headline row first, the rest in the ledger's order (stable)."""
    first = ledger["claim"] != HEADLINE  # False sorts first
    return ledger.iloc[np.argsort(first.to_numpy(), kind="stable")]


LEDGER_COLUMNS = ("claim", "paper", "ours [95 % CI]", "per seed", "n", "verdict",
                  "p: raw (Holm)")
"""Chapter 4's ledger: seven columns; the rest is in :func:`ledger_details`."""


def ledger_display(ledger: pd.DataFrame) -> pd.DataFrame:
    """:func:`claims_ledger` as chapter 4 shows it (points of FERPlus test accuracy): the
    columns of :data:`LEDGER_COLUMNS`, indexed by claim, the headline row first."""
    rows = [dict(zip(LEDGER_COLUMNS, (r["claim"], _paper_cell(r), _ours_cell(r), per_seed(r),
                                      _n_cell(r), verdict_cell(r), p_cell(r)), strict=True))
            for _i, r in _ordered(ledger).iterrows()]
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS)).set_index("claim")


def ledger_details(ledger: pd.DataFrame) -> pd.DataFrame:
    """What the seven columns leave out, for the appendix: where the claim is made, the
    comparison, the paper's data set, the detectable difference, the paired and unpaired sd,
    the runs each side has, a one-clause reading and notes."""
    out = []
    for _i, r in _ordered(ledger).iterrows():
        trained = r["unit"] == "points" and r["verdict"] != "not run"
        det = (f"{r['detectable']:.2f}" if _finite(r["detectable"])
               else ("n too small" if trained else "-"))
        sds = "-"
        if trained and _finite(r["sd"]):
            sds = f"{r['sd']:.2f}" + (f" / {r['unpaired sd']:.2f}"
                                      if _finite(r.get("unpaired sd")) else "")
        out.append({"claim": r["claim"], "where": r["where"], "comparison": r["comparison"],
                    "paper dataset": r["paper dataset"], "detectable at 80 % power": det,
                    "sd paired / unpaired": sds,
                    "paper in our CI": {True: "yes", False: "no"}.get(r["paper in CI"], "-"),
                    "reading": row_reading(r), "runs": r["runs"], "note": note_cell(r)})
    return pd.DataFrame(out).set_index("claim")


def note_cell(r: Mapping[str, Any]) -> str:
    """A ledger row's notes (:func:`cfdan.analysis.claims._row`), Fig. 10's best-other count
    (its ``compared ...`` columns) and, for a one-seed value,
    its size in units of the sd seed noise alone gives it (the ``noise ...`` columns of
    :func:`cfdan.analysis.claims._noise`): a scale for the eye, not a test."""
    notes = [r["note"]] if r.get("note") else []
    if isinstance(r.get("best other"), tuple):  # Fig. 10's centre against the best other point
        s_l, x_l, p1 = r["best other"]
        missing = int(r["compared not run"])
        notes.append(f"best other: s_L {s_l:g}, x_L {x_l:g}, P1 {p1:g}; "
                     f"{int(r['compared supported'])} of the {int(r['compared'])} comparisons run "
                     f"supported, {int(r['compared contradicted'])} contradicted"
                     + (f" ({missing} not run)" if missing else ""))
    if _finite(r.get("noise z")):
        noise = (f"one seed: the value is {r['noise z']:+.1f} x the sd of {r['noise of']} "
                 f"({r['noise sd']:.2f} points = {r['noise factor']} x the full model's seed sd "
                 f"{r['seed sd']:.2f}, {int(r['noise seeds'])} seeds); not a test")
        if _finite(r.get("noise min of")) and r["noise min of"] > 1:
            noise += (f"; the smallest of {int(r['noise min of'])} leads, so seed noise alone "
                      "pulls it below 0 more often than one pair's")
        notes.append(noise)
    return "; ".join(notes)


VERDICT_COLUMNS = ("claim", "paper", "ours: paired difference [95 % CI]", "per seed", "n",
                   "verdict")


def verdict_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """The claims ledger (:func:`cfdan.analysis.claims.claims_ledger`) on one screen: the claim,
    the paper's difference (a direction where it gives none), our paired mean with its 95 %
    t-interval, the per-seed differences, n and the verdict, indexed by the claim; the
    headline row first, then the ledger's order."""
    rows = [dict(zip(VERDICT_COLUMNS, (r["claim"], _paper_cell(r), _ours_cell(r), per_seed(r),
                                       _n_cell(r), verdict_cell(r)), strict=True))
            for _i, r in _ordered(ledger).iterrows()]
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS)).set_index("claim")


def exact_verdict(holds: Sequence[bool | None]) -> str:
    """*supported* when every settled check holds, *contradicted* when none does, *mixed*
    otherwise; *not run* without a settled check (None: a check that cannot decide)."""
    got = {bool(h) for h in holds if h is not None and h == h}
    return {frozenset({True}): "supported", frozenset({False}): "contradicted"}.get(
        frozenset(got), "mixed" if got else "not run")


def pcp_rows(checks: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """Chapter 1's claims in :func:`verdict_table`'s columns: C² continuity and ReLU's
    neuron death from :func:`cfdan.pcp.report.check_claims` (exact, SymPy and autograd), and
    "faster than Sigmoid and Tanh" from the stored GPU timings
    (:func:`cfdan.pcp.report.stored_speed_claims`: PCP / Sigmoid time over every call, mode and
    pass)."""
    def check(prefix: str) -> Mapping[str, Any]:
        return checks[checks["claim"].str.startswith(prefix)].iloc[0]

    c2, death = check("C2 continuous"), check("solves ReLU's neuron death")
    rows = [("PCP is C² continuous (§3.4)", "C²",
             f"second derivative jumps ({c2['computed']}; exact)", exact_verdict([c2["holds"]])),
            ("PCP solves ReLU's neuron death (§3.4)", "PCP′ ≠ 0 for x < 0",
             "PCP′ = 0 for x ≤ −1 (exact)", exact_verdict([death["holds"]]))]
    if len(speed):
        r = speed["PCP / Sigmoid"].astype(float)
        rows.append(("PCP is faster than Sigmoid and Tanh (§4.4)", "faster",
                     f"{r.min():.2f}–{r.max():.2f} × Sigmoid's time ({len(r)} GPU timings)",
                     exact_verdict(list(speed["faster than both"]))))
    else:
        rows.append(("PCP is faster than Sigmoid and Tanh (§4.4)", "faster", "not run yet",
                     "not run"))
    return pd.DataFrame([dict(zip(VERDICT_COLUMNS, (c, p, o, "-", "-", v), strict=True))
                         for c, p, o, v in rows], columns=list(VERDICT_COLUMNS)
                        ).set_index("claim")


def level_row(paper_acc: float, ours: Sequence[tuple[str, Sequence[float]]]) -> pd.DataFrame:
    """The absolute level in :func:`verdict_table`'s columns: the paper's FERPlus test
    accuracy beside ours, one ``(label, accuracies in points)`` per profile."""
    parts = []
    for label, vals in ours:
        v = np.asarray(vals, dtype=float)
        if len(v):
            spread = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
            parts.append(f"{v.mean():.2f}{spread} {label} (n = {len(v)})")
    row = {"paper": f"{paper_acc:.2f} %", "ours: paired difference [95 % CI]":
           "; ".join(parts) or "not run yet", "per seed": "-", "n": "-",
           "verdict": "below the paper: from scratch, smaller scale"}
    return pd.DataFrame([row], index=pd.Index(["absolute level (FERPlus test accuracy)"],
                                              name="claim"))


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
