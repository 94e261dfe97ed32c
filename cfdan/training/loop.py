"""Training (§4.2), as torchvision's reference script reads, with honest model selection on val.

:func:`train` is the recipe, top to bottom, with the pieces built by
:mod:`cfdan.training.recipe`: device and seed, data, model, criterion (cross-entropy),
optimiser (AdamW), LR scheduler (linear warm-up, then cosine decay per step), resume
(:mod:`cfdan.training.checkpoint`), then one loop of :func:`train_one_epoch`, :func:`evaluate`
on val and a checkpoint per epoch. The val-selected checkpoint is evaluated once on test and
the record stored (:func:`cfdan.results.build_record`, provenance from
:mod:`cfdan.training.provenance`).

The whole training split lives in memory as a uint8 tensor (on the GPU when training there):
each epoch draws a seeded permutation and augments each batch on the device. The epoch's
permutation, drawn targets, augmentation and dropout randomness derive from ``(seed, epoch)``
and every epoch writes a resumable ``last.pt`` atomically, so a run resumed after a crash ends
with the same record as an uninterrupted one (on CPU, same seed). A non-finite loss stops the
run and leaves the last good checkpoint.

Time is read from one monotonic clock, :class:`Clock` (``time.perf_counter``), started when
:func:`train` is called and carried across resumes (``last.pt``'s ``wall_time_s``): the time
budget, ``last.pt``'s ``wall_time_s``, the record's ``train_time_s`` (when the last epoch
ended) and ``wall_time_s`` (when the record is built) are its readings; ``epoch_time_s``,
``eval_time_s`` and the data's ``load_time_s`` are intervals on it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdan import results, safe_load
from cfdan.data.splits import DataRootError, load_splits
from cfdan.data.types import FaceTensors
from cfdan.training import checkpoint, distributed, provenance, recipe
from cfdan.training.checkpoint import (
    inference_checkpoint,
    load_training_state,
    rng_state,
    run_checkpoint_dir,
    set_rng_state,
)
from cfdan.training.config import Config, ConfigError, TrainConfig
from cfdan.training.evaluate import autocast, final_evaluation, fixed_indices, infer, split_metrics
from cfdan.training.recipe import (
    Plan,
    amp_enabled,
    build_model,
    compile_model,
    epoch_seed,
    lr_factor,
    make_augment,
    resolve_device,
    target_kind,
)

__all__ = [
    "TIMING_KEYS", "Clock", "DataRootError", "NonFiniteLossError", "Plan",
    "amp_enabled", "build_model", "compile_model", "epoch_seed", "evaluate", "fit_to_budget",
    "inference_checkpoint", "load_training_state", "lr_factor", "make_augment", "out_of_time",
    "resolve_device", "rng_state", "run_checkpoint_dir", "set_rng_state", "snapshot_epochs",
    "snapshot_index", "target_kind", "train", "train_one_epoch",
]

TIMING_KEYS = ("epoch_time_s", "images_per_s", "eval_time_s")
"""History fields that measure speed, not outcome (excluded when comparing runs)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Clock:
    """The run's one clock: ``time.perf_counter`` seconds (monotonic) since this attempt
    started, plus ``prior_s``, the clock's reading saved by the attempts before a resume."""

    start: float = field(default_factory=time.perf_counter)
    prior_s: float = 0.0

    def __call__(self) -> float:
        return self.prior_s + (time.perf_counter() - self.start)


def _print(msg: str) -> None:
    print(msg, flush=True)


def _silent(msg: str) -> None:
    pass


# --------------------------------------------------------------------------- the run
def train(
    cfg: Config,
    *,
    results_root: str | os.PathLike | None = None,
    checkpoint_root: str | os.PathLike | None = None,
    resume: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    splits: dict[str, FaceTensors] | None = None,
) -> dict[str, Any]:
    """Train ``cfg``, select on val, evaluate test once, store and return the record.

    Skips training and returns the stored record if the run is already in the store (unless
    ``force``, which retrains from scratch). Resumes from
    ``<checkpoint_root>/<experiment>/<run_id>/last.pt`` if present (unless ``resume`` is
    false). Raises :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    log = log or _print
    info = distributed.init(cfg.train.device)
    if not info.is_main:
        log = _silent
    try:
        return _train(cfg, info, log, splits=splits, results_root=results_root,
                      checkpoint_root=checkpoint_root, fresh=force or not resume, force=force)
    finally:
        distributed.cleanup(info)


def _train(
    cfg: Config, info: distributed.DistInfo, log: Callable[[str], None], *,
    splits: dict[str, FaceTensors] | None, results_root: str | os.PathLike | None,
    checkpoint_root: str | os.PathLike | None, fresh: bool, force: bool,
) -> dict[str, Any]:
    tcfg, size = cfg.train, cfg.data.image_size
    clock = Clock()
    git = provenance.git_info()  # the code that runs is the code at start, not at the end
    if not force and results.has_record(cfg.experiment, cfg.run_id, results_root):
        log(f"run {cfg.experiment}/{cfg.run_id} is already in the store; skipping (use --force)")
        return results.read_record(results.record_path(cfg.experiment, cfg.run_id, results_root))
    device, amp = recipe.setup_device(tcfg, info)  # threads, bf16, backend flags, global seed

    # data: the three splits; the training one on the device; the eval transform
    t_data = clock()
    splits = splits or load_splits(cfg)
    if len(splits["train"]) < tcfg.batch_size * info.world_size and info.enabled:
        raise ConfigError("training set smaller than one global batch")
    load_time = clock() - t_data
    train_s, val_s = splits["train"], splits["val"]
    data = recipe.train_data(cfg, train_s, device)
    eval_tf = recipe.make_augment(size, train=False, seed=0)

    # model (initialised from train.seed), criterion, optimizer, scheduler (§4.2)
    torch.manual_seed(tcfg.seed)
    model = recipe.build_model(cfg, len(train_s.class_names), size)
    model, net = recipe.prepare_model(model, tcfg, info, device)  # net: DDP/compiled wrapper
    criterion = recipe.build_criterion(tcfg)
    optimizer = recipe.build_optimizer(model, tcfg, device)
    plan = recipe.plan_schedule(len(train_s), tcfg, drop_last=info.enabled or tcfg.compile)
    scheduler = recipe.build_scheduler(optimizer, plan, tcfg)
    ckdir = run_checkpoint_dir(cfg, checkpoint_root)
    last_path, best_path = ckdir / "last.pt", ckdir / "best.pt"
    _log_start(cfg, splits, device, info, amp, log)

    # resume from last.pt (checkpoint.last_checkpoint's plain dict)
    progress = checkpoint.Progress()
    ck = checkpoint.resumable(ckdir, cfg.run_id, device, fresh=fresh, info=info, log=log)
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], device)
        plan.epochs = ck.get("plan_epochs", tcfg.epochs)
        progress = checkpoint.Progress.of(ck)
        clock = replace(clock, prior_s=progress.prior_s)
        log(f"resumed from {last_path} after epoch {progress.start_epoch} of {tcfg.epochs}")

    # train, validate, checkpoint; stop at the planned epochs or at the time budget
    names, test_s = train_s.class_names, splits["test"]
    snaps = snapshot_epochs(tcfg.epochs, cfg.eval.feature_snapshots)
    stop_reason = "completed"
    for epoch in range(progress.start_epoch, tcfg.epochs):
        if epoch >= plan.epochs:
            break
        seed = epoch_seed(tcfg.seed, epoch)
        torch.manual_seed(seed)  # dropout and any other global-RNG use in this epoch
        aug = recipe.make_augment(size, True, seed + info.rank, tcfg) if tcfg.augment else eval_tf
        loader = recipe.epoch_loader(data, seed, aug, tcfg.batch_size, plan.steps_per_epoch, device)
        stats = train_one_epoch(model, criterion, optimizer, scheduler, loader, device, epoch,
                                tcfg, info=info, amp=amp, forward=net, last_path=last_path)
        distributed.broadcast_buffers(model, info)  # all ranks evaluate the same weights
        t_eval = time.perf_counter()
        vm = evaluate(model, val_s.images, val_s.labels, names, eval_tf, device, tcfg=tcfg,
                      amp=amp, tta_flip=cfg.eval.tta_flip)
        row = _epoch_row(epoch, stats, vm, time.perf_counter() - t_eval)
        improved = progress.add_epoch(row)
        log(_epoch_line(row, tcfg.epochs, improved))
        if epoch + 1 in snaps:
            progress.snapshots[epoch + 1] = snapshot_features(
                model, test_s, eval_tf, cfg.eval.snapshot_samples, device, tcfg, amp)
        fit_to_budget(plan, tcfg, epoch, row, clock(), info, device, log)  # saved in last.pt
        _save_checkpoints(cfg, epoch, model, optimizer, scheduler, progress, plan, clock(),
                          improved=improved, train_s=train_s, device=device, info=info,
                          ckdir=ckdir)
        if out_of_time(plan, tcfg, epoch, row, clock(), info, device):
            stop_reason = "time_budget"
            log(f"time budget {tcfg.time_budget_s:.0f} s: stopping after epoch {epoch + 1}")
            break
    if stop_reason == "completed" and plan.epochs < tcfg.epochs:
        stop_reason = "time_budget_fitted"
    train_time = clock()

    # the val-selected checkpoint: val, test (once), train subset; the record
    if not progress.history:
        raise RuntimeError("no epoch was trained")
    if not best_path.is_file():  # rank 0 wrote it before the barrier: gone since
        raise FileNotFoundError(
            f"{best_path}: the validation-selected checkpoint is missing, so the test split "
            f"would read the last epoch's weights instead; delete {last_path.name} beside it "
            f"to train the run again")
    model.load_state_dict(safe_load.load(best_path, device)["model"])
    metrics, arrays = _final_metrics(model, splits, eval_tf, cfg, device, amp, progress.snapshots)
    record = _record(
        cfg, model=model, splits=splits, progress=progress, plan_epochs=plan.epochs,
        stop_reason=stop_reason, metrics=metrics, git=git, device=device, info=info, amp=amp,
        load_time=load_time, train_time=train_time, clock=clock,
        best_checkpoint=checkpoint.relative_checkpoint(best_path, checkpoint_root),
    )
    if info.is_main:
        _store(record, arrays, results_root, log=log,
               remove=() if tcfg.keep_checkpoints else (last_path, best_path))
    return record


def _log_start(cfg: Config, splits: dict[str, FaceTensors], device: torch.device,
               info: distributed.DistInfo, amp: bool, log: Callable[[str], None]) -> None:
    log(
        f"run {cfg.experiment}/{cfg.run_id}: {cfg.data.dataset} train {len(splits['train'])} / "
        f"val {len(splits['val'])} / test {len(splits['test'])} images, "
        f"{len(splits['train'].class_names)} classes, device "
        f"{device}{' x' + str(info.world_size) if info.enabled else ''}, bf16 {amp}"
    )


def _save_checkpoints(
    cfg: Config, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, progress: checkpoint.Progress, plan: Plan,
    wall_time_s: float, *, improved: bool, train_s: FaceTensors, device: torch.device,
    info: distributed.DistInfo, ckdir: Path,
) -> None:
    """Rank 0 writes ``ckdir``'s ``best.pt`` (if ``improved``) and the resumable ``last.pt``."""
    if info.is_main:
        if improved:
            checkpoint.save(inference_checkpoint(model, cfg, train_s.class_names,
                                                 train_s.images.shape[1]), ckdir / "best.pt")
        checkpoint.save(checkpoint.last_checkpoint(cfg, epoch, model, optimizer, scheduler, device,
                                                   progress, plan.epochs, wall_time_s),
                        ckdir / "last.pt")
    distributed.barrier(info)


# --------------------------------------------------------------------------- one epoch
@dataclass
class _EpochMeter:
    """Running sums of one epoch, kept on the device (no host sync per step)."""

    device: torch.device

    def __post_init__(self) -> None:
        def zero() -> torch.Tensor:
            return torch.zeros((), device=self.device, dtype=torch.float64)

        self.loss_sum, self.correct, self.count, self.gnorm_sum = zero(), zero(), zero(), zero()
        self.bad = torch.zeros((), device=self.device, dtype=torch.bool)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
            gnorm: torch.Tensor) -> None:
        n = len(y)
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.count += n
        self.gnorm_sum += gnorm.detach().double()

    def totals(self, info: distributed.DistInfo) -> list[float]:
        """``[loss_sum, correct, count, gnorm_sum]`` summed over ranks."""
        t = torch.stack([self.loss_sum, self.correct, self.count, self.gnorm_sum])
        return distributed.all_reduce_sum(t.to(torch.float64), info).tolist()


def train_one_epoch(
    model: torch.nn.Module, criterion: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: recipe.Batches,
    device: torch.device, epoch: int, tcfg: TrainConfig, *,
    info: distributed.DistInfo, amp: bool = False,
    forward: torch.nn.Module | None = None, last_path: Path | None = None,
) -> dict[str, float]:
    """One epoch of steps over ``loader``; returns the epoch's history fields.

    Each step (§4.2): forward (bf16 autocast if ``amp``), the criterion on fp32 logits,
    backward, the gradient norm clipped at ``train.grad_clip`` (0: measured only), the
    optimiser step, then the scheduler step (the schedule is per step). ``forward`` runs the
    batch (``model`` wrapped for DDP and/or ``torch.compile``; default ``model`` itself).
    Raises :class:`NonFiniteLossError`, naming ``last_path``, when any rank's loss is not finite.
    """
    net = model if forward is None else forward
    steps = len(loader)
    max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
    net.train()
    meter = _EpochMeter(device)
    lr_first = optimizer.param_groups[0]["lr"]
    bar = _progress_bar(tcfg, info, epoch, loader.images(info))
    _sync(device)
    t0 = time.perf_counter()
    for step, (x, y, target) in enumerate(loader.batches(info)):
        if tcfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = net(x)
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        meter.bad |= ~torch.isfinite(loss.detach())
        # CPU: check every step (free); GPU: every few steps to avoid a sync per step
        if device.type == "cpu" or step % 25 == 24 or step == steps - 1:
            _stop_if_not_finite(meter, info, device, epoch, step, bar, last_path)
        optimizer.step()
        scheduler.step()
        meter.add(loss, logits, y, gnorm)
        bar.update(len(y) * info.world_size)
        if step % 20 == 0 and bar.n and not bar.disable:
            bar.set_postfix(loss=f"{(meter.loss_sum / meter.count).item():.3f}", refresh=False)
    _sync(device)
    dt = time.perf_counter() - t0
    bar.close()
    loss_sum, correct, count, gnorm_sum = meter.totals(info)
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / max(count, 1),
        "lr": lr_first,
        "lr_end": optimizer.param_groups[0]["lr"],
        "grad_norm": gnorm_sum / max(steps * info.world_size, 1),
        "train_images": int(count),
        "epoch_time_s": dt,
        "images_per_s": count / dt if dt > 0 else float("nan"),
    }


def _stop_if_not_finite(meter: _EpochMeter, info: distributed.DistInfo, device: torch.device,
                        epoch: int, step: int, bar: Any, last: Path | None) -> None:
    """Raise :class:`NonFiniteLossError` if any rank has seen a NaN/inf loss this epoch."""
    if distributed.any_rank(bool(meter.bad.item()), info, device):
        bar.close()
        kept = ("" if last is not None and last.is_file() else " (none written yet)")
        raise NonFiniteLossError(
            f"non-finite training loss in epoch {epoch + 1} (by step {step + 1}); "
            f"training stopped. The last good checkpoint is kept: {last}{kept}"
        )


def _progress_bar(tcfg: TrainConfig, info: distributed.DistInfo, epoch: int, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, unit="img", unit_scale=False, ascii=True, leave=False,
        mininterval=tcfg.progress_interval_s, desc=f"epoch {epoch + 1}/{tcfg.epochs}",
        disable=not (tcfg.progress and info.is_main), file=sys.stderr, dynamic_ncols=False,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- evaluation
def evaluate(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
    transform: Callable[[torch.Tensor], torch.Tensor], device: torch.device, *,
    tcfg: TrainConfig, amp: bool = False, tta_flip: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` in eval mode on uint8 ``images`` (no augmentation; with
    ``tta_flip`` the logits average the image and its mirror)."""
    out = infer(model, images, transform, batch_size=tcfg.eval_batch_size, device=device,
                amp=amp, channels_last=tcfg.channels_last, tta_flip=tta_flip)
    return split_metrics(out["logits"], labels, class_names)


def _epoch_row(epoch: int, stats: dict[str, float], vm: dict[str, Any],
               eval_s: float) -> dict[str, Any]:
    """The epoch's history row: its training fields and its val metrics."""
    return {
        "epoch": epoch + 1,
        **stats,
        "val_loss": vm["loss"],
        "val_accuracy": vm["accuracy"],
        "val_mean_class_accuracy": vm["mean_class_accuracy"],
        "eval_time_s": eval_s,
    }


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc "
        f"{row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} acc "
        f"{row['val_accuracy']:.4f} mca {row['val_mean_class_accuracy']:.4f}"
        f"{' *' if improved else ''} | lr {row['lr_end']:.2e} grad {row['grad_norm']:.3g} | "
        f"{row['epoch_time_s']:.1f} s, {row['images_per_s']:.0f} img/s"
    )


def snapshot_epochs(epochs: int, n: int) -> list[int]:
    """The epochs (1-based) at ``n`` evenly spaced fractions of ``epochs``: k/n, k = 1..n."""
    return sorted({max(1, round(k * epochs / n)) for k in range(1, n + 1)}) if n else []


def snapshot_index(n_test: int, k: int) -> np.ndarray:
    """The fixed test subsample of the feature snapshots (seeded, the same for every run)."""
    return fixed_indices(n_test, k, seed=1)


def snapshot_features(
    model: torch.nn.Module, test: FaceTensors, transform: Callable[[torch.Tensor], torch.Tensor],
    samples: int, device: torch.device, tcfg: TrainConfig, amp: bool,
) -> np.ndarray:
    """Pooled float16 features of the fixed test subsample (Fig. 7 over training).

    Only features are kept, never predictions or accuracy: selection stays on val and the
    test split is evaluated once, at the end.
    """
    idx = torch.as_tensor(snapshot_index(len(test), samples))
    out = infer(model, test.images[idx], transform, batch_size=tcfg.eval_batch_size,
                device=device, amp=amp, channels_last=tcfg.channels_last, features=True)
    return out["features"].numpy().astype(np.float16)


# --------------------------------------------------------------------------- time budget
def fit_to_budget(plan: Plan, tcfg: TrainConfig, epoch: int, row: dict[str, Any],
                  elapsed_s: float, info: distributed.DistInfo, device: torch.device | str,
                  log: Callable[[str], None]) -> None:
    """After epoch ``train.fit_after_epoch``, shorten ``plan`` to what fits in
    ``train.time_budget_s`` (never lengthen it), from that epoch's cost and ``elapsed_s`` on
    the run's clock; the same plan on every rank."""
    if not (tcfg.time_budget_s and tcfg.fit_to_budget and epoch + 1 == tcfg.fit_after_epoch):
        return
    per_epoch = row["epoch_time_s"] + row["eval_time_s"]
    reserve = row["eval_time_s"] * 3 + 10.0
    fit = 1 + int((tcfg.time_budget_s - elapsed_s - reserve) // max(per_epoch, 1e-6))
    fit = distributed.min_int(max(1, fit), info, device)
    if fit < plan.epochs:
        plan.epochs = fit
        log(f"time budget {tcfg.time_budget_s:.0f} s: schedule re-planned for "
            f"{fit} of {tcfg.epochs} epochs ({per_epoch:.1f} s per epoch)")


def out_of_time(plan: Plan, tcfg: TrainConfig, epoch: int, row: dict[str, Any],
                elapsed_s: float, info: distributed.DistInfo, device: torch.device) -> bool:
    """Whether the next epoch (plus the final evaluation) would overrun the time budget."""
    if not (tcfg.time_budget_s and epoch + 1 < plan.epochs):
        return False
    need = row["epoch_time_s"] + row["eval_time_s"] * 3 + 5.0
    return distributed.any_rank(elapsed_s + need > tcfg.time_budget_s, info, device)


# --------------------------------------------------------------------------- the end of the run
def _final_metrics(
    model: torch.nn.Module, splits: dict[str, FaceTensors],
    transform: Callable[[torch.Tensor], torch.Tensor], cfg: Config, device: torch.device,
    amp: bool, snapshots: dict[int, np.ndarray],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The selected model's val, test (the one test evaluation) and train-subset metrics, and
    the record's arrays."""
    tcfg, names = cfg.train, splits["train"].class_names
    val_s, test_s = splits["val"], splits["test"]
    val_metrics = evaluate(model, val_s.images, val_s.labels, names, transform, device,
                           tcfg=tcfg, amp=amp, tta_flip=cfg.eval.tta_flip)
    test_metrics, arrays = final_evaluation(
        model, test_s, transform, cfg.eval, device=device, amp=amp,
        channels_last=tcfg.channels_last, batch_size=tcfg.eval_batch_size,
    )
    arrays["val_confusion"] = np.asarray(val_metrics["confusion"], dtype=np.int64)
    if snapshots:  # features (n, S, D) float16, their epochs and test index
        epochs = sorted(snapshots)
        arrays.update(snapshot_features=np.stack([snapshots[e] for e in epochs]),
                      snapshot_epochs=np.asarray(epochs, dtype=np.int64),
                      snapshot_index=snapshot_index(len(test_s), cfg.eval.snapshot_samples))
    train_s, k = splits["train"], cfg.eval.train_subset
    subset = None
    if k and len(train_s):  # underfitting vs overfitting
        sub = torch.as_tensor(fixed_indices(len(train_s), k, seed=0))
        sm = evaluate(model, train_s.images[sub], train_s.labels[sub], names, transform, device,
                      tcfg=tcfg, amp=amp, tta_flip=cfg.eval.tta_flip)
        subset = {"n": len(sub), "accuracy": sm["accuracy"], "loss": sm["loss"],
                  "mean_class_accuracy": sm["mean_class_accuracy"],
                  "note": "selected checkpoint, fixed subset (seed 0), no augmentation"}
    return {"val": val_metrics, "test": test_metrics, "train_subset": subset}, arrays


def _record(
    cfg: Config, *, model: torch.nn.Module, splits: dict[str, FaceTensors],
    progress: checkpoint.Progress, plan_epochs: int, stop_reason: str,
    metrics: dict[str, Any], git: dict[str, Any], device: torch.device,
    info: distributed.DistInfo, amp: bool, load_time: float, train_time: float, clock: Clock,
    best_checkpoint: str,
) -> dict[str, Any]:
    """The run's record (:func:`cfdan.results.build_record`) with provenance and timings."""
    hardware = {**provenance.hardware_info(device), "world_size": info.world_size, "bf16": amp}
    prov = {"git": git, "hardware": hardware, "versions": provenance.versions(),
            "peak_memory": provenance.peak_memory_mb(device)}
    data = {
        "dataset": cfg.data.dataset,
        "label_mode": cfg.data.label_mode,
        "fingerprint": {k: s.fingerprint for k, s in splits.items()},
        "sizes": {k: len(s) for k, s in splits.items()},
        "class_names": splits["train"].class_names,
        "load_time_s": load_time,
    }
    model_info = {"params": sum(p.numel() for p in model.parameters()),
                  "config": recipe.model_config_dict(model)}
    return results.build_record(
        cfg, provenance=prov, data=data, model_info=model_info, history=progress.history,
        epochs_fitted=plan_epochs, stop_reason=stop_reason,
        best_epoch=progress.best["epoch"], metrics=metrics, train_time_s=train_time,
        wall_time_s=clock(), resumed_at_epochs=progress.resumed_at, checkpoint=best_checkpoint,
    )


def _store(record: dict[str, Any], arrays: dict[str, np.ndarray],
           results_root: str | os.PathLike | None, *, log: Callable[[str], None],
           remove: tuple[Path, ...]) -> None:
    """Store the record and its arrays, say where, and delete the checkpoints in ``remove``."""
    path = results.save_record(record, arrays, results_root)
    test = record["test"]
    log(
        f"test accuracy {test['accuracy']:.4f} (95% CI {test['accuracy_ci95'][0]:.4f}-"
        f"{test['accuracy_ci95'][1]:.4f}), mean-class {test['mean_class_accuracy']:.4f}, "
        f"best epoch {record['best_epoch']}; record {path}"
        if "accuracy_ci95" in test
        else f"test accuracy {test['accuracy']:.4f}; record {path}"
    )
    for p in remove:
        p.unlink(missing_ok=True)
