"""The pieces of a training run (§4.2), each built from the config sections it needs.

The paper states AdamW with betas (0.9, 0.999) and weight decay 1e-4, plain cross-entropy,
batch 32 and 224 px inputs (:class:`cfdan.training.config.TrainConfig`'s defaults). What it
leaves out is chosen in the profile and recorded: learning rate, linear warm-up then cosine
decay (per step), epochs, augmentation (:class:`cfdan.data.pipeline.Augment`).

:func:`cfdan.training.loop.train` calls these in order: :func:`setup_device`,
:func:`train_data`, :func:`build_model` and :func:`prepare_model`, :func:`build_criterion`,
:func:`build_optimizer`, :func:`plan_schedule` and :func:`build_scheduler`; each epoch
:func:`epoch_seed`, :func:`make_augment` and :func:`epoch_loader`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cfdan.data.types import FaceTensors
from cfdan.training import distributed
from cfdan.training.config import Config, ConfigError, TrainConfig

__all__ = [
    "Batches", "Plan", "TrainData", "amp_enabled", "build_criterion", "build_model",
    "build_optimizer", "build_scheduler", "compile_model", "epoch_loader", "epoch_seed",
    "lr_factor", "make_augment", "model_config_dict", "plan_schedule", "prepare_model",
    "resolve_device", "seed_everything", "setup_device", "target_kind", "train_data",
]

Augmentation = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- device and seeds
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


def amp_enabled(tcfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: on CUDA when the GPU supports bf16; on CPU when ``train.amp`` is true."""
    if not tcfg.amp:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def setup_device(tcfg: TrainConfig, info: distributed.DistInfo) -> tuple[torch.device, bool]:
    """Threads, device, bf16 (:func:`amp_enabled`), backend flags, then the global seed."""
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    device = resolve_device(tcfg.device, info)
    amp = amp_enabled(tcfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(tcfg.seed)
    return device, amp


# --------------------------------------------------------------------------- data
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


@dataclass(frozen=True)
class TrainData:
    """The training split in memory, uint8 images and labels on the device (no DataLoader
    workers: each batch is augmented on the device), and what the loss compares with."""

    images: torch.Tensor
    labels: torch.Tensor
    kind: str
    """:func:`target_kind`: ``hard``, ``soft`` or ``sampled``."""
    votes: torch.Tensor | None
    """Vote distributions: on the device for ``soft``, the split's (CPU) for ``sampled``."""

    def epoch_targets(self, gen: torch.Generator, device: torch.device) -> torch.Tensor | None:
        """Every image's loss target this epoch (``None``: the labels).

        ``sampled`` draws one label per image from its vote distribution with the epoch's
        generator, after the permutation; each image is used once per epoch, so this is a fresh
        draw at every use (the FER+ ``probability`` protocol), the same on every rank and after
        a resume.
        """
        if self.kind == "soft":
            return self.votes
        if self.kind == "sampled":
            from cfdan.data.ferplus import sample_targets

            return sample_targets(self.votes, gen).to(device)
        return None


def train_data(cfg: Config, split: FaceTensors, device: torch.device) -> TrainData:
    """The training split on ``device`` with its :func:`target_kind`; :class:`ConfigError`
    when the targets need vote distributions the dataset does not have."""
    kind = target_kind(cfg)
    if kind != "hard" and split.soft is None:
        why = ("train.targets='soft'" if cfg.data.label_mode == "majority"
               else f"data.label_mode={cfg.data.label_mode!r}")
        raise ConfigError(f"{why} needs soft labels, but {cfg.data.dataset} has none")
    images, labels = split.images.to(device), split.labels.to(device)
    votes = split.soft.to(device) if kind == "soft" else None
    return TrainData(images, labels, kind, split.soft if kind == "sampled" else votes)


def make_augment(image_size: int, train: bool, seed: int,
                 tcfg: Any = None) -> Augmentation:
    """The input pipeline; in training, its strength comes from ``tcfg`` (``train.aug_*``)."""
    from cfdan.data.pipeline import Augment

    if tcfg is None:
        return Augment(image_size, train=train, seed=seed)
    return Augment(image_size, train=train, seed=seed, scale=(tcfg.aug_crop_scale, 1.0),
                   degrees=tcfg.aug_degrees, erase_p=tcfg.aug_erase_p)


@dataclass(frozen=True)
class Batches:
    """One epoch's batches over the in-memory split (the DataLoader of torchvision's script):
    ``steps`` global batches of ``batch_size`` indices of ``perm``, each split across ranks."""

    data: TrainData
    perm: torch.Tensor
    targets: torch.Tensor | None
    augment: Augmentation
    batch_size: int
    steps: int

    def __len__(self) -> int:
        return self.steps

    def images(self, info: distributed.DistInfo) -> int:
        """Images the epoch shows, over all ranks (the progress bar's total)."""
        return self.steps * self.batch_size if info.enabled else len(self.perm)

    def batches(self, info: distributed.DistInfo
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This rank's ``(augmented images, labels, loss targets)`` of each step."""
        B = self.batch_size
        for step in range(self.steps):
            idx = distributed.shard(self.perm[step * B : (step + 1) * B], info)
            x = self.augment(self.data.images[idx])
            y = self.data.labels[idx]
            yield x, y, y if self.targets is None else self.targets[idx]


def epoch_loader(data: TrainData, seed: int, augment: Augmentation, batch_size: int,
                 steps: int, device: torch.device) -> Batches:
    """The epoch's batches: a permutation drawn with a generator seeded by ``seed`` (the
    :func:`epoch_seed`), then the epoch's loss targets from the same generator."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.labels), generator=gen).to(device)
    targets = data.epoch_targets(gen, device)
    return Batches(data, perm, targets, augment, batch_size, steps)


# --------------------------------------------------------------------------- model
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


def prepare_model(model: torch.nn.Module, tcfg: TrainConfig, info: distributed.DistInfo,
                  device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(model on device, the module that trains it)``: the latter wrapped for DDP and/or
    ``torch.compile`` when enabled; both share the parameters."""
    model = model.to(device)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward: torch.nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        forward = compile_model(forward, tcfg.compile_mode)
    return model, forward


def model_config_dict(model: torch.nn.Module) -> dict[str, Any] | None:
    """The model's own config as a dict (``None`` for a model without one)."""
    mcfg = getattr(model, "cfg", None)
    if mcfg is None:
        return None
    if hasattr(mcfg, "to_dict"):
        return mcfg.to_dict()
    return dataclasses.asdict(mcfg) if dataclasses.is_dataclass(mcfg) else None


# --------------------------------------------------------------------------- loss, optimiser, schedule
def build_criterion(tcfg: TrainConfig) -> torch.nn.Module:
    """Cross-entropy (§4.2), with ``train.label_smoothing``; applied to fp32 logits."""
    return torch.nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)


def build_optimizer(model: torch.nn.Module, tcfg: TrainConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW (§4.2: betas ``train.beta1``/``beta2``, weight decay ``train.weight_decay``),
    fused on CUDA."""
    return torch.optim.AdamW(
        model.parameters(), lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2),
        weight_decay=tcfg.weight_decay, fused=device.type == "cuda" or None,
    )


@dataclass
class Plan:
    """The schedule's length: ``train.fit_to_budget`` may lower ``epochs`` after epoch
    ``train.fit_after_epoch``, and a resume restores it (``last.pt``'s ``plan_epochs``)."""

    epochs: int
    steps_per_epoch: int


def plan_schedule(n_train: int, tcfg: TrainConfig, drop_last: bool) -> Plan:
    """``train.epochs`` of ``n_train / batch_size`` steps (rounded down with ``drop_last``)."""
    steps = n_train // tcfg.batch_size if drop_last else math.ceil(n_train / tcfg.batch_size)
    return Plan(epochs=tcfg.epochs, steps_per_epoch=steps)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, plan: Plan,
                    tcfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step :func:`lr_factor` over ``plan``; it reads ``plan.epochs`` at every step, so a
    re-planned (or resumed) schedule takes effect at once."""
    warmup = round(tcfg.warmup_epochs * plan.steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, plan.steps_per_epoch * plan.epochs, warmup, tcfg.min_lr_ratio),
    )
