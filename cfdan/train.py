"""Training (§4.2): AdamW, cross-entropy, batch 32, with honest model selection on val.

The recipe the paper states is the default (:class:`cfdan.config.TrainConfig`): AdamW with
betas (0.9, 0.999) and weight decay 1e-4, plain cross-entropy, batch 32, 224 px inputs. What it
leaves out is chosen in the profile and recorded: learning rate, linear warm-up then cosine
decay (per step), epochs, augmentation (:class:`cfdan.data.pipeline.Augment`).

The whole split lives in memory as a uint8 tensor (on the GPU when training there): each epoch
draws a seeded permutation of indices and augments each batch on the device, so no DataLoader
workers are needed. Every epoch writes a resumable checkpoint atomically; the epoch's
permutation, augmentation and dropout randomness are derived from ``(seed, epoch)``, so a run
resumed after a crash ends with the same record as an uninterrupted one (on CPU, same seed).
A non-finite loss stops the run and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cfdan import distributed, evaluate, paths, results
from cfdan.config import Config, ConfigError

SCHEMA_VERSION = 1
TIMING_KEYS = ("epoch_time_s", "images_per_s", "eval_time_s")
"""History fields that measure speed, not outcome (excluded when comparing runs)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DataRootError(FileNotFoundError):
    """The configured dataset root does not exist."""


@dataclass
class Split:
    """One split as tensors (a light view of :class:`cfdan.data.FaceTensors`)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    soft: torch.Tensor | None
    class_names: list[str]
    fingerprint: str
    name: str = ""
    split: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> Split:
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            soft=None if self.soft is None else self.soft[idx],
            fingerprint=f"{self.fingerprint}[subset {len(idx)}]",
        )


# --------------------------------------------------------------------------- setup helpers
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in ``epoch`` (permutation, augmentation, dropout)."""
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


def data_root(cfg: Config) -> str:
    """The dataset root: ``data.root``, else the default location for FERPlus."""
    if cfg.data.root:
        return cfg.data.root
    if cfg.data.dataset == "ferplus":
        return os.environ.get("CFDAN_FERPLUS_ROOT") or str(paths.FERPLUS_ROOT)
    if cfg.data.dataset == "synthetic":
        return ""
    raise DataRootError(f"data.root is not set for dataset {cfg.data.dataset!r}")


def load_splits(cfg: Config, splits=("train", "val", "test")) -> dict[str, Split]:
    """Load the splits via :func:`cfdan.data.load_dataset` (subsampled if ``data.max_*``)."""
    root = data_root(cfg)
    if cfg.data.dataset == "synthetic":
        root = ""
    elif not Path(root).exists():
        raise DataRootError(
            f"data root {root} for dataset {cfg.data.dataset!r} does not exist "
            f"(set data.root=PATH, or CFDAN_FERPLUS_ROOT for FERPlus)"
        )
    from cfdan.data import load_dataset
    cache = cfg.data.cache_dir or os.environ.get("CFDAN_CACHE_DIR") or str(paths.CACHE_DIR)
    out: dict[str, Split] = {}
    for split in splits:
        ft = load_dataset(
            cfg.data.dataset, root, split, image_size=cfg.data.image_size,
            label_mode=cfg.data.label_mode, seed=0, cache_dir=cache, **cfg.data.options,
        )
        s = Split(
            images=ft.images, labels=ft.labels.long(), soft=ft.soft,
            class_names=list(ft.class_names), fingerprint=str(ft.fingerprint),
            name=getattr(ft, "name", cfg.data.dataset), split=split,
        )
        limit = cfg.data.max_train if split == "train" else cfg.data.max_eval
        if limit and len(s) > limit:
            g = torch.Generator().manual_seed(1234 + len(split))
            s = s.subset(torch.randperm(len(s), generator=g)[:limit].sort().values)
        out[split] = s
    return out


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
    return CFDAN(mcfg)


def model_config_dict(model: torch.nn.Module) -> dict[str, Any] | None:
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


# --------------------------------------------------------------------------- provenance
def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the source tree (env ``CFDAN_GIT_COMMIT`` overrides)."""
    env = os.environ.get("CFDAN_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": os.environ.get("CFDAN_GIT_DIRTY", "unknown")}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.REPO_ROOT,
            capture_output=True, text=True, timeout=20,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": hashlib.sha256(platform.node().encode()).hexdigest()[:8],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def versions() -> dict[str, str]:
    import cfdan

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "cfdan": cfdan.__version__}
    for mod in ("torchvision", "sklearn", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"host_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["gpu_max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


# --------------------------------------------------------------------------- checkpoints
def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rng_state(device: torch.device) -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def run_checkpoint_dir(cfg: Config, root: str | os.PathLike | None = None) -> Path:
    return results.checkpoint_dir(root) / cfg.experiment / cfg.run_id


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


# --------------------------------------------------------------------------- the run
def _relative_checkpoint(path: Path, root: str | os.PathLike | None) -> str:
    """The checkpoint's path relative to the checkpoint folder (no machine paths in records)."""
    try:
        return str(path.relative_to(results.checkpoint_dir(root)))
    except ValueError:
        return path.name


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def _silent(msg: str) -> None:
    pass


def train(
    cfg: Config,
    *,
    results_root: str | os.PathLike | None = None,
    checkpoint_root: str | os.PathLike | None = None,
    resume: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    splits: dict[str, Split] | None = None,
) -> dict[str, Any]:
    """Train ``cfg``, select on val, evaluate test once, store and return the record.

    Skips training and returns the stored record if the run is already in the store (unless
    ``force``, which retrains from scratch). Resumes from
    ``<checkpoint_root>/<experiment>/<run_id>/last.pt`` if present (unless ``resume`` is false). Raises :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    log = log or _log_default
    info = distributed.init(cfg.train.device)
    if not info.is_main:
        log = _silent
    try:
        return _train(cfg, info, results_root, checkpoint_root, resume, force, log, splits)
    finally:
        distributed.cleanup(info)


def _train(cfg, info, results_root, checkpoint_root, resume, force, log, splits):
    t_start = time.perf_counter()
    git_at_start = git_info()  # the code that runs is the code at start, not at the end
    run_id = cfg.run_id
    if not force and results.has_record(cfg.experiment, run_id, results_root):
        log(f"run {cfg.experiment}/{run_id} is already in the store; skipping (use --force)")
        return results.read_record(results.record_path(cfg.experiment, run_id, results_root))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, info)
    use_amp = amp_enabled(cfg, device)
    tcfg = cfg.train
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(tcfg.seed)

    # ---- data (whole splits as uint8 tensors; on the GPU if training there)
    t0 = time.perf_counter()
    splits = splits or load_splits(cfg)
    train_s, val_s, test_s = splits["train"], splits["val"], splits["test"]
    class_names = train_s.class_names
    if len(train_s) < tcfg.batch_size * info.world_size and info.enabled:
        raise ConfigError("training set smaller than one global batch")
    data_time = time.perf_counter() - t0
    train_images = train_s.images.to(device)
    train_labels = train_s.labels.to(device)
    train_soft = None
    if tcfg.targets == "soft":
        if train_s.soft is None:
            raise ConfigError(f"train.targets='soft' but {cfg.data.dataset} has no soft labels")
        train_soft = train_s.soft.to(device)
    log(
        f"run {cfg.experiment}/{run_id}: {cfg.data.dataset} train {len(train_s)} / val "
        f"{len(val_s)} / test {len(test_s)} images, {len(class_names)} classes, device {device}"
        f"{' x' + str(info.world_size) if info.enabled else ''}, bf16 {use_amp}"
    )

    # ---- model and optimisation
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg, len(class_names), cfg.data.image_size).to(device)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    fwd_model: torch.nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        fwd_model = torch.compile(fwd_model, mode=tcfg.compile_mode or None)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2),
        weight_decay=tcfg.weight_decay, fused=device.type == "cuda" or None,
    )
    n_train = len(train_s)
    drop_last = info.enabled or tcfg.compile  # equal shards per rank; one compiled shape
    steps_per_epoch = n_train // tcfg.batch_size if drop_last else math.ceil(n_train / tcfg.batch_size)
    # ``plan`` holds the epochs the schedule is laid out for; ``train.fit_to_budget`` may shorten
    # it after the first epoch so that the cosine schedule ends inside ``train.time_budget_s``.
    plan = {"epochs": tcfg.epochs}
    warmup = round(tcfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, steps_per_epoch * plan["epochs"], warmup, tcfg.min_lr_ratio),
    )
    eval_tf = make_augment(cfg.data.image_size, train=False, seed=0)

    # ---- resume
    ckdir = run_checkpoint_dir(cfg, checkpoint_root)
    last_path, best_path = ckdir / "last.pt", ckdir / "best.pt"
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "val_accuracy": -1.0, "val_loss": math.inf}
    start_epoch, prior_wall, resumed_at = 0, 0.0, []
    if info.is_main and ckdir.is_dir():  # temp files of a process killed while saving
        for tmp in ckdir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if force or not resume:  # a fresh start: drop any checkpoints of an earlier attempt
        if info.is_main:
            for p in (last_path, best_path):
                p.unlink(missing_ok=True)
        distributed.barrier(info)
    elif last_path.is_file():
        ck = torch.load(last_path, map_location=device, weights_only=False)
        if ck.get("run_id") != run_id:
            raise RuntimeError(f"{last_path}: checkpoint of run {ck.get('run_id')}, not {run_id}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], device)
        history, best = ck["history"], ck["best"]
        plan["epochs"] = ck.get("plan_epochs", tcfg.epochs)
        start_epoch, prior_wall = ck["epoch"] + 1, ck["wall_time_s"]
        resumed_at = ck.get("resumed_at", []) + [start_epoch]
        log(f"resumed from {last_path} after epoch {start_epoch} of {tcfg.epochs}")

    # ---- epochs
    cut_short, stop_reason = False, "completed"
    t_run = time.perf_counter()
    for epoch in range(start_epoch, tcfg.epochs):
        if epoch >= plan["epochs"]:
            break
        es = epoch_seed(tcfg.seed, epoch)
        torch.manual_seed(es)  # dropout and any other global-RNG use in this epoch
        gen = torch.Generator().manual_seed(es)
        perm = torch.randperm(n_train, generator=gen).to(device)
        aug = (make_augment(cfg.data.image_size, train=True, seed=es + info.rank, tcfg=tcfg)
               if tcfg.augment else eval_tf)
        stats = _train_epoch(
            fwd_model, model, optimizer, scheduler, perm, train_images, train_labels, train_soft,
            aug, cfg, device, use_amp, info, epoch, steps_per_epoch, last_path,
        )
        distributed.broadcast_buffers(model, info)  # all ranks evaluate the same weights
        t_eval = time.perf_counter()
        val_out = evaluate.infer(
            model, val_s.images, eval_tf, batch_size=tcfg.eval_batch_size, device=device,
            amp=use_amp, channels_last=tcfg.channels_last, tta_flip=cfg.eval.tta_flip,
        )
        vm = evaluate.split_metrics(val_out["logits"], val_s.labels, class_names)
        row = {
            "epoch": epoch + 1,
            **stats,
            "val_loss": vm["loss"],
            "val_accuracy": vm["accuracy"],
            "val_mean_class_accuracy": vm["mean_class_accuracy"],
            "eval_time_s": time.perf_counter() - t_eval,
        }
        history.append(row)
        improved = (vm["accuracy"], -vm["loss"]) > (best["val_accuracy"], -best["val_loss"])
        if improved:
            best = {"epoch": epoch + 1, "val_accuracy": vm["accuracy"], "val_loss": vm["loss"]}
        log(
            f"epoch {epoch + 1}/{tcfg.epochs}  train loss {row['train_loss']:.4f} acc "
            f"{row['train_accuracy']:.4f} | val loss {vm['loss']:.4f} acc {vm['accuracy']:.4f} "
            f"mca {vm['mean_class_accuracy']:.4f}{' *' if improved else ''} | lr {row['lr_end']:.2e} "
            f"grad {row['grad_norm']:.3g} | {row['epoch_time_s']:.1f} s, "
            f"{row['images_per_s']:.0f} img/s"
        )
        # fit the schedule to the budget once, from the first epoch's cost (never lengthen it);
        # done before the checkpoint is saved so that a resumed run keeps the fitted plan
        if tcfg.time_budget_s and tcfg.fit_to_budget and epoch == 0:
            elapsed = prior_wall + (time.perf_counter() - t_start)
            per_epoch = row["epoch_time_s"] + row["eval_time_s"]
            reserve = row["eval_time_s"] * 3 + 10.0
            fit = 1 + int((tcfg.time_budget_s - elapsed - reserve) // max(per_epoch, 1e-6))
            fit = distributed.min_int(max(1, fit), info, device)  # same plan on every rank
            if fit < plan["epochs"]:
                plan["epochs"] = fit
                log(f"time budget {tcfg.time_budget_s:.0f} s: schedule re-planned for "
                    f"{plan['epochs']} of {tcfg.epochs} epochs ({per_epoch:.1f} s per epoch)")
        wall = prior_wall + (time.perf_counter() - t_run)
        if info.is_main:
            if improved:
                atomic_torch_save(
                    inference_checkpoint(model, cfg, class_names, train_s.images.shape[1]),
                    best_path,
                )
            atomic_torch_save(
                {
                    "run_id": run_id, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state(device), "history": history, "best": best,
                    "wall_time_s": wall, "resumed_at": resumed_at, "config": cfg.to_dict(),
                    "plan_epochs": plan["epochs"],
                },
                last_path,
            )
        distributed.barrier(info)
        # time budget: stop if the next epoch (plus the final evaluation) would not fit
        if tcfg.time_budget_s and epoch + 1 < plan["epochs"]:
            elapsed = prior_wall + (time.perf_counter() - t_start)
            need = row["epoch_time_s"] + row["eval_time_s"] * 3 + 5.0
            if distributed.any_rank(elapsed + need > tcfg.time_budget_s, info, device):
                cut_short, stop_reason = True, "time_budget"
                log(f"time budget {tcfg.time_budget_s:.0f} s: stopping after epoch {epoch + 1}")
                break

    if not cut_short and plan["epochs"] < tcfg.epochs:
        cut_short, stop_reason = True, "time_budget_fitted"
    # ---- selection on val, then the single test evaluation
    if not history:
        raise RuntimeError("no epoch was trained")
    if best_path.is_file():
        ck = torch.load(best_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
    val_metrics = evaluate.split_metrics(
        evaluate.infer(
            model, val_s.images, eval_tf, batch_size=tcfg.eval_batch_size, device=device,
            amp=use_amp, channels_last=tcfg.channels_last, tta_flip=cfg.eval.tta_flip,
        )["logits"],
        val_s.labels, class_names,
    )
    test_metrics, arrays = evaluate.final_evaluation(
        model, test_s, eval_tf, cfg.eval, device=device, amp=use_amp,
        channels_last=tcfg.channels_last, batch_size=tcfg.eval_batch_size,
    )
    arrays["val_confusion"] = np.asarray(val_metrics["confusion"], dtype=np.int64)
    train_subset_metrics = None
    if cfg.eval.train_subset and len(train_s):
        sub = torch.as_tensor(evaluate.fixed_indices(len(train_s), cfg.eval.train_subset, seed=0))
        sm = evaluate.split_metrics(
            evaluate.infer(
                model, train_s.images[sub], eval_tf, batch_size=tcfg.eval_batch_size,
                device=device, amp=use_amp, channels_last=tcfg.channels_last,
                tta_flip=cfg.eval.tta_flip,
            )["logits"],
            train_s.labels[sub], class_names,
        )
        train_subset_metrics = {
            "n": len(sub), "accuracy": sm["accuracy"], "loss": sm["loss"],
            "mean_class_accuracy": sm["mean_class_accuracy"],
            "note": "selected checkpoint, fixed subset (seed 0), no augmentation",
        }
    train_time = prior_wall + (time.perf_counter() - t_run)
    record = {
        "schema": SCHEMA_VERSION,
        "experiment": cfg.experiment,
        "run_id": run_id,
        "variant": cfg.variant or cfg.model.get("preset"),
        "profile": cfg.profile,
        "seed": tcfg.seed,
        "config": cfg.to_dict(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_at_start,
        "hardware": {**hardware_info(device), "world_size": info.world_size, "bf16": use_amp},
        "versions": versions(),
        "data": {
            "dataset": cfg.data.dataset,
            "label_mode": cfg.data.label_mode,
            "fingerprint": {k: s.fingerprint for k, s in splits.items()},
            "sizes": {k: len(s) for k, s in splits.items()},
            "class_names": class_names,
            "load_time_s": data_time,
        },
        "model_info": {"params": n_params, "config": model_config_dict(model)},
        "history": history,
        "epochs_planned": tcfg.epochs,
        "epochs_fitted": plan["epochs"],
        "epochs_run": len(history),
        "cut_short": cut_short,
        "stop_reason": stop_reason,
        "selection": "best val accuracy, ties broken by lower val loss",
        "best_epoch": best["epoch"],
        "val": val_metrics,
        "test": test_metrics,
        "train_subset": train_subset_metrics,
        "train_time_s": train_time,
        "wall_time_s": prior_wall + (time.perf_counter() - t_start),
        "resumed_at_epochs": resumed_at,
        "peak_memory": peak_memory_mb(device),
        "checkpoint": _relative_checkpoint(best_path, checkpoint_root),
    }
    if info.is_main:
        path = results.save_record(record, arrays, results_root)
        log(
            f"test accuracy {test_metrics['accuracy']:.4f} (95% CI "
            f"{test_metrics['accuracy_ci95'][0]:.4f}-{test_metrics['accuracy_ci95'][1]:.4f}), "
            f"mean-class {test_metrics['mean_class_accuracy']:.4f}, best epoch {best['epoch']}; "
            f"record {path}"
            if "accuracy_ci95" in test_metrics
            else f"test accuracy {test_metrics['accuracy']:.4f}; record {path}"
        )
        if not tcfg.keep_checkpoints:
            for p in (last_path, best_path):
                p.unlink(missing_ok=True)
    return record


def _train_epoch(
    fwd_model, model, optimizer, scheduler, perm, images, labels, soft, aug, cfg, device,
    use_amp, info, epoch, steps, last_path,
) -> dict[str, float]:
    """One epoch over ``perm``; returns the epoch's history fields."""
    from tqdm import tqdm

    tcfg = cfg.train
    fwd_model.train()
    B = tcfg.batch_size
    n_seen = steps * B if info.enabled else len(perm)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    gnorm_sum = torch.zeros((), device=device, dtype=torch.float64)
    bad = torch.zeros((), device=device, dtype=torch.bool)
    max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
    lr_first = optimizer.param_groups[0]["lr"]
    bar = tqdm(
        total=n_seen, unit="img", unit_scale=False, ascii=True, leave=False,
        mininterval=tcfg.progress_interval_s, desc=f"epoch {epoch + 1}/{tcfg.epochs}",
        disable=not (tcfg.progress and info.is_main), file=sys.stderr, dynamic_ncols=False,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    check_every = 25
    for step in range(steps):
        gidx = perm[step * B : (step + 1) * B]
        idx = distributed.shard(gidx, info)
        x = aug(images[idx])
        if tcfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        with evaluate.autocast(device, use_amp):
            logits = fwd_model(x)
        target = soft[idx] if soft is not None else y
        loss = F.cross_entropy(logits.float(), target, label_smoothing=tcfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        bad |= ~torch.isfinite(loss.detach())
        # CPU: check every step (free); GPU: every few steps to avoid a sync per step
        if device.type == "cpu" or step % check_every == check_every - 1 or step == steps - 1:
            if distributed.any_rank(bool(bad.item()), info, device):
                bar.close()
                raise NonFiniteLossError(
                    f"non-finite training loss in epoch {epoch + 1} (by step {step + 1}); "
                    f"training stopped. The last good checkpoint is kept: {last_path}"
                    f"{'' if last_path.is_file() else ' (none written yet)'}"
                )
        optimizer.step()
        scheduler.step()
        n = len(y)
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum()
        count += n
        gnorm_sum += gnorm.detach().double()
        bar.update(n * info.world_size)
        if step % 20 == 0 and bar.n and not bar.disable:
            bar.set_postfix(loss=f"{(loss_sum / count).item():.3f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    bar.close()
    totals = torch.stack([loss_sum, correct, count, gnorm_sum]).to(torch.float64)
    distributed.all_reduce_sum(totals, info)
    loss_sum_v, correct_v, count_v, gnorm_v = totals.tolist()
    return {
        "train_loss": loss_sum_v / max(count_v, 1),
        "train_accuracy": correct_v / max(count_v, 1),
        "lr": lr_first,
        "lr_end": optimizer.param_groups[0]["lr"],
        "grad_norm": gnorm_v / max(steps * info.world_size, 1),
        "train_images": int(count_v),
        "epoch_time_s": dt,
        "images_per_s": count_v / dt if dt > 0 else float("nan"),
    }
