"""The run store: round trip, atomic writes, queries and summaries (cfdan.results)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from records import record

from cfdan import results
from cfdan.analysis import runs


def _record(exp, run_id, variant, seed, acc):
    """:func:`conftest.record` with a validation split (per-class recall, a confusion matrix)
    and a test split ``acc - 0.01``; ``acc`` a fraction."""
    return record(exp, variant, seed, 100 * (acc - 0.01), run_id=run_id, history=[50.0, 100.0],
                  val={"accuracy": acc, "loss": 1.0, "per_class": {"a": {"recall": acc}},
                       "confusion": [[1, 0], [0, 1]]},
                  test={"accuracy": acc - 0.01, "mean_class_accuracy": acc - 0.1})


def test_round_trip_and_query(tmp_path):
    accs = {("full", 0): 0.8, ("full", 1): 0.9, ("baseline", 0): 0.7, ("baseline", 1): 0.6}
    for (v, s), a in accs.items():
        rec = _record("exp1", f"{v}{s}", v, s, a)
        results.save_record(rec, {"confusion": np.eye(2, dtype=int)}, root=tmp_path)
    results.save_record(_record("exp2", "other", "full", 0, 0.5), root=tmp_path)

    assert results.has_record("exp1", "full0", tmp_path)
    assert results.read_record(tmp_path / "exp1" / "full0.json")["val"]["accuracy"] == 0.8
    df = results.load("exp1", root=tmp_path)
    assert len(df) == 4 and set(df["variant"]) == {"full", "baseline"}
    assert "model.preset" in df.columns and "test.accuracy" in df.columns
    assert "val.per_class.a.recall" in df.columns
    assert len(results.load(root=tmp_path)) == 5
    # filters: full name, __ spelling, unambiguous suffix, list of values
    assert len(results.load("exp1", root=tmp_path, **{"model.preset": "full"})) == 2
    assert len(results.load("exp1", root=tmp_path, model__preset="full")) == 2
    assert len(results.load("exp1", root=tmp_path, preset="baseline", seed=[1])) == 1
    with pytest.raises(KeyError, match="matches no column"):
        results.load("exp1", root=tmp_path, nonsense=1)

    summ = results.summarize(df, by="variant").set_index("variant")
    assert summ.loc["full", "n"] == 2
    assert summ.loc["full", "test.accuracy.mean"] == pytest.approx(np.mean([0.79, 0.89]))
    assert summ.loc["baseline", "test.accuracy.std"] == pytest.approx(
        np.std([0.69, 0.59], ddof=1))

    arr = results.load_arrays("full0", "exp1", root=tmp_path)
    assert np.array_equal(arr["confusion"], np.eye(2))
    hist = results.load_history("full1", root=tmp_path)
    assert list(hist["epoch"]) == [1, 2] and hist["val_accuracy"].iloc[-1] == 1.0
    assert len(results.load_history(experiment="exp1", root=tmp_path)) == 8
    with pytest.raises(KeyError):
        results.load_arrays("missing", root=tmp_path)


def test_empty_store(tmp_path):
    assert results.load(root=tmp_path / "nothing").empty


def test_env_var_redirects_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    results.save_record(_record("e", "r", "full", 0, 0.5))
    assert (tmp_path / "e" / "r.json").is_file()


def test_failed_write_leaves_old_record_and_no_temp_file(tmp_path, monkeypatch):
    path = results.save_record(_record("e", "r", "full", 0, 0.5), root=tmp_path)

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.save_record(_record("e", "r", "full", 0, 0.9), root=tmp_path)
    assert json.loads(path.read_text())["val"]["accuracy"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_build_record_lays_out_a_run():
    from cfdan.training.config import load_config

    cfg = load_config("smoke", {"train.epochs": 4})
    history = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.6}]
    rec = results.build_record(
        cfg, provenance={"git": {"commit": "abc"}, "hardware": {"device": "cpu"},
                         "versions": {"torch": "x"}, "peak_memory": {"host_max_rss_mb": 1.0}},
        data={"dataset": "synthetic"}, model_info={"params": 10}, history=history,
        epochs_fitted=2, stop_reason="time_budget_fitted", best_epoch=2,
        metrics={"val": {"accuracy": 0.6}, "test": {"accuracy": 0.55}, "train_subset": None},
        train_time_s=1.0, wall_time_s=2.0, resumed_at_epochs=[], checkpoint="smoke/x/best.pt",
    )
    assert list(rec) == [
        "schema", "experiment", "run_id", "variant", "profile", "seed", "config", "date", "git",
        "hardware", "versions", "data", "model_info", "history", "epochs_planned",
        "epochs_fitted", "epochs_run", "schedule_refitted", "cut_short", "stop_reason",
        "selection", "best_epoch", "val", "test", "train_subset", "train_time_s", "wall_time_s", "resumed_at_epochs",
        "peak_memory", "checkpoint",
    ]
    assert rec["run_id"] == cfg.run_id and rec["variant"] == "full" and rec["seed"] == 0
    assert rec["epochs_planned"] == 4 and rec["epochs_run"] == 2 and rec["cut_short"] is True
    assert rec["schedule_refitted"] is True  # epochs_fitted 2 < epochs_planned 4
    assert rec["git"] == {"commit": "abc"} and rec["config"] == cfg.to_dict()


def test_bad_names_and_broken_records(tmp_path):
    with pytest.raises(ValueError):
        results.record_path("../evil", "x", tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        results.load("e", root=tmp_path)


def test_drop_arrays_removes_keys_and_notes_it(tmp_path):
    import numpy as np

    from cfdan import results as R

    rec = {"experiment": "e", "run_id": "r1", "test": {"accuracy": 0.5}}
    path = R.save_record(rec, {"keep": np.arange(3), "attention_images": np.zeros((2, 1, 4, 4))},
                         root=tmp_path)
    assert R.drop_arrays(path, ["attention_images"], "pixels removed") == ["attention_images"]
    with np.load(path.with_suffix(".npz")) as z:
        assert z.files == ["keep"]
    after = R.read_record(path)
    assert after["provenance_note"] == "pixels removed" and after["test"] == rec["test"]
    assert R.drop_arrays(path, ["attention_images"], "again") == []  # nothing left: no write
    assert R.read_record(path)["provenance_note"] == "pixels removed"


def test_add_note_appends_and_never_touches_outcomes(tmp_path):
    path = results.save_record({"experiment": "x", "run_id": "r", "test": {"accuracy": 0.5},
                                "provenance_note": "first"}, root=tmp_path)
    assert results.add_note(path, "second", schedule_refitted=True)
    rec = results.read_record(path)
    assert rec["provenance_note"] == "first | second" and rec["schedule_refitted"] is True
    assert not results.add_note(path, "second")  # already there: nothing written
    for bad in ({"test": {"accuracy": 0.9}}, {"schedule_refitted": False}):
        with pytest.raises(ValueError, match="may not set"):
            results.add_note(path, "third", **bad)
    assert results.read_record(path)["test"] == {"accuracy": 0.5}


def test_superseded_records_leave_queries_but_not_lookups(tmp_path):
    """A record marked superseded_by is out of load() and iter_records() by default, and
    still found by run id (get_record, load_arrays, load_history) and with superseded=True."""
    old = results.save_record(_record("p", "old", "full", 0, 0.6), {"confusion": np.eye(2)},
                              root=tmp_path)
    results.save_record(_record("p", "new", "full", 0, 0.8), root=tmp_path)
    assert len(results.load("p", root=tmp_path)) == 2
    assert results.add_note(old, "replaced by new", superseded_by="new")
    assert list(results.load("p", root=tmp_path)["run_id"]) == ["new"]
    assert [r["run_id"] for _p, r in results.iter_records("p", tmp_path, superseded=True)] == [
        "new", "old"]
    assert results.get_record("old", "p", tmp_path)["superseded_by"] == "new"
    assert results.load_arrays("old", "p", tmp_path)["confusion"].shape == (2, 2)
    assert len(results.load_history("old", root=tmp_path)) == 2
    assert len(results.load_history(experiment="p", root=tmp_path)) == 2  # the new run only


def test_only_runs_an_experiment_file_plans_today_count(store):
    """The rule of the queue and of the run table: a record counts when its experiment file
    plans its run id today (every record of an experiment without a file)."""
    from cfdan.training import config, sweep

    (config.EXPERIMENTS_DIR / "abl.toml").write_text(
        'description = "x"\nprofile = "smoke"\nseeds = [0, 1]\n\n'
        '[variants]\nbaseline = { "model.preset" = "baseline" }\n')
    seeds, ids = config.planned("abl")
    assert seeds == (0, 1) and len(ids) == 2 and runs.plan("abl") == (seeds, ids)
    assert config.planned("no_such_file") is None and runs.plan_seeds("no_such_file") == ()
    today = results.save_record(record("abl", "baseline", 0), root=store)
    results.save_record(record("abl", "baseline", 1, run_id="of_an_older_schedule"), root=store)
    results.save_record(record("paper", run_id="anything"), root=store)
    assert {r["run_id"] for r in sweep.current_records("abl")} == {today.stem}
    table = runs.frame().set_index("run_id")
    assert table["planned"].to_dict() == {"anything": True, today.stem: True,
                                          "of_an_older_schedule": False}
    assert set(runs.counted()["run_id"]) == {"anything", today.stem}
