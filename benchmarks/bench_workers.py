"""Workers x threads for the sweep on this CPU: one process with all cores against one process
per core, training the same profile's CF-DAN side by side in one run.

    python benchmarks/bench_workers.py [--profile cpu] [--steps 30]

Prints each arrangement's total training images/s (summed over the processes that ran at the
same time) and their ratio; ``python -m cfdan sweep run --workers N --threads T`` takes the
arrangement. Synthetic uint8 images of the profile's size; the numbers vary with the machine
and with anything else running on it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os


def _one(profile: str, threads: int, steps: int, out: mp.Queue) -> None:
    import torch
    from bench_training import bench_train  # beside this file (sys.path[0] when run as a script)

    from cfdan.training.config import load_config
    from cfdan.training.loop import build_model, make_augment

    torch.set_num_threads(threads)
    cfg = load_config(profile, [])
    size, batch = cfg.data.image_size, cfg.train.batch_size
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(256, batch), 1, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 8, (len(images),))
    model = build_model(cfg, 8, size)
    r = bench_train(model, images, labels, make_augment(size, train=True, seed=0), steps, batch,
                    torch.device("cpu"), False, cfg.train.channels_last)
    out.put(r["images_per_s"])


def arrangement(profile: str, workers: int, threads: int, steps: int) -> float:
    """Total training img/s of ``workers`` concurrent processes of ``threads`` threads each."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_one, args=(profile, threads, steps, q)) for _ in range(workers)]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    one = arrangement(args.profile, 1, cores, args.steps)
    many = arrangement(args.profile, cores, 1, args.steps)
    print(f"profile {args.profile}, {cores} cores, {args.steps} steps per process")
    print(f"  1 worker  x {cores} threads: {one:7.1f} img/s")
    print(f"  {cores} workers x 1 thread : {many:7.1f} img/s")
    print(f"  ratio ({cores} x 1) / (1 x {cores}): {many / one:.2f} "
          f"(each run takes {cores}x longer in the {cores}-worker arrangement)")


if __name__ == "__main__":
    main()
