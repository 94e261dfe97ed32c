"""Plan a GPU evidence call (``scripts/gpu_evidence.sh``): which runs fit, in priority order.

A call has a wall-time budget (``CFDAN_GPU_BUDGET_S``) and a list of experiments in priority
order. After the throughput probe (:mod:`cfdan.training.gpu_probe`) the script asks
:func:`next_phase` for one phase at a time, each handed to ``scripts/gpu_queue.sh``:

* round ``i`` < number of experiments: experiment ``i``, within its share of the budget
  (``shares[i]`` x budget; no share: the time left). If the next experiment could not start
  even its first seed in what the share leaves, the share is lifted (the time would otherwise
  go unused) and the phase says so;
* later rounds fill the time left with the first experiment that still has a seed that fits.

Within a phase the pending runs are taken as whole seeds, in the queue's seed-major order (a
queue cut short leaves complete paired seeds), and the worker count is the one that finishes
the most seeds, at most the probe's pick (:func:`pick_workers`). No run is planned that the
estimate (:func:`run_seconds`, times :attr:`Costs.margin`) does not finish; a run whose config
refits its schedule to a budget (``train.fit_to_budget``) also gets ``train.time_budget_s`` =
the phase's time, so it ends with a record even if the estimate was short.

A run's time comes from a finished GPU run of the same protocol when the store has one
(:func:`calibration`: its steady epoch rate, and the rest of its wall time: start-up,
compilation, evaluation), scaled by the probe's slow-down at the phase's worker count; else
from the probe's rate alone (:func:`run_seconds`). :func:`borrowed` names the records an
experiment reuses from the experiments it ``pairs_with`` (``paper_table3``'s full seed 0 is the
paper profile's record when its run id, i.e. its protocol, is the same). :func:`apply_notes`
writes each record's ``provenance_note`` naming the call; :func:`summary` is ``summary.txt``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfdan import results
from cfdan.training import sweep
from cfdan.training.config import Config, load_config, load_experiment

FERPLUS_SIZES = {"train": 25045, "val": 3191, "test": 3137}
"""Images per split of FERPlus's majority-vote protocol (as every FERPlus record says)."""


@dataclass
class Costs:
    """What an estimate assumes beyond the probe (seconds unless said otherwise)."""

    start_s: float = 10.0
    """Per worker process, once: Python, torch and the CUDA context."""
    fixed_s: float = 8.0
    """Per run: data, model, final evaluation (bootstrap, train subset), the record."""
    compile_s: float = 90.0
    """A compiled run's compilation, when no record of the protocol says (one H200 run: ~70)."""
    eval_speedup: float = 3.0
    """Evaluation images/s over training images/s (no backward, larger batches)."""
    efficiency: float = 0.85
    """The training loop's images/s over the probe's (progress, checks, checkpoints)."""
    margin: float = 1.15
    """A run estimate from the probe alone is multiplied by this."""
    calibrated_margin: float = 1.05
    """One from a record of the protocol on this kind of device (:func:`calibration`)."""
    stagger_s: float = 2.0
    """The sweep starts its workers this far apart (:func:`cfdan.training.sweep.run`)."""
    queue_s: float = 20.0
    """A phase's time outside its sweep: planning it, ``scripts/gpu_queue.sh`` before
    (interpreter starts, the queue check) and after it (summary, status; its reserve), and
    packing what the call has so far."""
    preflight_s: float = 30.0
    """Its preflight (two smoke epochs on the device), in the first phase only."""
    reserve_s: float = 25.0
    """Kept at the end of the call: provenance notes, summary, packing the records."""
    compiled_workers: float = 1
    """Most compiled runs at once: the eager probe cannot say how CUDA-graph runs, which keep
    the device busier, slow each other down."""

    def update(self, items: Iterable[str]) -> Costs:
        """``name=value`` settings (``--cost margin=1.3``)."""
        for item in items:
            name, _, value = item.partition("=")
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown cost {name!r}; known: "
                                 f"{', '.join(f.name for f in dataclasses.fields(self))}")
            setattr(self, name, float(value))
        return self


@dataclass
class Phase:
    """One call of ``scripts/gpu_queue.sh``: runs of one experiment on ``workers`` processes."""

    round: int
    experiment: str
    workers: int = 0
    threads: int = 0
    seconds: float = 0.0
    """Wall seconds handed to the queue script (its CFDAN_GPU_BUDGET_S)."""
    estimate_s: float = 0.0
    """Estimated time of the planned runs (the queue's overhead included)."""
    run_ids: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Per planned run: run id, variant, seed, estimated seconds."""
    pending: int = 0
    """Runs of the experiment not done before the phase."""
    sets: list[str] = field(default_factory=list)
    """Overrides for this phase's runs (``train.time_budget_s`` where a run refits)."""
    note: str = ""

    def to_env(self) -> str:
        """Shell assignments (``PHASE_*``) for the script to ``eval``."""
        import shlex

        vals = {"EXPERIMENT": self.experiment, "RUNS": " ".join(self.run_ids),
                "WORKERS": self.workers, "THREADS": self.threads,
                "SECONDS": int(self.seconds), "SETS": " ".join(self.sets), "NOTE": self.note}
        return "\n".join(f"PHASE_{k}={shlex.quote(str(v))}" for k, v in vals.items())


# --------------------------------------------------------------------------- the probe's numbers
def aggregate(exp_probe: Mapping[str, Any]) -> dict[int, float]:
    """``{workers: aggregate img/s}`` of one experiment's probe."""
    return {int(k): float(v) for k, v in exp_probe["aggregate_img_s"].items()}


def rate(exp_probe: Mapping[str, Any], workers: int) -> float:
    """Images/s of one of ``workers`` processes: the aggregate, linear between the probed
    counts and flat past the largest, shared out."""
    agg = sorted(aggregate(exp_probe).items())
    if workers <= agg[0][0]:
        return agg[0][1] / agg[0][0]
    for (k0, v0), (k1, v1) in zip(agg, agg[1:], strict=False):
        if workers <= k1:
            return (v0 + (v1 - v0) * (workers - k0) / (k1 - k0)) / workers
    return agg[-1][1] / workers


def pick_workers(exp_probe: Mapping[str, Any], tolerance: float = 0.05) -> int:
    """The fewest probed workers whose aggregate img/s is within ``tolerance`` of the best."""
    agg = aggregate(exp_probe)
    best = max(agg.values())
    return min(k for k, v in agg.items() if v >= (1 - tolerance) * best) if best > 0 else 1


# --------------------------------------------------------------------------- run estimates
def split_sizes(cfg: Config, recs: Sequence[Mapping[str, Any]] = ()) -> dict[str, int]:
    """Images per split that ``cfg`` trains and evaluates on: the synthetic set's ``sizes``
    option, else a record of the same data (dataset, label mode, caps), else FERPlus's."""
    d = cfg.data
    sizes = d.options.get("sizes") if d.dataset == "synthetic" else None
    if isinstance(sizes, Mapping):
        out = {k: int(sizes[k]) for k in ("train", "val", "test")}
    elif isinstance(sizes, (list, tuple)) and len(sizes) == 3:
        out = dict(zip(("train", "val", "test"), map(int, sizes), strict=True))
    else:
        same = (r.get("data", {}).get("sizes") for r in recs
                if r.get("config", {}).get("data", {}).get("dataset") == d.dataset
                and r["config"]["data"].get("label_mode") == d.label_mode
                and not r["config"]["data"].get("max_train")
                and not r["config"]["data"].get("max_eval"))
        found = next((s for s in same if isinstance(s, Mapping) and "train" in s), None)
        out = {k: int(v) for k, v in (found or FERPLUS_SIZES).items()}
    if d.max_train:
        out["train"] = min(out["train"], d.max_train)
    if d.max_eval:
        out.update({k: min(out[k], d.max_eval) for k in ("val", "test")})
    return out


def calibration(cfg: Config, recs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """For a compiled run (whose compilation the eager probe cannot see): a finished, uncut
    GPU run of ``cfg``'s protocol scale (profile, input size, batch, trunk width, bf16,
    compilation), the same preset if there is one: its run id, steady training img/s (epochs
    after ``fit_after_epoch``) and the rest of its wall time. None for an eager run: the probe
    measures it directly (and a record made beside other workers would count their share
    twice)."""
    if not cfg.train.compile:
        return None
    def same(r: Mapping[str, Any]) -> bool:
        c = r.get("config", {})
        t = c.get("train", {})
        return (sweep.device_kind((r.get("hardware") or {}).get("device", "cpu")) == "cuda"
                and r.get("profile") == cfg.profile and not r.get("cut_short")
                and not r.get("schedule_refitted") and r.get("history")
                and r.get("epochs_run") == t.get("epochs") and r.get("wall_time_s")
                and c.get("data", {}).get("image_size") == cfg.data.image_size
                and t.get("batch_size") == cfg.train.batch_size
                and bool(t.get("amp")) == bool(cfg.train.amp)
                and bool(t.get("compile")) == cfg.train.compile
                and (t.get("compile_mode") or "") == cfg.train.compile_mode
                and c.get("model", {}).get("trunk_width") == cfg.model.get("trunk_width"))

    def steady_rate(r: Mapping[str, Any]) -> float:
        ips = [h.get("images_per_s") or 0.0 for h in r["history"]]
        return max(ips) if ips else 0.0

    # the same preset first, then the fastest (a run that had the device to itself)
    cands = sorted((r for r in recs if same(r)),
                   key=lambda r: (r["config"]["model"].get("preset") != cfg.model.get("preset"),
                                  -steady_rate(r)))
    if not cands:
        return None
    r = cands[0]
    skip = int(r["config"]["train"].get("fit_after_epoch", 1))
    steady = [h for h in r["history"][skip:] if h.get("images_per_s")] or r["history"]
    epoch_s = statistics.median(h["epoch_time_s"] for h in steady)
    return {"experiment": r.get("experiment"), "run_id": r.get("run_id"),
            "img_s": statistics.median(h["images_per_s"] for h in steady),
            "epochs": r["epochs_run"],
            "rest_s": max(0.0, r["wall_time_s"] - epoch_s * r["epochs_run"])}


def run_seconds(cfg: Config, exp_probe: Mapping[str, Any], workers: int,
                recs: Sequence[Mapping[str, Any]] = (), costs: Costs | None = None,
                epochs_done: int = 0) -> float:
    """Estimated wall seconds of ``cfg``'s run on one of ``workers`` processes.

    With a :func:`calibration` record: its rest time plus the epochs left at its steady rate,
    slowed as the probe slows at ``workers``, times :attr:`Costs.calibrated_margin`; without: start-up, compilation, training and
    evaluation at the probe's rate times :attr:`Costs.efficiency`, times :attr:`Costs.margin`.
    """
    costs = costs or Costs()
    sizes = split_sizes(cfg, recs)
    epochs = max(0, cfg.train.epochs - epochs_done)
    cal = calibration(cfg, recs)
    per_worker = rate(exp_probe, workers)
    if cal is not None:
        img_s = cal["img_s"] * per_worker / max(rate(exp_probe, 1), 1e-9)
        t = cal["rest_s"] + epochs * sizes["train"] / max(img_s, 1e-9)
        return t * costs.calibrated_margin
    img_s = max(per_worker * costs.efficiency, 1e-9)
    tta = 2 if cfg.eval.tta_flip else 1
    evals = tta * (epochs * sizes["val"] + sizes["val"] + sizes["test"]
                   + min(cfg.eval.train_subset, sizes["train"]))
    t = (costs.fixed_s + (costs.compile_s if cfg.train.compile else 0.0)
         + epochs * sizes["train"] / img_s + evals / (img_s * costs.eval_speedup))
    return t * costs.margin


def makespan(durations: Sequence[float], workers: int, stagger_s: float = 0.0,
             start_s: float = 0.0) -> float:
    """When the last of ``durations`` ends, taken in order by ``workers`` processes started
    ``stagger_s`` apart and ready ``start_s`` later, each taking the next run when free (the
    sweep's claims)."""
    free = [j * stagger_s + start_s for j in range(max(1, workers))]
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free) if durations else 0.0


# --------------------------------------------------------------------------- phases
def seed_groups(experiment: str, overrides: Sequence[str] | None = None,
                results_root: str | os.PathLike[str] | None = None,
                checkpoint_root: str | os.PathLike[str] | None = None
                ) -> list[list[sweep.Run]]:
    """The experiment's runs not done (pending or partial), as whole seeds in queue order."""
    groups: list[list[sweep.Run]] = []
    for r in sweep.runs([experiment], overrides=list(overrides or []),
                        results_root=results_root, checkpoint_root=checkpoint_root):
        if r.state not in ("pending", "partial"):
            continue
        if groups and groups[-1][0].cfg.seed == r.cfg.seed:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def most_workers(exp_probe: Mapping[str, Any], runs: Sequence[sweep.Run],
                 costs: Costs) -> int:
    """The probe's pick (:func:`pick_workers`), at most :attr:`Costs.compiled_workers` when
    the runs compile."""
    most = pick_workers(exp_probe)
    if any(r.cfg.train.compile for r in runs):
        most = min(most, int(costs.compiled_workers))
    return max(1, most)


def fit(groups: Sequence[Sequence[sweep.Run]], exp_probe: Mapping[str, Any], seconds: float,
        recs: Sequence[Mapping[str, Any]] = (), costs: Costs | None = None,
        max_workers: int | None = None) -> tuple[list[sweep.Run], int, float, list[float]]:
    """The most whole seeds (in order) whose runs finish within ``seconds``: ``(runs, workers,
    makespan, per-run seconds)``, workers at most ``max_workers`` (the probe's pick)."""
    costs = costs or Costs()
    cap = max_workers or pick_workers(exp_probe)
    best: tuple[list[sweep.Run], int, float, list[float]] = ([], 0, 0.0, [])
    for m in range(1, len(groups) + 1):
        sel = [r for g in groups[:m] for r in g]
        options = []
        for w in range(1, min(cap, len(sel)) + 1):
            durs = [run_seconds(r.cfg, exp_probe, w, recs, costs, r.epochs_done) for r in sel]
            options.append((makespan(durs, w, costs.stagger_s, costs.start_s), w, durs))
        span, w, durs = min(options, key=lambda o: (o[0], o[1]))
        if span > seconds:
            break
        best = (sel, w, span, durs)
    return best


def next_phase(probe: Mapping[str, Any], experiments: Sequence[str], *, round_: int,
               budget_s: float, elapsed_s: float, shares: Sequence[float] = (),
               overrides: Sequence[str] | None = None, costs: Costs | None = None,
               preflight: bool = False, extend: bool = True,
               results_root: str | os.PathLike[str] | None = None,
               checkpoint_root: str | os.PathLike[str] | None = None,
               cores: int | None = None) -> Phase | None:
    """The phase of round ``round_`` (see the module's docstring); a phase without runs when
    that round's experiment has nothing that fits; None when no later round has anything."""
    costs = costs or Costs()
    cores = cores or os.cpu_count() or 1
    left = budget_s - elapsed_s - costs.reserve_s
    over = costs.queue_s + (costs.preflight_s if preflight else 0.0)
    recs = [rec for _p, rec in results.iter_records(root=results_root, superseded=True)]
    store = {"results_root": results_root, "checkpoint_root": checkpoint_root}
    ov = list(overrides or [])
    scheduled = round_ < len(experiments)
    names = [experiments[round_]] if scheduled else list(experiments)
    for name in names:
        phase = Phase(round=round_, experiment=name)
        groups = (seed_groups(name, ov, **store)
                  if sweep.same_hardware([name], ov, results_root) else [])
        phase.pending = sum(map(len, groups))
        exp_probe = probe["experiments"].get(name)
        if not groups or exp_probe is None:
            phase.note = "nothing to run" if exp_probe else "not probed"
            if scheduled:
                return phase
            continue
        share = shares[round_] if scheduled and round_ < len(shares) else None
        cap = left if share is None else min(left, share * budget_s)
        if share is not None and extend and cap < left and round_ + 1 < len(experiments):
            nxt = experiments[round_ + 1]
            nxt_probe = probe["experiments"].get(nxt)
            ng = (seed_groups(nxt, ov, **store)
                  if nxt_probe and sweep.same_hardware([nxt], ov, results_root) else [])
            if ng:
                most = most_workers(nxt_probe, ng[0], costs)
                first = fit(ng[:1], nxt_probe, float("inf"), recs, costs, most)[2] + costs.queue_s
                if left - cap < first:
                    phase.note = (f"share lifted: {nxt} needs ~{first:.0f} s for its first "
                                  f"seed and the share would leave {left - cap:.0f} s; ")
                    cap = left
        most = most_workers(exp_probe, [r for g in groups for r in g], costs)
        sel, w, span, durs = fit(groups, exp_probe, cap - over, recs, costs, most)
        if not sel:
            phase.note += f"no seed fits in {cap:.0f} s"
            if scheduled:
                return phase
            continue
        seeds = sorted({r.cfg.seed for r in sel})
        every = len(sel) == phase.pending
        phase.note += (f"{'all ' if every else ''}{len(sel)} of {phase.pending} runs "
                       f"(seeds {', '.join(map(str, seeds))}) fit in {cap:.0f} s")
        phase.workers, phase.threads = w, max(1, cores // w)
        phase.seconds, phase.estimate_s = cap, span + over
        phase.run_ids = [r.run_id for r in sel]
        phase.runs = [{"run_id": r.run_id, "variant": r.cfg.variant, "seed": r.cfg.seed,
                       "estimate_s": round(d, 1)} for r, d in zip(sel, durs, strict=True)]
        if any(r.cfg.train.fit_to_budget for r in sel):
            budget = int(cap - over - costs.stagger_s * (w - 1) - costs.start_s - 10)
            phase.sets = [f"train.time_budget_s={max(budget, 30)}"]
        return phase
    return None


def borrowed(experiment: str, results_root: str | os.PathLike[str] | None = None
             ) -> list[dict[str, Any]]:
    """Seeds an experiment leaves out for a variant (its ``seeds`` key) because an experiment
    it ``pairs_with`` holds that run: per left-out (variant, seed), the run id its config would
    have and the experiment whose store has it (None: no record with that protocol)."""
    exp = load_experiment(experiment)
    out = []
    for v, vset in exp.variants.items():
        for seed in exp.seeds:
            if seed in exp.seeds_of(v):
                continue
            cfg = load_config(exp.profile, {**exp.overrides, **vset, "train.seed": seed})
            found = next((o for o in exp.pairs_with
                          if results.has_record(o, cfg.run_id, results_root)), None)
            out.append({"variant": v, "seed": seed, "run_id": cfg.run_id, "experiment": found})
    return out


# --------------------------------------------------------------------------- notes and summary
def _dirty(flag: Any) -> str:
    if flag in (True, "true", "True", "1"):
        return " with uncommitted changes"
    return "" if flag in (False, "false", "False", "0") else " (uncommitted changes: unknown)"


def call_note(probe: Mapping[str, Any], phase: Mapping[str, Any] | None = None,
              date: str | None = None) -> str:
    """The provenance note of a record from this call: hardware, torch, the tree's commit."""
    call = probe.get("call", {})
    hw, ver, git = call.get("hardware", {}), call.get("versions", {}), call.get("git", {})
    date = date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    where = hw.get("gpu") or hw.get("device") or probe.get("device", "?")
    text = (f"{date}: trained in one call of scripts/gpu_evidence.sh on {where} "
            f"({hw.get('cpu_count', '?')} CPU cores, MPS {'on' if call.get('mps') else 'off'}), "
            f"torch {ver.get('torch', '?')} (CUDA {call.get('cuda') or 'none'}), from a copy of "
            f"the working tree at commit {git.get('commit') or 'unknown'}"
            f"{_dirty(git.get('dirty'))}")
    if phase:
        text += (f"; round {phase['round']} ({phase['experiment']}): {phase['workers']} worker "
                 f"processes ({phase['threads']} torch threads each) sharing the device")
    return text + ". No outcome field changed."


def apply_notes(paths: Iterable[str | os.PathLike[str]], probe: Mapping[str, Any],
                phases: Sequence[Mapping[str, Any]], code_commit: str | None = None,
                date: str | None = None) -> int:
    """Add :func:`call_note` to every record in ``paths`` (and ``code_commit``, the commit that
    holds the tree the call ran, where the record lacks one); returns the records changed."""
    n = 0
    for p in paths:
        rec = results.read_record(p)
        phase = next((ph for ph in phases if ph.get("experiment") == rec.get("experiment")
                      and rec.get("run_id") in ph.get("run_ids", [])), None)
        flags = {"code_commit": code_commit} if code_commit and "code_commit" not in rec else {}
        n += results.add_note(p, call_note(probe, phase, date), **flags)
    return n


def probe_table(probe: Mapping[str, Any]) -> list[str]:
    """The probe as lines: aggregate img/s per worker count, the pick, GPU GB per worker."""
    counts = [str(k) for k in probe.get("counts", [])]
    lines = [f"probe: {probe.get('wall_s', 0):.0f} s ({probe.get('startup_s', 0):.0f} s start-up), "
             f"windows of {probe.get('window_s', 0)} s, {probe.get('threads_per_worker')} "
             "threads per worker; aggregate training img/s by worker processes",
             f"  {'experiment':<20} {'profile':<8} " + " ".join(f"{k:>8}" for k in counts)
             + f" {'picked':>6} {'GB/worker':>9}"]
    for name, e in probe.get("experiments", {}).items():
        lines.append(f"  {name:<20} {e['profile']:<8} "
                     + " ".join(f"{e['aggregate_img_s'].get(k, 0):>8.0f}" for k in counts)
                     + f" {pick_workers(e):>6} {e['gpu_gb_per_worker']:>9.2f}")
    return lines


def summary(probe: Mapping[str, Any], phases: Sequence[Mapping[str, Any]],
            records: Iterable[str | os.PathLike[str]], *, budget_s: float = 0.0,
            wall_s: float = 0.0) -> str:
    """``summary.txt``: the call, the probe, the phases, then per new run its wall time,
    img/s and peak GPU memory (the numbers that size the next call)."""
    call = probe.get("call", {})
    hw, ver = call.get("hardware", {}), call.get("versions", {})
    lines = [f"GPU evidence call: {hw.get('gpu') or probe.get('device')}, torch "
             f"{ver.get('torch', '?')} (CUDA {call.get('cuda') or 'none'}), MPS "
             f"{'on' if call.get('mps') else 'off'}, commit "
             f"{(call.get('git') or {}).get('commit') or 'unknown'}; budget {budget_s:.0f} s, "
             f"wall {wall_s:.0f} s",
             *probe_table(probe)]
    lines.append("phases:")
    for ph in phases:
        lines.append(f"  round {ph['round']} {ph['experiment']}: {len(ph['run_ids'])} runs, "
                     f"{ph['workers']} workers x {ph['threads']} threads, {ph['seconds']:.0f} s "
                     f"allotted, ~{ph['estimate_s']:.0f} s estimated; {ph['note']}")
    for name in dict.fromkeys(ph["experiment"] for ph in phases):
        try:
            for b in borrowed(name):
                lines.append(f"  {name} {b['variant']} seed {b['seed']}: "
                             + (f"the record {b['experiment']}/{b['run_id']} (same run id)"
                                if b["experiment"] else f"no record with run id {b['run_id']}"))
        except Exception:  # noqa: BLE001 - a summary line, never a failure of the call
            continue
    lines.append(f"{'record':<32} {'variant':<12} {'seed':>4} {'epochs':>6} {'wall_s':>7} "
                 f"{'img/s':>7} {'gpu_GB':>7} {'val':>6} {'test':>6} device")
    for p in records:
        r = results.read_record(p)
        ips = [h["images_per_s"] for h in r.get("history", []) if h.get("images_per_s")]
        mem = (r.get("peak_memory") or {}).get("gpu_max_reserved_mb") or 0.0
        dev = (r.get("hardware") or {}).get("gpu") or (r.get("hardware") or {}).get("device")
        name = f"{r.get('experiment')}/{r.get('run_id')}"
        lines.append(f"{name:<32} {r.get('variant', ''):<12} {r.get('seed', 0):>4} "
                     f"{r.get('epochs_run', 0):>6} {r.get('wall_time_s', 0):>7.0f} "
                     f"{sum(ips) / max(len(ips), 1):>7.0f} {mem / 1024:>7.2f} "
                     f"{r['val']['accuracy']:>6.4f} {r['test']['accuracy']:>6.4f} {dev}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line
def _read_log(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cfdan.training.gpu_plan probe|next|finish`` (scripts/gpu_evidence.sh)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cfdan.training.gpu_plan", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="measure img/s per worker count; write the probe JSON")
    p.add_argument("experiments", nargs="+")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mps", type=int, default=0, help="1: the script started NVIDIA MPS")
    p.add_argument("--out", required=True)
    n = sub.add_parser("next", help="plan the next phase; print PHASE_* shell assignments")
    n.add_argument("experiments", nargs="+")
    n.add_argument("--probe", required=True)
    n.add_argument("--round", type=int, required=True)
    n.add_argument("--budget-s", type=float, required=True)
    n.add_argument("--elapsed-s", type=float, required=True)
    n.add_argument("--shares", type=float, nargs="*", default=[0.4])
    n.add_argument("--cost", action="append", default=[], metavar="NAME=SECONDS")
    n.add_argument("--preflight", action="store_true", help="the phase starts with a preflight")
    n.add_argument("--no-extend", action="store_true", help="never lift a share")
    n.add_argument("--log", help="append the phase as one JSON line to this file")
    f = sub.add_parser("finish", help="add the call's provenance note to the records, then "
                       "print (or write) summary.txt")
    f.add_argument("records", nargs="*")
    f.add_argument("--probe", required=True)
    f.add_argument("--log")
    f.add_argument("--code-commit", default=None)
    f.add_argument("--budget-s", type=float, default=0.0)
    f.add_argument("--wall-s", type=float, default=0.0)
    f.add_argument("--summary", default=None, help="write summary.txt here")
    for q in (p, n):
        q.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="SECTION.FIELD=VALUE")
    args = ap.parse_args(argv)

    if args.cmd == "probe":
        from cfdan.training import gpu_probe, provenance

        out = gpu_probe.probe(args.experiments, overrides=args.overrides, device=args.device,
                              counts=args.counts, seconds=args.seconds, threads=args.threads)
        out["call"].update(git=provenance.git_info(), mps=bool(args.mps))
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print("\n".join(probe_table(out)))
        return 0
    probe = json.loads(Path(args.probe).read_text())
    if args.cmd == "next":
        phase = next_phase(probe, args.experiments, round_=args.round, budget_s=args.budget_s,
                           elapsed_s=args.elapsed_s, shares=args.shares,
                           overrides=args.overrides, costs=Costs().update(args.cost),
                           preflight=args.preflight, extend=not args.no_extend)
        if phase is None:
            print("PHASE_EXPERIMENT=''")
            return 0
        if args.log:
            with open(args.log, "a") as fh:
                fh.write(json.dumps(dataclasses.asdict(phase)) + "\n")
        print(phase.to_env())
        return 0
    phases = _read_log(args.log)
    n_noted = apply_notes(args.records, probe, phases, code_commit=args.code_commit)
    text = summary(probe, phases, args.records, budget_s=args.budget_s, wall_s=args.wall_s)
    if args.summary:
        Path(args.summary).write_text(text)
    print(text + f"provenance note added to {n_noted} of {len(args.records)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
