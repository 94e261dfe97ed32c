"""Profiles, overrides, errors and run ids (cfdan.training.config)."""

from __future__ import annotations

import pytest

from cfdan.training.config import (
    ConfigError,
    available_profiles,
    load_config,
    load_experiment,
    parse_value,
)


def test_profiles_exist_and_load():
    assert {"smoke", "cpu", "paper"} <= set(available_profiles())
    for name in ("smoke", "cpu", "paper"):
        cfg = load_config(name)
        assert cfg.profile == name
        # one-off cpu runs stay out of results/cpu/, the retired v1 profile's folder
        assert cfg.experiment == ("cpu_trials" if name == "cpu" else name)


def test_paper_profile_follows_section_4_2():
    t = load_config("paper").train
    assert (t.batch_size, t.weight_decay, t.beta1, t.beta2) == (32, 1e-4, 0.9, 0.999)
    assert t.label_smoothing == 0.0 and t.targets == "hard" and t.epochs == 40
    assert load_config("paper").data.image_size == 224


def test_overrides_are_typed():
    cfg = load_config("smoke", ["train.epochs=5", "train.lr=1e-3", "model.preset=baseline",
                                "train.amp=true", "data.root=some/where", 'eval.tta_flip=true'])
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model["preset"] == "baseline"
    assert cfg.train.amp is True and cfg.eval.tta_flip is True
    assert cfg.data.root == "some/where"
    # an int is accepted where a float is expected
    assert load_config("smoke", {"train.lr": 1}).train.lr == 1.0


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("plain") == "plain"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.nope=1", "valid train fields"),
        ("nosection.x=1", "unknown section"),
        ("model.not_a_field=1", "valid model fields"),
        ("model.preset=nope", "presets"),
        ("train.epochs=abc", "expected an integer"),
        ("train.amp=maybe", "true, false or \"auto\""),
        ("data.dataset=imagenet", "unknown dataset"),
        ("model.image_size=64", "taken from the data"),
        ("train.epochs", "section.field=value"),
        ("train.targets=fuzzy", "hard' or 'soft"),
    ],
)
def test_bad_overrides_name_the_problem(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_config("smoke", [override])
    assert needle in str(exc.value)


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match="available: .*smoke"):
        load_config("no_such_profile")


def test_profile_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = \n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[model]\npreset = "full"\n[trian]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="trian"):
        load_config(typo)


def test_run_id_depends_on_outcome_fields_only():
    base = load_config("smoke")
    assert base.run_id == load_config("smoke").run_id
    assert load_config("smoke", ["train.seed=1"]).run_id != base.run_id
    assert load_config("smoke", ["model.preset=baseline"]).run_id != base.run_id
    # where the data lives, the device and progress bars do not change what a run computes
    same = load_config("smoke", ["data.root=/x", "train.progress=true", "train.device=cpu",
                                 "train.time_budget_s=100"])
    assert same.run_id == base.run_id


def test_experiment_expands_variants_and_seeds():
    exp = load_experiment("table3")
    cfgs = exp.configs()
    assert len(cfgs) == sum(len(exp.seeds_of(v)) for v in exp.variants)
    assert {c.model["preset"] for c in cfgs} == {"baseline", "dam", "dam_ilm", "plain_cnn"}
    assert [c.seed for c in cfgs[:4]] == [0, 0, 0, 0]  # seed-major; full is cpu_v2's
    assert {c.seed for c in cfgs if c.variant == "dam_ilm"} == {0, 1, 2}
    assert len({c.run_id for c in cfgs}) == len(cfgs)
    assert all(c.experiment == "table3" for c in cfgs)


def test_experiment_errors(tmp_path):
    with pytest.raises(ConfigError, match="available"):
        load_experiment("no_such_experiment")
    p = tmp_path / "e.toml"
    p.write_text('profile = "smoke"\nseeds = [0]\n[variants]\nx = { "train.bogus" = 1 }\n')
    with pytest.raises(ConfigError, match="train.bogus"):
        load_experiment(p)
