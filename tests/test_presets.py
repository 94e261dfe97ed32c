"""How a paper table's presets compare as a group (cfdan.presets): order, spread at one seed
against seed noise, rank agreement across seeds and the block F test, on the claims tests'
store of hand-made records."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import test_claims
from scipy import stats
from test_claims import BASE, SEEDS, save_run

from cfdan import book, claims, paper, presets

store = test_claims.store  # the same fixture: an empty store with temporary experiment files


def test_variant_order_by_our_mean_and_by_the_papers_own_column(store):
    for s in SEEDS:
        save_run(store, "table3", "baseline", s, BASE[s])
        save_run(store, "table3", "dam", s, BASE[s] + 0.2 + 0.3 * (-1) ** s)
        save_run(store, "cpu_v2", "full", s, BASE[s] + 5.0 + 0.01 * s)
    order = presets.variant_order("table3", "table3")
    assert order["ours"].split(" > ")[0] == "full"  # +5 points above the others
    assert order["missing"] == "1"  # dam_ilm has no run
    assert set(order["paper"].split(" > ")) == {"baseline", "dam", "dam_ilm", "full"}
    assert order["paper_column"] == "FERPlus"
    t4 = presets.variant_order("table4", "table4")  # Table 4 has RAF-DB only
    raf = paper.table("table4").set_index("preset")["RAF-DB"]
    assert t4["paper_column"] == "RAF-DB" and t4["paper"].split(" > ")[0] == raf.idxmax()


def test_expected_range_matches_known_values():
    assert presets.expected_range(1) == 0.0
    assert presets.expected_range(2) == pytest.approx(2 / np.sqrt(np.pi), rel=1e-6)
    assert presets.expected_range(8) == pytest.approx(2.847, abs=1e-3)  # d2 of SPC tables
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((20000, 5))
    assert presets.expected_range(5) == pytest.approx(np.ptp(draws, axis=1).mean(), rel=0.02)


def test_presets_at_one_seed_against_seed_noise(store):
    for s, level in zip(SEEDS[:3], (80.0, 81.0, 82.0), strict=True):
        save_run(store, "cpu_v2", "full", s, level)  # the full model: sd 1.0 over 3 seeds
    save_run(store, "table4", "act_relu", 0, 80.5)
    save_run(store, "table4", "act_tanh", 0, 79.0)
    save_run(store, "table4", "act_tanh", 1, 99.0)  # another seed: not read at seed 0
    got = presets.presets_at_seed("table4", "table4", seed=0)
    assert got == {"act_pcp": 80.0, "act_relu": 80.5, "act_tanh": 79.0}
    facts = book.presets_vs_noise()
    assert facts["table4_seed0_presets"] == 3 and facts["table4_seed0_range"] == "1.50"
    assert facts["table4_seed0_top"] == "act_relu" and facts["table4_seed0_bottom"] == "act_tanh"
    assert facts["table4_seed0_noise_sd"] == "1.00" and facts["table4_seed0_noise_n"] == 3
    assert facts["table4_seed0_noise_range"] == f"{presets.expected_range(3):.2f}"  # 1.69
    assert facts["table4_seed0_reading"] == "no wider than"
    save_run(store, "table4", "act_sigmoid", 0, 90.0)
    assert book.presets_vs_noise()["table4_seed0_reading"] == "wider than"
    assert book.presets_vs_noise(seed=4)["table4_seed4_reading"] == "not comparable yet"
    save_run(store, "table4", "act_relu", 1, 70.0)
    save_run(store, "table4", "act_sigmoid", 1, 70.0)  # equal accuracy at the bottom: a tie
    assert book.presets_vs_noise(seed=1)["table4_seed1_bottom"] == \
        "act_sigmoid and act_relu (tied)"


def _ols_f(y: np.ndarray) -> tuple[float, float]:
    """F and p of the row effect in a rows x blocks table by least squares with dummies: an
    independent route to the two-way analysis without replication."""
    a, b = y.shape
    rows, cols = np.meshgrid(np.arange(a), np.arange(b), indexing="ij")
    def design(with_rows: bool) -> np.ndarray:
        parts = [np.ones(a * b)] + [(cols.ravel() == j).astype(float) for j in range(1, b)]
        if with_rows:
            parts += [(rows.ravel() == i).astype(float) for i in range(1, a)]
        return np.column_stack(parts)
    def rss(x: np.ndarray) -> float:
        beta = np.linalg.lstsq(x, y.ravel(), rcond=None)[0]
        return float(((y.ravel() - x @ beta) ** 2).sum())
    full, reduced = rss(design(True)), rss(design(False))
    df1, df2 = a - 1, (a - 1) * (b - 1)
    f = ((reduced - full) / df1) / (full / df2)
    return f, float(stats.f.sf(f, df1, df2))


def test_preset_block_test_matches_least_squares_and_ignores_seed_levels(store):
    assert presets.preset_block_test("table4", "table4") is None
    assert book.presets_block_test()["table4_block_reading"] == "cannot yet be tested against"
    rng = np.random.default_rng(3)
    names = ["act_pcp", "act_sigmoid", "act_relu", "act_tanh"]
    effect = {"act_pcp": 0.0, "act_sigmoid": 0.3, "act_relu": -0.2, "act_tanh": 0.1}
    y = {}
    for p in names:
        for s in SEEDS[:2]:
            y[p, s] = BASE[s] + effect[p] + float(rng.normal(0, 0.5))  # big seed levels
            save_run(store, "cpu_v2" if p == "act_pcp" else "table4",
                     "full" if p == "act_pcp" else p, s, y[p, s])
    save_run(store, "cpu_v2", "full", SEEDS[2], 50.0)  # a third seed only one preset has
    save_run(store, "table4", "act_relu_no_ilm", 0, 99.0)  # one seed only: not on the grid
    got = presets.preset_block_test("table4", "table4")
    assert got.presets == tuple(names) and got.seeds == (0, 1)
    f, p_val = _ols_f(np.asarray([[y[p, s] for s in SEEDS[:2]] for p in names]))
    assert got.f == pytest.approx(f) and got.p == pytest.approx(p_val)
    assert (got.df_effect, got.df_resid) == (3, 3)  # one ILM setting: presets = activations
    facts = book.presets_block_test()
    assert facts["table4_block_presets"] == 4 and facts["table4_block_seeds"] == 2
    assert facts["table4_block_p"] == book._p_text(p_val)
    assert facts["table4_block_reading"] == ("differ beyond" if p_val < claims.ALPHA
                                             else "cannot be told apart from")
    assert facts["table4_block_reading"] == "cannot be told apart from"  # effects << noise
    save_run(store, "table4", "act_sigmoid", 0, BASE[0] + 6.0)
    save_run(store, "table4", "act_sigmoid", 1, BASE[1] + 6.0)  # a real effect: found
    assert book.presets_block_test()["table4_block_reading"] == "differ beyond"


def test_p_values_print_with_their_relation_and_never_round_onto_alpha():
    assert [book._p_text(p) for p in (0.0004, 0.0123, 0.0499, 0.0504, 0.061, 0.394)] == \
        ["< 0.001", "= 0.012", "< 0.050", "= 0.050", "= 0.061", "= 0.39"]


def test_block_test_separates_the_activation_from_ilm(store):
    rng = np.random.default_rng(5)
    for s in SEEDS[:2]:
        save_run(store, "cpu_v2", "full", s, BASE[s] + float(rng.normal(0, 0.3)))  # act_pcp
        save_run(store, "table4", "act_sigmoid", s, BASE[s] + float(rng.normal(0, 0.3)))
        for act in ("pcp", "sigmoid"):  # ILM alone moves accuracy by 6 points
            save_run(store, "table4", f"act_{act}_no_ilm", s,
                     BASE[s] - 6.0 + float(rng.normal(0, 0.3)))
    got = presets.preset_block_test("table4", "table4")
    assert len(got.presets) == 4 and (got.df_effect, got.df_resid) == (2, 3)
    assert got.p > claims.ALPHA  # a preset-only test would call this a difference
    assert book.presets_block_test()["table4_block_reading"] == "cannot be told apart from"
    for s in SEEDS[:2]:  # identical cells: no residual, no effect, no verdict
        for v in ("act_sigmoid", "act_pcp_no_ilm", "act_sigmoid_no_ilm"):
            save_run(store, "table4", v, s, 70.0)
        save_run(store, "cpu_v2", "full", s, 70.0)
    assert np.isnan(presets.preset_block_test("table4", "table4").p)
    assert book.presets_block_test()["table4_block_reading"] == "cannot yet be tested against"


ILM_ON = ["act_sigmoid", "act_relu", "act_tanh"]  # with act_pcp, the full model
ILM_OFF = ["act_pcp_no_ilm", "act_sigmoid_no_ilm", "act_relu_no_ilm"]


def _save_table4_seed(store, seed: int, on: list[float], off: list[float]) -> None:
    """act_pcp (the full model) and ILM_ON at accuracies ``on``, ILM_OFF at ``off``."""
    save_run(store, "cpu_v2", "full", seed, on[0])
    for v, acc in zip(ILM_ON + ILM_OFF, on[1:] + off, strict=True):
        save_run(store, "table4", v, seed, acc)


def _brute_force_p(x: list[float], y: list[float], off: list[bool]) -> tuple[float, float]:
    """rho and one-sided p of the within-ILM-group rank correlation, every reordering of y
    within its group tried, with scipy."""
    g = np.asarray(off)
    def ranks(v: np.ndarray) -> np.ndarray:
        out = np.empty(len(v))
        for flag in (False, True):
            out[g == flag] = stats.rankdata(v[g == flag]) - stats.rankdata(v[g == flag]).mean()
        return out
    x, y = np.asarray(x), np.asarray(y)
    rho = stats.pearsonr(ranks(x), ranks(y)).statistic
    on_idx, off_idx = np.flatnonzero(~g), np.flatnonzero(g)
    null = []
    for a in itertools.permutations(on_idx):
        for b in itertools.permutations(off_idx):
            order = np.arange(len(y))
            order[on_idx], order[off_idx] = a, b
            null.append(stats.pearsonr(ranks(x), ranks(y[order])).statistic)
    return float(rho), float(np.mean(np.asarray(null) >= rho - 1e-12))


def test_rank_agreement_reads_the_activations_order_with_ilm_taken_out(store):
    _save_table4_seed(store, 0, [80.0, 81.0, 82.0, 83.0], [70.0, 71.0, 72.0])
    _save_table4_seed(store, 1, [85.0, 86.0, 87.0, 88.0], [60.0, 62.0, 64.0])
    rho, p, n = presets.preset_rank_agreement("table4", "table4")
    assert (rho, n) == (pytest.approx(1.0), 7)
    assert p == pytest.approx(1 / (24 * 6))  # only the identity of 4! x 3! reorderings
    assert book.presets_rank_agreement() == {
        "table4_rank_n": 7, "table4_rank_rho": "+1.00", "table4_rank_p": "= 0.007",
        "table4_rank_reading": "repeats"}
    # each group's order reversed at seed 1, a big ILM gap kept: ILM alone must not make the
    # order repeat (the plain Spearman of the raw accuracies would say it does)
    _save_table4_seed(store, 1, [88.0, 87.0, 86.0, 85.0], [64.0, 62.0, 60.0])
    raw = [list(presets.presets_at_seed("table4", "table4", s).values()) for s in (0, 1)]
    assert stats.spearmanr(*raw).statistic >= 0.5  # the ILM gap alone
    rho, p, _n = presets.preset_rank_agreement("table4", "table4")
    assert rho == pytest.approx(-1.0) and p == 1.0
    assert book.presets_rank_agreement()["table4_rank_reading"] == "is not shown to repeat"
    assert book.presets_rank_agreement(seeds=(0, 4))["table4_rank_reading"] == \
        "cannot yet be compared"  # no preset has seed 4


def test_rank_agreement_reads_the_metric_and_records_asked_for(store, monkeypatch):
    asked = []
    real = presets.presets_at_seed

    def spy(experiment, table, seed, full, metric, current, root):
        asked.append((seed, metric, current))
        return real(experiment, table, seed, full, metric, current, root)

    monkeypatch.setattr(presets, "presets_at_seed", spy)
    presets.preset_rank_agreement("table4", "table4", (0, 1), metric="val.accuracy",
                                  current=False)
    assert asked == [(0, "val.accuracy", False), (1, "val.accuracy", False)]


def test_rank_agreement_matches_a_brute_force_permutation_test_with_ties(store):
    rng = np.random.default_rng(7)
    for s in SEEDS[:2]:  # whole numbers: ties within and across the groups
        _save_table4_seed(store, s, [float(v) for v in rng.integers(80, 84, 4)],
                          [float(v) for v in rng.integers(78, 82, 3)])
    got = [presets.presets_at_seed("table4", "table4", s) for s in (0, 1)]
    names = list(got[0])
    rho, p, _n = presets.preset_rank_agreement("table4", "table4")
    want = _brute_force_p([got[0][v] for v in names], [got[1][v] for v in names],
                          [presets.ilm_group(v) for v in names])
    assert (rho, p) == (pytest.approx(want[0]), pytest.approx(want[1]))


def test_sampled_orderings_reorder_only_within_ilm_groups(monkeypatch):
    groups = [False, True, False, True, True, False]
    monkeypatch.setattr(presets, "MAX_ORDERINGS", 50)  # 3! x 3! = 36 exact; 4! x ... sampled
    exact = presets._within_group_orderings(groups, np.random.default_rng(0))
    assert len(exact) == 36 and len({tuple(r) for r in exact}) == 36
    groups += [False]  # 4! x 3! = 144 > 50: sampled
    sampled = presets._within_group_orderings(groups, np.random.default_rng(0))
    assert len(sampled) == 50 and len({tuple(r) for r in sampled}) > 10
    for flag in (False, True):
        members = np.flatnonzero(np.asarray(groups) == flag)
        assert all(set(r[members]) == set(members) for r in sampled)
