"""Planning a GPU evidence call (cfdan.training.gpu_plan) from fake probe numbers; its
experiment files; the provenance notes it writes."""

from __future__ import annotations

import json
import shlex

import pytest

from cfdan import results
from cfdan.training import gpu_plan as gp
from cfdan.training.config import available_experiments, load_experiment

A, B = "gpu_smoke_table3", "gpu_smoke_paper"  # the smoke stand-ins of gpu_table3, paper_table3


def fake_probe(a: dict[int, float], b: dict[int, float] | None = None) -> dict:
    exps = {A: {"profile": "smoke", "aggregate_img_s": {str(k): v for k, v in a.items()},
                "gpu_gb_per_worker": 0.5}}
    if b is not None:
        exps[B] = {"profile": "smoke", "aggregate_img_s": {str(k): v for k, v in b.items()},
                   "gpu_gb_per_worker": 4.0}
    return {"device": "cuda", "counts": sorted(a), "experiments": exps,
            "call": {"hardware": {"gpu": "NVIDIA H200", "cpu_count": 16},
                     "versions": {"torch": "2.9.0"}, "cuda": "12.8", "mps": True,
                     "git": {"commit": "0123456789abcdef", "dirty": False}}}


# round numbers: a smoke run is 256 train images per epoch and 96 + 96 evaluated (no TTA)
COSTS = dict(start_s=0.0, fixed_s=0.0, compile_s=0.0, margin=1.0, efficiency=1.0,
             eval_speedup=1e9, stagger_s=0.0, queue_s=0.0, preflight_s=0.0, reserve_s=0.0)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CFDAN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


def test_rate_interpolates_the_aggregate_and_the_pick_prefers_fewer_workers():
    p = {"aggregate_img_s": {"1": 1000, "2": 1900, "4": 3000, "8": 3100}}
    assert gp.rate(p, 1) == 1000 and gp.rate(p, 2) == 950
    assert gp.rate(p, 3) == pytest.approx((1900 + 550) / 3)
    assert gp.rate(p, 16) == pytest.approx(3100 / 16)  # flat past the largest count
    assert gp.pick_workers(p) == 4  # 3000 is within 5 % of 3100
    assert gp.pick_workers(p, tolerance=0.0) == 8


def test_makespan_is_list_scheduling_with_staggered_starts():
    assert gp.makespan([10, 10, 10], 1) == 30
    assert gp.makespan([10, 10, 10], 2) == 20
    assert gp.makespan([10, 10], 2, stagger_s=2.0, start_s=5.0) == 17
    assert gp.makespan([], 4) == 0


def test_split_sizes_of_synthetic_ferplus_and_caps():
    cfg = load_experiment(A).configs()[0]
    assert gp.split_sizes(cfg) == {"train": 256, "val": 96, "test": 96}
    paper = load_experiment("paper_table3").configs()[0]
    assert gp.split_sizes(paper) == gp.FERPLUS_SIZES
    rec = {"config": {"data": {"dataset": "ferplus", "label_mode": "majority"}},
           "data": {"sizes": {"train": 100, "val": 10, "test": 20}}}
    assert gp.split_sizes(paper, [rec])["train"] == 100
    paper.data.max_train = 50
    assert gp.split_sizes(paper, [rec])["train"] == 50


def test_run_seconds_from_the_probe():
    cfg = load_experiment(A).configs()[0]  # 1 epoch
    p = fake_probe({1: 256.0, 2: 256.0})
    costs = gp.Costs(**COSTS)
    assert gp.run_seconds(cfg, p["experiments"][A], 1, costs=costs) == pytest.approx(1.0)
    assert gp.run_seconds(cfg, p["experiments"][A], 2, costs=costs) == pytest.approx(2.0)
    costs.margin, costs.fixed_s = 2.0, 3.0
    assert gp.run_seconds(cfg, p["experiments"][A], 1, costs=costs) == pytest.approx(8.0)


def _gpu_record(cfg, epoch_s: list[float], wall_s: float, img_s: float) -> dict:
    return {"experiment": "paper", "run_id": "calib", "profile": cfg.profile,
            "hardware": {"device": "cuda"}, "cut_short": False, "epochs_run": len(epoch_s),
            "wall_time_s": wall_s, "config": cfg.to_dict(),
            "history": [{"epoch_time_s": s, "images_per_s": img_s} for s in epoch_s]}


def test_compiled_runs_are_estimated_from_a_record_of_their_protocol():
    cfg = load_experiment("paper_table3").configs()[0]  # compiled, 40 epochs, FERPlus
    rec = _gpu_record(cfg, [80.0] + [7.0] * 39, wall_s=80 + 39 * 7 + 50, img_s=25045 / 7)
    cal = gp.calibration(cfg, [rec])
    assert cal["run_id"] == "calib" and cal["rest_s"] == pytest.approx(80 + 39 * 7 + 50 - 280)
    p = {"aggregate_img_s": {"1": 1000, "2": 1500, "4": 2000}}  # eager probe numbers
    costs = gp.Costs(calibrated_margin=1.0)
    t1 = gp.run_seconds(cfg, p, 1, [rec], costs)
    assert t1 == pytest.approx(cal["rest_s"] + 40 * 7.0)  # alone: the record's own speed
    t2 = gp.run_seconds(cfg, p, 2, [rec], costs)  # each of 2 runs at 750 / 1000 of it
    assert t2 == pytest.approx(cal["rest_s"] + 40 * 7.0 / 0.75)
    # compiled runs go one at a time unless told: the eager probe cannot see how they share
    runs = [type("R", (), {"cfg": cfg})()]
    assert gp.most_workers({"aggregate_img_s": {"1": 1, "2": 2}}, runs, gp.Costs()) == 1
    assert gp.most_workers({"aggregate_img_s": {"1": 1, "2": 2}}, runs,
                           gp.Costs(compiled_workers=4)) == 2
    eager = load_experiment(A).configs()[0]
    assert gp.calibration(eager, [rec]) is None  # eager runs: the probe measures them


def test_all_runs_when_they_fit_in_the_share(store):
    p = fake_probe({1: 256.0 * 50, 2: 256.0 * 100}, {1: 256.0, 2: 512.0})
    ph = gp.next_phase(p, [A, B], round_=0, budget_s=100, elapsed_s=0, shares=[0.4],
                       costs=gp.Costs(**COSTS))
    assert ph.experiment == A and len(ph.run_ids) == 50 and ph.note.startswith("all 50")
    assert ph.workers == 2 and ph.seconds == 40 and ph.sets == []
    assert ph.run_ids == [c.run_id for c in load_experiment(A).configs()]


def test_as_many_whole_seeds_as_fit_in_the_share(store):
    # 1 s per run alone, 1.25 s on each of 2 workers: 2 seeds (10 runs) end at 6.25 s
    p = fake_probe({1: 256.0, 2: 409.6}, {1: 256.0, 2: 512.0})
    ph = gp.next_phase(p, [A, B], round_=0, budget_s=20, elapsed_s=0, shares=[0.4],
                       costs=gp.Costs(**COSTS))
    assert ph.seconds == 8 and len(ph.run_ids) == 10 and ph.workers == 2  # 2 seeds in 6.25 s
    cfgs = load_experiment(A).configs()
    assert ph.run_ids == [c.run_id for c in cfgs[:10]]  # seed-major: seeds 0 and 1 whole
    assert [r["seed"] for r in ph.runs] == [0] * 5 + [1] * 5


def test_share_is_lifted_when_the_next_experiment_could_not_start(store):
    p = fake_probe({1: 256.0, 2: 409.6}, {1: 2.56, 2: 2.56})  # B: 200 s for its first run
    ph = gp.next_phase(p, [A, B], round_=0, budget_s=20, elapsed_s=0, shares=[0.4],
                       costs=gp.Costs(**COSTS))
    assert ph.seconds == 20 and "share lifted" in ph.note and len(ph.run_ids) == 30
    kept = gp.next_phase(p, [A, B], round_=0, budget_s=20, elapsed_s=0, shares=[0.4],
                         costs=gp.Costs(**COSTS), extend=False)
    assert kept.seconds == 8 and len(kept.run_ids) == 10


def test_second_round_gets_the_time_left_and_a_time_budget(store):
    p = fake_probe({1: 256.0}, {1: 256.0, 2: 512.0})  # B: 2 epochs, 2 s per run at any count
    costs = gp.Costs(**COSTS)
    ph = gp.next_phase(p, [A, B], round_=1, budget_s=100, elapsed_s=95, costs=costs)
    assert ph.experiment == B and ph.seconds == 5
    # seed 0 is the baseline alone (full seed 0 is borrowed), seed 1 both: 2 s + 2 s in 5 s
    assert [(r["variant"], r["seed"]) for r in ph.runs] == [("baseline", 0), ("baseline", 1),
                                                            ("full", 1)]
    assert ph.sets and ph.sets[0].startswith("train.time_budget_s=")  # B refits to a budget
    none = gp.next_phase(p, [A, B], round_=1, budget_s=100, elapsed_s=99, costs=costs)
    assert none.experiment == B and none.run_ids == [] and "no seed fits" in none.note


def test_fill_rounds_take_the_first_experiment_with_a_seed_that_fits(store):
    p = fake_probe({1: 256.0}, {1: 256.0})
    costs = gp.Costs(**COSTS)
    ph = gp.next_phase(p, [A, B], round_=2, budget_s=100, elapsed_s=94, costs=costs)
    assert ph.experiment == A and len(ph.run_ids) == 5  # 5 s: one seed of A
    assert gp.next_phase(p, [A, B], round_=2, budget_s=100, elapsed_s=99.5, costs=costs) is None


def test_done_runs_are_not_planned_again(store):
    cfgs = load_experiment(A).configs()
    for c in cfgs[:5]:
        results.save_record({"experiment": A, "run_id": c.run_id, "config": c.to_dict(),
                             "hardware": {"device": "cuda"}}, {})
    p = fake_probe({1: 256.0 * 100}, {1: 256.0})
    ph = gp.next_phase(p, [A, B], round_=0, budget_s=100, elapsed_s=0, shares=[0.4],
                       costs=gp.Costs(**COSTS), overrides=["train.device=cuda"])
    assert ph.pending == 45 and ph.run_ids == [c.run_id for c in cfgs[5:]]


def test_phase_env_is_shell_assignments():
    ph = gp.Phase(round=0, experiment=A, workers=2, threads=8, seconds=216.7,
                  run_ids=["aa", "bb"], note="it's 2 runs")
    env = dict(line.split("=", 1) for line in ph.to_env().splitlines())
    assert shlex.split(env["PHASE_RUNS"]) == ["aa bb"] and env["PHASE_SECONDS"] == "216"
    assert shlex.split(env["PHASE_NOTE"]) == ["it's 2 runs"]


def test_notes_name_the_call_and_are_added_once(store):
    p = fake_probe({1: 1.0})
    cfg = load_experiment(A).configs()[0]
    path = results.save_record({"experiment": A, "run_id": cfg.run_id, "val": {}, "test": {}},
                               {})
    phase = {"round": 0, "experiment": A, "run_ids": [cfg.run_id], "workers": 4, "threads": 4}
    assert gp.apply_notes([path], p, [phase], code_commit="feedbeef", date="2026-12-04") == 1
    rec = results.read_record(path)
    note = rec["provenance_note"]
    assert note.startswith("2026-12-04: trained in one call of scripts/gpu_evidence.sh")
    for part in ("NVIDIA H200", "torch 2.9.0", "CUDA 12.8", "0123456789abcdef", "MPS on",
                 "4 worker processes"):
        assert part in note
    assert "uncommitted" not in note and rec["code_commit"] == "feedbeef"
    assert gp.apply_notes([path], p, [phase], code_commit="feedbeef", date="2026-12-04") == 0


def test_summary_lists_probe_phases_and_runs(store):
    p = fake_probe({1: 1000.0, 2: 1800.0})
    p.update(counts=[1, 2], wall_s=60, window_s=5.0)
    cfg = load_experiment(A).configs()[0]
    path = results.save_record({
        "experiment": A, "run_id": cfg.run_id, "variant": "baseline", "seed": 0,
        "epochs_run": 1, "wall_time_s": 12.0, "history": [{"images_per_s": 900.0}],
        "peak_memory": {"gpu_max_reserved_mb": 2048.0}, "hardware": {"gpu": "NVIDIA H200"},
        "val": {"accuracy": 0.5}, "test": {"accuracy": 0.25}}, {})
    phase = dict(round=0, experiment=A, run_ids=[cfg.run_id], workers=2, threads=8,
                 seconds=200.0, estimate_s=150.0, note="all 1 of 1 runs")
    text = gp.summary(p, [phase], [path], budget_s=540, wall_s=530)
    assert "NVIDIA H200" in text and "img/s" in text and "gpu_GB" in text
    assert f"{A}/{cfg.run_id}" in text and "2.00" in text and "900" in text
    assert "1800" in text and "round 0" in text


# --------------------------------------------------------------------------- the experiment files
def test_the_two_experiments_of_the_gpu_call():
    t3 = load_experiment("gpu_table3")
    cfgs = t3.configs()
    assert set(t3.variants) == {"baseline", "dam", "dam_ilm", "full", "plain_cnn"}
    assert t3.seeds == list(range(10)) and len(cfgs) == 50
    assert [c.seed for c in cfgs] == sorted(c.seed for c in cfgs)  # seed-major
    cpu = load_experiment("cpu_v2").configs()[0]
    full = next(c for c in cfgs if c.variant == "full" and c.seed == 0)
    assert full.train.device == "cuda" and full.profile == "cpu"
    ident = {k: v for k, v in full.identity().items() if k != "eval"}
    assert ident == {k: v for k, v in cpu.identity().items() if k != "eval"}  # cpu-v2 recipe
    pt = load_experiment("paper_table3")
    assert [(c.variant, c.seed) for c in pt.configs()] == [
        ("baseline", 0), ("baseline", 1), ("full", 1), ("baseline", 2), ("full", 2)]
    assert all(c.profile == "paper" and c.train.compile for c in pt.configs())
    visible = available_experiments()
    assert {"gpu_table3", "paper_table3"} <= set(visible)
    assert A not in visible and B not in visible  # the tests' stand-ins


def test_paper_full_seed_0_is_the_recorded_run_when_its_protocol_matches():
    """paper_table3 leaves out full seed 0: the paper profile's record 4f6483f7c4a2 is that run
    (the same config, hence the same run id)."""
    got = gp.borrowed("paper_table3")
    assert got == [{"variant": "full", "seed": 0, "run_id": "4f6483f7c4a2",
                    "experiment": "paper" if results.has_record("paper", "4f6483f7c4a2")
                    else None}]
    if results.has_record("paper", "4f6483f7c4a2"):
        rec = results.read_record(results.record_path("paper", "4f6483f7c4a2"))
        assert rec["epochs_run"] == 40 and not rec.get("cut_short")


def test_the_book_does_not_show_the_gpu_experiments():
    book = pytest.importorskip("cfdan.analysis.book")
    assert "gpu_table3" not in book.EXPERIMENTS and "paper_table3" not in book.EXPERIMENTS


def test_sweep_status_lists_the_gpu_experiments(store, capsys):
    from cfdan.cli import main

    assert main(["sweep", "status", "gpu_table3", "paper_table3"]) == 0
    out = capsys.readouterr().out
    assert "gpu_table3" in out and "paper_table3" in out and "50" in out


def test_probe_json_from_the_command_line_is_what_the_planner_reads(store, tmp_path):
    p = fake_probe({1: 256.0 * 50, 2: 256.0 * 100}, {1: 256.0, 2: 512.0})
    (tmp_path / "probe.json").write_text(json.dumps(p))
    log = tmp_path / "plan.jsonl"
    args = [A, B, "--probe", str(tmp_path / "probe.json"), "--round", "0", "--budget-s", "100",
            "--elapsed-s", "0", "--log", str(log)]
    assert gp.main(["next", *args, *[f"--cost={k}={v}" for k, v in COSTS.items()]]) == 0
    assert json.loads(log.read_text())["experiment"] == A
