"""Training (§4.2): AdamW, cross-entropy, batch 32, with honest model selection on val.

The recipe the paper states is the default (:class:`cfdan.training.config.TrainConfig`): AdamW with
betas (0.9, 0.999) and weight decay 1e-4, plain cross-entropy, batch 32, 224 px inputs. What it
leaves out is chosen in the profile and recorded: learning rate, linear warm-up then cosine
decay (per step), epochs, augmentation (:class:`cfdan.data.pipeline.Augment`).

The whole split lives in memory as a uint8 tensor (on the GPU when training there): each epoch
draws a seeded permutation of indices and augments each batch on the device, so no DataLoader
workers are needed. Every epoch writes a resumable checkpoint atomically; the epoch's
permutation, drawn targets, augmentation and dropout randomness are derived from
``(seed, epoch)``, so a run resumed after a crash ends with the same record as an uninterrupted
one (on CPU, same seed). A non-finite loss stops the run and leaves the last good checkpoint.

:func:`train` is a short sequence of steps over one :class:`TrainState`: set up the device,
load the splits (:mod:`cfdan.data.splits`), build the model and optimiser, resume, run the
epochs, evaluate the selected checkpoint once on test, and store the record
(:func:`cfdan.results.build_record`, provenance from :mod:`cfdan.training.provenance`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cfdan import atomic, paths, results, safe_load
from cfdan.data.splits import DataRootError, load_splits
from cfdan.data.types import FaceTensors
from cfdan.training import distributed, evaluate, provenance
from cfdan.training.config import Config, ConfigError

__all__ = [
    "TIMING_KEYS", "DataRootError", "NonFiniteLossError", "TrainState", "amp_enabled",
    "build_model", "epoch_seed", "inference_checkpoint", "lr_factor", "make_augment",
    "resolve_device", "run_checkpoint_dir", "target_kind", "train",
]

TIMING_KEYS = ("epoch_time_s", "images_per_s", "eval_time_s")
"""History fields that measure speed, not outcome (excluded when comparing runs)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- recipe pieces
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in ``epoch`` (permutation, targets, augmentation, dropout)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def resolve_device(name: str, info: distributed.DistInfo | None = None) -> torch.device:
    """``auto`` -> ``cuda`` (this rank's GPU) if available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and info is not None and info.enabled:
        name = f"cuda:{info.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def amp_enabled(cfg: Config, device: torch.device) -> bool:
    """bf16 autocast: on CUDA when the GPU supports bf16; on CPU when ``train.amp`` is true."""
    if not cfg.train.amp:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


_COMPILE_MODES: dict[str, dict[str, bool]] = {
    "": {},
    "default": {},
    "reduce-overhead": {"triton.cudagraphs": True},
    "max-autotune": {"max_autotune": True, "triton.cudagraphs": True},
    "max-autotune-no-cudagraphs": {"max_autotune": True},
}


def compile_model(model: torch.nn.Module, mode: str = "") -> torch.nn.Module:
    """``torch.compile`` with Inductor's pattern matcher off.

    Inductor rewrites matmul-softmax-matmul chains into fused attention; on the channel
    attention (eq. 2: a transposed query, a per-group temperature tensor) that rewrite failed
    with a broadcast error here, and public reports show it can also silently mis-bind a
    permuted key. CF-DAN calls ``scaled_dot_product_attention`` itself where it applies, so the
    rewrite gains nothing. ``mode`` is one of torch.compile's modes ("reduce-overhead": CUDA
    graphs), spelled as Inductor options because a mode and options cannot be given together.
    """
    if mode not in _COMPILE_MODES:
        raise ValueError(f"train.compile_mode {mode!r}: expected one of {sorted(_COMPILE_MODES)}")
    return torch.compile(model, options={"pattern_matcher": False, **_COMPILE_MODES[mode]})


def build_model(cfg: Config, num_classes: int, image_size: int) -> torch.nn.Module:
    """The CF-DAN of ``cfg.model`` (a preset plus field overrides) for the data's size/classes."""
    from cfdan.model import CFDAN, preset

    fields = {k: v for k, v in cfg.model.items() if k != "preset"}
    if "trunk_blocks" in fields:
        fields["trunk_blocks"] = tuple(fields["trunk_blocks"])
    try:
        mcfg = preset(cfg.model["preset"], num_classes=num_classes, image_size=image_size, **fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[model]: {exc}") from exc
    return CFDAN(mcfg, init_seed=cfg.train.seed if cfg.train.paired_init else None)


def model_config_dict(model: torch.nn.Module) -> dict[str, Any] | None:
    """The model's own config as a dict (``None`` for a model without one)."""
    mcfg = getattr(model, "cfg", None)
    if mcfg is None:
        return None
    if hasattr(mcfg, "to_dict"):
        return mcfg.to_dict()
    return dataclasses.asdict(mcfg) if dataclasses.is_dataclass(mcfg) else None


def make_augment(image_size: int, train: bool, seed: int,
                 tcfg: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input pipeline; in training, its strength comes from ``tcfg`` (``train.aug_*``)."""
    from cfdan.data.pipeline import Augment

    if tcfg is None:
        return Augment(image_size, train=train, seed=seed)
    return Augment(image_size, train=train, seed=seed, scale=(tcfg.aug_crop_scale, 1.0),
                   degrees=tcfg.aug_degrees, erase_p=tcfg.aug_erase_p)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def target_kind(cfg: Config) -> str:
    """What the loss compares the logits with: ``hard``, ``soft`` or ``sampled``.

    ``data.label_mode`` names the FER+ training protocols (§4.1, :mod:`cfdan.data.ferplus`):
    ``majority`` trains on the labels (plain cross-entropy, §4.2) unless ``train.targets`` is
    ``soft``; ``crossentropy`` trains on the per-image vote distribution (``soft``);
    ``probability`` draws a hard target from that distribution at every use (``sampled``,
    :func:`cfdan.data.ferplus.sample_targets`).
    """
    mode = cfg.data.label_mode
    if mode == "probability":
        if cfg.train.targets == "soft":
            raise ConfigError("train.targets='soft' contradicts data.label_mode='probability', "
                              "which draws hard targets; use data.label_mode='crossentropy'")
        return "sampled"
    if mode == "crossentropy":
        return "soft"
    return cfg.train.targets


# --------------------------------------------------------------------------- checkpoints
def rng_state(device: torch.device) -> dict[str, Any]:
    """The global random states (python, numpy, torch, this CUDA device), as tensors and plain
    types only, so that a checkpoint holding them loads with ``weights_only=True``."""
    npst = np.random.get_state(legacy=False)
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
                  "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]),
                  "gauss": float(npst["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved (or a legacy checkpoint's NumPy state tuple)."""
    random.setstate(st["python"])
    npst = st["numpy"]
    if isinstance(npst, dict):
        npst = {"bit_generator": "MT19937",
                "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
                "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]}
    np.random.set_state(npst)
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


LEGACY_GLOBALS = (np.dtype, np.ndarray, np._core.multiarray._reconstruct,
                  np.dtypes.UInt32DType, np.dtypes.Float16DType)
"""What a ``last.pt`` written before safe loading holds beyond tensors and plain types (NumPy
arrays: the uint32 RNG key and float16 feature snapshots); allowed only when such a file is
resumed."""


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A ``last.pt`` read by :func:`cfdan.safe_load.load`, NumPy arrays of files written before
    safe loading allowed (:data:`LEGACY_GLOBALS`), nothing else;
    :class:`cfdan.safe_load.UnsafeCheckpointError` when refused."""
    ck = safe_load.load(path, device, allow=LEGACY_GLOBALS)
    if not isinstance(ck, dict):
        raise safe_load.UnsafeCheckpointError(f"{path}: not a training checkpoint")
    return ck


def run_checkpoint_dir(cfg: Config, root: str | os.PathLike | None = None) -> Path:
    """``<checkpoint root>/<experiment>/<run_id>``: the run's ``last.pt`` and ``best.pt``."""
    return paths.checkpoint_dir(root) / cfg.experiment / cfg.run_id


def inference_checkpoint(
    model: torch.nn.Module, cfg: Config, class_names: list[str], in_channels: int
) -> dict[str, Any]:
    """A self-describing checkpoint for :mod:`cfdan.predict` (weights + configs + class names)."""
    return {
        "kind": "cfdan-inference",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model_config_dict(model),
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        "image_size": cfg.data.image_size,
        "in_channels": int(in_channels),
        "dataset": cfg.data.dataset,
        "run_id": cfg.run_id,
    }


def _save(obj: Any, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _relative_checkpoint(path: Path, root: str | os.PathLike | None) -> str:
    """The checkpoint's path relative to the checkpoint folder (no machine paths in records)."""
    try:
        return str(path.relative_to(paths.checkpoint_dir(root)))
    except ValueError:
        return path.name


# --------------------------------------------------------------------------- the state
@dataclass
class Plan:
    """The schedule's length: ``train.fit_to_budget`` may lower ``epochs`` after epoch
    ``train.fit_after_epoch``."""

    epochs: int
    steps_per_epoch: int


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def _silent(msg: str) -> None:
    pass


@dataclass
class TrainState:
    """Everything one run carries from step to step."""

    cfg: Config
    info: distributed.DistInfo
    device: torch.device
    model: torch.nn.Module
    fwd_model: torch.nn.Module
    """``model``, wrapped for DDP and/or ``torch.compile`` when enabled (used for training)."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    plan: Plan
    train_images: torch.Tensor
    """The training split's uint8 images and labels, on ``device``."""
    train_labels: torch.Tensor
    amp: bool = False
    splits: dict[str, FaceTensors] = field(default_factory=dict)
    target_kind: str = "hard"
    train_soft: torch.Tensor | None = None
    """Vote distributions on ``device`` (``target_kind`` ``soft``)."""
    eval_tf: Callable[[torch.Tensor], torch.Tensor] | None = None
    ckdir: Path = Path(".")
    checkpoint_root: str | os.PathLike | None = None
    log: Callable[[str], None] = _log_default
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": -1, "val_accuracy": -1.0, "val_loss": math.inf})
    start_epoch: int = 0
    prior_wall: float = 0.0
    """Wall time of the attempts before a resume."""
    resumed_at: list[int] = field(default_factory=list)
    stop_reason: str = "completed"
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    """Epoch -> float16 pooled test features of the fixed subsample (``eval.feature_snapshots``)."""
    git: dict[str, Any] = field(default_factory=dict)
    data_time: float = 0.0
    t_start: float = 0.0
    t_run: float = 0.0

    @property
    def last_path(self) -> Path:
        return self.ckdir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckdir / "best.pt"


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
    log = log or _log_default
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
    t_start = time.perf_counter()
    git = provenance.git_info()  # the code that runs is the code at start, not at the end
    if not force and results.has_record(cfg.experiment, cfg.run_id, results_root):
        log(f"run {cfg.experiment}/{cfg.run_id} is already in the store; skipping (use --force)")
        return results.read_record(results.record_path(cfg.experiment, cfg.run_id, results_root))
    device, amp = _setup_device(cfg, info)
    splits, data_time = _load_data(cfg, info, splits)
    state = _build_state(cfg, info, device, amp, splits)
    state.log, state.git, state.t_start, state.data_time = log, git, t_start, data_time
    state.ckdir = run_checkpoint_dir(cfg, checkpoint_root)
    state.checkpoint_root = checkpoint_root
    _log_start(state)
    _resume(state, fresh)
    _run_epochs(state)
    metrics, arrays = _final_evaluation(state)
    record = _build_record(state, metrics)
    _store(state, record, arrays, results_root)
    return record


# ---- set-up
def _setup_device(cfg: Config, info: distributed.DistInfo) -> tuple[torch.device, bool]:
    """Threads, device, bf16, backend flags, then the global seed."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, info)
    amp = amp_enabled(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.train.seed)
    return device, amp


def _load_data(
    cfg: Config, info: distributed.DistInfo, splits: dict[str, FaceTensors] | None
) -> tuple[dict[str, FaceTensors], float]:
    """The three splits (given, or loaded from ``cfg.data``) and the time it took."""
    t0 = time.perf_counter()
    splits = splits or load_splits(cfg)
    if len(splits["train"]) < cfg.train.batch_size * info.world_size and info.enabled:
        raise ConfigError("training set smaller than one global batch")
    return splits, time.perf_counter() - t0


def _build_state(
    cfg: Config, info: distributed.DistInfo, device: torch.device, amp: bool,
    splits: dict[str, FaceTensors],
) -> TrainState:
    """Training tensors on the device, the model (seeded), AdamW and the LR schedule."""
    tcfg, train_s = cfg.train, splits["train"]
    kind = target_kind(cfg)
    if kind != "hard" and train_s.soft is None:
        why = ("train.targets='soft'" if cfg.data.label_mode == "majority"
               else f"data.label_mode={cfg.data.label_mode!r}")
        raise ConfigError(f"{why} needs soft labels, but {cfg.data.dataset} has none")
    images, labels = train_s.images.to(device), train_s.labels.to(device)
    soft = train_s.soft.to(device) if kind == "soft" else None
    model, fwd_model, optimizer = _build_model(cfg, info, device, len(train_s.class_names))
    drop_last = info.enabled or tcfg.compile  # equal shards per rank; one compiled shape
    n = len(train_s)
    plan = Plan(epochs=tcfg.epochs,
                steps_per_epoch=n // tcfg.batch_size if drop_last else math.ceil(n / tcfg.batch_size))
    warmup = round(tcfg.warmup_epochs * plan.steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, plan.steps_per_epoch * plan.epochs, warmup, tcfg.min_lr_ratio),
    )
    return TrainState(
        cfg=cfg, info=info, device=device, amp=amp, splits=splits, model=model,
        fwd_model=fwd_model, optimizer=optimizer, scheduler=scheduler, plan=plan,
        train_images=images, train_labels=labels, train_soft=soft, target_kind=kind,
        eval_tf=make_augment(cfg.data.image_size, train=False, seed=0),
    )


def _build_model(
    cfg: Config, info: distributed.DistInfo, device: torch.device, num_classes: int
) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """The model (seeded with ``train.seed``), its DDP/compiled wrapper and AdamW (§4.2)."""
    tcfg = cfg.train
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg, num_classes, cfg.data.image_size).to(device)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd_model: torch.nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        fwd_model = compile_model(fwd_model, tcfg.compile_mode)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2),
        weight_decay=tcfg.weight_decay, fused=device.type == "cuda" or None,
    )
    return model, fwd_model, optimizer


def _log_start(state: TrainState) -> None:
    cfg, info, s = state.cfg, state.info, state.splits
    state.log(
        f"run {cfg.experiment}/{cfg.run_id}: {cfg.data.dataset} train {len(s['train'])} / val "
        f"{len(s['val'])} / test {len(s['test'])} images, {len(s['train'].class_names)} "
        f"classes, device {state.device}{' x' + str(info.world_size) if info.enabled else ''}, "
        f"bf16 {state.amp}"
    )


def _resume(state: TrainState, fresh: bool) -> None:
    """Continue from ``last.pt`` if there is one; ``fresh`` deletes an earlier attempt's."""
    info, ckdir = state.info, state.ckdir
    if info.is_main and ckdir.is_dir():  # temp files of a process killed while saving
        for tmp in ckdir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if fresh:
        if info.is_main:
            for p in (state.last_path, state.best_path):
                p.unlink(missing_ok=True)
        distributed.barrier(info)
        return
    if not state.last_path.is_file():
        return
    try:
        ck = load_training_state(state.last_path, state.device)
    except safe_load.UnsafeCheckpointError as exc:
        state.log(f"{exc}; starting this run from scratch")
        if info.is_main:
            state.last_path.unlink(missing_ok=True)
            state.best_path.unlink(missing_ok=True)
        distributed.barrier(info)
        return
    if ck.get("run_id") != state.cfg.run_id:
        raise RuntimeError(f"{state.last_path}: checkpoint of run {ck.get('run_id')}, "
                           f"not {state.cfg.run_id}")
    state.model.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.scheduler.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"], state.device)
    state.history, state.best = ck["history"], ck["best"]
    state.plan.epochs = ck.get("plan_epochs", state.cfg.train.epochs)
    state.snapshots = {int(e): np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
                       for e, v in ck.get("snapshots", {}).items()}
    state.start_epoch, state.prior_wall = ck["epoch"] + 1, ck["wall_time_s"]
    state.resumed_at = ck.get("resumed_at", []) + [state.start_epoch]
    state.log(f"resumed from {state.last_path} after epoch {state.start_epoch} of "
              f"{state.cfg.train.epochs}")


# ---- epochs
def _run_epochs(state: TrainState) -> None:
    """Train, validate, checkpoint; stop at the planned epochs or the time budget."""
    tcfg = state.cfg.train
    state.t_run = time.perf_counter()
    for epoch in range(state.start_epoch, tcfg.epochs):
        if epoch >= state.plan.epochs:
            break
        row, improved = _run_epoch(state, epoch)
        _snapshot_features(state, epoch)
        # done before the checkpoint is saved so that a resumed run keeps the fitted plan
        _fit_to_budget(state, epoch, row)
        _save_checkpoints(state, epoch, improved)
        if _out_of_time(state, epoch, row):
            state.stop_reason = "time_budget"
            state.log(f"time budget {tcfg.time_budget_s:.0f} s: stopping after epoch {epoch + 1}")
            break
    if state.stop_reason == "completed" and state.plan.epochs < tcfg.epochs:
        state.stop_reason = "time_budget_fitted"


def _run_epoch(state: TrainState, epoch: int) -> tuple[dict[str, Any], bool]:
    """One epoch of training and its validation; returns the history row and whether it is
    the best epoch so far (val accuracy, ties broken by lower val loss)."""
    tcfg = state.cfg.train
    es = epoch_seed(tcfg.seed, epoch)
    torch.manual_seed(es)  # dropout and any other global-RNG use in this epoch
    gen = torch.Generator().manual_seed(es)
    perm = torch.randperm(len(state.train_labels), generator=gen).to(state.device)
    targets = _epoch_targets(state, gen)
    aug = (make_augment(state.cfg.data.image_size, train=True, seed=es + state.info.rank,
                        tcfg=tcfg)
           if tcfg.augment else state.eval_tf)
    stats = _train_epoch(state, epoch, perm, aug, targets)
    distributed.broadcast_buffers(state.model, state.info)  # all ranks evaluate the same weights
    t_eval = time.perf_counter()
    vm = _metrics(state, state.splits["val"].images, state.splits["val"].labels)
    row = {
        "epoch": epoch + 1,
        **stats,
        "val_loss": vm["loss"],
        "val_accuracy": vm["accuracy"],
        "val_mean_class_accuracy": vm["mean_class_accuracy"],
        "eval_time_s": time.perf_counter() - t_eval,
    }
    state.history.append(row)
    best = state.best
    improved = (vm["accuracy"], -vm["loss"]) > (best["val_accuracy"], -best["val_loss"])
    if improved:
        state.best = {"epoch": epoch + 1, "val_accuracy": vm["accuracy"], "val_loss": vm["loss"]}
    state.log(
        f"epoch {epoch + 1}/{tcfg.epochs}  train loss {row['train_loss']:.4f} acc "
        f"{row['train_accuracy']:.4f} | val loss {vm['loss']:.4f} acc {vm['accuracy']:.4f} "
        f"mca {vm['mean_class_accuracy']:.4f}{' *' if improved else ''} | lr {row['lr_end']:.2e} "
        f"grad {row['grad_norm']:.3g} | {row['epoch_time_s']:.1f} s, "
        f"{row['images_per_s']:.0f} img/s"
    )
    return row, improved


def _epoch_targets(state: TrainState, gen: torch.Generator) -> torch.Tensor | None:
    """The loss targets of every training image this epoch (``None``: the labels).

    ``sampled`` draws one label per image from its vote distribution with the epoch's
    generator, after the permutation; each image is used once per epoch, so this is a fresh
    draw at every use (the FER+ ``probability`` protocol), the same on every rank and after a
    resume.
    """
    if state.target_kind == "soft":
        return state.train_soft
    if state.target_kind == "sampled":
        from cfdan.data.ferplus import sample_targets

        return sample_targets(state.splits["train"].soft, gen).to(state.device)
    return None


def _metrics(state: TrainState, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Metrics of the model in eval mode on ``images`` (no augmentation; TTA if configured)."""
    tcfg = state.cfg.train
    out = evaluate.infer(
        state.model, images, state.eval_tf, batch_size=tcfg.eval_batch_size,
        device=state.device, amp=state.amp, channels_last=tcfg.channels_last,
        tta_flip=state.cfg.eval.tta_flip,
    )
    return evaluate.split_metrics(out["logits"], labels, state.splits["train"].class_names)


def _fit_to_budget(state: TrainState, epoch: int, row: dict[str, Any]) -> None:
    """After epoch ``train.fit_after_epoch``, shorten the schedule to what fits in
    ``train.time_budget_s`` (never lengthen it), from that epoch's cost; the same plan on every
    rank."""
    tcfg = state.cfg.train
    if not (tcfg.time_budget_s and tcfg.fit_to_budget and epoch + 1 == tcfg.fit_after_epoch):
        return
    elapsed = state.prior_wall + (time.perf_counter() - state.t_start)
    per_epoch = row["epoch_time_s"] + row["eval_time_s"]
    reserve = row["eval_time_s"] * 3 + 10.0
    fit = 1 + int((tcfg.time_budget_s - elapsed - reserve) // max(per_epoch, 1e-6))
    fit = distributed.min_int(max(1, fit), state.info, state.device)
    if fit < state.plan.epochs:
        state.plan.epochs = fit
        state.log(f"time budget {tcfg.time_budget_s:.0f} s: schedule re-planned for "
                  f"{fit} of {tcfg.epochs} epochs ({per_epoch:.1f} s per epoch)")


def _out_of_time(state: TrainState, epoch: int, row: dict[str, Any]) -> bool:
    """Whether the next epoch (plus the final evaluation) would overrun the time budget."""
    tcfg = state.cfg.train
    if not (tcfg.time_budget_s and epoch + 1 < state.plan.epochs):
        return False
    elapsed = state.prior_wall + (time.perf_counter() - state.t_start)
    need = row["epoch_time_s"] + row["eval_time_s"] * 3 + 5.0
    return distributed.any_rank(elapsed + need > tcfg.time_budget_s, state.info, state.device)


def snapshot_epochs(epochs: int, n: int) -> list[int]:
    """The epochs (1-based) at ``n`` evenly spaced fractions of ``epochs``: k/n, k = 1..n."""
    return sorted({max(1, round(k * epochs / n)) for k in range(1, n + 1)}) if n else []


def snapshot_index(n_test: int, k: int) -> np.ndarray:
    """The fixed test subsample of the feature snapshots (seeded, the same for every run)."""
    return evaluate.fixed_indices(n_test, k, seed=1)


def _snapshot_features(state: TrainState, epoch: int) -> None:
    """Pooled test features after ``epoch`` if it is a snapshot epoch (Fig. 7 over training).

    Only features are kept, never predictions or accuracy: selection stays on val and the
    test split is evaluated once, at the end.
    """
    ecfg = state.cfg.eval
    if epoch + 1 not in snapshot_epochs(state.cfg.train.epochs, ecfg.feature_snapshots):
        return
    test = state.splits["test"]
    idx = torch.as_tensor(snapshot_index(len(test), ecfg.snapshot_samples))
    out = evaluate.infer(
        state.model, test.images[idx], state.eval_tf, batch_size=state.cfg.train.eval_batch_size,
        device=state.device, amp=state.amp, channels_last=state.cfg.train.channels_last,
        features=True,
    )
    state.snapshots[epoch + 1] = out["features"].numpy().astype(np.float16)


def snapshot_arrays(state: TrainState) -> dict[str, np.ndarray]:
    """The record's snapshot arrays: features (n, S, D) float16, their epochs and test index."""
    if not state.snapshots:
        return {}
    epochs = sorted(state.snapshots)
    return {
        "snapshot_features": np.stack([state.snapshots[e] for e in epochs]),
        "snapshot_epochs": np.asarray(epochs, dtype=np.int64),
        "snapshot_index": snapshot_index(len(state.splits["test"]),
                                         state.cfg.eval.snapshot_samples),
    }


def _save_checkpoints(state: TrainState, epoch: int, improved: bool) -> None:
    """Rank 0 writes ``best.pt`` (if ``improved``) and the resumable ``last.pt``."""
    wall = state.prior_wall + (time.perf_counter() - state.t_run)
    if state.info.is_main:
        if improved:
            in_channels = state.splits["train"].images.shape[1]
            _save(inference_checkpoint(state.model, state.cfg, state.splits["train"].class_names,
                                       in_channels), state.best_path)
        _save(
            {
                "run_id": state.cfg.run_id, "epoch": epoch, "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(), "rng": rng_state(state.device),
                "history": state.history, "best": state.best, "wall_time_s": wall,
                "resumed_at": state.resumed_at, "config": state.cfg.to_dict(),
                "plan_epochs": state.plan.epochs,
                "snapshots": {e: torch.from_numpy(v) for e, v in state.snapshots.items()},
            },
            state.last_path,
        )
    distributed.barrier(state.info)


# ---- one epoch of steps
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


def _train_epoch(
    state: TrainState, epoch: int, perm: torch.Tensor,
    aug: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor | None = None,
) -> dict[str, float]:
    """One epoch of steps over ``perm``; returns the epoch's history fields.

    ``targets`` holds every training image's loss target (vote distribution or drawn label);
    ``None`` trains on the labels. Each global batch is split across ranks.
    """
    tcfg, info, device = state.cfg.train, state.info, state.device
    steps, B = state.plan.steps_per_epoch, tcfg.batch_size
    state.fwd_model.train()
    meter = _EpochMeter(device)
    lr_first = state.optimizer.param_groups[0]["lr"]
    bar = _progress_bar(state, epoch, steps * B if info.enabled else len(perm))
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = distributed.shard(perm[step * B : (step + 1) * B], info)
        x = aug(state.train_images[idx])
        y = state.train_labels[idx]
        logits, loss, gnorm = _forward_backward(state, x, y if targets is None else targets[idx])
        meter.bad |= ~torch.isfinite(loss.detach())
        # CPU: check every step (free); GPU: every few steps to avoid a sync per step
        if device.type == "cpu" or step % 25 == 24 or step == steps - 1:
            _stop_if_not_finite(state, meter, epoch, step, bar)
        state.optimizer.step()
        state.scheduler.step()
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
        "lr_end": state.optimizer.param_groups[0]["lr"],
        "grad_norm": gnorm_sum / max(steps * info.world_size, 1),
        "train_images": int(count),
        "epoch_time_s": dt,
        "images_per_s": count / dt if dt > 0 else float("nan"),
    }


def _forward_backward(
    state: TrainState, x: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward (bf16 autocast if enabled), cross-entropy in fp32, backward, clip; returns
    ``(logits, loss, gradient norm)``. The optimiser does not step here."""
    tcfg = state.cfg.train
    if tcfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with evaluate.autocast(state.device, state.amp):
        logits = state.fwd_model(x)
    loss = F.cross_entropy(logits.float(), target, label_smoothing=tcfg.label_smoothing)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
    gnorm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), max_norm)
    return logits, loss, gnorm


def _stop_if_not_finite(state: TrainState, meter: _EpochMeter, epoch: int, step: int,
                        bar: Any) -> None:
    """Raise :class:`NonFiniteLossError` if any rank has seen a NaN/inf loss this epoch."""
    if distributed.any_rank(bool(meter.bad.item()), state.info, state.device):
        bar.close()
        last = state.last_path
        raise NonFiniteLossError(
            f"non-finite training loss in epoch {epoch + 1} (by step {step + 1}); "
            f"training stopped. The last good checkpoint is kept: {last}"
            f"{'' if last.is_file() else ' (none written yet)'}"
        )


def _progress_bar(state: TrainState, epoch: int, total: int) -> Any:
    from tqdm import tqdm

    tcfg = state.cfg.train
    return tqdm(
        total=total, unit="img", unit_scale=False, ascii=True, leave=False,
        mininterval=tcfg.progress_interval_s, desc=f"epoch {epoch + 1}/{tcfg.epochs}",
        disable=not (tcfg.progress and state.info.is_main), file=sys.stderr, dynamic_ncols=False,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the end of the run
def _final_evaluation(state: TrainState) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reload the val-selected checkpoint; its val, test (once) and train-subset metrics."""
    if not state.history:
        raise RuntimeError("no epoch was trained")
    if state.best_path.is_file():
        ck = safe_load.load(state.best_path, state.device)
        state.model.load_state_dict(ck["model"])
    val_s, test_s, tcfg = state.splits["val"], state.splits["test"], state.cfg.train
    val_metrics = _metrics(state, val_s.images, val_s.labels)
    test_metrics, arrays = evaluate.final_evaluation(
        state.model, test_s, state.eval_tf, state.cfg.eval, device=state.device, amp=state.amp,
        channels_last=tcfg.channels_last, batch_size=tcfg.eval_batch_size,
    )
    arrays["val_confusion"] = np.asarray(val_metrics["confusion"], dtype=np.int64)
    arrays.update(snapshot_arrays(state))
    metrics = {"val": val_metrics, "test": test_metrics, "train_subset": _train_subset(state)}
    return metrics, arrays


def _train_subset(state: TrainState) -> dict[str, Any] | None:
    """Accuracy on a fixed train subset without augmentation (underfitting vs overfitting)."""
    train_s, k = state.splits["train"], state.cfg.eval.train_subset
    if not (k and len(train_s)):
        return None
    sub = torch.as_tensor(evaluate.fixed_indices(len(train_s), k, seed=0))
    sm = _metrics(state, train_s.images[sub], train_s.labels[sub])
    return {
        "n": len(sub), "accuracy": sm["accuracy"], "loss": sm["loss"],
        "mean_class_accuracy": sm["mean_class_accuracy"],
        "note": "selected checkpoint, fixed subset (seed 0), no augmentation",
    }


def _build_record(state: TrainState, metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's record (:func:`cfdan.results.build_record`) with provenance and timings."""
    cfg, device, splits = state.cfg, state.device, state.splits
    train_time = state.prior_wall + (time.perf_counter() - state.t_run)
    hardware = {**provenance.hardware_info(device), "world_size": state.info.world_size,
                "bf16": state.amp}
    prov = {"git": state.git, "hardware": hardware, "versions": provenance.versions(),
            "peak_memory": provenance.peak_memory_mb(device)}
    data = {
        "dataset": cfg.data.dataset,
        "label_mode": cfg.data.label_mode,
        "fingerprint": {k: s.fingerprint for k, s in splits.items()},
        "sizes": {k: len(s) for k, s in splits.items()},
        "class_names": splits["train"].class_names,
        "load_time_s": state.data_time,
    }
    model_info = {"params": sum(p.numel() for p in state.model.parameters()),
                  "config": model_config_dict(state.model)}
    return results.build_record(
        cfg, provenance=prov, data=data, model_info=model_info, history=state.history,
        epochs_fitted=state.plan.epochs, stop_reason=state.stop_reason,
        best_epoch=state.best["epoch"], metrics=metrics, train_time_s=train_time,
        wall_time_s=state.prior_wall + (time.perf_counter() - state.t_start),
        resumed_at_epochs=state.resumed_at,
        checkpoint=_relative_checkpoint(state.best_path, state.checkpoint_root),
    )


def _store(state: TrainState, record: dict[str, Any], arrays: dict[str, np.ndarray],
           results_root: str | os.PathLike | None) -> None:
    """Rank 0 stores the record and its arrays; checkpoints go unless ``keep_checkpoints``."""
    if not state.info.is_main:
        return
    path = results.save_record(record, arrays, results_root)
    test = record["test"]
    state.log(
        f"test accuracy {test['accuracy']:.4f} (95% CI {test['accuracy_ci95'][0]:.4f}-"
        f"{test['accuracy_ci95'][1]:.4f}), mean-class {test['mean_class_accuracy']:.4f}, "
        f"best epoch {record['best_epoch']}; record {path}"
        if "accuracy_ci95" in test
        else f"test accuracy {test['accuracy']:.4f}; record {path}"
    )
    if not state.cfg.train.keep_checkpoints:
        for p in (state.last_path, state.best_path):
            p.unlink(missing_ok=True)
