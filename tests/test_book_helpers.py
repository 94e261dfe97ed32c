"""What chapters 4 and 5 show (cfdan.analysis.book), on the shared store of hand-made records
(conftest.py)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from records import record, save_run

from cfdan import paper, results
from cfdan.analysis import book, figures, runs, sensitivity, tables

matplotlib.use("Agg")


def epochs(n: int) -> list[float]:
    """A history of ``n`` epochs (validation accuracy 0, 10, 20 ... %)."""
    return [10.0 * e for e in range(n)]


@pytest.fixture
def shown(store):
    """A refitted paper-profile run, a cpu v2 run, a cut-short Table 5 run and a run of an
    experiment the book does not show; returns the records by experiment."""
    recs = [
        record("paper", acc=70.0, planned=40, fitted=10, history=epochs(10), budget=466.0,
               run_id="p0"),
        record("cpu_v2", acc=80.0, planned=12, history=epochs(12)),
        record("table5", "no_distill", acc=60.0, planned=4, history=epochs(2), cut_short=True),
        record("cpu_search", acc=90.0, history=epochs(3)),  # not one of the book's experiments
    ]
    for rec in recs:
        results.save_record(rec, root=store)
    return {r["experiment"]: r for r in recs}


def test_schedule_names_refits_and_cuts():
    assert runs.schedule(record("cpu", history=epochs(3))) == ""
    refit = runs.schedule(record("paper", planned=40, fitted=10, history=epochs(10),
                                 budget=466.0))
    assert "10 of 40 planned epochs" in refit and "466 s" in refit
    assert runs.schedule(record("paper", planned=40, fitted=10, history=epochs(10)),
                         short=True) == \
        "10/40 epochs, time budget"
    cut = runs.schedule(record("x", planned=4, history=epochs(2), cut_short=True))
    assert "cut short" in cut and "2 of 4" in cut


def test_only_the_books_experiments_are_shown(shown):
    assert set(runs.counted()["experiment"]) == {"paper", "cpu_v2", "table5", "cpu_search"}
    for table in (book.provenance(), book.hardware_table(), book.speed_table(),
                  book.fingerprint_table()):
        assert "cpu_search" not in set(table["experiment"])
        assert len(table) == 3


def test_run_tables_are_ordered_by_experiment_variant_seed(store, shown):
    for seed, run_id in ((2, "a2"), (0, "z0"), (1, "m1")):  # the store's order is by run id
        save_run(store, "cpu_v2", seed=seed, run_id=run_id, history=epochs(3))
    for table in (book.hardware_table("cpu_v2"), book.speed_table("cpu_v2"),
                  book.fingerprint_table("cpu_v2"), book.provenance("cpu_v2")):
        assert list(table["seed"]) == [0, 0, 1, 2]
    assert list(book.speed_table("cpu_v2")["threads"]) == [2, 2, 2, 2]


def test_provenance_and_hardware_carry_the_schedule(shown):
    prov = book.provenance().set_index("run_id")
    assert "10 of 40" in prov.loc["p0", "schedule"]
    assert prov.loc[shown["cpu_v2"]["run_id"], "schedule"] == "as planned"
    hw = book.hardware_table("paper")
    assert "10 of 40" in hw["schedule"].iloc[0]


def test_table1_marks_the_refitted_run_where_its_number_is_shown(shown):
    df = book.table1().set_index("source")
    assert "[refitted" in df.loc["ours: paper profile (1 GPU)", "FERPlus"]
    assert "70.00" in df.loc["ours: paper profile (1 GPU)", "FERPlus"]
    assert "[" not in df.loc["ours: cpu profile (2 CPU cores)", "FERPlus"]
    assert "[" in book.gap_to_paper("paper") and "[" not in book.gap_to_paper("cpu_v2")


def test_ablation_tables_label_paper_numbers_with_and_without_runs(shown):
    t4 = book.ablation_table("table4", "table4")  # no run of ours
    for col in paper.value_columns("table4"):
        assert f"paper {col}" in t4.columns and col not in t4.columns
    t5 = book.ablation_table("table5", "table5").set_index("preset")
    for col in paper.value_columns("table5"):
        assert f"paper {col}" in t5.columns and col not in t5.columns
    ours = [c for c in t5.columns if c.startswith("ours")]
    assert "cut short" in t5.loc["no_distill", ours[0]]
    assert "[" not in t5.loc["full", ours[0]]


def test_facts_are_read_from_the_records(shown):
    facts = book.facts()
    assert facts["paper_wall_min"] == pytest.approx(10.0)
    assert facts["paper_epochs_fitted"] == 10 and facts["paper_epochs_planned"] == 40
    assert facts["paper_img_per_s"] == pytest.approx(np.median(100.0 + np.arange(10)))
    assert facts["cpu_test_support_disgust"] == 4
    assert facts["cpu_seeds"] == 1
    assert not any(k.startswith("table3_") for k in facts)  # no table3 run in this store


def test_a_superseded_run_gives_way_to_its_successor(store, shown):
    """The paper run p0 (refitted) is superseded by p1 (all 40 epochs, compiled): tables and
    facts show p1; the hardware and speed tables keep both; p0's facts become previous_*."""
    new = record("paper", acc=84.0, planned=40, history=epochs(40), run_id="p1")
    new["config"]["train"].update(compile=True, compile_mode="reduce-overhead")
    results.save_record(new, root=store)
    assert results.add_note(store / "paper" / "p0.json", "replaced", superseded_by="p1")
    facts = book.facts()
    assert facts["paper_epochs_fitted"] == 40 and facts["paper_compiled"] == "reduce-overhead"
    assert facts["paper_previous_epochs_fitted"] == 10 and facts["paper_previous_compiled"] == "no"
    assert facts["paper_previous_run_id"] == "p0"
    t1 = book.table1().set_index("source").loc["ours: paper profile (1 GPU)", "FERPlus"]
    assert "84.00" in t1 and "[" not in t1
    speed = book.speed_table("paper").set_index("compiled")
    assert set(speed.index) == {"no", "reduce-overhead"}
    hw = book.hardware_table("paper").set_index("run_id")
    assert hw.loc["p0", "superseded by"] == "p1" and "10 of 40" in hw.loc["p0", "schedule"]
    assert book.record("paper")["run_id"] == "p1"
    counted = runs.counted()
    assert list(counted.loc[counted["experiment"] == "paper", "run_id"]) == ["p1"]


def test_glue_all_hands_plain_scalars_to_myst_nb(monkeypatch):
    import myst_nb

    got = {}
    monkeypatch.setattr(myst_nb, "glue", lambda k, v, display=True: got.update({k: (v, display)}))
    book.glue_all({"a": np.float64(1.5), "b": "x"}, prefix="p_")
    assert got == {"p_a": (1.5, False), "p_b": ("x", False)}
    assert type(got["p_a"][0]) is float


def test_figures_are_titled_with_the_schedule(shown):
    import matplotlib.pyplot as plt

    fig = figures.history_figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert "10/40 epochs" in titles[0] and "[" not in titles[1]
    plt.close(fig)


def test_pcp_grid_figure_draws_every_grid_value():
    import matplotlib.pyplot as plt

    fig = sensitivity.pcp_grid_figure()
    for ax, values in zip(fig.axes, paper.FIG10_GRID.values(), strict=True):
        assert len(ax.get_lines()) == len(values) + 1  # + the zero line
    plt.close(fig)


def test_pcp_grid_spread_is_the_largest_gap_between_curves():
    grid = {"s_L": (1.5, 2.5), "x_L": (0.19,), "P1": (-0.2, -0.3)}
    spread = sensitivity.pcp_grid_spread(grid)
    assert spread["x_L"] == 0.0  # one value: nothing to compare
    # P1 is PCP's value below -1, so two P1 values differ there by exactly their gap
    assert spread["P1"] == pytest.approx(0.1)
    assert spread["s_L"] > 0


def test_hardware_label_groups_cpu_thread_counts_and_flags_cpu_with_gpu():
    def rec(device: str, threads: int | None = None, gpu: str | None = None) -> dict:
        return {"hardware": {"device": device, "torch_threads": threads, "gpu": gpu}}

    assert tables.hardware_label([]) == "-"
    assert tables.hardware_label([rec("cpu", 1)]) == "CPU (1 thread)"
    assert tables.hardware_label([rec("cpu", 2), rec("cpu", 1), rec("cpu", 2)]) == \
        "CPU (1, 2 threads)"
    assert tables.hardware_label([rec("cuda:0", gpu="H200")]) == "GPU (H200)"
    assert tables.hardware_label([rec("cpu", 2), rec("cuda", gpu="H200")]) == \
        "mixed: GPU (H200), CPU (2 threads)"
