"""Chapter 2's comparison tables (cfdan.model.compare) against measurements and the paper."""

from __future__ import annotations

import math

import matplotlib
import pytest

from cfdan import paper
from cfdan.model import compare, preset
from cfdan.model.cost import attention_cost, measure

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def full_cost():
    cfg = preset("full")
    return cfg, measure(cfg)


def test_part_summary_parts_add_up(full_cost):
    _cfg, cost = full_cost
    df = compare.part_summary(cost).set_index("part")
    parts = df.drop(index="total")
    assert parts["params (M)"].sum() == pytest.approx(df.loc["total", "params (M)"])
    assert parts["GFLOPs (MACs)"].sum() <= df.loc["total", "GFLOPs (MACs)"] + 1e-12


def test_table2_keeps_paper_rows_labelled_and_adds_ours(full_cost):
    _cfg, cost = full_cost
    df = compare.table2(cost)
    assert len(df) == len(paper.TABLE2) + 1
    assert (df["source"].iloc[:-1] == paper.PAPER).all()
    assert df["source"].iloc[-1] == compare.OURS
    assert df["params_M"].iloc[-1] == cost["total"].params_m


def test_table2_gap_is_relative_to_the_paper(full_cost):
    _cfg, cost = full_cost
    df = compare.table2_gap(cost, tolerance_pct=5.0).set_index("quantity")
    row = df.loc["params (M)"]
    assert row["paper"] == paper.value("table2", "params_M")
    assert row["gap %"] == pytest.approx(100 * (row["ours"] / row["paper"] - 1))
    assert row["within 5 %"] == (abs(row["gap %"]) < 5)


def test_table5_measures_the_attention_of_each_paper_row():
    t5 = compare.table5(image_size=112)
    assert list(t5["preset"]) == [r[1] for r in paper.TABLE5]
    row = t5.iloc[0]
    assert row["ours FLOPs (G)"] == measure(preset(row["preset"], image_size=112))["attention"].gmacs
    for _, row in t5.iterrows():
        assert row["paper FLOPs (G)"] == paper.value("table5", "FLOPs_G", row["preset"], "preset")
    saving = compare.distillation_saving(t5, image_size=112)
    assert saving["paper"] == pytest.approx(1 - paper.value("table5", "FLOPs_G", "full", "preset")
                                            / paper.value("table5", "FLOPs_G", "no_distill",
                                                          "preset"))
    assert 0 < saving["ours"] < 1  # distillation before projecting removes work
    assert saving["ours_post"] < saving["ours"]  # distilling after projecting saves less
    extra = compare.distillation_extra_params(t5)
    assert extra == pytest.approx(measure(preset("full", image_size=112))["attention"].params_m
                                  - measure(preset("no_distill", image_size=112))
                                  ["attention"].params_m)
    assert extra > 0  # the distillation convolutions hold weights


def test_attention_cost_curve_grows_with_tokens():
    grids = (4, 7)
    curve = compare.attention_cost_curve(grids)
    assert len(curve) == len(compare.ATTENTION_VARIANTS) * len(grids)
    for _v, d in curve.groupby("variant"):
        assert d["GFLOPs"].is_monotonic_increasing
    first = curve.iloc[0]
    assert first["GFLOPs"] == attention_cost(preset("full"), 4).gmacs


def test_plot_attention_cost_draws_one_line_per_variant():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    compare.plot_attention_cost(ax, compare.attention_cost_curve((4, 5)), mark_tokens=None)
    assert len(ax.get_lines()) == len(compare.ATTENTION_VARIANTS)
    plt.close(fig)


def test_preset_table_lists_overrides_and_sizes():
    presets = {"full": {}, "no_distill": {"distill": False}}
    df = compare.preset_table(image_size=64, presets=presets).set_index("preset")
    assert df.loc["full", "overrides"] == "-"
    assert df.loc["no_distill", "overrides"] == "distill=False"
    assert df.loc["full", "params (M)"] == measure(preset("full", image_size=64))["total"].params_m


def test_design_numbers_follow_the_config_and_the_measurement(full_cost):
    cfg, cost = full_cost
    n = compare.design_numbers(cfg, cost)
    assert n["tokens"] == cfg.grid ** 2
    assert n["kv_tokens"] == math.ceil(cfg.grid / cfg.distill_pool) ** 2
    assert n["projections"] == 4 * n["attention_blocks"]
    # without distillation the attention is the projections plus biases and norms (< 1 %)
    no_distill = measure(preset("no_distill"))["attention"].params_m
    assert n["projection_params_M"] == pytest.approx(no_distill, rel=0.01)
    assert n["ilm_params_M_measured"] == cost["ilm"].params_m
    assert n["paper_trunk_params_M"] == pytest.approx(
        n["paper_params_M"] - n["paper_attention_params_M"] - n["ilm_params_M_measured"])
