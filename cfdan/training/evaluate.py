"""Honest evaluation (§4.3-4.4): metrics, bootstrap CIs, features for t-SNE and attention maps.

Model selection uses the validation split only; the test split is evaluated once, with the
selected checkpoint, at the end of a run (:func:`final_evaluation`). Reported: overall
accuracy, mean-class accuracy (mean per-class recall; FERPlus is unbalanced, §4.3), per-class
recall/precision/F1, the confusion matrix (Fig. 5) and a seeded bootstrap 95 % CI for the
accuracy. Optional horizontal-flip TTA is off by default and labelled in the record. The
pooled features stored here are embedded in 2-D (Fig. 7) by :func:`cfdan.analysis.figures.tsne`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    images: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    tta_flip: bool = False,
    features: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``model`` over uint8 ``images`` (N, C, H, W) in eval mode.

    Returns float32 CPU tensors: ``logits`` (N, K) and, with ``features``, the pooled
    ``features`` (N, D) from ``model(x, return_features=True)``. With ``tta_flip`` the logits
    are the mean of the logits of the image and of its horizontal mirror.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    logits_out, feats_out = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = transform(images[start : start + batch_size].to(device, non_blocking=True))
            x = _prepare(x, channels_last)
            with autocast(device, amp):
                if features:
                    out = model(x, return_features=True)
                    logits, feats = out["logits"], out["features"]
                    feats_out.append(feats.float().flatten(1).cpu())
                else:
                    logits = model(x)
                if tta_flip:
                    logits = 0.5 * (logits.float() + model(torch.flip(x, dims=[3])).float())
            logits_out.append(logits.float().cpu())
    finally:
        model.train(was_training)
    res = {"logits": torch.cat(logits_out) if logits_out else torch.empty(0)}
    if features:
        res["features"] = torch.cat(feats_out) if feats_out else torch.empty(0)
    return res


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, mean-class accuracy, macro F1, per-class recall/precision/F1/support, confusion.

    ``confusion[i][j]`` counts images of true class ``i`` predicted as ``j`` (scikit-learn's
    convention); mean-class accuracy is the mean of per-class recalls over classes that occur.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = list(range(len(class_names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    per_class = {
        name: {
            "recall": float(rec[i]),
            "precision": float(prec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "mean_class_accuracy": float(rec[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def bootstrap_accuracy_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the accuracy (resampling images with replacement, seeded)."""
    correct = (np.asarray(y_true) == np.asarray(y_pred)).astype(np.float64)
    n = len(correct)
    if n == 0 or n_resamples <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    accs = np.empty(n_resamples)
    for i in range(n_resamples):  # loop keeps memory at O(n) for any number of resamples
        accs[i] = correct[rng.integers(0, n, n)].mean()
    lo, hi = np.quantile(accs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def loss_of(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None) -> float:
    """Mean cross-entropy of ``logits`` against hard ``labels`` (or ``soft`` targets)."""
    if len(labels) == 0:
        return float("nan")
    target = soft if soft is not None else labels
    return float(F.cross_entropy(logits.float(), target))


def split_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one split from its logits (``loss`` is hard-label cross-entropy)."""
    pred = logits.argmax(1).numpy()
    y = labels.numpy()
    m = {"loss": loss_of(logits, labels), **classification_metrics(y, pred, class_names)}
    if bootstrap:
        lo, hi = bootstrap_accuracy_ci(y, pred, bootstrap, bootstrap_seed)
        m["accuracy_ci95"] = [lo, hi]
        m["bootstrap_resamples"] = int(bootstrap)
    return m


@torch.no_grad()
def attention_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, np.ndarray]:
    """Attention maps (Fig. 8) of a few images via ``model(x, return_attention=True)``.

    Returns ``attention_<name>`` float32 arrays for each map the model exposes
    (``spatial``, ``channel``, ``fused``), ``attention_definition`` (a string array) when the
    model names the definition of its maps, and an empty dict if the model has none.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        x = _prepare(transform(images.to(device)), channels_last)
        with autocast(device, amp):
            out = model(x, return_attention=True)
    except TypeError:  # a model without return_attention
        return {}
    finally:
        model.train(was_training)
    att = out.get("attention") if isinstance(out, dict) else None
    res: dict[str, np.ndarray] = {}
    for name, t in (att or {}).items():
        if isinstance(t, torch.Tensor):
            res[f"attention_{name}"] = t.detach().float().cpu().numpy()
        elif isinstance(t, str):
            res[f"attention_{name}"] = np.asarray(t)
    return res


def fixed_indices(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` sorted indices out of ``n`` drawn with a seeded generator (same for every run)."""
    k = min(k, n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def final_evaluation(
    model: torch.nn.Module,
    test,
    transform: Callable[[torch.Tensor], torch.Tensor],
    eval_cfg,
    *,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The single test evaluation of the selected checkpoint.

    ``test`` is a :class:`cfdan.data.FaceTensors`; ``eval_cfg`` a :class:`cfdan.training.config.EvalConfig`.
    Returns ``(metrics, arrays)``; arrays hold ``test_logits``, ``test_labels``, ``confusion``,
    a seeded subsample of pooled features for t-SNE (``tsne_features``, ``tsne_labels``,
    ``tsne_preds``, ``tsne_index``) and the Fig. 8 maps of fixed test images with their
    ``attention_index`` into ``test``, labels and predictions. No pixels are stored: the
    book reads the faces from the dataset by index (:func:`cfdan.analysis.attention_maps.attention_faces`).
    """
    out = infer(
        model, test.images, transform, batch_size=batch_size, device=device, amp=amp,
        channels_last=channels_last, tta_flip=eval_cfg.tta_flip, features=True,
    )
    logits, labels = out["logits"], test.labels
    metrics = split_metrics(
        logits, labels, test.class_names,
        bootstrap=eval_cfg.bootstrap, bootstrap_seed=eval_cfg.bootstrap_seed,
    )
    metrics["tta_flip"] = bool(eval_cfg.tta_flip)
    preds = logits.argmax(1).numpy()
    arrays: dict[str, np.ndarray] = {
        "test_logits": logits.numpy().astype(np.float32),
        "test_labels": labels.numpy().astype(np.int64),
        "confusion": np.asarray(metrics["confusion"], dtype=np.int64),
        "class_names": np.asarray(list(test.class_names)),
    }
    if eval_cfg.tsne_samples and len(labels):
        idx = fixed_indices(len(labels), eval_cfg.tsne_samples, seed=0)
        arrays.update(
            tsne_index=idx,
            tsne_features=out["features"][idx].numpy().astype(np.float16),
            tsne_labels=labels.numpy()[idx],
            tsne_preds=preds[idx],
        )
    if eval_cfg.attention_images and len(labels):
        idx = fixed_indices(len(labels), eval_cfg.attention_images, eval_cfg.attention_seed)
        maps = attention_maps(
            model, test.images[torch.as_tensor(idx)], transform, device=device, amp=amp,
            channels_last=channels_last,
        )
        if maps:
            arrays.update(maps)
            arrays["attention_index"] = idx
            arrays["attention_labels"] = labels.numpy()[idx]
            arrays["attention_preds"] = preds[idx]
    return metrics, arrays

