"""What chapters 4 and 5 show (cfdan.analysis.book), on a store of hand-made records."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from cfdan import paper
from cfdan.analysis import book, figures, sensitivity, tables
from cfdan.training import config

matplotlib.use("Agg")

CLASSES = ("neutral", "disgust")


def _record(experiment: str, run_id: str, variant: str = "full", seed: int = 0, acc: float = 0.5,
            planned: int = 4, fitted: int | None = None, run: int | None = None,
            cut_short: bool = False, budget: float = 0.0) -> dict:
    fitted = planned if fitted is None else fitted
    run = fitted if run is None else run
    return {
        "experiment": experiment, "run_id": run_id, "variant": variant, "seed": seed,
        "date": "2026-01-01T00:00:00+00:00", "git": {"commit": "abc", "dirty": False},
        "config": {"train": {"time_budget_s": budget, "batch_size": 8},
                   "data": {"image_size": 32, "dataset": "ferplus"},
                   "model": {"preset": variant, "trunk_width": 4}},
        "hardware": {"device": "cpu", "cpu": "test cpu", "cpu_count": 2},
        "versions": {"torch": "x", "python": "y"}, "peak_memory": {"host_max_rss_mb": 10.0},
        "data": {"dataset": "ferplus", "fingerprint": {"train": "t", "val": "v", "test": "s"}},
        "epochs_planned": planned, "epochs_fitted": fitted, "epochs_run": run,
        "cut_short": cut_short, "stop_reason": "time budget" if cut_short else "completed",
        "wall_time_s": 600.0, "train_time_s": 500.0, "best_epoch": run,
        "history": [{"epoch": e + 1, "images_per_s": 100.0 + e, "epoch_time_s": 10.0 * (e + 1),
                     "eval_time_s": 1.0, "val_accuracy": 0.1 * e} for e in range(run)],
        "test": {"accuracy": acc, "mean_class_accuracy": acc / 2,
                 "per_class": {c: {"support": 3 + i, "recall": 0.5, "f1": 0.5}
                               for i, c in enumerate(CLASSES)}},
    }


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hand-made records under experiments without plan files, so every record counts
    (records of a plan's older configs are tested in test_claims.py)."""
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(config, "EXPERIMENTS_DIR", tmp_path / "no_plans")
    recs = [
        _record("paper", "p0", acc=0.7, planned=40, fitted=10, budget=466.0),
        _record("cpu_v2", "c0", acc=0.8, planned=12),
        _record("table5", "t0", variant="no_distill", acc=0.6, planned=4, run=2, cut_short=True),
        _record("cpu_search", "s0", acc=0.9),  # not one of the book's experiments
    ]
    for rec in recs:
        path = tmp_path / rec["experiment"] / f"{rec['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    return tmp_path


def test_schedule_names_refits_and_cuts():
    assert book.schedule(_record("cpu", "a")) == ""
    refit = book.schedule(_record("paper", "b", planned=40, fitted=10, budget=466.0))
    assert "10 of 40 planned epochs" in refit and "466 s" in refit
    assert book.schedule(_record("paper", "b", planned=40, fitted=10), short=True) == \
        "10/40 epochs, time budget"
    cut = book.schedule(_record("x", "c", planned=4, run=2, cut_short=True))
    assert "cut short" in cut and "2 of 4" in cut


def test_only_the_books_experiments_are_shown(store):
    assert {r["experiment"] for r in book.records()} == {"paper", "cpu_v2", "table5"}
    for table in (book.provenance(), book.hardware_table(), book.speed_table(),
                  book.fingerprint_table()):
        assert "cpu_search" not in set(table["experiment"])
        assert len(table) == 3


def test_run_tables_are_ordered_by_experiment_variant_seed(store):
    for seed, run_id in ((2, "a2"), (0, "z0"), (1, "m1")):
        rec = _record("cpu_v2", run_id, seed=seed)
        (store / "cpu_v2" / f"{run_id}.json").write_text(json.dumps(rec))
    for table in (book.hardware_table("cpu_v2"), book.speed_table("cpu_v2"),
                  book.fingerprint_table("cpu_v2"), book.provenance("cpu_v2")):
        assert list(table["seed"]) == [0, 0, 1, 2]
    assert list(book.speed_table("cpu_v2")["threads"]) == [2, 2, 2, 2]


def test_provenance_and_hardware_carry_the_schedule(store):
    prov = book.provenance().set_index("run_id")
    assert "10 of 40" in prov.loc["p0", "schedule"]
    assert prov.loc["c0", "schedule"] == "as planned"
    hw = book.hardware_table("paper")
    assert "10 of 40" in hw["schedule"].iloc[0]


def test_table1_marks_the_refitted_run_where_its_number_is_shown(store):
    df = book.table1().set_index("source")
    assert "[refitted" in df.loc["ours: paper profile (1 GPU)", "FERPlus"]
    assert "70.00" in df.loc["ours: paper profile (1 GPU)", "FERPlus"]
    assert "[" not in df.loc["ours: cpu profile (2 CPU cores)", "FERPlus"]
    assert "[" in book.gap_to_paper("paper") and "[" not in book.gap_to_paper("cpu_v2")


def test_ablation_tables_label_paper_numbers_with_and_without_runs(store):
    t4 = book.ablation_table("table4", "table4")  # no run of ours
    for col in paper.value_columns("table4"):
        assert f"paper {col}" in t4.columns and col not in t4.columns
    # hand-made run ids are not in today's table5.toml: read them without that filter
    t5 = book.ablation_table("table5", "table5", current=False).set_index("preset")
    for col in paper.value_columns("table5"):
        assert f"paper {col}" in t5.columns and col not in t5.columns
    ours = [c for c in t5.columns if c.startswith("ours")]
    assert "cut short" in t5.loc["no_distill", ours[0]]
    assert "[" not in t5.loc["full", ours[0]]


def test_facts_are_read_from_the_records(store):
    facts = book.facts()
    assert facts["paper_wall_min"] == pytest.approx(10.0)
    assert facts["paper_epochs_fitted"] == 10 and facts["paper_epochs_planned"] == 40
    assert facts["paper_img_per_s"] == pytest.approx(np.median(100.0 + np.arange(10)))
    assert facts["cpu_test_support_disgust"] == 4
    assert facts["cpu_seeds"] == 1
    assert not any(k.startswith("table3_") for k in facts)  # no table3 run in this store


def test_a_superseded_run_gives_way_to_its_successor(store):
    """The paper run p0 (refitted) is superseded by p1 (all 40 epochs, compiled): tables and
    facts show p1; the hardware and speed tables keep both; p0's facts become previous_*."""
    from cfdan import results

    new = _record("paper", "p1", acc=0.84, planned=40, run=40)
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
    assert [r["run_id"] for r in book.records("paper")] == ["p1"]


def test_glue_all_hands_plain_scalars_to_myst_nb(monkeypatch):
    import myst_nb

    got = {}
    monkeypatch.setattr(myst_nb, "glue", lambda k, v, display=True: got.update({k: (v, display)}))
    book.glue_all({"a": np.float64(1.5), "b": "x"}, prefix="p_")
    assert got == {"p_a": (1.5, False), "p_b": ("x", False)}
    assert type(got["p_a"][0]) is float


def test_figures_are_titled_with_the_schedule(store):
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
