"""The claims ledger of §4.4-4.5 (cfdan.analysis.claims.claims_ledger) on a store of hand-made records.

The ``store`` fixture (conftest.py) replaces the experiment files by temporary ones (smoke
profile, five seeds for Table 3 and 4, three for Fig. 10), and every record is written with
:func:`cfdan.results.save_record` from the run configs those files resolve to, so the ledger
sees records exactly as a sweep leaves them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from records import BASE, FIG10_SEEDS, SEEDS, fig10_name, run_config, save_run
from scipy import stats

from cfdan import paper, results
from cfdan.analysis import attention_maps, book, claims, prose, runs, sensitivity
from cfdan.analysis import tables as report
from cfdan.training import config


def row(ledger, claim: str):
    got = ledger[ledger["claim"] == claim]
    assert len(got) == 1, claim
    return got.iloc[0]


# --------------------------------------------------------------------------- statistics
def test_detectable_difference_has_the_stated_power():
    """At the returned difference a simulated paired t-test rejects in 80 % of trials."""
    rng = np.random.default_rng(0)
    for n in (3, 5):
        delta = claims.detectable_difference(1.0, n)
        d = rng.normal(delta, 1.0, size=(40_000, n))
        t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
        rate = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
        assert rate == pytest.approx(0.80, abs=0.012), n
    # textbook values (one-sample/paired t, alpha 0.05 two-sided, power 0.8): d = 0.996 at
    # n = 10 and 0.529 at n = 30; the result scales with sd
    assert claims.detectable_difference(1.0, 10) == pytest.approx(0.996, abs=0.002)
    assert claims.detectable_difference(2.0, 30) == pytest.approx(2 * 0.529, abs=0.004)
    assert claims.detectable_difference(0.0, 5) == 0.0
    assert np.isnan(claims.detectable_difference(1.0, 1))
    assert claims.detectable_difference(1.0, 2) > 10  # two seeds detect almost nothing


def test_paired_summary_verdicts_follow_the_ci():
    up = [0.9, 1.1, 1.0, 0.95]
    s = claims.paired_summary(up, side=1.0)
    half = stats.t.ppf(0.975, 3) * np.std(up, ddof=1) / 2
    assert s["ci_low"] == pytest.approx(np.mean(up) - half)
    assert s["ci_high"] == pytest.approx(np.mean(up) + half)
    assert s["verdict"] == "supported" and s["n"] == 4
    assert claims.paired_summary(up, side=-1.0)["verdict"] == "contradicted"
    down = [-x for x in up]
    assert claims.paired_summary(down, side=-1.0)["verdict"] == "supported"
    assert claims.paired_summary(down, side=1.0)["verdict"] == "contradicted"
    assert claims.paired_summary([1.0, -1.0, 0.5], side=1.0)["verdict"] == \
        "not resolved at this n"
    one = claims.paired_summary([5.0], side=1.0)
    assert one["verdict"] == "untestable (n = 1)" and one["mean"] == 5.0
    assert np.isnan(one["ci_low"]) and np.isnan(one["detectable"])


@pytest.mark.parametrize("lo, hi, n, delta, want", [
    (0.2, 1.0, 3, 2.0, "supported"),
    (-1.0, -0.2, 3, 2.0, "contradicted"),
    (-1.5, 0.3, 3, 2.33, "paper's effect excluded"),
    (-1.5, 2.5, 3, 2.33, "not resolved at this n"),
    (-1.5, 0.3, 3, float("nan"), "not resolved at this n"),  # a direction only: no size to test
    (float("nan"), float("nan"), 1, 2.0, "untestable (n = 1)"),
    (float("nan"), float("nan"), 0, 2.0, "not run"),
])
def test_verdict_scheme(lo, hi, n, delta, want):
    assert claims.verdict(lo, hi, n, delta) == want
    assert want in claims.VERDICTS


def test_paired_summary_matches_scipy_and_tests_the_papers_size():
    d = np.array([-0.62, -1.01, -0.17])  # the shape of our headline row: mean -0.60, n = 3
    s = claims.paired_summary(d, side=1.0, paper_diff=2.33)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert s["verdict"] == "paper's effect excluded"
    assert s["p_vs_paper"] == pytest.approx(
        stats.ttest_1samp(d, 2.33, alternative="less").pvalue)
    # the paper's effect negative (a cost that should fall): the test runs in its direction
    neg = claims.paired_summary(-d, side=-1.0, paper_diff=-2.33)
    assert neg["verdict"] == "paper's effect excluded"
    assert neg["p_vs_paper"] == pytest.approx(s["p_vs_paper"])
    # the upper end at or above the paper's difference: not resolved, p large
    wide = claims.paired_summary([-2.0, 3.0, 4.0], side=1.0, paper_diff=1.0)
    assert wide["verdict"] == "not resolved at this n" and wide["p_vs_paper"] > 0.5


def test_p_values_match_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import ttost_paired

    d = np.array([0.2, -0.3, 0.1, 0.05, -0.1])
    s = claims.paired_summary(d, side=1.0, paper_diff=2.0)
    assert s["p_zero"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    assert s["p_tost"] == pytest.approx(ttost_paired(d, np.zeros_like(d), -1.0, 1.0)[0])
    assert s["p_tost"] < 0.05  # a tight spread around 0: no effect of 1 point or more
    wide = claims.paired_summary([-2.0, 3.0, 0.5], side=1.0)
    assert wide["p_tost"] > 0.05


def test_holm_corrects_within_each_table_only():
    from statsmodels.stats.multitest import multipletests

    ledger = pd.DataFrame({
        "where": ["§4.4, Table 3", "ours, Table 3", "§4.4, Table 3", "§4.4, Table 4"],
        "p_zero": [0.01, 0.04, np.nan, 0.01], "p_vs_paper": [0.02, np.nan, 0.03, np.nan],
        "p_tost": [np.nan] * 4})
    got = claims.with_holm(ledger)
    assert list(got["family"]) == ["Table 3", "Table 3", "Table 3", "Table 4"]
    want = multipletests([0.01, 0.04], method="holm")[1]
    assert got["p_zero_holm"].iloc[:2].tolist() == pytest.approx(want.tolist())
    assert np.isnan(got["p_zero_holm"].iloc[2])
    assert got["p_zero_holm"].iloc[3] == pytest.approx(0.01)  # alone in its table
    assert got["p_vs_paper_holm"].iloc[[0, 2]].tolist() == pytest.approx(
        multipletests([0.02, 0.03], method="holm")[1].tolist())
    assert got["p_tost_holm"].isna().all()


def test_verdict_cell_marks_what_holm_does_not_keep():
    base = {"verdict": "paper's effect excluded", "p_vs_paper": 0.02, "p_vs_paper_holm": 0.04,
            "p_tost": float("nan")}
    assert prose.verdict_cell(base) == "paper's effect excluded"
    assert prose.verdict_cell(base | {"p_vs_paper_holm": 0.06}) == \
        "paper's effect excluded" + prose.RAW_ONLY
    tost = base | {"p_tost": 0.01, "p_tost_holm": 0.2}
    assert prose.verdict_cell(tost).endswith("no effect ≥ 1 pt" + prose.RAW_ONLY)
    assert prose.verdict_cell({"verdict": "untestable (n = 1)"}) == "untestable (n = 1)"
    against = {"verdict": "contradicted", "p_zero": 0.04, "p_zero_holm": 0.2,
               "p_vs_paper": 0.0002, "p_vs_paper_holm": 0.0008, "p_tost": 0.3}
    assert prose.verdict_cell(against) == \
        "contradicted" + prose.RAW_ONLY + "; paper's size excluded"
    assert prose.verdict_cell(against | {"p_zero_holm": 0.01}) == "contradicted"
    assert prose.verdict_cell(against | {"p_vs_paper_holm": 0.2}) == \
        "contradicted" + prose.RAW_ONLY


def test_per_seed_differences_are_shown_seed_by_seed(store):
    for s in SEEDS[:3]:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "cpu_v2", "full", s, BASE[s] + [0.5, -0.25, 1.0][s])
    ledger = claims.claims_ledger()
    assert row(ledger, claims.HEADLINE)["per seed"] == pytest.approx({0: 0.5, 1: -0.25, 2: 1.0})
    assert prose.verdict_table(ledger).loc[claims.HEADLINE, "per seed"] == \
        "s0 +0.50, s1 -0.25, s2 +1.00"
    shown = prose.ledger_display(ledger)
    assert len(shown.columns) + 1 <= 7 and shown.index[0] == claims.HEADLINE


def test_paired_power_matches_statsmodels_where_it_is_finite():
    """statsmodels' TTestPower gives NaN at large noncentrality for some last bits of its
    input (the reason claims computes the power itself); elsewhere the two agree."""
    from statsmodels.stats.power import TTestPower

    finite = 0
    for d in (0.3, 1.0, 2.5, 3.52, 6.366120218579235, 6.366120216839858):
        for n in (2, 3, 5, 12):
            theirs = float(TTestPower().power(d, n, 0.05))
            if np.isfinite(theirs):
                finite += 1
                assert claims.paired_power(d, n) == pytest.approx(theirs, abs=1e-9), (d, n)
    assert finite >= 20
    # the headline's case: either side of the bits statsmodels trips on, the same answer
    assert claims.seeds_needed(0.366, 2.33) == claims.seeds_needed(0.3660000001, 2.33) == 3


def test_seeds_needed_matches_statsmodels_and_the_simulated_power():
    from statsmodels.stats.power import TTestPower

    n = claims.seeds_needed(1.0, 1.0)
    assert n == np.ceil(TTestPower().solve_power(1.0, nobs=None, alpha=0.05, power=0.8))
    for sd, effect in ((1.0, 1.0), (0.5, 2.33), (3.0, 0.5)):
        n = int(claims.seeds_needed(sd, effect))
        assert claims.detectable_difference(sd, n) <= effect < \
            claims.detectable_difference(sd, n - 1)
    assert claims.seeds_needed(0.1, 5.0) == 2  # 50 sd: two pairs suffice (P(|T| > t) ~ 1)
    assert np.isnan(claims.seeds_needed(0.0, 1.0))


# --------------------------------------------------------------------------- the ledger
def test_ledger_rows_and_paper_differences(store):
    ledger = claims.claims_ledger()
    names = list(ledger["claim"])
    assert names[:8] == ["DAM beats single-dimension attention",
                         "ILM adds about 1 point on FERPlus", "cross-fusion helps",
                         "CF-DAN beats the baseline (all of Table 3)",
                         "attention helps at all (CF-DAN vs no attention)",
                         "spatial attention helps (baseline vs no attention)",
                         "distillation helps accuracy", "distillation lowers cost"]
    assert row(ledger, "CF-DAN beats the baseline (all of Table 3)")["paper"] == \
        pytest.approx(paper.value("table3", "FERPlus", "full", by="preset") - 89.69)
    assert sum(c.startswith("PCP beats") for c in names) == 6
    assert sum(r == "§4.5, Fig. 10" for r in ledger["where"]) == 4
    assert row(ledger, "DAM beats single-dimension attention")["paper"] == \
        pytest.approx(90.92 - 89.69)
    assert row(ledger, "ILM adds about 1 point on FERPlus")["paper"] == pytest.approx(0.63)
    assert row(ledger, "distillation helps accuracy")["paper"] == pytest.approx(0.15)
    assert row(ledger, "PCP beats ReLU (without ILM)")["paper"] == pytest.approx(92.54 - 91.98)
    assert row(ledger, "PCP beats Tanh (with ILM)")["paper"] == \
        pytest.approx(paper.value("table4", "RAF-DB", "act_pcp", by="preset") - 91.97)


def test_no_attention_rows_test_a_direction_the_paper_implies(store):
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "table3", "plain_cnn", s, BASE[s] + 0.1 + 0.5 * (-1) ** s)
        save_run(store, "cpu_v2", "full", s, BASE[s] - 2.0 + 0.01 * s)
    ledger = claims.claims_ledger()
    full = row(ledger, "attention helps at all (CF-DAN vs no attention)")
    assert full["comparison"] == "cpu_v2/full − table3/plain_cnn" and np.isnan(full["paper"])
    assert full["verdict"] == "contradicted" and full["n"] == 5  # below plain_cnn, every seed
    base = row(ledger, "spatial attention helps (baseline vs no attention)")
    assert base["verdict"] == "not resolved at this n"  # no size to exclude: a direction only
    assert prose.reading_key(base) == "cannot tell"
    t3 = report.ablation_table("table3", "table3")
    plain = t3[t3["preset"] == "plain_cnn"].iloc[0]
    assert pd.isna(plain["paper FERPlus"]) and plain["runs"].startswith("table3/plain_cnn: 5 of 5")
    assert plain["ours per seed"] == ", ".join(
        f"s{s} {BASE[s] + 0.1 + 0.5 * (-1) ** s:.2f}" for s in SEEDS)


def test_tables_show_mean_class_accuracy_and_macro_f1(store):
    for s in SEEDS[:2]:
        rec = save_run(store, "table3", "dam", s, 80.0 + s)
        rec["test"].update(mean_class_accuracy=0.5 + 0.1 * s, macro_f1=0.6)
        results.save_record(rec, root=store)
    dam = report.ablation_table("table3", "table3").set_index("preset").loc["dam"]
    assert dam["ours mean-class acc"] == report.mean_std([50.0, 60.0], scale=1.0)
    assert dam["ours macro-F1"] == "60.00 ± 0.00 (n=2)"
    assert dam["ours per seed"] == "s0 80.00, s1 81.00"


def test_empty_store_says_not_run_and_which_runs_are_missing(store):
    ledger = claims.claims_ledger()
    acc = ledger[ledger["unit"] == "points"]
    assert set(acc["verdict"]) == {"not run"}
    dam = row(ledger, "DAM beats single-dimension attention")
    assert dam["runs"] == "table3/dam: 0 of 5 seeds; table3/baseline: 0 of 5 seeds"
    fig = row(ledger, "best setting beats the other 12")
    assert "fig10: 0 of 36 runs" in fig["runs"] and "centre = cpu_v2/full: 0 of 5" in fig["runs"]
    shown = prose.ledger_display(ledger)
    trained = shown.loc[list(acc["claim"])]
    assert (trained["ours [95 % CI]"] == "not run yet").all() and (trained["n"] == "-").all()
    # the cost claim is a property of the architecture: measured, exact, needs no run
    cost = row(ledger, "distillation lowers cost")
    assert cost["verdict"] == "supported" and cost["mean"] < 0 and cost["unit"] == "GMACs"
    assert shown.loc["distillation lowers cost", "ours [95 % CI]"].endswith("by construction)")
    assert cost["by_construction"] and cost["relative"] < 0
    assert cost["paper_relative"] == pytest.approx(cost["paper"] / paper.value(
        "table5", "FLOPs_G", "no_distill", by="preset"))


def test_pairing_by_seed_resolves_what_an_unpaired_comparison_cannot(store):
    """Seeds differ by up to 20 points; dam - baseline is 1 point in every seed."""
    noise = [0.05, -0.05, 0.1, -0.1, 0.0]
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "table3", "dam", s, BASE[s] + 1.0 + noise[s])
    # a pairing by store order instead of seed would mix seeds: the two variants' files
    # (named by a hash of the config) do not list the seeds in the same order
    order = {v: [r["seed"] for _p, r in results.iter_records("table3") if r["variant"] == v]
             for v in ("baseline", "dam")}
    assert order["baseline"] != order["dam"]

    r = row(claims.claims_ledger(), "DAM beats single-dimension attention")
    assert r["verdict"] == "supported" and r["n"] == 5
    assert r["mean"] == pytest.approx(1.0) and 0 < r["ci_low"] < 1 < r["ci_high"] < 2
    assert r["sd"] == pytest.approx(np.std(noise, ddof=1))
    assert r["detectable"] == pytest.approx(claims.detectable_difference(r["sd"], 5))
    assert r["paper in CI"] is False  # paper: +1.23, ours [0.9, 1.1]
    # the same numbers compared as two independent samples: nowhere near resolved
    dam = [BASE[s] + 1.0 + noise[s] for s in SEEDS]
    assert stats.ttest_ind(dam, BASE).pvalue > 0.5


def test_contradicted_and_unresolved(store):
    for s in SEEDS:
        save_run(store, "table3", "dam", s, BASE[s])
        save_run(store, "table3", "dam_ilm", s, BASE[s] - 1.0 + 0.1 * (s % 2))  # ILM costs 1
        save_run(store, "cpu_v2", "full", s, BASE[s] + [1.0, -1.0, 0.5, -0.5, 0.2][s])
    ledger = claims.claims_ledger()
    assert row(ledger, "ILM adds about 1 point on FERPlus")["verdict"] == "contradicted"
    r = row(ledger, "cross-fusion helps")
    assert r["verdict"] == "not resolved at this n" and r["ci_low"] < 0 < r["ci_high"]
    assert r["runs"] == "cpu_v2/full: 5 of 5 seeds; table3/dam_ilm: 5 of 5 seeds"


def test_one_seed_is_not_resolved_and_sized_against_the_seed_noise(store):
    for s in SEEDS:
        save_run(store, "cpu_v2", "full", s, BASE[s])
    save_run(store, "table5", "no_distill", 0, BASE[0] - 3.0)
    ledger = claims.claims_ledger()
    r = row(ledger, "distillation helps accuracy")
    assert r["verdict"] == "untestable (n = 1)" and r["n"] == 1
    assert r["mean"] == pytest.approx(3.0)
    assert r["comparison"] == "cpu_v2/full − table5/no_distill"  # full comes from Table 3
    assert r["runs"] == "cpu_v2/full: 5 of 5 seeds; table5/no_distill: 1 of 5 seeds"
    sd = np.std(BASE, ddof=1)
    assert r["noise z"] == pytest.approx(3.0 / (np.sqrt(2) * sd))  # one seed, against √2 sd
    assert r["noise sd"] == pytest.approx(np.sqrt(2) * sd) and r["noise seeds"] == 5
    assert f"{r['noise z']:+.1f}" in prose.note_cell(r)  # the appendix's note shows it
    details = prose.ledger_details(ledger)
    assert details.loc["distillation helps accuracy", "detectable at 80 % power"] == \
        "n too small"
    # Table 4's act_pcp is the full model too
    pcp = row(ledger, "PCP beats Sigmoid (with ILM)")
    assert pcp["comparison"] == "cpu_v2/full − table4/act_sigmoid"


def test_records_of_an_older_config_do_not_count(store):
    old = run_config("table3", "dam", 0)
    old.train.epochs += 1  # another schedule: another run_id, not in table3.toml today
    save_run(store, "table3", "dam", 0, 99.0, cfg=old)
    save_run(store, "table3", "baseline", 0, 50.0)
    r = row(claims.claims_ledger(), "DAM beats single-dimension attention")
    assert r["verdict"] == "not run"
    assert "table3/dam: 0 of 5 seeds (+1 of an older config, not counted)" in r["runs"]
    # without the filter the old record counts, but it is not paired: its recipe differs
    r = row(claims.claims_ledger(current=False), "DAM beats single-dimension attention")
    assert r["n"] == 0 and "seeds [0] not paired: recipes differ" in r["note"]


def test_figures_and_facts_pick_no_record_of_an_older_config(store):
    """A record of an older schedule sorts first (its date is later and its run id may too),
    yet runs, history, representative_runs and book facts use the current run only, and
    provenance lists both, saying which counts."""
    old = run_config("table3", "baseline", 0)
    old.train.epochs += 1
    save_run(store, "table3", "baseline", 0, 40.0, history=[30.0, 40.0], cfg=old,
             date="2027-01-01T00:00:00+00:00")
    new = save_run(store, "table3", "baseline", 0, 70.0, history=[60.0, 70.0])
    table = runs.frame().set_index("run_id")
    assert len(table) == 2 and table.at[old.run_id, "why"] == "older config"
    assert list(runs.counted()["run_id"]) == [new["run_id"]]
    # without the plan, the latest record of the seed counts: the old one
    assert list(runs.counted(current=False)["run_id"]) == [old.run_id]
    assert set(report.history("table3")["run_id"]) == {new["run_id"]}
    assert report.representative_runs({"table3": "baseline"}) == {"table3": new["run_id"]}
    assert book.record("table3", "baseline")["run_id"] == new["run_id"]
    prov = report.provenance("table3").set_index("run_id")["counted"]
    assert prov[new["run_id"]] == "yes" and prov[old.run_id] == "no: older config"


def test_provenance_lists_superseded_runs_as_not_counted(store):
    a = save_run(store, "cpu_v2", "full", 0, 70.0)
    b = save_run(store, "cpu_v2", "full", 1, 71.0)
    assert results.add_note(store / "cpu_v2" / f"{a['run_id']}.json", "replaced",
                            superseded_by=b["run_id"])
    assert list(runs.counted()["run_id"]) == [b["run_id"]]
    prov = report.provenance("cpu_v2").set_index("run_id")["counted"]
    assert prov[a["run_id"]] == f"no: superseded by {b['run_id']}" and prov[b["run_id"]] == "yes"


def test_retired_runs_and_dirty_trees_are_labelled(store, monkeypatch):
    rec = save_run(store, "cpu_v2", "full", 0, 70.0)
    monkeypatch.setattr(runs, "RETIRED", {"cpu_v2": "replaced by something"})
    prov = report.provenance("cpu_v2").set_index("run_id")
    assert prov.at[rec["run_id"], "counted"] == "no: retired (replaced by something)"
    hw = book.hardware_table("cpu_v2").set_index("run_id")
    assert hw.at[rec["run_id"], "counted"] == "no: retired (replaced by something)"
    fp = book.fingerprint_table("cpu_v2")
    assert list(fp.columns).index("counted") == list(fp.columns).index("run_id") + 1
    sha, code = "a" * 40, "b" * 40
    assert report.code_label({"git_commit": sha, "git_dirty": False}) == "aaaaaaa"
    assert report.code_label({"git_commit": sha, "git_dirty": True}) == \
        "aaaaaaa + uncommitted changes"
    assert report.code_label({"git_commit": sha, "git_dirty": True, "code_commit": code}) == \
        "bbbbbbb (ran as uncommitted changes on aaaaaaa)"


def test_full_source_is_a_parameter_and_a_retired_source_counts_nothing(store):
    for s in SEEDS:
        save_run(store, "table3", "dam_ilm", s, BASE[s])
        save_run(store, "cpu_v2", "full", s, BASE[s] + 0.5 + 0.01 * s)
        # records of the full model on the same recipe under a profile run, 2 points better,
        # and the same under the retired cpu v1 experiment
        for exp in ("paper", "cpu"):
            cfg = run_config("cpu_v2", "full", s)
            cfg.experiment = exp
            save_run(store, exp, "full", s, BASE[s] + 2.0 + 0.01 * s, cfg=cfg)
    default = row(claims.claims_ledger(), "cross-fusion helps")
    assert default["mean"] == pytest.approx(0.52) and default["verdict"] == "supported"
    got = row(claims.claims_ledger(full=("paper", "full")), "cross-fusion helps")
    assert got["comparison"] == "paper/full − table3/dam_ilm"
    assert got["mean"] == pytest.approx(2.02) and got["runs"].startswith("paper/full: 5 seeds")
    retired = row(claims.claims_ledger(full=("cpu", "full")), "cross-fusion helps")
    assert retired["verdict"] == "not run" and retired["runs"].startswith("cpu/full: 0 seeds")
    assert set(runs.frame().query("experiment == 'cpu'")["why"]) == {
        f"retired ({runs.RETIRED['cpu']})"}
    # the book reads only its own experiments
    with pytest.raises(ValueError, match="not one of the book's experiments"):
        book.claims_ledger(full=("cpu_search", "full"))


def _fig10_runs(store: Path, accuracy) -> None:
    """Fig. 10's grid (seeds 0-2) and the full model (its centre, seeds 0-4)."""
    for s in SEEDS:
        save_run(store, "cpu_v2", "full", s, BASE[s] + accuracy(runs.FIG10_CENTRE, s))
    for pt in runs.fig10_points():
        if pt != runs.FIG10_CENTRE:
            for s in FIG10_SEEDS:
                save_run(store, "fig10", fig10_name(pt), s, BASE[s] + accuracy(pt, s))


def paper_pattern(pt: tuple[float, float, float], seed: int) -> float:
    """§4.5's pattern: the centre best; s_L 1.75 poor at x_L 0.19; s_L 1.85 poor at x_L 0.21;
    s_L 1.95 flat; a small seed-dependent wobble."""
    s_l, x_l, p1 = pt
    wobble = 0.05 * ((seed * 7 + int(1000 * (s_l + x_l - p1))) % 3 - 1)
    if pt == runs.FIG10_CENTRE:
        return 2.0 + wobble
    if s_l == 1.75:
        return (-1.0 if x_l == 0.19 else 0.0) + wobble
    if s_l == 1.85 and p1 == -0.24:
        return (-1.0 if x_l == 0.21 else 0.0) + wobble
    if s_l == 1.95:
        return 0.5 + 0.02 * seed * (x_l == 0.2) + wobble
    return wobble  # the P1 line


def test_fig10_pattern_as_the_paper_describes_it_is_supported(store):
    _fig10_runs(store, paper_pattern)
    ledger = claims.claims_ledger()
    rows = ledger[ledger["where"] == "§4.5, Fig. 10"]
    assert list(rows["verdict"]) == ["supported"] * 4, rows[["claim", "verdict", "note"]]
    best = rows.iloc[0]
    assert best["n"] == 3 and (best["compared"], best["compared supported"]) == (12, 12)
    assert "fig10: 36 of 36 runs" in best["runs"]
    assert "centre = cpu_v2/full: 5 of 5 seeds (the grid plans seeds 0, 1, 2)" in best["runs"]


def test_fig10_a_better_setting_contradicts_the_best_point(store):
    def better_p1(pt, seed):
        return 3.0 + 0.01 * seed if pt == (1.85, 0.19, -0.26) else paper_pattern(pt, seed)

    _fig10_runs(store, better_p1)
    best = row(claims.claims_ledger(), "best setting beats the other 12")
    assert best["verdict"] == "contradicted" and best["mean"] < 0
    assert best["best other"] == (1.85, 0.19, -0.26)


def test_fig10_single_seed_is_not_resolved(store, monkeypatch):
    for s in SEEDS:
        save_run(store, "cpu_v2", "full", s, BASE[s] + 2.0)
    for pt in runs.fig10_points()[:5]:  # part of the grid, seed 0 only
        if pt != runs.FIG10_CENTRE:
            save_run(store, "fig10", fig10_name(pt), 0, BASE[0])
    ledger = claims.claims_ledger()
    best = row(ledger, "best setting beats the other 12")
    assert best["verdict"] == "untestable (n = 1)" and best["n"] == 1
    assert "fig10: 4 of 36 runs" in best["runs"]
    assert (best["compared"], best["compared supported"], best["compared contradicted"],
            best["compared not run"]) == (4, 0, 0, 8)  # one seed: none supported
    assert best["noise min of"] == 4  # the smallest of 4 leads: noise pulls it down
    sd = np.std(BASE, ddof=1)
    # one run minus the mean of two: sd √1.5 x the seed sd, not √2
    low = row(ledger, "at s_L = 1.75, x_L = 0.19 is worse than x_L = 0.2, 0.21")
    assert low["noise sd"] == pytest.approx(np.sqrt(1.5) * sd)  # one minus the mean of two
    stable = row(ledger, "at s_L = 1.95 accuracy is the most stable over x_L")
    assert stable["verdict"] == "not run" and prose.reading_key(stable) == "not run"


def test_range_difference_sd_matches_the_range_tables():
    # sd of the range of 3 normal draws is d3(3) = 0.888 (quality-control tables); the
    # statistic is one range minus the mean of two independent others
    assert claims.range_difference_sd() == pytest.approx(0.888 * np.sqrt(1.5), rel=0.01)


def test_book_ledger_facts_count_verdicts(store):
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "table3", "dam", s, BASE[s] + 1.0 + 0.01 * s)
    shown = book.claims_ledger()
    facts = book.ledger_facts(claims.claims_ledger())
    assert facts["ledger_claims"] == len(shown) == 18
    assert facts["ledger_supported"] == 2  # dam > baseline, and the measured cost
    assert facts["ledger_not_run"] == 16 and facts["ledger_contradicted"] == 0
    assert facts["ledger_raw_only"] == 0 and facts["ledger_equivalent"] == 0
    assert sum(v for k, v in facts.items() if k in {f"ledger_{k}" for k in (
        "supported", "contradicted", "paper_excluded", "not_resolved", "untestable",
        "not_run")}) == 18
    once, all_facts = book.ledger_and_facts()
    pd.testing.assert_frame_equal(once, shown)
    raw = claims.claims_ledger()
    assert all_facts == {**facts, **book.ledger_reading(), **prose.headline(raw),
                         **prose.headline(raw, claims.NO_ATTENTION, "noattn")}


def test_latest_record_of_a_seed_wins(store):
    save_run(store, "table3", "baseline", 0, 50.0)
    save_run(store, "table3", "baseline", 1, 50.0)
    save_run(store, "table3", "dam", 0, 40.0)
    save_run(store, "table3", "dam", 1, 41.0)
    # the same run again, later (e.g. after a rerun): same run_id, the file is replaced
    save_run(store, "table3", "dam", 0, 51.0,
             date=dt.datetime(2026, 2, 1, tzinfo=dt.UTC).isoformat())
    r = row(claims.claims_ledger(), "DAM beats single-dimension attention")
    assert r["n"] == 2 and r["mean"] == pytest.approx((1.0 - 9.0) / 2)


def test_of_two_records_of_a_seed_the_later_counts(store):
    """An experiment without a file keeps every run, but one record per (variant, seed)."""
    old = save_run(store, "paper", "full", 0, 70.0, run_id="first")
    new = save_run(store, "paper", "full", 0, 72.0, run_id="second",
                   date=dt.datetime(2026, 2, 1, tzinfo=dt.UTC).isoformat())
    why = runs.frame().set_index("run_id")["why"]
    assert why[new["run_id"]] == "" and why[old["run_id"]] == "a later record of its seed counts"
    assert list(runs.counted()["run_id"]) == ["second"]
    assert report.provenance("paper").set_index("run_id").at["first", "counted"] == \
        "no: a later record of its seed counts"


def test_the_run_table_is_read_once_until_the_store_changes(store, monkeypatch):
    save_run(store, "table3", "dam", 0, 70.0)
    reads = []
    read = results.iter_records
    monkeypatch.setattr(results, "iter_records", lambda *a, **k: reads.append(a) or read(*a, **k))
    claims.claims_ledger()
    report.ablation_table("table3", "table3")
    assert len(runs.frame()) == 1 and len(reads) == 1
    save_run(store, "table3", "dam", 1, 71.0)
    assert len(runs.frame()) == 2 and len(reads) == 2


def test_ledger_reading_separates_exact_from_trained_support_and_reads_power(store):
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "table3", "dam", s, BASE[s] + 0.2 + 0.3 * (-1) ** s)  # noisy, small
        save_run(store, "cpu_v2", "full", s, BASE[s] + 5.0 + 0.01 * s)
    ledger = claims.claims_ledger()
    got = claims.ledger_reading(ledger)
    assert got["ledger_supported_exact"] == 1  # the cost row
    dam = row(ledger, "DAM beats single-dimension attention")  # CI ~[-0.15, +0.67] < +1.23
    assert dam["verdict"] == "paper's effect excluded"
    top = row(ledger, "CF-DAN beats the baseline (all of Table 3)")  # +5 at every seed
    assert top["verdict"] == "supported" and got["ledger_supported_trained"] == 1
    assert got["ledger_powered_rows"] == 2 and got["ledger_detect_above_paper"] == \
        int(dam["detectable"] > abs(dam["paper"])) + int(top["detectable"] > abs(top["paper"]))
    assert got["ledger_min_detectable"] == f"{min(dam['detectable'], top['detectable']):.2f}"
    outside = [r["claim"] for r in (dam, top)
               if not r["ci_low"] <= r["paper"] <= r["ci_high"]]
    assert top["claim"] in outside  # +5 at every seed, well above the paper's gap
    assert got["ledger_paper_outside_ci"] == len(outside)
    assert got["ledger_ci_rows"] == 2 and got["table4_min_detectable"] == "n/a"
    t4 = paper.table("table4").set_index("preset")["RAF-DB"]
    gaps = [abs(t4[f"act_pcp{s}"] - t4[f"act_{a}{s}"]) for s in ("", "_no_ilm")
            for a in ("sigmoid", "relu", "tanh")]
    assert got["table4_paper_max_gap"] == f"{max(gaps):.2f}"
    # a large shared seed level (BASE) cancels in the paired differences, not in the unpaired sd
    base = np.asarray(BASE)
    want = [np.std([0.3 * (-1) ** s for s in SEEDS], ddof=1)
            / np.sqrt(base.var(ddof=1) + (base + [0.3 * (-1) ** s for s in SEEDS]).var(ddof=1)),
            np.std([0.01 * s for s in SEEDS], ddof=1)
            / np.sqrt(base.var(ddof=1) + (base + [0.01 * s for s in SEEDS]).var(ddof=1))]
    assert dam["unpaired sd"] == pytest.approx(np.sqrt(
        base.var(ddof=1) + (base + [0.3 * (-1) ** s for s in SEEDS]).var(ddof=1)))
    assert got["pairing_rows"] == 2 and got["pairing_smaller"] == 2
    assert got["pairing_median_ratio"] == f"{np.median(want):.2f}"


def test_sd_upper_is_the_chi_square_upper_limit():
    # sqrt(2 / chi2.ppf(0.025, 2)) = sqrt(2 / 0.050636) = 6.2847 (tables of the chi-square)
    assert claims.sd_upper(1.0, 3) == pytest.approx(6.2847, abs=1e-3)
    assert claims.sd_upper(2.0, 3) == pytest.approx(2 * 6.2847, abs=2e-3)
    assert np.isnan(claims.sd_upper(1.0, 1)) and np.isnan(claims.sd_upper(float("nan"), 3))


def test_unpaired_sd_is_the_sd_of_a_difference_of_independent_runs():
    a = runs.Runs("a", pd.DataFrame({"value": [1.0, 3.0, 5.0], "recipe": "r"}))
    b = runs.Runs("b", pd.DataFrame({"value": [0.0, 0.0, 6.0], "recipe": "r"}))
    assert claims.unpaired_sd(a, b, [0, 1, 2]) == pytest.approx(np.sqrt(4.0 + 12.0))
    assert claims.unpaired_sd(a, b, [0, 1]) == pytest.approx(np.sqrt(2.0 + 0.0))
    assert np.isnan(claims.unpaired_sd(a, b, [0]))


def test_a_shared_full_row_averages_the_seeds_its_table_plans(store):
    """Table 4 plans fewer seeds than the full model has: its PCP+ILM row must average those
    seeds only, like every other row of the table, and say which it leaves out."""
    plan = config.EXPERIMENTS_DIR / "table4.toml"
    plan.write_text(plan.read_text().replace(f"seeds = {SEEDS}", "seeds = [0, 1]"))
    for s in SEEDS[:3]:
        save_run(store, "cpu_v2", "full", s, BASE[s])
    for s in (0, 1):
        save_run(store, "table4", "act_relu", s, BASE[s] - 1.0)
    t4 = report.ablation_table("table4", "table4").set_index("preset")
    col = "ours FERPlus (stand-in for RAF-DB)"
    assert t4.loc["act_pcp", col] == report.mean_std(BASE[:2], scale=1.0)  # not BASE[:3]
    assert t4.loc["act_pcp", "runs"] == ("cpu_v2/full: 2 of 2 seeds; seed 2 not shown, as "
                                          "this table does not plan it")
    assert t4.loc["act_relu", "runs"] == "table4/act_relu: 2 of 2 seeds"
    t3 = report.ablation_table("table3", "table3").set_index("preset")  # plans all five
    assert t3.loc["full", "ours FERPlus"] == report.mean_std(BASE[:3], scale=1.0)
    assert t3.loc["full", "runs"] == "cpu_v2/full: 3 of 5 seeds"


def test_table1_protocol_and_table_headers_say_what_was_measured(store):
    df = pd.DataFrame({"eval.tta_flip": [True], "test.accuracy_ci95": [(0.80, 0.83)]})
    assert report.test_protocol(df) == "flip TTA; test-set 95 % CI 80.00–83.00 (bootstrap)"
    two = pd.DataFrame({"eval.tta_flip": [False, True]})
    assert report.test_protocol(two) == "flip TTA in some runs"  # and no CI for n > 1
    assert report.test_protocol(pd.DataFrame()) == "-"
    t1 = report.table1({"cpu_v2": "ours: cpu"})
    assert "paper: CF-DAN" in set(t1["source"]) and t1["test protocol"].iloc[-1] == "-"
    assert "ours FERPlus" in report.ablation_table("table3", "table3").columns
    assert "ours FERPlus (stand-in for RAF-DB)" in report.ablation_table("table4", "table4")


def test_table5_shows_our_attention_cost_beside_the_papers(store):
    t5 = book.table5()
    params = next(c for c in t5.columns if c.startswith("ours attention params_M"))
    gmacs = next(c for c in t5.columns if c.startswith("ours attention GMACs"))
    px = run_config("table5", "no_distill", 0).data.image_size
    assert params == "ours attention params_M" and gmacs.endswith(f"({px} px)")
    cost = t5.set_index("preset")[gmacs]
    assert cost["full"] < cost["no_distill"]  # distillation pools before the attention
    from cfdan.model import preset
    from cfdan.model.cost import measure

    cfg = run_config("table5", "no_distill", 0)
    fields = {k: v for k, v in cfg.model.items() if k != "preset"}
    want = measure(preset("full", image_size=px, **fields))["attention"]
    assert cost["full"] == pytest.approx(want.gmacs, abs=1e-5)


def test_fig10_and_selection_facts(store):
    got = sensitivity.fig10_facts()
    assert got == {"fig10_grid_runs": 0, "fig10_grid_planned": 12, "fig10_sd_seeds": 0,
                   "fig10_exact_wider": "n/a"}
    for s in SEEDS[:3]:
        save_run(store, "cpu_v2", "full", s, BASE[s])
    save_run(store, "fig10", fig10_name(runs.fig10_points()[0]), 0, 70.0)
    got = sensitivity.fig10_facts()
    assert got["fig10_sd_seeds"] == 3 and got["fig10_grid_runs"] == 1
    assert got["fig10_exact_wider"] == f"{stats.t.ppf(0.975, 2) / 2:.1f}"  # 2.2
    for pt in runs.fig10_points()[1:]:
        save_run(store, "fig10", fig10_name(pt), 0, 70.0)
    assert sensitivity.fig10_facts()["fig10_grid_runs"] == 12
    for variant, best in (("baseline", 18), ("dam", 12), ("dam_ilm", None)):
        save_run(store, "table3", variant, 0, 70.0, best_epoch=best, epochs_run=18)
    assert book.selection_facts(("table3",)) == {"selected_runs": 3, "selected_last": 1}


def test_thread_table_counts_each_experiments_runs_by_threads(store):
    one, two = {"torch_threads": 1}, {"torch_threads": 2}
    four = {"cpu_count": 4}  # no torch_threads: its cpu_count, as the tables do
    slots = {"cpu_v2": [("full", s, two) for s in range(3)],
             "table3": [(v, s, one) for v in ("baseline", "dam") for s in SEEDS[:4]]
             + [("dam_ilm", 0, two)],
             "fig10": [(fig10_name(runs.fig10_points()[0]), 0, {})],
             "table4": [("act_relu", 0, one), ("act_relu", 1, two), ("act_tanh", 0, four)]}
    for exp, runs_ in slots.items():
        for variant, seed, hw in runs_:
            save_run(store, exp, variant, seed, hardware=hw)
    got = book.thread_table(("table4", "cpu_v2", "table3", "table5", "fig10"))
    assert list(got.columns) == ["unrecorded", "1 thread", "2 threads", "4 threads", "runs"]
    assert got.loc["table4"].tolist() == [0, 1, 1, 1, 3]
    assert got.loc["cpu_v2"].tolist() == [0, 0, 3, 0, 3]
    assert got.loc["table3"].tolist() == [0, 8, 1, 0, 9]
    assert got.loc["table5", "runs"] == 0 and got.loc["fig10"].tolist() == [1, 0, 0, 0, 1]


def test_fig10_screen_places_each_setting_against_the_band(store):
    got = sensitivity.fig10_screen()
    assert got["fig10_outside"] == "n/a" and got["fig10_inside"] == 0
    full = [70.0, 71.0, 72.0]  # sd 1, so the band is centre ± 2√2 = ± 2.83 points
    for s, v in enumerate(full):
        save_run(store, "cpu_v2", "full", s, v)
    others = [pt for pt in runs.fig10_points() if pt != runs.FIG10_CENTRE]
    save_run(store, "fig10", fig10_name(others[0]), 0, 70.0 + 3.0)  # above
    save_run(store, "fig10", fig10_name(others[1]), 0, 70.0 - 2.9)  # below
    save_run(store, "fig10", fig10_name(others[2]), 0, 70.0 + 2.8)  # inside, the edge
    pts = sensitivity.sensitivity_points()
    screen = sensitivity.sensitivity_screen(pts, claims.full_seed_spread())
    assert list(screen["position"]) == ["above", "below", "inside"]
    assert screen["minus centre"].to_numpy() == pytest.approx([3.0, -2.9, 2.8])
    got = sensitivity.fig10_screen()
    assert got["fig10_band_half"] == f"{2 * np.sqrt(2):.2f}"
    assert (got["fig10_inside"], got["fig10_above"], got["fig10_below"]) == (1, 1, 1)
    # the centre (seed 0 only: the grid's seeds) ranks third of four, under +3.0 and +2.8
    assert (got["fig10_centre_rank"], got["fig10_ranked"]) == ("3rd", 4)
    s_l, x_l, p1 = others[0]
    assert got["fig10_best"] == f"s_L {s_l:g}, x_L {x_l:g}, P1 {p1:g}"
    assert got["fig10_best_gap"] == "+3.00" and got["fig10_span"] == "5.90"
    named = [sensitivity.setting_text(*pt) for pt in others[:2]]
    assert got["fig10_outside"] == f"{named[0]} above (+3.00); {named[1]} below (-2.90)"
    store_inside = sensitivity.sensitivity_screen(pts, (70.0, 2.0, 3))
    assert (store_inside["position"] == "inside").all()  # a wider sd takes all three in
    nan_sd = sensitivity.sensitivity_screen(pts, (70.0, float("nan"), 1))
    assert (nan_sd["position"] == "n/a").all()
    assert [sensitivity.ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 112)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "112th"]


def test_attention_similarity_is_one_for_a_map_that_ignores_the_face(store):
    rng = np.random.default_rng(0)
    fixed = np.tile(rng.normal(size=(1, 6, 6)), (4, 1, 1))
    arrays = {"attention_spatial": fixed, "attention_channel": rng.normal(size=(4, 6, 6)),
              "attention_index": np.arange(4)}
    rec = save_run(store, "cpu_v2", "full", 0, 70.0, arrays=arrays)
    got = attention_maps.attention_similarity(rec["run_id"], "cpu_v2")
    assert got["spatial"] == pytest.approx(1.0)
    assert abs(got["channel"]) < 0.3 and np.isnan(got["fused"])
    facts = attention_maps.attention_facts({"cpu_v2": rec["run_id"]})
    assert facts["attention_r_cpu_spatial"] == "1.00" and facts["attention_faces_cpu"] == 4
    assert facts["attention_r_cpu_fused"] == "n/a"
    assert facts["attention_r_paper_spatial"] == "n/a" and facts["attention_faces_paper"] == "n/a"
    arrays["attention_channel"][0] = 0.0  # a constant map is left out, not a NaN for all
    rec = save_run(store, "cpu_v2", "full", 1, 70.0, arrays=arrays)
    assert np.isfinite(attention_maps.attention_similarity(rec["run_id"], "cpu_v2")["channel"])


def test_row_reading_follows_ci_power_and_the_papers_size(store):
    base = {"verdict": "not resolved at this n", "unit": "points", "n": 3, "paper": 2.0,
            "ci_low": -1.0, "ci_high": 2.5, "detectable": 1.0, "p_vs_paper": 0.2}
    assert prose.reading_key(base) == "both inside"
    excluded = base | {"verdict": "paper's effect excluded", "ci_high": 0.5, "p_vs_paper": 0.012}
    assert prose.reading_key(excluded) == "excluded"
    assert "0.012" in prose.row_reading(excluded)  # the template takes the row's p
    assert prose.reading_key(base | {"verdict": "supported", "ci_low": 1.0, "ci_high": 3.0}) \
        == "size inside"
    assert prose.reading_key(base | {"verdict": "untestable (n = 1)", "n": 1,
                                      "ci_low": float("nan")}) == "one seed"
    assert prose.reading_key(base | {"verdict": "supported", "ci_low": 0.2, "ci_high": 1.0}) \
        == "size outside"
    assert prose.reading_key(base | {"paper": float("nan")}) == "cannot tell"
    direction_only = base | {"paper": float("nan"), "ci_low": 0.2, "ci_high": 1.0}
    assert prose.reading_key(direction_only | {"verdict": "supported"}) == "direction"
    assert prose.reading_key(direction_only | {"verdict": "contradicted"}) == "other way"
    assert prose.reading_key(base | {"verdict": "not run"}) == "not run"
    assert prose.reading_key(base | {"unit": "GMACs", "verdict": "supported"}) == "exact"
    # a test against 0 that does not survive Holm's correction reads as such
    raw = base | {"verdict": "contradicted", "ci_low": -1.7, "ci_high": -0.1, "p_zero": 0.043,
                  "p_zero_holm": 0.224, "p_vs_paper_holm": 0.0008}
    assert prose.reading_key(raw) == "other way, raw, size excluded"
    assert all(p in prose.row_reading(raw) for p in ("0.0008", "0.043", "0.22"))
    assert prose.reading_key(raw | {"p_vs_paper_holm": 0.2}) == "other way, raw"
    assert prose.reading_key(raw | {"p_vs_paper_holm": float("nan")}) == "other way, raw"
    assert prose.reading_key(raw | {"p_zero_holm": 0.01}) == "other way"
    assert prose.reading_key(raw | {"verdict": "supported", "ci_low": 0.1, "ci_high": 1.7}) \
        == "direction, raw"
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "cpu_v2", "full", s, BASE[s] - 3.0 + 0.01 * s)  # worse, every seed
    ledger = claims.claims_ledger()
    got = prose.headline(ledger)
    assert got["headline_verdict"] == "contradicted" and got["headline_n"] == 5
    assert got["headline_mean"] == f"{np.mean([-3.0 + 0.01 * s for s in SEEDS]):+.2f}"
    assert got["headline_reading"] == prose.READINGS["other way"]
    assert got["headline_verdict_cell"] == "contradicted"
    noattn = prose.headline(ledger, claims.NO_ATTENTION, "noattn")
    assert noattn["noattn_verdict"] == "not run" and noattn["noattn_n"] == 0
    sd = float(np.std([0.01 * s for s in SEEDS], ddof=1))
    assert float(got["headline_detectable_upper"]) == pytest.approx(
        claims.detectable_difference(sd * np.sqrt(4 / stats.chi2.ppf(0.025, 4)), 5), abs=0.006)
    assert float(got["headline_detectable_upper"]) > float(got["headline_detectable"])
    details = prose.ledger_details(ledger)
    assert details.loc[claims.HEADLINE, "reading"] == got["headline_reading"]
    assert details.loc["distillation lowers cost", "reading"] == prose.READINGS["exact"]


def test_verdict_table_puts_the_headline_first_on_one_screen(store):
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "cpu_v2", "full", s, BASE[s] - 0.5 + 0.8 * (-1) ** s)
    ledger = claims.claims_ledger()
    got = prose.verdict_table(ledger)
    assert list(got.columns) == list(prose.VERDICT_COLUMNS[1:]) and got.index.name == "claim"
    assert got.index[0] == prose.HEADLINE and len(got) == len(ledger)
    top = got.loc[prose.HEADLINE]
    r = row(ledger, prose.HEADLINE)
    assert top["verdict"] == r["verdict"] == "paper's effect excluded"  # U < +2.33, 0 inside
    assert top["ours: paired difference [95 % CI]"] == \
        f"{r['mean']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
    assert top["paper"] == f"{r['paper']:+.2f}" and top["n"] == "5"
    assert got.loc["attention helps at all (CF-DAN vs no attention)", "paper"] == \
        "not reported (> 0 implied)"
    assert got.loc["DAM beats single-dimension attention", "ours: paired difference [95 % CI]"] \
        == "not run yet"
    assert got.loc["distillation lowers cost", "n"] == "-"


def test_exact_verdict_and_pcp_rows():
    assert prose.exact_verdict([True, None]) == "supported"
    assert prose.exact_verdict([False, None, False]) == "contradicted"
    assert prose.exact_verdict([True, False]) == "mixed"
    assert prose.exact_verdict([None]) == "not run"
    checks = pd.DataFrame({"claim": ["C2 continuous at all points", "solves ReLU's neuron death"],
                           "computed": ["1: jump +6", "PCP' = 0"], "holds": [False, True]})
    speed = pd.DataFrame({"PCP / Sigmoid": [1.5, 0.9], "faster than both": [False, None]})
    got = prose.pcp_rows(checks, speed)
    assert list(got["verdict"]) == ["contradicted", "supported", "contradicted"]
    assert got.iloc[2]["ours: paired difference [95 % CI]"].startswith("0.90–1.50")
    assert prose.pcp_rows(checks, pd.DataFrame()).iloc[2]["verdict"] == "not run"


def test_level_row_gives_mean_sd_and_n_per_profile():
    got = prose.level_row(92.02, [("at 48 px", [82.0, 83.0]), ("at 224 px", [84.0]),
                                  ("none", [])]).iloc[0]
    assert got["paper"] == "92.02 %"
    assert got["ours: paired difference [95 % CI]"] == \
        f"82.50 ± {np.std([82.0, 83.0], ddof=1):.2f} at 48 px (n = 2); 84.00 at 224 px (n = 1)"
