"""The experiment queue (cfdan.training.sweep): states, claims, resumption, commands, paired seeds."""

from __future__ import annotations

import json

import pytest
import torch

from cfdan import results
from cfdan.model import CFDAN, preset
from cfdan.training import sweep
from cfdan.training.config import ConfigError, load_experiment

EXP = "smoke_sweep"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CFDAN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CFDAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_fresh_queue_is_all_pending(store):
    items = sweep.runs([EXP])
    assert [r.cfg.variant for r in items] == list(load_experiment(EXP).variants)
    assert {r.state for r in items} == {"pending"}
    st = sweep.status([EXP])
    assert st.loc[0, "pending"] == len(items) and st.loc[0, "done"] == 0
    assert st.loc[0, "hours_left"] == "?"  # nothing similar has finished yet


def test_work_runs_pending_then_everything_is_done(store):
    assert sweep.work([EXP], max_runs=1) == 1
    states = [r.state for r in sweep.runs([EXP])]
    assert states.count("done") == 1 and states.count("pending") == 1
    st = sweep.status([EXP])
    assert isinstance(st.loc[0, "hours_left"], float)  # estimated from the finished run
    assert sweep.work([EXP]) == 1
    assert {r.state for r in sweep.runs([EXP])} == {"done"}
    assert sweep.work([EXP]) == 0
    assert sweep.commands([EXP]) == []


def test_live_claim_means_running_and_is_skipped(store):
    first = sweep.runs([EXP])[0]
    with sweep.claim(first.cfg) as mine:
        assert mine
        assert sweep.runs([EXP])[0].state == "running"
        with sweep.claim(first.cfg) as again:
            assert not again  # exclusive
        sweep.work([EXP], max_runs=1)  # takes the second run instead
    items = sweep.runs([EXP])
    assert [r.state for r in items] == ["pending", "done"]


def test_claim_of_a_dead_process_is_taken_over(store):
    first = sweep.runs([EXP])[0]
    claim = store / "checkpoints" / EXP / first.run_id / "claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"pid": 2**22 + 12345, "since": 0}))  # no such process
    assert sweep.runs([EXP])[0].state == "pending"
    with sweep.claim(first.cfg) as mine:
        assert mine


def test_partial_run_resumes_from_its_checkpoint(store):
    cfg = load_experiment(EXP).configs(["train.epochs=2"])[0]
    from cfdan.training import loop as train

    class Stop(Exception):
        pass

    def stop_in_second_epoch(msg: str) -> None:
        if msg.startswith("epoch 2/"):  # logged after epoch 2, before its checkpoint
            raise Stop

    with pytest.raises(Stop):
        train.train(cfg, log=stop_in_second_epoch)
    item = sweep.runs([EXP], overrides=["train.epochs=2"])[0]
    assert item.state == "partial" and item.epochs_done == 1
    assert sweep.work([EXP], overrides=["train.epochs=2"], only=[cfg.run_id]) == 1
    rec = results.read_record(results.record_path(EXP, cfg.run_id))
    assert rec["resumed_at_epochs"] == [1]


def test_commands_name_every_pending_run(store):
    cmds = sweep.commands([EXP], overrides=["train.epochs=1"])
    ids = [r.run_id for r in sweep.runs([EXP], overrides=["train.epochs=1"])]
    assert len(cmds) == len(ids)
    for cmd, rid in zip(cmds, ids, strict=True):
        assert f"sweep run {EXP} --only {rid}" in cmd and "--set train.epochs=1" in cmd


def test_paired_init_shares_weights_of_shared_components():
    small = dict(image_size=32, trunk_width=4, trunk_blocks=(1, 1, 1, 1), trunk_stem="cifar")
    base = CFDAN(preset("baseline", **small), init_seed=3)
    full = CFDAN(preset("full", **small), init_seed=3)
    other = CFDAN(preset("full", **small), init_seed=4)
    sd_b, sd_f, sd_o = base.state_dict(), full.state_dict(), other.state_dict()
    shared = [k for k in sd_b if k.startswith(("trunk.", "head.", "pos_embed"))]
    assert shared and all(torch.equal(sd_b[k], sd_f[k]) for k in shared)
    assert not torch.equal(sd_f["trunk.conv1.weight"], sd_o["trunk.conv1.weight"])
    # the spatial branch is built first, so baseline and full share its initial weights too
    spatial = [k for k in sd_b if k.startswith("attention.spatial.")]
    assert spatial and all(torch.equal(sd_b[k], sd_f[k]) for k in spatial)


def test_unpaired_init_is_the_global_stream():
    small = dict(image_size=32, trunk_width=4, trunk_blocks=(1, 1, 1, 1), trunk_stem="cifar")
    torch.manual_seed(0)
    a = CFDAN(preset("full", **small)).state_dict()
    torch.manual_seed(0)
    b = CFDAN(preset("full", **small), init_seed=None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_status_run_and_commands(store, capsys):
    from cfdan.cli import main

    assert main(["sweep", "status", EXP]) == 0
    out = capsys.readouterr().out
    assert EXP in out and "pending" in out
    assert main(["sweep", EXP, "--print-commands"]) == 0
    cmds = capsys.readouterr().out.strip().splitlines()
    assert len(cmds) == len(load_experiment(EXP).variants)
    assert main(["sweep", "run", EXP, "--only", cmds[0].split("--only ")[1].split()[0],
                 "--quiet"]) == 0
    assert [r.state for r in sweep.runs([EXP])] == ["done", "pending"]
    assert main(["sweep", "run"]) == 2  # no experiment named: a one-line error


def test_queue_is_seed_major(tmp_path, monkeypatch):
    exp = tmp_path / "two_seeds.toml"
    exp.write_text('profile = "smoke"\nseeds = [0, 1]\n[variants]\n'
                   'a = { "model.preset" = "baseline" }\nb = { "model.preset" = "full" }\n')
    got = [(c.train.seed, c.variant) for c in load_experiment(exp).configs()]
    assert got == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]  # a cut-short queue stays paired


def test_a_variant_may_run_fewer_seeds(tmp_path):
    exp = tmp_path / "subset.toml"
    exp.write_text('profile = "smoke"\nseeds = [0, 1, 2]\n[variants]\n'
                   'a = { "model.preset" = "baseline" }\n'
                   'b = { "model.preset" = "full", seeds = [0, 2] }\n')
    e = load_experiment(exp)
    assert [(c.train.seed, c.variant) for c in e.configs()] == \
        [(0, "a"), (0, "b"), (1, "a"), (2, "a"), (2, "b")]
    assert e.seeds_of("b") == [0, 2] and e.seeds_of("a") == [0, 1, 2]
    exp.write_text('profile = "smoke"\nseeds = [0, 1]\n[variants]\n'
                   'b = { "model.preset" = "full", seeds = [5] }\n')
    with pytest.raises(ConfigError, match=r"variant 'b': 'seeds' must be .* \[0, 1\]"):
        load_experiment(exp)


def test_seed_major_across_experiments(tmp_path, monkeypatch):
    """``seed_major`` orders the runs of several experiments by seed first: every
    experiment's seed 1 before any seed 2 (the seeds queue of issue 27)."""
    monkeypatch.setattr("cfdan.training.config.EXPERIMENTS_DIR", tmp_path)
    (tmp_path / "one.toml").write_text('profile = "smoke"\nseeds = [0, 1, 2]\n[variants]\n'
                                      'full = { "model.preset" = "full" }\n')
    (tmp_path / "two.toml").write_text('profile = "smoke"\nseeds = [0, 1]\n[variants]\n'
                                      'a = { "model.preset" = "baseline" }\n')
    root = {"results_root": tmp_path / "r", "checkpoint_root": tmp_path / "c"}
    by_exp = [(r.experiment, r.cfg.seed) for r in sweep.runs(["one", "two"], **root)]
    assert by_exp == [("one", 0), ("one", 1), ("one", 2), ("two", 0), ("two", 1)]
    by_seed = [(r.experiment, r.cfg.seed)
               for r in sweep.runs(["one", "two"], seed_major=True, **root)]
    assert by_seed == [("one", 0), ("two", 0), ("one", 1), ("two", 1), ("one", 2)]


def _fake_record(store, cfg, device: str) -> None:
    results.save_record({"schema": 1, "experiment": cfg.experiment, "run_id": cfg.run_id,
                          "variant": cfg.variant, "seed": cfg.seed, "config": cfg.to_dict(),
                          "hardware": {"device": device}}, {})


def test_one_table_one_kind_of_hardware(store, capsys):
    first = sweep.runs([EXP])[0]
    _fake_record(store, first.cfg, "cuda:0")  # a GPU run of this experiment
    assert sweep.hardware(EXP) == {"cuda"}
    assert sweep.work([EXP]) == 0  # this worker trains on cpu: the experiment is skipped
    assert "made on cuda and this worker trains on cpu" in capsys.readouterr().err
    assert sweep.work([EXP], mixed_hardware=True) == 1  # unless told otherwise
    # the GPU worker's view: the same run ids (train.device is not part of them)
    on_gpu = sweep.runs([EXP], overrides=["train.device=cuda"])
    assert [r.run_id for r in on_gpu] == [r.run_id for r in sweep.runs([EXP])]


def test_deadline_stops_workers_and_leaves_no_record(store):
    import time

    long = ["train.epochs=500"]
    t0 = time.time()
    sweep.run([EXP], overrides=long, workers=1, deadline=t0 + 12, log_dir=store / "logs")
    assert time.time() - t0 < 60
    assert [r.state for r in sweep.runs([EXP], overrides=long)][0] == "partial"
    assert not list((store / "results").rglob("*.json"))
    log = (store / "logs" / "worker_0.log").read_text()
    assert "stopped by signal" in log


def test_paired_experiments_share_the_hardware(store, tmp_path, monkeypatch):
    from cfdan.training import config

    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "ref.toml").write_text('profile = "smoke"\nseeds = [0]\n[overrides]\n'
                                     '"train.epochs" = 1\n[variants]\n'
                                     'full = { "model.preset" = "full" }\n')
    (folder / "abl.toml").write_text('profile = "smoke"\nseeds = [0]\npairs_with = ["ref"]\n'
                                     '[overrides]\n"train.epochs" = 1\n[variants]\n'
                                     'baseline = { "model.preset" = "baseline" }\n')
    monkeypatch.setattr(config, "EXPERIMENTS_DIR", folder)
    assert sweep.hardware("abl") == set()
    _fake_record(store, load_experiment("ref").configs()[0], "cpu")  # the reference ran on CPU
    assert sweep.hardware("abl") == {"cpu"}
    assert sweep.work(["abl"], overrides=["train.device=cuda:0"]) == 0  # a GPU worker skips it


def test_sigterm_to_the_queue_stops_its_workers(store):
    """`pkill -f "cfdan sweep run"` reaches only the parent: it must stop its workers, not
    orphan them (each claim names its worker's pid; none may outlive the parent)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "cfdan", "sweep", "run", EXP, "--workers", "2", "--threads", "1",
           "--set", "train.epochs=500", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=os.environ.copy())
    try:
        claims: list = []
        t0 = time.time()
        while len(claims) < 2 and time.time() - t0 < 120:
            time.sleep(1)
            claims = list((store / "checkpoints").rglob("claim"))
        assert len(claims) == 2, proc.stdout.read().decode() if proc.poll() is not None else ""
        pids = [json.loads(c.read_text())["pid"] for c in claims]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)

        def alive(pid):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True

        assert not [p for p in pids if alive(p)], "workers outlived the queue"
        assert not list((store / "results").rglob("*.json"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_status_does_not_list_the_tests_fixture(capsys):
    from cfdan.cli import main
    from cfdan.training.config import available_experiments

    assert EXP in available_experiments(fixtures=True) and EXP not in available_experiments()
    assert main(["sweep", "status"]) == 0
    out = capsys.readouterr().out
    assert "table3" in out and EXP not in out
