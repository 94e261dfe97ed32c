"""Training loop units: schedule, smoke run into a tmp store, NaN stop, time budget, skip.

These run in-process on tiny in-memory splits so that they are fast; the end-to-end runs
through the CLI and the real synthetic dataset are in test_train_resume.py and test_cli.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from cfdan import predict, results
from cfdan.data.types import FaceTensors
from cfdan.training import checkpoint, distributed, recipe
from cfdan.training import loop as T
from cfdan.training.config import ConfigError, load_config

NAMES = [f"class{i}" for i in range(4)]


def _split(n, seed, soft=False):
    """A toy split whose class sets the brightness; ``soft``: vote distributions too."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    base = labels[:, None, None, None].to(torch.float32) * 50 + 30
    imgs = (base + torch.rand(n, 1, 16, 16, generator=g) * 40).to(torch.uint8)
    dist = None
    if soft:  # half the votes on the label, the rest spread at random
        dist = 0.5 * torch.nn.functional.one_hot(labels, 4).float()
        noise = torch.rand(n, 4, generator=g)
        dist = dist + 0.5 * noise / noise.sum(1, keepdim=True)
    return FaceTensors(imgs, labels, dist, list(NAMES), f"toy-{seed}-{n}", "toy", "")


@pytest.fixture
def splits():
    return {"train": _split(96, 0), "val": _split(40, 1), "test": _split(40, 2)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _cfg(**over):
    base = {"data.image_size": 16, "train.epochs": 2, "train.batch_size": 16,
            "eval.bootstrap": 50, "eval.tsne_samples": 10, "eval.attention_images": 2}
    return load_config("smoke", {**base, **over})


def test_lr_schedule_warmup_then_cosine():
    f = [recipe.lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert recipe.lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)
    assert recipe.lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_smoke_training_writes_record_arrays_and_checkpoint(tmp_path, splits):
    cfg = _cfg()
    rec = T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                  splits=splits, log=lambda m: None)
    path = tmp_path / "r" / "smoke" / f"{cfg.run_id}.json"
    assert path.is_file() and path.with_suffix(".npz").is_file()
    assert rec == results.read_record(path)
    assert len(rec["history"]) == 2 and rec["epochs_run"] == 2 and not rec["cut_short"]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                "val_mean_class_accuracy", "lr", "grad_norm", "epoch_time_s", "images_per_s"):
        assert all(math.isfinite(h[key]) for h in rec["history"]), key
    # selection on val: the best epoch has the highest val accuracy
    best = max(rec["history"], key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert rec["best_epoch"] == best["epoch"]
    assert rec["val"]["accuracy"] == pytest.approx(best["val_accuracy"])
    assert rec["test"]["n"] == 40 and "accuracy_ci95" in rec["test"]
    assert rec["test"]["tta_flip"] is False
    for key in ("git", "hardware", "versions", "data", "peak_memory", "wall_time_s", "date"):
        assert key in rec
    assert rec["data"]["fingerprint"]["test"] == "toy-2-40"
    arrays = results.load_arrays(cfg.run_id, root=tmp_path / "r")
    assert arrays["confusion"].sum() == 40 and arrays["tsne_features"].shape[0] == 10
    assert arrays["test_logits"].shape == (40, 4)
    # the best checkpoint is self-describing and loads for inference
    model, meta = predict.load_checkpoint(tmp_path / "c" / "smoke" / cfg.run_id / "best.pt")
    assert meta["class_names"] == NAMES and meta["image_size"] == 16 and meta["in_channels"] == 1
    # one clock: last.pt's reading (after the last epoch) <= training's end <= the record's
    last = torch.load(tmp_path / "c" / "smoke" / cfg.run_id / "last.pt", weights_only=True)
    assert 0 < last["wall_time_s"] <= rec["train_time_s"] <= rec["wall_time_s"]
    df = results.load("smoke", root=tmp_path / "r")
    assert df.loc[0, "test.accuracy"] == pytest.approx(rec["test"]["accuracy"])


def test_second_call_skips_stored_run(tmp_path, splits):
    cfg = _cfg(**{"train.epochs": 1})
    kw = dict(results_root=tmp_path / "r", checkpoint_root=tmp_path / "c", splits=splits)
    first = T.train(cfg, log=lambda m: None, **kw)
    msgs = []
    again = T.train(cfg, log=msgs.append, **kw)
    assert again == first and "skipping" in msgs[0]


def test_time_budget_cuts_short_but_still_tests(tmp_path, splits):
    cfg = _cfg(**{"train.epochs": 5, "train.time_budget_s": 0.01})
    rec = T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                  splits=splits, log=lambda m: None)
    assert rec["cut_short"] is True and rec["stop_reason"] == "time_budget"
    assert rec["epochs_run"] == 1 and rec["epochs_planned"] == 5
    assert rec["test"]["n"] == 40


def test_fit_to_budget_replans_schedule_and_keeps_plan_in_checkpoint(tmp_path, splits):
    cfg = _cfg(**{"train.epochs": 5, "train.time_budget_s": 0.01, "train.fit_to_budget": True})
    rec = T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                  splits=splits, log=lambda m: None)
    assert rec["epochs_fitted"] == 1 and rec["epochs_run"] == 1
    assert rec["cut_short"] is True and rec["stop_reason"] == "time_budget_fitted"
    last = torch.load(tmp_path / "c" / "smoke" / cfg.run_id / "last.pt", weights_only=False)
    assert last["plan_epochs"] == 1  # a resumed run keeps the fitted plan


@pytest.mark.parametrize("fit_after", [1, 2])
def test_fit_to_budget_plans_from_the_named_epoch(fit_after):
    """The schedule is re-planned once, from the cost of epoch ``fit_after`` (2 when the first
    epoch pays for compilation), and never lengthened."""
    cfg = _cfg(**{"train.epochs": 40, "train.time_budget_s": 100.0,
                  "train.fit_to_budget": True, "train.fit_after_epoch": fit_after})
    plan = recipe.Plan(epochs=40, steps_per_epoch=10)
    row = {"epoch_time_s": 9.0, "eval_time_s": 1.0}
    for epoch in range(3):  # 20 s on the run's clock at each call
        T.fit_to_budget(plan, cfg.train, epoch, row, 20.0, distributed.DistInfo(), "cpu",
                        lambda m: None)
        expected = 40 if epoch + 1 < fit_after else 1 + int((100 - 20 - 13) // 10)
        assert plan.epochs == expected, epoch
    # added later: at its default it stays out of the run id, so older records keep theirs
    assert ("fit_after_epoch" in cfg.identity()["train"]) == (fit_after != 1)


class _Diverging(torch.nn.Module):
    """A linear model whose logits become NaN after ``after`` training steps."""

    def __init__(self, after):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.after, self.calls = after, 0

    def forward(self, x, return_features=False, return_attention=False):
        out = self.lin(x.mean((2, 3)))
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        if return_features:
            return {"logits": out, "features": x.mean((2, 3))}
        return out


def test_a_missing_best_checkpoint_stops_before_the_test_split(tmp_path, splits, monkeypatch):
    """Test is read once, from the val-selected weights: never silently from the last epoch's."""
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save",
                        lambda obj, path: None if path.name == "best.pt" else save(obj, path))
    cfg = _cfg(**{"train.epochs": 1})
    with pytest.raises(FileNotFoundError, match="best.pt: the validation-selected checkpoint"):
        T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                splits=splits, log=lambda m: None)
    assert not results.has_record("smoke", cfg.run_id, tmp_path / "r")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, splits, monkeypatch):
    monkeypatch.setattr(recipe, "build_model", lambda cfg, k, s: _Diverging(after=8))
    cfg = _cfg(**{"train.epochs": 4})  # 6 steps per epoch: NaN in epoch 2
    with pytest.raises(T.NonFiniteLossError, match="epoch 2.*last good checkpoint"):
        T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                splits=splits, log=lambda m: None)
    last = torch.load(tmp_path / "c" / "smoke" / cfg.run_id / "last.pt", weights_only=False)
    assert last["epoch"] == 0 and len(last["history"]) == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not results.has_record("smoke", cfg.run_id, tmp_path / "r")


# --------------------------------------------------------------------------- label modes
@pytest.fixture
def soft_splits():
    return {"train": _split(96, 0, soft=True), "val": _split(40, 1, soft=True),
            "test": _split(40, 2, soft=True)}


def _loss_targets(tmp_path, monkeypatch, cfg, splits):
    """The targets the training loss saw, batch by batch, in a run of ``cfg``."""
    seen = []
    cross_entropy = torch.nn.functional.cross_entropy

    def spy(logits, target, *args, **kwargs):
        if logits.requires_grad:  # training steps only, not evaluation
            seen.append(target.detach().clone())
        return cross_entropy(logits, target, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch.nn.functional, "cross_entropy", spy)
        T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                splits=splits, log=lambda m: None)
    return seen


def _perm(cfg, epoch, n):
    gen = torch.Generator().manual_seed(recipe.epoch_seed(cfg.train.seed, epoch))
    return torch.randperm(n, generator=gen), gen


def test_label_modes_feed_different_targets_to_the_loss(tmp_path, monkeypatch, soft_splits):
    from cfdan.data.ferplus import sample_targets

    train = soft_splits["train"]
    seen, cfgs = {}, {}
    for mode in ("majority", "crossentropy", "probability"):
        cfgs[mode] = _cfg(**{"data.label_mode": mode})
        seen[mode] = _loss_targets(tmp_path / mode, monkeypatch, cfgs[mode], soft_splits)
    steps = 96 // 16
    for epoch in range(2):
        batches = {k: torch.cat(v[epoch * steps:(epoch + 1) * steps]) for k, v in seen.items()}
        perm, gen = _perm(cfgs["probability"], epoch, 96)
        # majority: the labels; crossentropy: the vote distributions (FER+ protocols)
        assert torch.equal(batches["majority"], train.labels[perm])
        assert torch.equal(batches["crossentropy"], train.soft[perm])
        # probability: one label per image drawn from its votes with the epoch's generator,
        # after the permutation (so a resumed run draws the same)
        drawn = sample_targets(train.soft, gen)
        assert torch.equal(batches["probability"], drawn[perm])
        assert batches["probability"].dtype == torch.int64
        assert not torch.equal(batches["probability"], batches["majority"])
        assert (train.soft[perm].gather(1, batches["probability"][:, None]) > 0).all()
    # a fresh draw every epoch
    assert not torch.equal(torch.cat(seen["probability"][:steps]),
                           torch.cat(seen["probability"][steps:]))


def test_target_kind_follows_the_label_mode():
    assert recipe.target_kind(_cfg()) == "hard"
    assert recipe.target_kind(_cfg(**{"train.targets": "soft"})) == "soft"
    assert recipe.target_kind(_cfg(**{"data.label_mode": "crossentropy"})) == "soft"
    assert recipe.target_kind(_cfg(**{"data.label_mode": "probability"})) == "sampled"
    with pytest.raises(ConfigError, match="contradicts"):
        recipe.target_kind(_cfg(**{"data.label_mode": "probability", "train.targets": "soft"}))


def test_soft_modes_need_vote_distributions(tmp_path, splits):
    cfg = _cfg(**{"data.label_mode": "probability"})
    with pytest.raises(ConfigError, match="label_mode='probability' needs soft labels"):
        T.train(cfg, results_root=tmp_path / "r", checkpoint_root=tmp_path / "c",
                splits=splits, log=lambda m: None)
