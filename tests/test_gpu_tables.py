"""Table 3 on one GPU beside the CPU tables (cfdan.analysis.gpu; §4.4, Table 3; issue 28) on
synthetic GPU records.

The ``store`` fixture's temporary experiment files are joined by copies of the real
``gpu_table3`` and ``paper_table3`` files, so every record carries the config (and run id) those
files resolve to; CPU records of the fixture's ``table3`` and ``cpu_v2`` sit in the same store
at other values, and must never reach a GPU table or verdict.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from records import run_config, save_run

from cfdan.analysis import claims, gpu, prose
from cfdan.analysis import tables as report
from cfdan.training import config

GPU = {"device": "cuda", "gpu": "NVIDIA H200", "cpu": "Intel Xeon", "cpu_count": 16,
       "torch_threads": 16}
CPU = {"device": "cpu", "cpu": "test cpu", "cpu_count": 2, "torch_threads": 2}
SEEDS10 = list(range(10))
LEVEL = [60.0, 70.0, 80.0, 65.0, 75.0, 62.0, 72.0, 78.0, 68.0, 74.0]  # per seed: shared by rows
OFFSET = {"plain_cnn": 0.0, "baseline": 1.0, "dam": 1.0, "dam_ilm": 1.5, "full": 3.5}
VARIANTS = ("baseline", "dam", "dam_ilm", "full", "plain_cnn")
LATER = "2026-02-01T00:00:00+00:00"
REPO = Path(__file__).resolve().parent.parent


def acc(variant: str, seed: int) -> float:
    """A GPU run's test accuracy (%): the seed's level, the variant's offset, a small jitter."""
    return LEVEL[seed] + OFFSET[variant] + 0.1 * ((7 * seed + 3 * VARIANTS.index(variant)) % 5 - 2)


@pytest.fixture
def gpu_store(store: Path) -> Path:
    """The ``store`` fixture with the real GPU experiment files, and CPU records of Table 3's
    baseline and the cpu_v2 full model (seeds 0-4) at levels no GPU record has."""
    for name in gpu.GPU_TABLES:
        shutil.copy(REPO / "configs" / "experiments" / f"{name}.toml", config.EXPERIMENTS_DIR)
    for s in range(5):
        save_run(store, "table3", "baseline", s, 30.0 + s, hardware=CPU)
        save_run(store, "cpu_v2", "full", s, 40.0 + 3 * s, hardware=CPU)
    return store


def run(root: Path, experiment: str, variant: str, seed: int, test_acc: float,
        hardware=GPU, **kw) -> dict:
    """A finished run's record (all its planned epochs run) on ``hardware``."""
    cfg = kw.pop("cfg", None) or run_config(experiment, variant, seed)
    return save_run(root, experiment, variant, seed, test_acc, cfg=cfg, hardware=hardware,
                    epochs_run=cfg.train.epochs, **kw)


def save_gpu_table3(root: Path, seeds=SEEDS10, skip=()) -> None:
    for s in seeds:
        for v in VARIANTS:
            if (v, s) not in skip:
                run(root, "gpu_table3", v, s, acc(v, s))


def paper_record(root: Path, test_acc: float = 84.28, hardware=GPU, over=None, **kw) -> dict:
    """The ``paper`` experiment's record of paper_table3's full seed 0 config (the run
    ``gpu_plan.borrowed`` names), or of that config with the overrides ``over``."""
    exp = config.load_experiment("paper_table3")
    cfg = config.load_config(exp.profile, {**exp.overrides, **exp.variants["full"],
                                           "train.seed": 0, **(over or {})})
    cfg.experiment, cfg.variant = "paper", "full"
    return run(root, "paper", "full", 0, test_acc, hardware, cfg=cfg, **kw)


def row(ledger, claim: str):
    got = ledger[ledger["claim"] == claim]
    assert len(got) == 1, claim
    return got.iloc[0]


# --------------------------------------------------------------------------- nothing to show
def test_without_gpu_records_nothing_is_shown(gpu_store):
    paper_record(gpu_store)  # a GPU record paper_table3 borrows is not a record of its own
    for s in range(3):  # CPU records filed under the GPU experiments do not count either
        save_run(gpu_store, "gpu_table3", "full", s, 50.0, hardware=CPU)
        save_run(gpu_store, "paper_table3", "baseline", s, 50.0, hardware=CPU)
    for exp in gpu.GPU_TABLES:
        assert not gpu.has_records(exp)
        assert gpu.ablation_table(exp).empty
        assert gpu.claims_ledger(exp) is None
        assert gpu.ledger_display(exp).empty and gpu.verdict_table(exp).empty
    facts = gpu.facts()
    for exp, claims_run in (("gpu_table3", 6), ("paper_table3", 1)):
        assert facts[f"{exp}_shown"] == facts[f"{exp}_records"] == 0
        assert facts[f"runs_{exp}"] == "none yet" and facts[f"{exp}_hardware"] == "-"
        assert facts[f"{exp}_headline_verdict"] == "not run"
        assert facts[f"{exp}_headline_n"] == 0 and facts[f"{exp}_headline_paper"] == "+2.33"
        assert facts[f"{exp}_ledger_claims"] == facts[f"{exp}_ledger_not_run"] == claims_run


def test_an_empty_store_gives_empty_tables(store):
    """No record at all and no GPU experiment file: still no error, and the same keys."""
    assert gpu.frame().empty
    for exp in gpu.GPU_TABLES:
        assert gpu.ablation_table(exp).empty and gpu.claims_ledger(exp) is None
    facts = gpu.facts()
    shutil.copy(REPO / "configs" / "experiments" / "gpu_table3.toml", config.EXPERIMENTS_DIR)
    assert set(gpu.facts()) == set(facts)
    assert facts["gpu_table3_shown"] == 0 and facts["gpu_table3_headline_verdict"] == "not run"


# --------------------------------------------------------------------------- Table 3 at 48 px
def test_gpu_table3_in_the_cpu_table3_form_with_ten_seeds(gpu_store):
    save_gpu_table3(gpu_store)
    t = gpu.ablation_table("gpu_table3").set_index("preset")
    assert list(t.index) == list(VARIANTS)
    for v in VARIANTS:
        vals = [acc(v, s) for s in SEEDS10]
        assert t.loc[v, "runs"] == f"gpu_table3/{v}: 10 of 10 seeds"
        assert t.loc[v, "ours FERPlus"] == report.mean_std(vals, scale=1.0)
        assert t.loc[v, "hardware"] == "GPU (NVIDIA H200)"
        assert t.loc[v, "ours per seed"].startswith(f"s0 {acc(v, 0):.2f}, s1 ")
    assert t.loc["full", "paper FERPlus"] == 92.02  # the paper's column, labelled
    assert t.loc["plain_cnn", "paper FERPlus"] != t.loc["plain_cnn", "paper FERPlus"]  # NaN
    # the CPU full model (cpu_v2, 40-52 %) is not read: the GPU table's full row is its own
    assert "40.00" not in t.loc["full", "ours per seed"]


def test_gpu_ledger_is_computed_from_gpu_records_only(gpu_store):
    save_gpu_table3(gpu_store)
    ledger = gpu.claims_ledger("gpu_table3")
    assert len(ledger) == 6 and set(ledger["family"]) == {"Table 3"}
    head = row(ledger, claims.HEADLINE)
    diffs = [acc("full", s) - acc("baseline", s) for s in SEEDS10]
    want = claims.paired_summary(diffs, 1.0, 92.02 - 89.69)
    assert head["n"] == 10 and head["comparison"] == "gpu_table3/full − gpu_table3/baseline"
    assert head["mean"] == pytest.approx(np.mean(diffs))
    assert (head["ci_low"], head["ci_high"]) == pytest.approx((want["ci_low"], want["ci_high"]))
    assert head["per seed"] == pytest.approx(dict(zip(SEEDS10, diffs, strict=True)))
    assert head["verdict"] == "supported"
    spatial = row(ledger, "spatial attention helps (baseline vs no attention)")
    assert spatial["mean"] == pytest.approx(np.mean([acc("baseline", s) - acc("plain_cnn", s)
                                                     for s in SEEDS10]))
    for c in ("DAM beats single-dimension attention", "ILM adds about 1 point on FERPlus",
              "cross-fusion helps", "attention helps at all (CF-DAN vs no attention)"):
        assert row(ledger, c)["n"] == 10
    # Holm within this table's six rows, not the CPU ledger's
    p = ledger["p_zero"].dropna()
    assert ledger["p_zero_holm"].dropna().min() >= p.min()
    shown = gpu.ledger_display("gpu_table3")
    assert shown.index[0] == claims.HEADLINE and shown.loc[claims.HEADLINE, "n"] == "10"
    assert gpu.verdict_table("gpu_table3").loc[claims.HEADLINE, "verdict"].startswith(
        "supported")
    facts = gpu.facts()
    assert facts["gpu_table3_shown"] == 1 and facts["gpu_table3_records"] == 50
    assert facts["gpu_table3_seeds_min"] == facts["gpu_table3_seeds_max"] == 10
    assert facts["gpu_table3_hardware"] == "GPU (NVIDIA H200)"
    assert facts["gpu_table3_headline_n"] == 10
    assert facts["gpu_table3_headline_mean"] == f"{np.mean(diffs):+.2f}"
    assert facts["gpu_table3_headline_verdict"] == "supported"
    verdicts = ledger["verdict"].value_counts()
    assert facts["gpu_table3_ledger_supported"] == verdicts["supported"]
    assert facts["paper_table3_shown"] == 0 and facts["runs_paper_table3"] == "none yet"


def test_a_cpu_record_never_pairs_with_a_gpu_one(gpu_store):
    """A CPU record of gpu_table3 (seed 3's baseline; the same config, so the same run id as
    the GPU run it stands for) leaves seed 3 unpaired, in the table and in every verdict."""
    save_gpu_table3(gpu_store, skip={("baseline", 3)})
    run(gpu_store, "gpu_table3", "baseline", 3, 99.0, CPU)
    t = gpu.ablation_table("gpu_table3").set_index("preset")
    assert t.loc["baseline", "runs"] == "gpu_table3/baseline: 9 of 10 seeds"
    assert t.loc["baseline", "hardware"] == "GPU (NVIDIA H200)"
    assert "99.00" not in t.loc["baseline", "ours per seed"]
    ledger = gpu.claims_ledger("gpu_table3")
    head = row(ledger, claims.HEADLINE)
    assert head["n"] == 9 and 3 not in head["per seed"]
    for claim in ("DAM beats single-dimension attention",
                  "spatial attention helps (baseline vs no attention)"):
        assert 3 not in row(ledger, claim)["per seed"]
    assert row(ledger, "cross-fusion helps")["n"] == 10  # rows without baseline keep seed 3


def test_a_one_seed_row_is_scaled_by_the_gpu_full_models_seed_sd(gpu_store):
    """With one seed of baseline, the headline is untestable, and its note sets the value
    against the seed sd of gpu_table3's own full model (10 seeds), not cpu_v2's."""
    save_gpu_table3(gpu_store, seeds=[0], skip={("full", 0)})
    for s in SEEDS10:
        run(gpu_store, "gpu_table3", "full", s, acc("full", s))
    ledger = gpu.claims_ledger("gpu_table3")
    assert row(ledger, claims.HEADLINE)["verdict"] == "untestable (n = 1)"
    note = prose.ledger_details(ledger).loc[claims.HEADLINE, "note"]
    sd = np.std([acc("full", s) for s in SEEDS10], ddof=1)
    assert f"seed sd {sd:.2f}, 10 seeds" in note


# --------------------------------------------------------------------------- the paper-scale pair
def test_paper_table3_full_seed_0_is_the_paper_record(gpu_store):
    lent = paper_record(gpu_store, 84.28)
    for s in range(3):
        run(gpu_store, "paper_table3", "baseline", s, 82.0 + s)
    for s in (1, 2):
        run(gpu_store, "paper_table3", "full", s, 84.0 + 0.5 * s)
    t = gpu.ablation_table("paper_table3").set_index("preset")
    assert list(t.index) == ["baseline", "full"]  # the pair only, not dam or dam_ilm
    assert t.loc["full", "runs"].startswith("paper_table3/full: 3 of 3 seeds")
    assert f"paper/{lent['run_id']}" in t.loc["full", "runs"]
    assert t.loc["full", "ours per seed"] == "s0 84.28, s1 84.50, s2 85.00"
    assert t.loc["baseline", "runs"] == "paper_table3/baseline: 3 of 3 seeds"
    ledger = gpu.claims_ledger("paper_table3")
    assert list(ledger["claim"]) == [claims.HEADLINE]  # its one claim
    head = ledger.iloc[0]
    assert head["n"] == 3 and head["per seed"] == pytest.approx({0: 2.28, 1: 1.5, 2: 1.0})
    assert f"paper/{lent['run_id']}" in head["runs"]
    facts = gpu.facts()
    assert facts["runs_paper_table3"].endswith(f"; paper: {lent['run_id']}")
    assert facts["paper_table3_records"] == 6  # five of its own, one borrowed
    assert facts["paper_table3_seeds_min"] == facts["paper_table3_seeds_max"] == 3
    assert facts["paper_table3_headline_n"] == 3 and facts["gpu_table3_shown"] == 0


@pytest.mark.parametrize("case", ["other config", "cpu record"])
def test_paper_record_of_another_protocol_or_on_cpu_is_not_borrowed(gpu_store, case):
    if case == "other config":
        paper_record(gpu_store, 84.28, over={"train.epochs": 30})  # another run id
    else:
        paper_record(gpu_store, 84.28, hardware=CPU)
    for s in range(3):
        run(gpu_store, "paper_table3", "baseline", s, 82.0 + s)
    for s in (1, 2):
        run(gpu_store, "paper_table3", "full", s, 84.0)
    t = gpu.ablation_table("paper_table3").set_index("preset")
    assert t.loc["full", "runs"] == "paper_table3/full: 2 of 3 seeds"
    head = gpu.claims_ledger("paper_table3").iloc[0]
    assert head["n"] == 2 and 0 not in head["per seed"]


def test_a_later_paper_run_of_another_protocol_does_not_unborrow_seed_0(gpu_store):
    """The paper profile rerun later under another protocol (another run id) is the paper
    experiment's latest full seed 0, but paper_table3 still pairs with the matching record."""
    lent = paper_record(gpu_store, 84.28)
    rec = paper_record(gpu_store, 80.0, over={"train.epochs": 30}, date=LATER)
    assert rec["run_id"] != lent["run_id"]
    for s in range(3):
        run(gpu_store, "paper_table3", "baseline", s, 82.0 + s)
    head = gpu.claims_ledger("paper_table3").iloc[0]
    assert head["per seed"][0] == pytest.approx(84.28 - 82.0)
