"""The experiment queue: the ablation sweeps of §4.4-4.5 as one resumable, shareable queue.

An experiment (``configs/experiments/<name>.toml``) is variants x seeds; every (variant, seed) is
one run with its own ``run_id``, and a finished run is its record in ``results/<name>/``.
The queue is therefore stateless: a run is

- **done** when its record exists,
- **running** when a live process holds its claim (``checkpoints/<name>/<run_id>/claim``),
- **partial** when it has an epoch checkpoint (``last.pt``) but no live claim (it resumes),
- **pending** otherwise.

:func:`run` works through the pending runs of several experiments in the order given, in
``workers`` processes of ``threads`` torch threads each; every process claims one run at a time
(an exclusive file create), so two workers, or two machines sharing the folders, never train
the same run. ``SIGTERM`` stops a worker cleanly: the run's last epoch checkpoint is already
on disk, and the next ``run`` resumes from it. ``SIGTERM`` to :func:`run`'s own process is
passed on to its workers, so ``pkill -f "cfdan sweep run"`` stops the whole queue.
:func:`commands` prints one shell command per pending run, for users who hand the runs to
their own scheduler (SLURM array, GNU parallel): each run writes its own record file, so the
records merge.

**One table, one kind of hardware.** A variant's accuracy moves with the numerics of the device
it trained on, so the runs of one experiment are all CPU or all GPU: :func:`work` skips an
experiment whose current records (:func:`hardware`) were made on the other kind, unless told
``mixed_hardware=True``. ``deadline`` (wall-clock seconds since the epoch) stops the workers of
:func:`run` with SIGTERM; a run not finished by then leaves no record (``scripts/gpu_queue.sh``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

from cfdan import paths, results
from cfdan.training.config import Config, is_planned, load_experiment, planned

STATES = ("done", "running", "partial", "pending")


class SweepStopped(Exception):
    """A worker received SIGTERM/SIGINT; its run's last epoch checkpoint is on disk."""


@dataclass
class Run:
    """One (variant, seed) of an experiment and where it stands."""

    cfg: Config
    state: str
    epochs_done: int = 0

    @property
    def experiment(self) -> str:
        return self.cfg.experiment

    @property
    def run_id(self) -> str:
        return self.cfg.run_id


# --------------------------------------------------------------------------- state
def _run_dir(cfg: Config, checkpoint_root: str | os.PathLike[str] | None) -> Path:
    return paths.checkpoint_dir(checkpoint_root) / cfg.experiment / cfg.run_id


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_holder(claim: Path) -> int | None:
    """The live pid holding ``claim``, or None (no claim, or its process is gone)."""
    try:
        pid = int(json.loads(claim.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _pid_alive(pid) else None


def epochs_done(last: Path) -> int:
    """Epochs a run's ``last.pt`` holds, read with the safe loader
    (:func:`cfdan.training.checkpoint.load_training_state`); 0 for a file it refuses or cannot read."""
    from cfdan.training.checkpoint import load_training_state

    try:
        return int(load_training_state(last)["epoch"]) + 1
    except Exception:  # an unreadable checkpoint counts as none; training restarts the run
        return 0


def runs(names: Sequence[str], *, overrides: list[str] | None = None,
         results_root: str | os.PathLike[str] | None = None,
         checkpoint_root: str | os.PathLike[str] | None = None,
         seed_major: bool = False) -> list[Run]:
    """Every run of the experiments ``names``, in queue order: experiment, then seed-major file
    order; with ``seed_major``, seed first across all the experiments (every experiment's seed
    3 before any seed 4), experiments in the order named within a seed."""
    out = _runs(names, overrides, results_root, checkpoint_root)
    return sorted(out, key=lambda r: r.cfg.seed) if seed_major else out  # sorted() is stable


def _runs(names: Sequence[str], overrides: list[str] | None,
          results_root: str | os.PathLike[str] | None,
          checkpoint_root: str | os.PathLike[str] | None) -> list[Run]:
    out: list[Run] = []
    for name in names:
        for cfg in load_experiment(name).configs(overrides):
            if results.has_record(cfg.experiment, cfg.run_id, results_root):
                out.append(Run(cfg, "done", cfg.train.epochs))
                continue
            d = _run_dir(cfg, checkpoint_root)
            if _claim_holder(d / "claim") is not None:
                state = "running"
            elif (d / "last.pt").is_file():
                state = "partial"
            else:
                state = "pending"
            epochs = epochs_done(d / "last.pt") if state != "pending" else 0
            out.append(Run(cfg, state, epochs))
    return out


# --------------------------------------------------------------------------- estimates
def _epoch_seconds(cfg: Config, recs: list[dict]) -> float | None:
    """Wall seconds per epoch of finished runs most like ``cfg``.

    Among records of the same profile, model width and batch, looks in turn at those of the
    same experiment and variant, the same experiment, and all; returns the median or None.
    ``recs`` are the store's records, read once by the caller.
    """

    def per_epoch(r: dict) -> float | None:
        n = r.get("epochs_run") or len(r.get("history", []))
        return r["wall_time_s"] / n if n and r.get("wall_time_s") else None

    def same_scale(r: dict) -> bool:
        c = r.get("config", {})
        return (r.get("profile") == cfg.profile
                and c.get("train", {}).get("batch_size") == cfg.train.batch_size
                and c.get("model", {}).get("trunk_width") == cfg.model.get("trunk_width"))

    tiers = (  # always at the same scale: an older schedule's records may share the names
        lambda r: same_scale(r) and r.get("experiment") == cfg.experiment
        and r.get("variant") == cfg.variant,
        lambda r: same_scale(r) and r.get("experiment") == cfg.experiment,
        same_scale,
    )
    for keep in tiers:
        vals = sorted(v for r in recs if keep(r) and (v := per_epoch(r)) is not None)
        if vals:
            return vals[len(vals) // 2]
    return None


def device_kind(device: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of hardware a ``train.device`` string names."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def current_records(name: str, results_root: str | os.PathLike[str] | None = None
                    ) -> list[dict]:
    """Records of experiment ``name`` that its file plans today
    (:func:`cfdan.training.config.is_planned`: records of an older profile or schedule do not
    count); every record if ``name`` has no experiment file. Superseded records are left out."""
    plan = planned(name)
    return [rec for _p, rec in results.iter_records(name, results_root)
            if isinstance(rec, dict) and is_planned(rec.get("run_id"), plan)]


def hardware(name: str, results_root: str | os.PathLike[str] | None = None) -> set[str]:
    """Kinds of hardware (:func:`device_kind`) of experiment ``name``'s current records
    (:func:`current_records`), and of the experiments it ``pairs_with``, since paired runs must
    share the hardware too."""
    return {device_kind((rec.get("hardware") or {}).get("device", "cpu"))
            for other in (name, *load_experiment(name).pairs_with)
            for rec in current_records(other, results_root)}


def status(names: Sequence[str], *, overrides: list[str] | None = None,
           results_root: str | os.PathLike[str] | None = None,
           checkpoint_root: str | os.PathLike[str] | None = None):
    """Per experiment: runs done, running, partial, pending, and the estimated hours left.

    The estimate is (epochs left) x (seconds per epoch of the most similar finished runs, see
    :func:`_epoch_seconds`), for one worker; "?" when no similar run has finished yet.
    """
    import pandas as pd

    recs = [rec for _, rec in results.iter_records(root=results_root) if isinstance(rec, dict)]
    rows = []
    for name in names:
        items = runs([name], overrides=overrides, results_root=results_root,
                     checkpoint_root=checkpoint_root)
        counts = {s: sum(r.state == s for r in items) for s in STATES}
        left, unknown = 0.0, False
        for r in items:
            if r.state == "done":
                continue
            sec = _epoch_seconds(r.cfg, recs)
            if sec is None:
                unknown = True
            else:
                left += sec * max(0, r.cfg.train.epochs - r.epochs_done)
        rows.append({"experiment": name, "runs": len(items), **counts,
                     "hours_left": "?" if unknown else round(left / 3600, 2)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims
@contextlib.contextmanager
def claim(cfg: Config, checkpoint_root: str | os.PathLike[str] | None = None
          ) -> Iterator[bool]:
    """Claim ``cfg``'s run for this process; yields False if a live process holds it."""
    path = _run_dir(cfg, checkpoint_root) / "claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and _claim_holder(path) is None:
        path.unlink(missing_ok=True)  # left by a process that died
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        yield False
        return
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "since": time.time()}, fh)
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- running
def commit_record(cfg: Config, results_root: str | os.PathLike[str] | None = None,
                  attempts: int = 5) -> bool:
    """``git commit`` the run's record files alone (other changes in the tree stay as they are)."""
    rec = results.record_path(cfg.experiment, cfg.run_id, results_root)
    files = [str(p) for p in (rec, rec.with_suffix(".npz")) if p.is_file()]
    if not files:
        return False
    msg = f"{cfg.experiment} record: {cfg.variant} seed {cfg.seed} ({cfg.run_id})"
    for i in range(attempts):  # another worker may hold git's index lock for a moment
        add = subprocess.run(["git", "add", "--", *files], cwd=paths.REPO_ROOT,
                             capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", msg, "--", *files], cwd=paths.REPO_ROOT,
            capture_output=True, text=True).returncode == 0
        if done:
            return True
        time.sleep(1 + i)
    print(f"sweep: could not commit {files}; commit them by hand", file=sys.stderr)
    return False


def _raise_stop(signum: int, frame: object) -> None:
    raise SweepStopped(f"signal {signum}")


def same_hardware(names: Sequence[str], overrides: list[str] | None,
                   results_root: str | os.PathLike[str] | None) -> list[str]:
    """The experiments of ``names`` whose current records are on this worker's kind of device
    (or that have none yet); says which it leaves out and why."""
    keep = []
    for name in names:
        cfgs = load_experiment(name).configs(overrides)
        mine = device_kind(cfgs[0].train.device) if cfgs else "cpu"
        theirs = hardware(name, results_root)
        if theirs and mine not in theirs:
            print(f"sweep: skipping {name}: its records were made on {'/'.join(sorted(theirs))} "
                  f"and this worker trains on {mine} (one table, one kind of hardware; "
                  f"--mixed-hardware overrides)", file=sys.stderr)
            continue
        keep.append(name)
    return keep


def work(names: Sequence[str], *, overrides: list[str] | None = None, threads: int = 0,
         commit: bool = False, max_runs: int = 0, only: Sequence[str] = (),
         quiet: bool = True, mixed_hardware: bool = False, deadline: float | None = None,
         results_root: str | os.PathLike[str] | None = None,
         checkpoint_root: str | os.PathLike[str] | None = None, seed_major: bool = False) -> int:
    """One worker: claim and train pending (or partial) runs in queue order (:func:`runs`,
    ``seed_major`` as there); returns runs done.

    ``only`` restricts the queue to these run ids. Stops after ``max_runs`` runs (0 = all), or
    cleanly on SIGTERM/SIGINT (the run resumes from its last epoch checkpoint next time).
    Experiments whose records are on the other kind of hardware are skipped
    (:func:`same_hardware`) unless ``mixed_hardware``. With ``deadline`` (seconds since the
    epoch) the worker starts no run once less time is left than its last run took.
    """
    from cfdan.training import loop as train

    signal.signal(signal.SIGTERM, _raise_stop)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if not mixed_hardware:
        names = same_hardware(names, overrides, results_root)
    n, last = 0, 0.0
    try:
        while names and (not max_runs or n < max_runs):
            if deadline is not None and last and time.time() + last > deadline:
                print(f"sweep: {deadline - time.time():.0f} s left, the last run took {last:.0f} "
                      "s: starting no other", file=sys.stderr)
                break
            todo = [r for r in runs(names, overrides=overrides, results_root=results_root,
                                    checkpoint_root=checkpoint_root, seed_major=seed_major)
                    if r.state in ("partial", "pending") and (not only or r.run_id in only)]
            if not todo:
                break
            progressed = False
            for r in todo:
                with claim(r.cfg, checkpoint_root) as mine:
                    if not mine:
                        continue
                    if results.has_record(r.experiment, r.run_id, results_root):
                        continue  # finished by another worker since the listing
                    r.cfg.train.progress = not quiet
                    if threads:
                        r.cfg.train.threads = threads
                    t0 = time.time()
                    train.train(r.cfg, results_root=results_root, checkpoint_root=checkpoint_root)
                    last = time.time() - t0
                    if commit:
                        commit_record(r.cfg, results_root)
                    n += 1
                    progressed = True
                    break
            if not progressed:
                break  # everything left is claimed by other workers
    except (SweepStopped, KeyboardInterrupt):
        print(f"sweep: stopped by signal after {n} finished run(s); rerun to resume",
              file=sys.stderr)
    return n


def _work_logged(log: str | None, names: list[str], kw: dict) -> None:
    """:func:`work`, with this process's stdout and stderr appended to ``log`` if given."""
    if log is None:
        work(names, **kw)
        return
    with open(log, "a", buffering=1) as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
        work(names, **kw)


def run(names: Sequence[str], *, workers: int = 1, threads: int = 0,
        deadline: float | None = None, log_dir: str | os.PathLike[str] | None = None,
        **kw) -> int:
    """Work through the queue with ``workers`` processes (``threads`` torch threads each).

    With ``deadline`` (seconds since the epoch) every worker still training then gets SIGTERM:
    its run stops without a record (its last epoch checkpoint stays for a resume). With
    ``log_dir`` worker i writes its output to ``log_dir/worker_<i>.log``.
    """
    if workers <= 1 and deadline is None and log_dir is None:
        return work(names, threads=threads, **kw)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    kw = {"threads": threads, "deadline": deadline, **kw}
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    logs = [None if log_dir is None else str(Path(log_dir) / f"worker_{i}.log")
            for i in range(max(1, workers))]
    procs = [ctx.Process(target=_work_logged, args=(log, list(names), kw)) for log in logs]
    # SIGTERM to this process stops its workers too (each checkpoints and leaves no record):
    # without this, `pkill -f "cfdan sweep run"` would end the parent and orphan the workers
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        for p in procs:
            p.start()
            time.sleep(2.0)  # stagger the claims
        for p in procs:
            p.join(None if deadline is None else max(0.0, deadline - time.time()))
        if any(p.is_alive() for p in procs):
            print("sweep: deadline reached; stopping the workers (unfinished runs leave no "
                  "record)", file=sys.stderr)
            _stop_workers(procs)
    except (KeyboardInterrupt, SweepStopped):
        print("sweep: stopped by signal; stopping the workers (rerun to resume)",
              file=sys.stderr)
        _stop_workers(procs)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return sum(p.exitcode == 0 for p in procs)


def _stop_workers(procs: Sequence[BaseProcess], grace_s: float = 60.0) -> None:
    """SIGTERM every live worker (SweepStopped in it), then SIGKILL what outlives ``grace_s``."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:
            p.join(grace_s)
            if p.is_alive():
                p.kill()
                p.join()


def commands(names: Sequence[str], *, overrides: list[str] | None = None,
             python: str = "python", results_root: str | os.PathLike[str] | None = None,
             checkpoint_root: str | os.PathLike[str] | None = None) -> list[str]:
    """One shell command per run not done (and not running), for an external scheduler."""
    out = []
    for r in runs(names, overrides=overrides, results_root=results_root,
                  checkpoint_root=checkpoint_root):
        if r.state in ("partial", "pending"):
            sets = "".join(f" --set {shlex.quote(o)}" for o in overrides or [])
            out.append(f"{python} -m cfdan sweep run {shlex.quote(r.experiment)} "
                       f"--only {r.run_id}{sets}")
    return out
