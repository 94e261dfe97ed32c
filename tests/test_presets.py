"""How a paper table's presets compare as a group (cfdan.analysis.presets): their order and the block F
test (statsmodels' anova_lm, checked against least squares by hand), on the shared store of
hand-made records (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from records import BASE, SEEDS, save_run
from scipy import stats

from cfdan import paper
from cfdan.analysis import book, claims, presets, prose


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
    assert facts["table4_block_p"] == prose.p_text(p_val)
    assert facts["table4_block_reading"] == ("differ beyond" if p_val < claims.ALPHA
                                             else "cannot be told apart from")
    assert facts["table4_block_reading"] == "cannot be told apart from"  # effects << noise
    save_run(store, "table4", "act_sigmoid", 0, BASE[0] + 6.0)
    save_run(store, "table4", "act_sigmoid", 1, BASE[1] + 6.0)  # a real effect: found
    assert book.presets_block_test()["table4_block_reading"] == "differ beyond"


def test_p_values_print_with_their_relation_and_never_round_onto_alpha():
    assert [prose.p_text(p) for p in (0.0004, 0.0123, 0.0499, 0.0504, 0.061, 0.394)] == \
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
