"""The run store: round trip, atomic writes, queries and summaries (cfdan.results)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cfdan import results


def _record(exp, run_id, variant, seed, acc):
    return {
        "experiment": exp, "run_id": run_id, "variant": variant, "seed": seed,
        "config": {"model": {"preset": variant}, "train": {"seed": seed, "lr": 1e-3}},
        "history": [{"epoch": 1, "train_loss": 2.0, "val_accuracy": acc / 2},
                    {"epoch": 2, "train_loss": 1.0, "val_accuracy": acc}],
        "val": {"accuracy": acc, "loss": 1.0, "per_class": {"a": {"recall": acc}},
                "confusion": [[1, 0], [0, 1]]},
        "test": {"accuracy": acc - 0.01, "mean_class_accuracy": acc - 0.1},
        "git": {"commit": "abc", "dirty": False},
    }


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
    assert list(hist["epoch"]) == [1, 2] and hist["val_accuracy"].iloc[-1] == 0.9
    assert len(results.load_history(experiment="exp1", root=tmp_path)) == 8
    with pytest.raises(KeyError):
        results.load_arrays("missing", root=tmp_path)


def test_empty_store(tmp_path):
    assert results.load(root=tmp_path / "nothing").empty


def test_env_var_redirects_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    results.save_record(_record("e", "r", "full", 0, 0.5))
    assert (tmp_path / "e" / "r.json").is_file()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    results.atomic_write_json(path, {"a": 1})

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_bad_names_and_broken_records(tmp_path):
    with pytest.raises(ValueError):
        results.record_path("../evil", "x", tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        results.load("e", root=tmp_path)
