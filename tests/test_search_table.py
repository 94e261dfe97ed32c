"""The cpu-profile search table (chapter 5): validation only, pending candidates shown."""

from __future__ import annotations

from cfdan import results
from cfdan.analysis import search
from cfdan.training.config import load_experiment


def _record(cfg, val: float, test: float) -> dict:
    hist = [{"epoch": e + 1, "epoch_time_s": 80.0 + e, "eval_time_s": 5.0, "val_accuracy": val}
            for e in range(cfg.train.epochs)]
    return {"experiment": cfg.experiment, "run_id": cfg.run_id, "variant": cfg.variant,
            "config": cfg.to_dict(), "history": hist, "best_epoch": cfg.train.epochs,
            "val": {"accuracy": val}, "test": {"accuracy": test},
            "train_subset": {"accuracy": 0.9, "n": 5000}, "wall_time_s": 1800.0,
            "hardware": {"torch_threads": 2}, "git": {"commit": "abcdef0123"}}


def test_search_table_shows_val_never_test(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    cfgs = load_experiment("cpu_search").configs()
    results.save_record(_record(cfgs[0], 0.8123, 0.7777))
    results.save_record(_record(cfgs[1], 0.8200, 0.6666))
    t = search.search_table()
    assert list(t["candidate"]) == [c.variant for c in cfgs]
    assert t.loc[0, "val acc %"] == 81.23 and t.loc[0, "epoch s (fastest)"] == 85.0
    assert (t.loc[2:, "val acc %"] == "not run").all()
    assert not any(c.lower().startswith("test") for c in t.columns)
    assert "77.77" not in t.to_string() and "66.66" not in t.to_string()
    assert t.loc[0, "best epoch"] == cfgs[0].train.epochs and isinstance(t.loc[0, "best epoch"], int)
    yard = [c.variant for c in cfgs if c.model.get("preset") == "plain_cnn"]
    assert list(t.loc[t["role"] == "yardstick", "candidate"]) == yard
    facts = search.search_facts()
    assert facts["search_leader"] == cfgs[1].variant and facts["search_done"] == 2
    assert t.loc[1, "role"] == "candidate: frozen as cpu v2"  # the best val, by the rule
    assert t.loc[0, "role"] == "candidate"


def test_search_table_with_no_records(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    assert search.search_facts()["search_leader"] == "none yet"


def test_search_facts_time_the_runs_and_place_the_yardstick(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    cfgs = load_experiment("cpu_search").configs()
    yard = next(c for c in cfgs if c.model.get("preset") == "plain_cnn")
    cands = [c for c in cfgs if c is not yard][:2]
    results.save_record(_record(cands[0], 0.8100, 0.5))
    results.save_record(_record(cands[1], 0.8300, 0.5))
    facts = search.search_facts()
    assert "search_yardstick_val" not in facts  # the yardstick has not run
    results.save_record(_record(yard, 0.8200, 0.5))
    facts = search.search_facts()
    assert facts["search_yardstick_val"] == "82.00"
    assert facts["search_yardstick_vs_best"] == "-1.00" and facts["search_yardstick_beats"] == 1
    # fastest epoch is 80 + 5 s in _record: the uncontended time is epochs x 85 s
    mins = sorted(c.train.epochs * 85.0 / 60 for c in [*cands, yard])
    assert facts["search_idle_min_low"] == mins[0] and facts["search_idle_min_high"] == mins[-1]
