"""The throughput probe of a GPU evidence call (``scripts/gpu_evidence.sh``).

Before a call spends its few minutes, it measures how fast the device trains each experiment's
model: the aggregate training images/s of 1, 2, 4 and 8 worker processes sharing the device
(under NVIDIA MPS when the script started it), from which :mod:`cfdan.training.gpu_plan`
picks a worker count per experiment and sizes what fits.

One set of processes serves every measurement: each builds every experiment's model once (the
config of its ``full`` variant, else its first; eager, since ``torch.compile`` alone would take
longer than the probe) and warms it up, then all follow one timetable of windows, one window
per (experiment, worker count k), in which workers ``0..k-1`` train steps on random uint8
batches (augmented on the device as in training: the profile's :class:`~cfdan.data.pipeline.
Augment`, autocast, channels-last, cross-entropy, backward, gradient norm, AdamW) while the
others wait. A worker's rate is its images over the time to its last finished step; a window's
aggregate is the sum over its workers.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from typing import Any

from cfdan.training.config import Config, load_experiment

PROBE_CLASSES = 8
"""Classes of the probe's head (FERPlus's eight); only the last layer depends on it."""


def probe_config(experiment: str, overrides: Sequence[str] | None = None) -> Config:
    """The config an experiment is probed with: its ``full`` variant's (else its first run's),
    seed 0 where planned, with ``overrides`` applied."""
    cfgs = load_experiment(experiment).configs(list(overrides or []))
    return next((c for c in cfgs if c.variant == "full"), cfgs[0])


def _source_shape(cfg: Config) -> tuple[int, int]:
    """``(channels, side)`` of the stored images the augmentation starts from: FERPlus is grey
    48 px; other sets are taken at the input size."""
    return (1, 48) if cfg.data.dataset == "ferplus" else (3, cfg.data.image_size)


class _Trainer:
    """One experiment's model, optimiser and a fixed source batch, as a training step."""

    def __init__(self, cfg: Config, device: Any, seed: int) -> None:
        import dataclasses

        import torch

        from cfdan.training import distributed, recipe
        from cfdan.training.evaluate import autocast

        tcfg = dataclasses.replace(cfg.train, compile=False)
        self.torch, self.autocast, self.device = torch, autocast, device
        self.amp = recipe.amp_enabled(tcfg, device)
        self.channels_last = tcfg.channels_last
        self.batch = tcfg.batch_size
        torch.manual_seed(seed)
        model = recipe.build_model(cfg, PROBE_CLASSES, cfg.data.image_size)
        self.model, self.net = recipe.prepare_model(model, tcfg, distributed.DistInfo(), device)
        self.criterion = recipe.build_criterion(tcfg)
        self.optimizer = recipe.build_optimizer(self.model, tcfg, device)
        self.augment = recipe.make_augment(cfg.data.image_size, True, seed, tcfg)
        c, s = _source_shape(cfg)
        g = torch.Generator().manual_seed(seed)
        self.src = torch.randint(0, 256, (self.batch, c, s, s), dtype=torch.uint8,
                                 generator=g).to(device)
        self.y = torch.randint(0, PROBE_CLASSES, (self.batch,), generator=g).to(device)
        self.net.train()

    def step(self) -> None:
        torch = self.torch
        x = self.augment(self.src)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast(self.device, self.amp):
            logits = self.net(x)
        loss = self.criterion(logits.float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        self.optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def _worker(index: int, device_name: str, threads: int, cfgs: list[Config], warmup: int,
            ready: Any, timetable: Any, results: Any) -> None:
    """A probe process: build and warm up every model, report, then follow the timetable."""
    readied = False
    try:
        import torch

        from cfdan.training import provenance

        torch.set_num_threads(max(1, threads))
        device = torch.device(device_name)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        trainers, gb = [], []
        for cfg in cfgs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            tr = _Trainer(cfg, device, seed=index)
            for _ in range(warmup):
                tr.step()
            tr.sync()
            gb.append((torch.cuda.max_memory_allocated(device) - base) / 2**30
                      if device.type == "cuda" else 0.0)
            trainers.append(tr)
        info = ({"hardware": provenance.hardware_info(device), "versions": provenance.versions(),
                 "cuda": torch.version.cuda} if index == 0 else {})
        ready.put(("ready", index, gb, info))
        readied = True
        out = []
        for target, k, t0, t1 in timetable.get():
            if index >= k:
                continue
            tr = trainers[target]
            while time.time() < t0:
                time.sleep(min(0.05, max(0.0, t0 - time.time())))
            start, n, last = time.time(), 0, time.time()
            while True:  # at least one step, then until the window closes
                tr.step()
                tr.sync()
                n += tr.batch
                last = time.time()
                if last >= t1:
                    break
            out.append((target, k, n, last - start))
        results.put(("done", index, out))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the probe
        if readied:
            results.put(("error", index, traceback.format_exc()))
        else:
            ready.put(("error", index, traceback.format_exc(), {}))


class ProbeError(RuntimeError):
    """A probe process failed (its traceback is the message) or did not answer in time."""


def _get(q: Any, timeout: float, what: str) -> Any:
    """The next message of ``q``; :class:`ProbeError` if none comes within ``timeout`` (a
    device that hangs, e.g. under a broken MPS daemon, fails the probe instead of the call)."""
    import queue

    try:
        return q.get(timeout=max(1.0, timeout))
    except queue.Empty:
        raise ProbeError(f"a probe process did not {what} within {timeout:.0f} s") from None


def probe(experiments: Sequence[str], *, overrides: Sequence[str] | None = None,
          device: str = "cuda", counts: Sequence[int] = (1, 2, 4, 8), seconds: float = 60.0,
          threads: int = 0, warmup: int = 3, gap_s: float = 0.3,
          min_window_s: float = 0.5) -> dict[str, Any]:
    """Aggregate training images/s of each experiment's model at each worker count.

    Starts ``max(counts)`` processes (``threads`` torch threads each; 0: the CPU cores shared
    out among them), which build and warm up the models; the time left of ``seconds`` is then
    split into one window per (experiment, count). Returns the probe as a plain dict:
    ``experiments[name]["aggregate_img_s"][str(k)]``, ``per_worker_img_s``, ``gpu_gb_per_worker``
    (the model's peak allocation in one process), plus ``call`` (hardware and versions, for the
    records' provenance notes). Raises :class:`ProbeError` if a process fails.
    """
    import multiprocessing as mp
    import os

    t_start = time.time()
    counts = sorted({int(k) for k in counts if int(k) > 0})
    n = max(counts)
    cfgs = [probe_config(e, overrides) for e in experiments]
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    tables = [ctx.Queue() for _ in range(n)]
    procs = [ctx.Process(target=_worker, args=(i, device, threads, cfgs, warmup, ready,
                                               tables[i], results), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    try:
        gbs: list[list[float]] = []
        info: dict[str, Any] = {}
        for _ in range(n):
            kind, index, payload, extra = _get(ready, max(45.0, 1.5 * seconds), "start")
            if kind == "error":
                raise ProbeError(f"probe process {index} failed:\n{payload}")
            gbs.append(payload)
            info.update(extra)
        startup = time.time() - t_start
        windows = len(cfgs) * len(counts)
        window = max(min_window_s, (seconds - startup - 1.0) / windows - gap_s)
        t, plan = time.time() + 0.5, []
        for target in range(len(cfgs)):
            for k in counts:
                plan.append((target, k, t, t + window))
                t += window + gap_s
        for q in tables:
            q.put(plan)
        rates: dict[tuple[int, int], float] = {}
        for _ in range(n):
            kind, index, out = _get(results, t - time.time() + 60.0, "measure")
            if kind == "error":
                raise ProbeError(f"probe process {index} failed:\n{out}")
            for target, k, images, secs in out:
                rates[target, k] = rates.get((target, k), 0.0) + images / max(secs, 1e-9)
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    exps = {}
    for target, (name, cfg) in enumerate(zip(experiments, cfgs, strict=True)):
        agg = {str(k): round(rates.get((target, k), 0.0), 1) for k in counts}
        exps[name] = {
            "profile": cfg.profile, "variant": cfg.variant, "preset": cfg.model.get("preset"),
            "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
            "amp": bool(cfg.train.amp), "channels_last": cfg.train.channels_last,
            "runs_compile": cfg.train.compile, "aggregate_img_s": agg,
            "per_worker_img_s": {k: round(v / int(k), 1) for k, v in agg.items()},
            "gpu_gb_per_worker": round(max(g[target] for g in gbs), 3),
        }
    return {"device": device, "seconds": seconds, "wall_s": round(time.time() - t_start, 1),
            "startup_s": round(startup, 1), "window_s": round(window, 2), "counts": counts,
            "threads_per_worker": threads, "cpu_count": os.cpu_count(), "experiments": exps,
            "call": info}
